"""The worker-process pool: a page that hangs or kills its worker becomes a failed page with the reason,
never a hung run; a worker that cannot start is an error with the reason, within a deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocr_backend.errors import EngineError
from ocr_backend.workers import MIN_PAGE_TIMEOUT_S, PAGE_TIMEOUT_MEDIANS, WorkerPool, WorkerSpec
from server.corpus import Corpus
from server.runner import RunOptions, ocr_book
from tests.conftest import numbered_text_pdf
from tests.pool_engines import ScriptedPoolEngine


def run_book(corpus: Corpus, pdf: Path, engine: ScriptedPoolEngine, seen: list[int] | None = None):
    listeners = [lambda book, result: seen.append(result.number)] if seen is not None else []
    try:
        return ocr_book(corpus, pdf, RunOptions(engine="local"), engine=engine, listeners=listeners)
    finally:
        engine.close()


def manifest_pages(corpus: Corpus, book: str) -> list[dict]:
    return json.loads((corpus.root / book / "manifest.json").read_text())["pages"]


def test_a_page_that_hangs_fails_as_timed_out_and_the_run_goes_on(corpus: Corpus, tmp_path: Path) -> None:
    pdf = numbered_text_pdf(tmp_path / "hang.pdf", 6)
    seen: list[int] = []
    start = time.monotonic()
    state = run_book(corpus, pdf, ScriptedPoolEngine(hang=[3], page_timeout=1.5), seen)
    assert time.monotonic() - start < 30
    assert state.state == "complete" and state.failed == 1 and state.done == 6
    assert sorted(seen) == [1, 2, 3, 4, 5, 6]  # every page reported once
    pages = manifest_pages(corpus, "hang")
    assert pages[2]["status"] == "failed" and pages[2]["reason"].startswith("timed out"), pages[2]
    assert "tried 2 times" in pages[2]["reason"]
    assert [p["status"] for i, p in enumerate(pages) if i != 2] == ["ok"] * 5
    document = (corpus.root / "hang" / "document.mmd").read_text()
    assert [document.count(f"<!-- page {n}") for n in range(1, 7)] == [1] * 6
    assert "page 5 read in a worker" in (corpus.root / "hang" / "pages" / "page_0005.mmd").read_text()

    seen.clear()
    again = run_book(corpus, pdf, ScriptedPoolEngine(), seen)  # the re-run redoes only the failed page
    assert seen == [3] and again.skipped == 5
    assert manifest_pages(corpus, "hang")[2]["status"] == "ok"


def test_a_worker_killed_mid_page_is_replaced_and_the_page_retried(corpus: Corpus, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    pdf = numbered_text_pdf(tmp_path / "crash.pdf", 5)
    seen: list[int] = []
    state = run_book(corpus, pdf, ScriptedPoolEngine(crash_once=[2], marks=str(marks)), seen)
    assert state.state == "complete" and state.failed == 0
    assert sorted(seen) == [1, 2, 3, 4, 5]  # nothing lost, nothing twice
    tries = sorted(p.name for p in marks.glob("2.*"))
    assert len(tries) == 2 and tries[0] != tries[1]  # the retry ran in a fresh process
    assert all(p["status"] == "ok" for p in manifest_pages(corpus, "crash"))
    assert "page 2 read in a worker" in (corpus.root / "crash" / "pages" / "page_0002.mmd").read_text()


def test_a_page_that_always_kills_its_worker_fails_with_the_reason(corpus: Corpus, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    pdf = numbered_text_pdf(tmp_path / "poison.pdf", 4)
    state = run_book(corpus, pdf, ScriptedPoolEngine(crash_always=[4], marks=str(marks)))
    assert state.failed == 1
    page = manifest_pages(corpus, "poison")[3]
    assert page["status"] == "failed" and "killed by SIGKILL" in page["reason"] and "tried 2 times" in page["reason"]


@pytest.mark.parametrize(
    ("factory", "expected"),
    [("failing_reader", "the models are not here"), ("hanging_reader", "did not start within 1 s")],
)
def test_a_worker_that_cannot_start_stops_the_run_before_the_corpus_is_touched(
    corpus: Corpus, tmp_path: Path, factory: str, expected: str
) -> None:
    pdf = numbered_text_pdf(tmp_path / "nostart.pdf", 3)
    engine = ScriptedPoolEngine(factory=f"tests.pool_engines:{factory}", start_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(EngineError, match=expected):
        run_book(corpus, pdf, engine)
    assert time.monotonic() - start < 20
    assert not (corpus.root / "nostart").exists()


def test_closing_the_engine_ends_its_workers(tmp_path: Path) -> None:
    engine = ScriptedPoolEngine()
    engine.start()
    pids = [w.process.pid for w in engine.pool().workers]
    engine.close()
    assert pids and not any(_alive(pid) for pid in pids)


def test_workers_die_with_their_parent_even_when_it_is_killed(tmp_path: Path) -> None:
    script = (
        "from tests.pool_engines import ScriptedPoolEngine\n"
        "import time, sys\n"
        "e = ScriptedPoolEngine(); e.start()\n"
        "print(' '.join(str(w.process.pid) for w in e.pool().workers), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]  # type: ignore[union-attr]
        assert pids
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids)
    finally:
        parent.kill()


def test_page_deadline_follows_the_median_page_time_with_a_floor() -> None:
    pool = WorkerPool(WorkerSpec("tests.pool_engines:ScriptedReader"), 1, ScriptedPoolEngine())
    assert pool.page_timeout() == MIN_PAGE_TIMEOUT_S
    pool.page_seconds.extend([0.5, 0.4, 0.6])
    assert pool.page_timeout() == MIN_PAGE_TIMEOUT_S
    pool.page_seconds.extend([40.0] * 5)
    assert pool.page_timeout() == PAGE_TIMEOUT_MEDIANS * 40.0
    assert WorkerPool(WorkerSpec("x:y"), 1, ScriptedPoolEngine(), page_timeout=7.0).page_timeout() == 7.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_pages_one_at_a_time_from_short_lived_threads_share_the_workers(tmp_path: Path) -> None:
    """DeepSeek's CPU fallback calls from threads that come and go: the workers started by the first
    thread must outlive it (Linux's parent-death signal follows the thread that started a process)."""
    import threading

    from PIL import Image

    from ocr_backend.engines.base import PageInput

    engine = ScriptedPoolEngine()
    results: list = []

    def read(number: int) -> None:
        results.append(engine.recognize_one(PageInput(number=number, image=Image.new("L", (40, 40), 255))))

    try:
        first = threading.Thread(target=read, args=(1,))
        first.start()
        first.join(30)
        pids = {w.process.pid for w in engine.pool().workers}
        threads = [threading.Thread(target=read, args=(n,)) for n in (2, 3, 4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(r.number for r in results) == [1, 2, 3, 4]
        assert all(r.status == "ok" and r.markdown == f"page {r.number} read in a worker" for r in results)
        assert {w.process.pid for w in engine.pool().workers} == pids and all(_alive(pid) for pid in pids)
    finally:
        engine.close()
