"""Fan-out across books (issue 14): the books of a library job stream their pages into one ``deepseek`` engine at
once, sharing its calls in flight; and the hedge of a page still in flight at a book's end (issue 12)."""

from __future__ import annotations

import _thread
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import modal.exception
import pymupdf
import pytest
from PIL import Image

from ocr_backend.deepseek.client import Cancel
from ocr_backend.engines.base import PageInput, PageResult
from ocr_backend.engines.deepseek import DeepseekEngine
from server.corpus import Corpus
from server.library import Library
from server.runner import RunOptions, ShelfProgress
from tests.deepseek_fakes import LocalClass, StubFallback, number_of, page_image

BOOKS = {"alpha": 1, "beta": 31, "gamma": 61}  # each book's pages carry numbers from here, so the class can tell them
PAGES = 12


def book_of(number: int) -> str:
    return next(name for name, first in sorted(BOOKS.items(), key=lambda kv: -kv[1]) if number >= first)


def numbered_pdf(path: Path, first: int, pages: int = PAGES) -> Path:
    """A PDF whose pages carry the number squares of ``first``, ``first + 1``... (see tests.deepseek_fakes)."""
    doc = pymupdf.open()
    for number in range(first, first + pages):
        page = doc.new_page(width=300, height=420)
        for i, digit in enumerate((number // 10, number % 10)):
            grey = (10 + 20 * digit) / 255
            page.draw_rect(pymupdf.Rect(30 * i, 0, 30 * (i + 1), 42), color=None, fill=(grey, grey, grey))
    doc.save(path)
    doc.close()
    return path


def shelf(folder: Path) -> Path:
    folder.mkdir()
    for name, first in BOOKS.items():
        numbered_pdf(folder / f"{name}.pdf", first)
    return folder


class Recorder(LocalClass):
    """The deployed class, each call taking a moment; records which books had pages in flight together."""

    def __init__(self, delay: float = 0.03, fatal_for: str | None = None, slow: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.delay = delay
        self.slow = slow  # pages that take ten times as long: a book's tail
        self.fatal_for = fatal_for
        self.lock = threading.Lock()
        self.active: list[int] = []
        self.peak = 0
        self.together: set[frozenset[str]] = set()
        self.entered: list[int] = []  # every page sent, as the call arrives

    def ocr(self, images: list[bytes], options: dict[str, Any], timeout: float | None = None) -> list[dict[str, Any]]:
        numbers = [number_of(Image.open(io.BytesIO(data))) for data in images]
        if self.fatal_for and any(book_of(n) == self.fatal_for for n in numbers):
            raise modal.exception.PermissionDeniedError("not for this book")
        with self.lock:
            self.entered.extend(numbers)
            self.active.extend(numbers)
            self.peak = max(self.peak, len(self.active))
            self.together.add(frozenset(book_of(n) for n in self.active))
        time.sleep(self.delay * (10 if set(numbers) & set(self.slow) else 1))
        with self.lock:
            for n in numbers:
                self.active.remove(n)
        return super().ocr(images, options, timeout)


def deepseek(remote: Any, **options: Any) -> DeepseekEngine:
    options = {"containers": 1, "inputs_per_container": 4, "sleep": lambda _: None, **options}
    return DeepseekEngine(remote=remote, fallback=StubFallback(), **options)


def library_with(engine: DeepseekEngine, monkeypatch: pytest.MonkeyPatch, root: Path) -> Library:
    made: list[DeepseekEngine] = []

    def create(name: str, **options: Any) -> DeepseekEngine:
        made.append(engine)
        return engine

    monkeypatch.setattr("server.library.create_engine", create)
    return Library(Corpus(root / "corpus"))


def stored(root: Path, book: str) -> list[str | None]:
    manifest = json.loads((root / "corpus" / book / "manifest.json").read_text())
    return [page["status"] if page else None for page in manifest["pages"]]


def pages_of(first: int, count: int = PAGES) -> list[PageInput]:
    return [PageInput(number=n, image=page_image(n)) for n in range(first, first + count)]


def test_two_streams_share_the_engine_s_slots_and_lose_nothing() -> None:
    remote = Recorder(slow=(PAGES, BOOKS["beta"] + PAGES - 1))  # each book's last page is long: the other's go past
    engine = deepseek(remote)
    results: dict[str, list[PageResult]] = {}

    def run(name: str) -> None:
        results[name] = list(engine.recognize_many(pages_of(BOOKS[name])))

    threads = [threading.Thread(target=run, args=(name,)) for name in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for name in ("alpha", "beta"):
        numbers = [r.number for r in results[name]]
        assert sorted(numbers) == list(range(BOOKS[name], BOOKS[name] + PAGES))  # none lost, none twice
        assert {r.status for r in results[name]} == {"ok"}
    assert frozenset({"alpha", "beta"}) in remote.together  # pages of both books in flight at once
    assert remote.peak <= engine.slots == 4  # within the slots the two streams share
    assert sorted(remote.pages) == list(range(1, 13)) + list(range(31, 43))  # each page sent once


def test_a_library_job_streams_several_books_at_once_through_one_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = Recorder(slow=(PAGES, BOOKS["beta"] + PAGES - 1))  # the next book starts while these are in flight
    engine = deepseek(remote)
    library = library_with(engine, monkeypatch, tmp_path)
    seen: list[tuple[str, int]] = []

    def progress(shelf: ShelfProgress) -> None:
        seen.extend((book, p.done) for book, p in list(shelf.running.items()))

    summary = library.ocr_many([shelf(tmp_path / "books")], RunOptions(engine="deepseek"), progress=progress)
    assert summary.exit_code == 0 and {b.book: b.state for b in summary.books} == dict.fromkeys(BOOKS, "complete")
    assert [b.done for b in summary.books] == [PAGES] * 3  # per-book progress: each book's own pages
    assert any(len(group) >= 2 for group in remote.together)  # two books' pages in flight at once
    assert remote.peak <= engine.slots
    assert sorted(remote.pages) == sorted(n for first in BOOKS.values() for n in range(first, first + PAGES))
    for name in BOOKS:
        assert stored(tmp_path, name) == ["ok"] * PAGES
        document = (tmp_path / "corpus" / name / "document.mmd").read_text()
        assert f"Page {BOOKS[name] + PAGES - 1} says" in document  # each book's own pages, in its document
    assert {book for book, _ in seen} == set(BOOKS)


def test_a_failing_book_does_not_stop_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = Recorder(fatal_for="beta")  # the class refuses beta's pages: its run stops with the reason
    engine = deepseek(remote)
    library = library_with(engine, monkeypatch, tmp_path)
    books = shelf(tmp_path / "books")
    corpus = Corpus(tmp_path / "corpus")
    with corpus.lock("gamma"):  # another run holds gamma
        summary = library.ocr_many([books], RunOptions(engine="deepseek"))
    states = {b.book: b.state for b in summary.books}
    assert states == {"alpha": "complete", "beta": "unreadable", "gamma": "locked"}  # beta stopped before a page
    assert "may not use" in next(b.error or "" for b in summary.books if b.book == "beta")
    assert stored(tmp_path, "alpha") == ["ok"] * PAGES and summary.exit_code == 2


def test_ctrl_c_stops_every_book_at_once_and_the_job_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = Recorder(delay=0.05)
    engine = deepseek(remote)
    library = library_with(engine, monkeypatch, tmp_path)
    books = shelf(tmp_path / "books")
    pressed = threading.Event()

    def progress(shelf: ShelfProgress) -> None:
        if shelf.done >= 5 and not pressed.is_set():
            pressed.set()
            _thread.interrupt_main()  # Ctrl-C reaches the job's main thread, not the book's

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        library.ocr_many([books], RunOptions(engine="deepseek"), progress=progress)
    assert time.monotonic() - start < 10
    time.sleep(0.05)  # a call that was being handed over as Ctrl-C came
    sent = len(remote.entered)
    time.sleep(0.3)
    assert len(remote.entered) == sent < 3 * PAGES  # nothing sent after Ctrl-C
    done = {
        name: {n for n, s in enumerate(stored(tmp_path, name), 1) if s} for name in BOOKS if stored_any(tmp_path, name)
    }

    again = Recorder(delay=0.0)
    library = library_with(deepseek(again), monkeypatch, tmp_path)
    summary = library.ocr_many([books], RunOptions(engine="deepseek"))
    assert summary.exit_code == 0 and all(stored(tmp_path, name) == ["ok"] * PAGES for name in BOOKS)
    redone = sorted(again.pages)
    expected = sorted(
        BOOKS[name] + n - 1 for name in BOOKS for n in range(1, PAGES + 1) if n not in done.get(name, set())
    )
    assert redone == expected  # only what was not done: nothing lost, nothing done twice


def stored_any(root: Path, book: str) -> bool:
    return (root / "corpus" / book / "manifest.json").exists()


class Cancellable(LocalClass):
    """A class whose calls can be cancelled: page 1's first call is stuck (a container behind), a second
    copy answers at once; records what was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[int] = []
        self.copies: dict[int, int] = {}
        self.lock = threading.Lock()

    def ocr(
        self, images: list[bytes], options: dict[str, Any], timeout: float | None = None, cancel: Cancel | None = None
    ) -> list[dict[str, Any]]:
        [number] = [number_of(Image.open(io.BytesIO(data))) for data in images]
        with self.lock:
            self.copies[number] = self.copies.get(number, 0) + 1
            first = self.copies[number] == 1
        if number == 1 and first:
            stopped = threading.Event()
            assert cancel is not None
            cancel.on_cancel(stopped.set)
            if stopped.wait(10):
                self.cancelled.append(number)
                raise modal.exception.InputCancellation("cancelled")
        return super().ocr(images, options, timeout)


def test_a_page_stuck_at_the_end_is_hedged_and_the_losing_call_cancelled() -> None:
    remote = Cancellable()
    engine = deepseek(remote, containers=2, inputs_per_container=2, hedge_after_s=0.2)
    start = time.monotonic()
    results = list(engine.recognize_many(pages_of(1, 6)))
    assert time.monotonic() - start < 5  # not the stuck call's 10 s
    assert sorted(r.number for r in results) == list(range(1, 7)) and {r.status for r in results} == {"ok"}
    assert remote.copies[1] == 2 and all(remote.copies[n] == 1 for n in range(2, 7))  # only the stuck page again
    deadline = time.monotonic() + 2
    while not remote.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert remote.cancelled == [1]  # its first call was cancelled on the class


def test_no_hedge_without_a_way_to_cancel() -> None:
    class Slow(LocalClass):
        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            if number_of(Image.open(io.BytesIO(images[0]))) == 1:
                time.sleep(0.6)
            return super().ocr(images, options, timeout)

    remote = Slow()
    engine = deepseek(remote, containers=2, inputs_per_container=2, hedge_after_s=0.1)
    assert sorted(r.number for r in engine.recognize_many(pages_of(1, 4))) == [1, 2, 3, 4]
    assert sorted(remote.pages) == [1, 2, 3, 4]  # a copy it could not cancel would only add load


def test_an_mcp_library_job_runs_its_books_at_once_through_one_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ocr_book(path=<folder>) on DeepSeek: the books' background jobs share one engine, started once, their
    pages in flight together; each book is done, every page sent once, and the engine closed at the end."""
    remote = Recorder(slow=(PAGES, BOOKS["beta"] + PAGES - 1))
    engine = deepseek(remote)
    starts: list[float] = []
    original_start = engine.start
    monkeypatch.setattr(engine, "start", lambda: (starts.append(time.monotonic()), original_start())[1])
    library = library_with(engine, monkeypatch, tmp_path)
    answer = library.start_many([shelf(tmp_path / "books")], RunOptions(engine="deepseek"))
    assert {b.book for b in answer.books} == set(BOOKS)
    deadline = time.monotonic() + 60
    while any(library.jobs.job(name).active for name in BOOKS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {name: library.jobs.job(name).state for name in BOOKS} == dict.fromkeys(BOOKS, "complete")
    assert any(len(group) >= 2 for group in remote.together)  # two books' pages in flight at once
    assert sorted(remote.pages) == sorted(n for first in BOOKS.values() for n in range(first, first + PAGES))
    for name in BOOKS:
        assert stored(tmp_path, name) == ["ok"] * PAGES
    assert len(starts) == 1  # one engine for the whole job
    assert engine._closed.is_set()  # closed with the last book


def test_an_mcp_library_job_whose_engine_cannot_start_ends_each_book_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocr_backend.errors import EngineError

    engine = deepseek(Recorder())
    attempts: list[int] = []

    def refuse() -> None:
        attempts.append(1)
        raise EngineError("the GPU class failed to start: out of memory")

    monkeypatch.setattr(engine, "start", refuse)
    library = library_with(engine, monkeypatch, tmp_path)
    library.start_many([shelf(tmp_path / "books")], RunOptions(engine="deepseek"))
    deadline = time.monotonic() + 30
    while any(library.jobs.job(name).active for name in BOOKS) and time.monotonic() < deadline:
        time.sleep(0.05)
    jobs = [library.jobs.job(name) for name in BOOKS]
    assert [job.state for job in jobs] == ["error"] * 3
    assert all("failed to start: out of memory" in (job.error or "") for job in jobs)
    assert len(attempts) == 1  # tried once, not once a book
    assert engine._closed.is_set()
