"""Book locks: a lock left by a dead process is taken over with a note; waiting for a lock is bounded;
the job manager's own waits end when it shuts down."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ocr_backend.errors import BookLockedError
from server import cli, locks
from server.corpus import Corpus
from server.jobs import JobManager
from server.runner import Progress, RunPlan
from tests.conftest import numbered_text_pdf


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock_file(corpus: Corpus, book: str, text: str) -> Path:
    path = corpus.root / ".locks" / f"{book}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(
    corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    pid = dead_pid()
    write_lock_file(corpus, "book", f"pid {pid} on {socket.gethostname()}")
    assert not corpus.is_locked("book")
    with caplog.at_level(logging.WARNING, logger="bookocr.corpus"), corpus.lock("book"):
        assert corpus.is_locked("book")
    assert f"took over the lock of book book left by pid {pid}, which is no longer running" in caplog.text


def test_a_lock_held_by_a_process_that_is_not_the_named_run_is_replaced(
    corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    """The run named in the file is gone, but a process that inherited its open lock file lives on."""
    path = write_lock_file(corpus, "book", "")
    pid = dead_pid()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time\n"
                f"f = open({str(path)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                f"f.truncate(0); f.write('pid {pid}'); f.flush()\n"
                "print('locked', flush=True); time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert not corpus.is_locked("book"), "a lock whose named holder is dead does not block"
        with caplog.at_level(logging.WARNING, logger="bookocr.corpus"), corpus.lock("book"):
            assert corpus.is_locked("book")
            with pytest.raises(BookLockedError, match="another run"):
                with corpus.lock("book"):
                    pass
        assert f"left by pid {pid}, which is no longer running" in caplog.text
    finally:
        holder.kill()
        holder.wait()


def test_a_live_lock_is_never_taken_over(corpus: Corpus) -> None:
    write_lock_file(corpus, "other-host", f"pid {dead_pid()} on not-{socket.gethostname()}")
    with corpus.lock("book"), pytest.raises(BookLockedError, match=r"another run \(pid \d+ on "):
        with corpus.lock("book"):
            pass
    with corpus.lock("other-host"):  # a flock that is free is taken whatever the file says
        pass


def test_waiting_for_a_lock_is_bounded(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    with corpus.lock("book"):
        started = time.monotonic()
        with pytest.raises(BookLockedError, match=r"after waiting 0\.\d s"):
            with corpus.lock("book", wait=0.4):
                pass
        assert 0.4 <= time.monotonic() - started < 2.0
        monkeypatch.setattr(locks, "LOCK_WAIT_S", 0.3)
        with pytest.raises(BookLockedError, match="still being written"):
            with corpus.lock("book", wait=True):
                pass


def test_a_wait_ends_when_the_other_run_does(corpus: Corpus) -> None:
    taken = threading.Event()

    def other_run() -> None:
        with corpus.lock("book"):
            taken.set()
            time.sleep(0.5)

    thread = threading.Thread(target=other_run)
    thread.start()
    taken.wait(5)
    with corpus.lock("book", wait=10):
        pass
    thread.join(5)


def test_cli_max_wait(tmp_path: Path, corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = numbered_text_pdf(tmp_path / "waited.pdf", 1)
    with corpus.lock("waited"):
        started = time.monotonic()
        code = cli.main(["--corpus", str(corpus.root), "ocr", str(pdf), "--engine", "text-layer", "--max-wait", "0.5"])
        assert code == 2 and 0.5 <= time.monotonic() - started < 5
    assert "still being written by another run" in capsys.readouterr().err
    assert cli.main(["--corpus", str(corpus.root), "ocr", str(pdf), "--engine", "text-layer", "--wait"]) == 0


def test_a_queued_job_and_a_stuck_job_do_not_hold_up_shutdown(tmp_path: Path, corpus: Corpus) -> None:
    """One slot: the first job hangs in its 'engine', the second waits for the slot. Shutdown returns
    within its deadline, says a job is stuck, and the queued job ends as cancelled."""
    release = threading.Event()

    def stuck_run(corpus: Corpus, plan: RunPlan, progress, listeners, cancel: threading.Event) -> Progress:
        release.wait(30)  # a page in an engine that does not look at cancel
        plan.close()
        return Progress(book=plan.book, total=1, state="cancelled")

    jobs = JobManager(corpus, run=stuck_run)
    first = jobs.start(numbered_text_pdf(tmp_path / "first.pdf", 1))
    second = jobs.start(numbered_text_pdf(tmp_path / "second.pdf", 1))
    time.sleep(0.2)
    assert (jobs.job(first).state, jobs.job(second).state) == ("running", "queued")
    started = time.monotonic()
    assert jobs.shutdown(timeout=1.0) is False
    assert time.monotonic() - started < 2.0
    assert jobs.job(second).state == "cancelled"
    assert jobs.shutdown(timeout=1.0) is False and time.monotonic() - started < 2.5, (
        "a second call keeps the first deadline"
    )
    with pytest.raises(Exception, match="shutting down"):
        jobs.start(numbered_text_pdf(tmp_path / "third.pdf", 1))
    release.set()
    jobs.job(first).thread.join(5)
    assert not jobs.job(first).thread.is_alive()


def test_asking_again_while_a_job_runs_still_checks_the_arguments(tmp_path: Path, corpus: Corpus) -> None:
    """A second ocr_book on a running book used to return success and ignore what it would refuse."""
    from ocr_backend.errors import EngineError
    from server.runner import RunOptions

    release = threading.Event()

    def slow_run(corpus: Corpus, plan: RunPlan, progress, listeners, cancel: threading.Event) -> Progress:
        release.wait(30)
        plan.close()
        return Progress(book=plan.book, total=1, state="complete")

    jobs = JobManager(corpus, run=slow_run)
    pdf = numbered_text_pdf(tmp_path / "busy.pdf", 2)
    book = jobs.start(pdf)
    try:
        with pytest.raises(EngineError, match="unknown engine"):
            jobs.start(pdf, RunOptions(engine="../../x"))
        with pytest.raises(EngineError, match="has no option"):
            jobs.start(pdf, RunOptions(engine="local", engine_options={"gpu": "H100"}))
        assert jobs.start(pdf) == book  # the same request again: reported on, not started twice
    finally:
        release.set()
        jobs.job(book).thread.join(5)
