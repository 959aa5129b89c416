"""A run where no page has finished for a long time says so: on the CLI's bar and in book_status."""

from __future__ import annotations

import functools
import io
import re
import threading
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from ocr_backend.engines import PageInput, PageResult
from ocr_backend.engines.text_layer import TextLayerEngine
from server import runner
from server.corpus import Corpus
from server.jobs import JobManager
from server.library import Library
from server.mcp_server import create_server
from server.progress import ProgressBar, progress_line
from server.runner import Progress, run_plan
from server.safety import InputPolicy
from tests.conftest import numbered_text_pdf


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_says_when_a_run_is_stalled_without_a_new_page(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    bar = ProgressBar(terminal, tick=0.05)
    progress = Progress(book="slow", total=4, done=1)
    bar(progress)
    assert "1/4 pages" in terminal.getvalue() and "stalled" not in terminal.getvalue()
    monkeypatch.setattr(runner, "STALL_AFTER_S", 0.2)
    time.sleep(0.5)  # no page event: the bar redraws on its own
    bar.close()
    line = terminal.getvalue().rsplit("\r", 1)[-1]
    assert "slow [#######" in line and re.search(r"stalled: no page finished for [\d.]+ s", line), line
    assert "Ctrl-C stops it, a re-run resumes" in line
    assert bar._ticker is not None and not bar._ticker.is_alive(), "close stops the ticker"


def test_the_bar_stays_quiet_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar(Progress(book="b", total=2))
    bar.close()
    assert stream.getvalue() == "" and bar._ticker is None


def test_stall_minutes() -> None:
    progress = Progress(book="b", total=3, done=1)
    progress.last_page_at -= 200
    assert progress.stalled_for is not None
    assert "stalled: no page finished for 3 min" in progress_line(progress)
    progress.page_finished(2)
    assert progress.stalled_for is None and "ETA" in progress_line(progress)


class GateEngine(TextLayerEngine):
    """Page 2 waits until the test opens the gate."""

    name = ""  # not registered

    def __init__(self) -> None:
        self.gate = threading.Event()

    def recognize(self, page: PageInput) -> PageResult:
        if page.number == 2:
            self.gate.wait(30)
        return super().recognize(page)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_book_status_reports_a_stalled_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    pdf = numbered_text_pdf(books / "gated.pdf", 3)
    corpus = Corpus(tmp_path / "corpus")
    engine = GateEngine()
    jobs = JobManager(corpus, run=functools.partial(run_plan, engine=engine))
    monkeypatch.setattr(runner, "STALL_AFTER_S", 0.3)
    async with Client(create_server(Library(corpus, jobs), InputPolicy(roots=[books]), wait_s=0.1)) as c:
        try:
            await c.call_tool("ocr_book", {"path": str(pdf)})
            await anyio.sleep(0.8)
            status = (await c.call_tool("book_status", {"book": "gated"})).structured_content
            assert status["state"] == "running" and status["detail"] == "stalled", status
            assert status["stalled_s"] >= 0.3 and status["done"] == 1
            assert (
                "stalled: no page has finished for" in status["message"] and "book_status('gated')" in status["message"]
            )
            engine.gate.set()
            deadline = time.monotonic() + 30
            while status["state"] == "running":
                assert time.monotonic() < deadline, status
                await anyio.sleep(0.1)
                status = (await c.call_tool("book_status", {"book": "gated"})).structured_content
            assert status["state"] == "complete" and status["detail"] is None, status
        finally:
            engine.gate.set()
