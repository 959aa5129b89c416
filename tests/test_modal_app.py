"""The deployed class's body, run in-process with Modal's ``.local()`` over a fake vLLM.

A fake ``vllm`` package is put in ``sys.modules`` so the real :func:`build_llm` and
:func:`sampling_params` run and we can see exactly what they would ask vLLM for.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import types
from typing import Any

import pytest

from ocr_backend.deepseek import client, deployment, modal_app
from ocr_backend.deepseek.deploy import deploy, deploy_command
from ocr_backend.deepseek.runner import PROMPT
from ocr_backend.errors import BookOcrError, EngineError
from tests.deepseek_fakes import FakeAsyncLLM, FakeLLM, jpeg, page_image, raw_loop, respond_good


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

    class FakeAsyncEngineArgs:
        def __init__(self, **kwargs: Any) -> None:
            built["kwargs"] = kwargs

    class FakeAsyncLLMClass:
        @staticmethod
        def from_engine_args(args: FakeAsyncEngineArgs) -> FakeAsyncLLM:
            built["llm"] = FakeAsyncLLM(built.get("respond", respond_good))
            return built["llm"]

    vllm = types.ModuleType("vllm")
    vllm.LLM = make_llm  # type: ignore[attr-defined]
    vllm.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    models = types.ModuleType("vllm.model_executor.models.deepseek_ocr")
    models.NGramPerReqLogitsProcessor = FakeNGramProcessor  # type: ignore[attr-defined]
    arg_utils = types.ModuleType("vllm.engine.arg_utils")
    arg_utils.AsyncEngineArgs = FakeAsyncEngineArgs  # type: ignore[attr-defined]
    async_llm = types.ModuleType("vllm.v1.engine.async_llm")
    async_llm.AsyncLLM = FakeAsyncLLMClass  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.model_executor.models.deepseek_ocr", models)
    monkeypatch.setitem(sys.modules, "vllm.engine.arg_utils", arg_utils)
    monkeypatch.setitem(sys.modules, "vllm.v1.engine.async_llm", async_llm)
    return built


def deployed_class() -> Any:
    """The class body in-process, its enter hook run (Modal's ``.local()`` runs it only for sync methods)."""
    obj = modal_app.DeepseekOcr()
    obj._enter()
    return obj


def local(method: Any, *args: Any) -> Any:
    """A method of the class run in-process; its methods are async (the class takes concurrent inputs)."""
    return asyncio.run(method.local(*args))


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_each_page_of_a_call_joins_the_async_engine_s_batch(fake_vllm: dict[str, Any]) -> None:
    images = [jpeg(page_image(n)) for n in range(1, 41)]
    out = local(deployed_class().ocr, images, {})
    llm = fake_vllm["llm"]
    assert len(llm.requests) == 40  # one request per page, all in the engine at once
    request, params, priority = llm.requests[0]
    assert request["prompt"] == PROMPT == "<image>\n<|grounding|>Convert the document to markdown."
    assert request["multi_modal_data"]["image"].mode == "RGB" and priority == 0
    assert params.kwargs["temperature"] == 0.0 and params.kwargs["skip_special_tokens"] is False
    assert params.kwargs["max_tokens"] == 8192
    assert params.extra_args == {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": {128821, 128822}}
    kwargs = fake_vllm["kwargs"]
    assert kwargs["model"] == "deepseek-ai/DeepSeek-OCR" and kwargs["max_num_seqs"] == 64
    assert kwargs["logits_processors"] == [FakeNGramProcessor] and kwargs["scheduling_policy"] == "priority"
    assert kwargs["enable_prefix_caching"] is False and kwargs["mm_processor_cache_gb"] == 0
    assert [f"Page {n} says" in o["text"] for n, o in enumerate(out, 1)] == [True] * 40  # in order
    first = out[0]
    assert first["finish_reason"] == "stop" and first["prompt_tokens"] == 900 and first["output_tokens"] > 0
    assert first["model"] == "deepseek-ai/DeepSeek-OCR" and all(o["gpu_seconds"] >= 0 for o in out)


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_retry_options_reach_vllm(fake_vllm: dict[str, Any]) -> None:
    options = {"ngram_size": 40, "window_size": 300, "priority": -1, "unknown": 1}
    local(deployed_class().ocr, [jpeg(page_image(1))], options)
    _, params, priority = fake_vllm["llm"].requests[0]
    assert params.extra_args["ngram_size"] == 40 and params.extra_args["window_size"] == 300 and priority == -1


def _random_words(seed: int, count: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(count)
    )


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_a_loop_is_stopped_near_its_onset_not_at_the_cap(fake_vllm: dict[str, Any]) -> None:
    from ocr_backend.deepseek.runner import FIRST_ATTEMPT, FIRST_MAX_TOKENS, RETRY_ATTEMPT

    def respond(number: int, extra: dict[str, Any]) -> tuple[str, str]:
        if number == 1:
            return raw_loop(1500), "length"  # ~9,000 tokens of loop if nobody stopped it
        if number == 2:
            words = _random_words(2, 4000)
            return "<|ref|>text<|/ref|><|det|>[[1, 1, 999, 999]]<|/det|>\n" + words, "stop"  # long, no loop
        return respond_good(number, extra)

    fake_vllm["respond"] = respond
    deployed = deployed_class()
    for attempt in (FIRST_ATTEMPT, RETRY_ATTEMPT):  # a retry that loops again is stopped too, not decoded to 8,192
        fake_vllm["llm"].aborted.clear()
        out = local(deployed.ocr, [jpeg(page_image(n)) for n in (1, 2, 3)], attempt.as_dict())
        looped, long_page, short = out
        # the fake streams 512 tokens at a time: the loop is seen at the first check, confirmed at the next
        assert looped["finish_reason"] == "repetition" and looped["output_tokens"] <= 1024 < FIRST_MAX_TOKENS
        assert long_page["finish_reason"] == "stop" and long_page["output_tokens"] > FIRST_MAX_TOKENS  # long, no loop
        assert short["finish_reason"] == "stop"
        assert len(fake_vllm["llm"].aborted) == 1  # the looping request was aborted, not decoded to the end


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_a_repetitive_passage_that_ends_is_not_taken_for_a_loop(fake_vllm: dict[str, Any]) -> None:
    from ocr_backend.deepseek.runner import FIRST_ATTEMPT

    # At the check after 1,024 tokens (4,096 characters) the text ends in 40 repeats of a line; then
    # the page goes on. A loop never ends, so one check that sees it is not enough to stop the page.
    words = _random_words(3, 3000)
    head = words[: 4096 - 400]
    text = head + "x = 1 + 1\n" * 40 + words[len(head) :] + "\n\nThe end."
    fake_vllm["respond"] = lambda number, extra: (text, "stop")
    [page] = local(deployed_class().ocr, [jpeg(page_image(1))], FIRST_ATTEMPT.as_dict())
    assert page["finish_reason"] == "stop" and page["text"] == text and not fake_vllm["llm"].aborted


def test_the_loop_watch_checks_at_each_mark_and_needs_loops_in_a_row() -> None:
    from ocr_backend.deepseek.runner import DecodeSettings, LoopWatch

    loop, prose = raw_loop(300), _random_words(4, 800)
    watch = LoopWatch(DecodeSettings(loop_check_every=256))
    assert not watch.looping(100, loop)  # before the first mark: not looked at
    assert not watch.looping(300, loop)  # seen once
    assert not watch.looping(400, loop)  # not past the next mark (512): not looked at
    assert not watch.looping(520, prose)  # not looping any more: the count starts again
    assert not watch.looping(800, loop) and watch.looping(1100, loop)  # twice in a row
    once = LoopWatch(DecodeSettings(loop_check_tokens=4096))  # no periodic checks: one look, at the mark
    assert not once.looping(4000, loop) and once.looping(4100, loop) and not once.looping(9000, loop)
    assert not LoopWatch(DecodeSettings()).looping(8000, loop)  # no check asked for


def test_the_gpu_meter_shares_time_among_the_requests_running() -> None:
    from ocr_backend.deepseek.runner import GpuMeter

    now = [0.0]
    meter = GpuMeter(lambda: now[0])
    meter.start("a")
    now[0] = 2.0
    meter.start("b")
    now[0] = 4.0
    assert meter.stop("b") == pytest.approx(1.0)  # 2 s shared by two
    now[0] = 5.0
    assert meter.stop("a") == pytest.approx(2.0 + 1.0 + 1.0)


def test_deepseek_ocr_2_is_a_model_id_away(fake_vllm: dict[str, Any]) -> None:
    runner = modal_app.load_runner("deepseek-ai/DeepSeek-OCR-2")
    assert fake_vllm["kwargs"]["model"] == "deepseek-ai/DeepSeek-OCR-2"
    assert asyncio.run(runner.run_async([jpeg(page_image(2))], {}))[0]["model"] == "deepseek-ai/DeepSeek-OCR-2"


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_the_class_says_what_it_serves(fake_vllm: dict[str, Any]) -> None:
    info = local(deployed_class().info)
    assert info["model"] == "deepseek-ai/DeepSeek-OCR" and info["gpu"] == "A100" and info["vllm"] == "0.16.0"
    assert info["max_containers"] == 4 and info["max_inputs"] == 96 and info["max_num_seqs"] == 64
    assert info["startup_error"] is None and "revision" in info
    assert info["max_inputs"] > info["max_num_seqs"]  # vLLM always has the next pages queued


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_a_model_that_does_not_load_is_reported_by_every_method(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(modal_app, "build_async_llm", out_of_memory)
    engine = deployed_class()
    info = local(engine.info)  # the enter hook kept the error instead of crashing the container
    assert (
        "deepseek-ai/DeepSeek-OCR" in info["startup_error"]
        and "RuntimeError: CUDA out of memory" in info["startup_error"]
    )
    out = local(engine.ocr, [jpeg(page_image(1)), jpeg(page_image(2))], {})
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
    ran: list[tuple[list[str], dict[str, str]]] = []
    done = deploy("H200", run=lambda argv, env: ran.append((argv, env)) or 0)
    assert done == {
        "deployed": True,
        "gpu": "H200",
        "model": "deepseek-ai/DeepSeek-OCR",
        "max_containers": 4,
        "weights": "ready",
        "recorded": str(deployment.record_path("bookocr")),
    }
    recorded = deployment.recall("bookocr")
    assert recorded is not None and (recorded.gpu, recorded.max_containers, recorded.source) == ("H200", 4, "deploy")
    (deploy_argv, env), (weights_argv, _) = ran  # deployed, then the weights downloaded once on a CPU
    assert env["BOOKOCR_GPU"] == "H200" and deploy_argv[-3:-1] == ["deploy", "-m"]
    assert weights_argv[-3:] == ["run", "-m", "ocr_backend.deepseek.modal_app::download_weights"]
    with pytest.raises(EngineError, match=r"deployed, but downloading the weights .* failed \(exit 3\)"):
        deploy(run=lambda argv, env: 3 if "run" in argv else 0)
    with pytest.raises(EngineError, match=r"`modal deploy` failed \(exit 1\)"):
        deploy("L40S", run=lambda argv, env: 1)
    assert deployment.recall("bookocr").gpu == "A100"  # type: ignore[union-attr]  # the failed deploy left no record
    with pytest.raises(BookOcrError, match="not one of"):
        deploy("T4", run=lambda argv, env: 0)
    monkeypatch.setattr(client, "has_modal_credentials", lambda: False)
    with pytest.raises(EngineError, match="no Modal token is configured: run `modal setup`"):
        deploy(run=lambda argv, env: 0)
