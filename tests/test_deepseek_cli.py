"""``bookocr ocr --engine deepseek`` (cost summary, --estimate, errors), ``deploy`` and ``reclean``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ocr_backend.deepseek import client
from ocr_backend.deepseek import deploy as deepseek_deploy
from ocr_backend.deepseek.clean import clean
from ocr_backend.engines import deepseek as deepseek_engine
from ocr_backend.engines import local as local_engine
from server.cli import main
from tests.conftest import numbered_text_pdf, tree_snapshot
from tests.deepseek_fakes import LocalClass, StubFallback, marked_pdf, respond_good


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class FakeModalRemote(LocalClass):
    """Replaces ModalRemote: ``connect`` succeeds, calls go to the local stand-in."""

    instances: list[FakeModalRemote] = []
    respond = staticmethod(respond_good)

    def __init__(self, app_name: str, class_name: str, gpu: str | None = None) -> None:
        super().__init__(FakeModalRemote.respond)
        self.gpu = gpu
        FakeModalRemote.instances.append(self)

    def connect(self, network_check: Any = None) -> FakeModalRemote:
        return self


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> type[FakeModalRemote]:
    FakeModalRemote.instances = []
    FakeModalRemote.respond = staticmethod(respond_good)
    monkeypatch.setattr(deepseek_engine, "ModalRemote", FakeModalRemote)
    monkeypatch.setattr(local_engine, "LocalEngine", StubFallback)  # the CPU fallback, without loading the OCR models
    return FakeModalRemote


def test_a_deepseek_run_records_and_prints_gpu_time_and_cost(
    tmp_path: Path, deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pdf = marked_pdf(tmp_path / "stats.pdf", 5)
    corpus = tmp_path / "lib"
    code, out, _ = run(capsys, "--corpus", str(corpus), "ocr", str(pdf), "--engine", "deepseek", "--gpu", "H100")
    assert code == 0
    assert "GPU: " in out and " on H100 for 5 page(s)" in out and "$" in out
    manifest = json.loads((corpus / "stats" / "manifest.json").read_text())
    extras = [p["extra"] for p in manifest["pages"]]
    assert all(e["gpu"] == "H100" and e["gpu_seconds"] > 0 and e["cost_usd"] > 0 for e in extras)
    assert deployed.instances[0].gpu == "H100"
    assert (corpus / "stats" / "pages" / "page_0002.raw.mmd").read_text().startswith("<|ref|>")

    code, out, _ = run(
        capsys, "--corpus", str(corpus), "--json", "ocr", str(pdf), "--engine", "deepseek", "--redo", "--pages", "2"
    )
    assert json.loads(out)["gpu"]["pages"] == 1


def test_estimate_prints_pages_gpu_seconds_and_dollars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = marked_pdf(tmp_path / "book.pdf", 12)
    code, out, _ = run(
        capsys,
        "--corpus",
        str(tmp_path / "lib"),
        "--json",
        "ocr",
        str(pdf),
        "--engine",
        "deepseek",
        "--estimate",
        "--pages",
        "1-10",
    )
    est = json.loads(out)["estimate"]
    assert code == 0 and est["pages"] == 10 and est["gpu"] == "A100"
    assert est["gpu_seconds"] == pytest.approx(10 / 1.5, abs=0.1)
    assert est["compute_usd"] == pytest.approx(est["gpu_seconds"] * 0.000583, abs=1e-4)
    assert not (tmp_path / "lib").exists()  # an estimate touches nothing

    _, out, _ = run(
        capsys, "--json", "ocr", str(pdf), "--engine", "deepseek", "--estimate", "--gpu", "H100", "--gpu-price", "3.6"
    )
    est = json.loads(out)["estimate"]
    assert est["gpu"] == "H100" and est["usd_per_gpu_hour"] == 3.6 and est["pages"] == 12

    code, out, _ = run(capsys, "ocr", str(pdf), "--engine", "deepseek", "--estimate")
    assert code == 0 and "12 page(s)" in out and "GPU-s" in out and "$" in out


def test_the_estimate_plans_for_the_deployment_recorded_here(
    tmp_path: Path, deployed: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pdf = numbered_text_pdf(tmp_path / "book.pdf", 320, words=3)  # enough pages for 10 containers

    def estimate(*extra: str) -> dict[str, Any]:
        code, out, _ = run(capsys, "--json", "ocr", str(pdf), "--engine", "deepseek", "--estimate", *extra)
        assert code == 0
        return json.loads(out)["estimate"]

    first = estimate()
    assert (first["containers"], first["gpu"]) == (4, "A100") and "default deployment" in first["basis"]

    monkeypatch.setattr(client, "has_modal_credentials", lambda: True)
    monkeypatch.setattr(deepseek_deploy, "_run_subprocess", lambda argv, env: 0)
    assert run(capsys, "deploy", "--gpu", "H100", "--max-containers", "8")[0] == 0
    deployed_here = estimate()
    assert (deployed_here["containers"], deployed_here["gpu"]) == (8, "H100")
    assert "deployed from here" in deployed_here["basis"]
    assert deployed_here["wall_seconds"] < first["wall_seconds"]
    other_gpu = estimate("--gpu", "A100")
    assert other_gpu["gpu"] == "A100" and other_gpu["containers"] == 8 and "priced for --gpu A100" in other_gpu["basis"]

    # a run that reaches the class records what the class says it is (here: redeployed elsewhere on L40S)
    reported = {"gpu": "L40S", "max_containers": 6}
    monkeypatch.setattr(
        FakeModalRemote, "info", lambda self, timeout=None: {**LocalClass.info(self, timeout), **reported}
    )
    small = marked_pdf(tmp_path / "small.pdf", 2)
    assert run(capsys, "--corpus", str(tmp_path / "lib"), "ocr", str(small), "--engine", "deepseek")[0] == 0
    after_run = estimate()
    assert (after_run["containers"], after_run["gpu"]) == (6, "L40S") and "as the class reported" in after_run["basis"]
    code, out, _ = run(capsys, "ocr", str(pdf), "--engine", "deepseek", "--estimate")
    assert code == 0 and "planned for your deployment (6 x L40S" in out


def test_without_a_token_the_run_stops_before_touching_the_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(client, "has_modal_credentials", lambda: False)
    pdf = marked_pdf(tmp_path / "book.pdf", 2)
    corpus = tmp_path / "lib"
    code, _, err = run(capsys, "--corpus", str(corpus), "ocr", str(pdf), "--engine", "deepseek")
    assert code == 2 and "modal setup" in err
    assert tree_snapshot(corpus) == {}


class DeployedClassBody:
    """Replaces ModalRemote with the deployed class's own body (``ocr_backend.deepseek.modal_app.DeepseekOcr``),
    run in-process with Modal's ``.local()``, its enter hook included."""

    def __init__(self, app_name: str, class_name: str, gpu: str | None = None) -> None:
        from ocr_backend.deepseek import modal_app

        self.obj = modal_app.DeepseekOcr()
        self.obj._enter()  # Modal's .local() runs the enter hook only for sync methods

    def connect(self, network_check: Any = None) -> DeployedClassBody:
        return self

    def info(self, timeout: float) -> dict[str, Any]:
        return asyncio.run(self.obj.info.local())

    def ocr(self, images: list[bytes], options: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return asyncio.run(self.obj.ocr.local(list(images), options))


@pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
def test_a_gpu_class_whose_start_up_always_fails_stops_the_run_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ocr_backend.deepseek import modal_app

    def load_fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(modal_app, "build_async_llm", load_fails)
    monkeypatch.setattr(deepseek_engine, "ModalRemote", DeployedClassBody)
    monkeypatch.setenv("BOOKOCR_DEEPSEEK_STARTUP_TIMEOUT_S", "2")
    pdf = marked_pdf(tmp_path / "book.pdf", 3)
    corpus = tmp_path / "lib"
    start = time.monotonic()
    code, _, err = run(capsys, "--corpus", str(corpus), "ocr", str(pdf), "--engine", "deepseek")
    assert time.monotonic() - start < 2.0
    assert code == 2
    assert (
        "the GPU class failed to start" in err and "RuntimeError: CUDA out of memory" in err and "modal app logs" in err
    )
    assert tree_snapshot(corpus) == {}  # no book folder, no manifest


class CrashLoopingClass(FakeModalRemote):
    """What a caller sees when Modal keeps restarting a container that crashes at start-up:
    no answer, ever."""

    release = threading.Event()

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        self.release.wait()
        return super().info(timeout)


def test_a_gpu_class_that_never_comes_up_stops_the_run_within_its_deadline(
    tmp_path: Path, deployed: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(deepseek_engine, "ModalRemote", CrashLoopingClass)
    monkeypatch.setenv("BOOKOCR_DEEPSEEK_STARTUP_TIMEOUT_S", "1")
    pdf = marked_pdf(tmp_path / "book.pdf", 3)
    corpus = tmp_path / "lib"
    start = time.monotonic()
    try:
        code, _, err = run(capsys, "--corpus", str(corpus), "ocr", str(pdf), "--engine", "deepseek")
    finally:
        CrashLoopingClass.release.set()
    assert 1.0 <= time.monotonic() - start < 3.0
    assert code == 2 and "the GPU class failed to start: no answer within 1 s" in err
    assert tree_snapshot(corpus) == {}
    assert not deployed.instances[0].calls  # no page was sent


def test_deploy_runs_modal_deploy_with_the_choices(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(client, "has_modal_credentials", lambda: True)
    ran: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(deepseek_deploy, "_run_subprocess", lambda argv, env: ran.append((argv, env)) or 0)
    code, out, _ = run(capsys, "deploy", "--gpu", "H100", "--model", "deepseek-ai/DeepSeek-OCR-2")
    assert code == 0 and "deployed" in out
    (argv, env), (weights_argv, _) = ran
    assert weights_argv[-1] == "ocr_backend.deepseek.modal_app::download_weights"
    assert argv[-4:] == ["modal", "deploy", "-m", "ocr_backend.deepseek.modal_app"]
    assert env["BOOKOCR_GPU"] == "H100" and env["BOOKOCR_DEEPSEEK_MODEL"] == "deepseek-ai/DeepSeek-OCR-2"


def test_deploy_without_a_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(client, "has_modal_credentials", lambda: False)
    code, _, err = run(capsys, "deploy")
    assert code == 2 and "modal setup" in err


def test_reclean_rebuilds_pages_from_raw_output_without_a_gpu(
    tmp_path: Path, deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def respond(number: int, extra: dict[str, Any]) -> tuple[str, str]:
        if number == 3:
            return "<|ref|>text<|/ref|><|det|>[[0, 0, 9, 9]]<|/det|>\n" + "loop " * 2000, "length"  # falls back
        figure = "<|ref|>image<|/ref|><|det|>[[100, 300, 600, 600]]<|/det|>\n \n\n" if number == 2 else ""
        return figure + respond_good(number, extra)[0], "stop"

    deployed.respond = staticmethod(respond)
    pdf = marked_pdf(tmp_path / "book.pdf", 4)
    corpus = tmp_path / "lib"
    assert run(capsys, "--corpus", str(corpus), "ocr", str(pdf), "--engine", "deepseek")[0] == 0
    pages = corpus / "book" / "pages"
    fallback_text = (pages / "page_0003.mmd").read_text()
    (pages / "page_0001.mmd").write_text("stale output of an older cleaner\n")

    code, out, _ = run(capsys, "--corpus", str(corpus), "--json", "reclean", "book", "--figures")
    report = json.loads(out)
    assert code == 0 and report["pages"] == 3 and report["changed"] >= 2 and report["figures"] == 1
    raw = (pages / "page_0001.raw.mmd").read_text()
    assert (pages / "page_0001.mmd").read_text() == clean(raw).markdown + "\n"
    assert (pages / "page_0002.mmd").read_text().startswith("![Figure 1](page_0002_fig1.jpg)")
    assert (pages / "page_0002_fig1.jpg").is_file()
    assert fallback_text == "fallback text for page 3\n"
    assert (pages / "page_0003.mmd").read_text() == fallback_text  # a fallback page is not DeepSeek's text
    assert "Page 1 says" in (corpus / "book" / "document.mmd").read_text()
