"""The deployed class's body, run in-process with Modal's ``.local()`` over a fake vLLM.

A fake ``vllm`` package is put in ``sys.modules`` so the real :func:`build_llm` and
:func:`sampling_params` run and we can see exactly what they would ask vLLM for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

import pytest

from ocr_backend.deepseek import client, modal_app
from ocr_backend.deepseek.deploy import deploy, deploy_command
from ocr_backend.deepseek.runner import PROMPT
from ocr_backend.errors import BookOcrError, EngineError
from tests.deepseek_fakes import FakeLLM, jpeg, page_image


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.extra_args = kwargs.get("extra_args", {})


class FakeNGramProcessor:
    pass


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    built: dict[str, Any] = {}

    def make_llm(**kwargs: Any) -> FakeLLM:
        built["kwargs"] = kwargs
        built["llm"] = FakeLLM()
        return built["llm"]

    vllm = types.ModuleType("vllm")
    vllm.LLM = make_llm  # type: ignore[attr-defined]
    vllm.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    models = types.ModuleType("vllm.model_executor.models.deepseek_ocr")
    models.NGramPerReqLogitsProcessor = FakeNGramProcessor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.model_executor.models.deepseek_ocr", models)
    return built


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_the_class_ocrs_a_whole_batch_in_one_vllm_call(fake_vllm: dict[str, Any]) -> None:
    images = [jpeg(page_image(n)) for n in range(1, 41)]
    out = modal_app.DeepseekOcr().ocr.local(images, {})
    llm = fake_vllm["llm"]
    assert len(llm.calls) == 1 and len(llm.calls[0][0]) == 40  # continuous batching sees all 40 pages
    requests, params = llm.calls[0]
    assert {r["prompt"] for r in requests} == {PROMPT} == {"<image>\n<|grounding|>Convert the document to markdown."}
    assert {r["multi_modal_data"]["image"].mode for r in requests} == {"RGB"}
    assert params.kwargs["temperature"] == 0.0 and params.kwargs["skip_special_tokens"] is False
    assert params.kwargs["max_tokens"] == 8192
    assert params.extra_args == {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": {128821, 128822}}
    llm_kwargs = fake_vllm["kwargs"]
    assert llm_kwargs["model"] == "deepseek-ai/DeepSeek-OCR"
    assert llm_kwargs["logits_processors"] == [FakeNGramProcessor]
    assert llm_kwargs["enable_prefix_caching"] is False and llm_kwargs["mm_processor_cache_gb"] == 0
    assert [
        o["text"].startswith("<|ref|>text<|/ref|>") and f"Page {n} says" in o["text"] for n, o in enumerate(out, 1)
    ] == [True] * 40
    first = out[0]
    assert first["finish_reason"] == "stop" and first["prompt_tokens"] == 900 and first["output_tokens"] > 0
    assert first["model"] == "deepseek-ai/DeepSeek-OCR" and first["batch_size"] == 40
    assert all(o["gpu_seconds"] >= 0 for o in out)


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_retry_options_reach_vllm(fake_vllm: dict[str, Any]) -> None:
    modal_app.DeepseekOcr().ocr.local([jpeg(page_image(1))], {"ngram_size": 40, "window_size": 300, "unknown": 1})
    params = fake_vllm["llm"].calls[0][1]
    assert params.extra_args["ngram_size"] == 40 and params.extra_args["window_size"] == 300


def test_deepseek_ocr_2_is_a_model_id_away(fake_vllm: dict[str, Any]) -> None:
    runner = modal_app.load_runner("deepseek-ai/DeepSeek-OCR-2")
    assert fake_vllm["kwargs"]["model"] == "deepseek-ai/DeepSeek-OCR-2"
    assert runner.run([jpeg(page_image(2))], {})[0]["model"] == "deepseek-ai/DeepSeek-OCR-2"


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_the_class_says_what_it_serves(fake_vllm: dict[str, Any]) -> None:
    info = modal_app.DeepseekOcr().info.local()
    assert info["model"] == "deepseek-ai/DeepSeek-OCR" and info["gpu"] == "A100" and info["vllm"] == "0.16.0"
    assert info["startup_error"] is None


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_a_model_that_does_not_load_is_reported_by_every_method(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(model_id: str) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(modal_app, "build_llm", out_of_memory)
    engine = modal_app.DeepseekOcr()
    info = engine.info.local()  # the enter hook kept the error instead of crashing the container
    assert (
        "deepseek-ai/DeepSeek-OCR" in info["startup_error"]
        and "RuntimeError: CUDA out of memory" in info["startup_error"]
    )
    out = engine.ocr.local([jpeg(page_image(1)), jpeg(page_image(2))], {})
    assert len(out) == 2 and all(o["startup_error"] == info["startup_error"] for o in out)


def test_class_settings_and_deploy_time_gpu_choice() -> None:
    spec = modal_app.DeepseekOcr._get_class_service_function()._spec_  # Modal's own record of the decorator
    assert spec.gpus == "A100"
    assert set(spec.volumes) == {modal_app.HF_CACHE, modal_app.VLLM_CACHE}
    code = (
        "import ocr_backend.deepseek.modal_app as m; "
        "print(m.DeepseekOcr._get_class_service_function()._spec_.gpus, m.MAX_CONTAINERS, m.MODEL_ID)"
    )
    _, env = deploy_command("H200", "deepseek-ai/DeepSeek-OCR-2", 6)  # what `bookocr deploy` hands the app
    env = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    out = done.stdout.split()
    assert out == ["H200", "6", "deepseek-ai/DeepSeek-OCR-2"]


def test_deploy_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOOKOCR_MODAL_APP", raising=False)
    argv, env = deploy_command("L40S", "deepseek-ai/DeepSeek-OCR-2", 2)
    assert argv[1:] == ["-m", "modal", "deploy", "-m", "ocr_backend.deepseek.modal_app"]
    assert argv[-1] == modal_app.__name__
    assert (
        env["BOOKOCR_GPU"] == "L40S"
        and env["BOOKOCR_DEEPSEEK_MODEL"] == "deepseek-ai/DeepSeek-OCR-2"
        and env["BOOKOCR_MAX_CONTAINERS"] == "2"
    )
    assert env["BOOKOCR_MODAL_APP"] == "bookocr"
    with pytest.raises(ValueError, match="not one of"):
        deploy_command("T4")
    with pytest.raises(ValueError, match="at least 1"):
        deploy_command("H100", max_containers=0)


def test_deploy_runs_modal_deploy_and_says_why_it_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "has_modal_credentials", lambda: True)
    ran: list[dict[str, str]] = []
    done = deploy("H200", run=lambda argv, env: ran.append(env) or 0)
    assert done == {"deployed": True, "gpu": "H200", "model": "deepseek-ai/DeepSeek-OCR", "max_containers": 4}
    assert ran[0]["BOOKOCR_GPU"] == "H200"
    with pytest.raises(EngineError, match=r"`modal deploy` failed \(exit 1\)"):
        deploy(run=lambda argv, env: 1)
    with pytest.raises(BookOcrError, match="not one of"):
        deploy("T4", run=lambda argv, env: 0)
    monkeypatch.setattr(client, "has_modal_credentials", lambda: False)
    with pytest.raises(EngineError, match="no Modal token is configured: run `modal setup`"):
        deploy(run=lambda argv, env: 0)
