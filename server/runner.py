"""The job runner: validate a source, then render ahead in a worker while the engine OCRs.

Only pages that are missing or failed are done, so an interrupted run resumes
where it stopped and a finished book costs nothing to re-run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocr_backend.engines import OcrEngine, PageInput, PageResult, create_engine, engine_class
from ocr_backend.errors import BookOcrError, InputError, PageRangeError, RenderTimeoutError
from ocr_backend.render import RenderSettings
from ocr_backend.sources import IMAGE_SUFFIXES, OpenCheck, Source, SourceInfo, open_source
from server.corpus import Book, Corpus, check_book_id, slugify
from server.labels import book_labels
from server.search import index_listener, sync_book_quietly

logger = logging.getLogger(__name__)

RENDER_AHEAD = 6  # pages the render worker may prepare before the engine takes them
RENDER_TIMEOUT_S = 300.0  # a page that takes longer than this to render (normally < 0.1 s) stops the run
STALL_AFTER_S = 180.0  # a run with no page finished for this long is reported as stalled


@dataclass
class RunOptions:
    book: str | None = None
    engine: str = "auto"
    pages: str | None = None  # "1-20,35"
    render: RenderSettings = field(default_factory=RenderSettings)
    replace: bool = False
    redo: bool = False  # redo the selected pages even if done (e.g. with a better engine)
    wait_for_lock: bool | float = False  # True: up to LOCK_WAIT_S; a number: that many seconds
    engine_options: dict[str, Any] = field(default_factory=dict)
    search_index: bool = True  # index each page for search as it lands (CORPUS/index.sqlite)
    open_check: OpenCheck | None = None  # checks every source file as it is opened (the MCP server's folders)


class Pace:
    """Elapsed time, pages per second and time left, for anything with ``started``, ``done`` and ``total``."""

    started: float
    done: int
    total: int

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 and self.done else 0.0

    @property
    def eta(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / self.rate if self.rate else None


@dataclass
class Progress(Pace):
    book: str
    total: int  # pages this run will do
    done: int = 0
    failed: int = 0
    fallback: int = 0
    skipped: int = 0  # already done by an earlier run
    page_count: int = 0
    engine: str = ""
    state: str = "running"
    started: float = field(default_factory=time.monotonic)
    last_page: int | None = None
    last_page_at: float = field(default_factory=time.monotonic)  # when a page last finished (or the run began)

    def page_finished(self, number: int) -> None:
        self.last_page = number
        self.last_page_at = time.monotonic()

    @property
    def stalled_for(self) -> float | None:
        """Seconds since a page last finished, when that is over ``STALL_AFTER_S`` and the run is still going."""
        quiet = time.monotonic() - self.last_page_at
        return quiet if self.state == "running" and quiet >= STALL_AFTER_S and self.done < self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "book": self.book,
            "state": self.state,
            "engine": self.engine,
            "pages_total": self.page_count,
            "run_pages": self.total,
            "run_done": self.done,
            "failed": self.failed,
            "fallback": self.fallback,
            "skipped": self.skipped,
            "elapsed_s": round(self.elapsed, 3),
            "pages_per_s": round(self.rate, 3),
            "eta_s": None if self.eta is None else round(self.eta, 1),
        }


ProgressFn = Callable[[Progress], None]
PageListener = Callable[[Book, PageResult], None]


def parse_pages(spec: str | None, page_count: int) -> list[int]:
    """Parse ``"1-20,35"`` into page numbers, checked against the book's range."""
    if spec is None or not str(spec).strip():
        return list(range(1, page_count + 1))
    numbers: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo_text, hi_text = part.split("-", 1)
                lo, hi = int(lo_text), int(hi_text)
            else:
                lo = hi = int(part)
        except ValueError:
            raise PageRangeError(f"bad page range {part!r}: use numbers and ranges like 1-20,35") from None
        if lo < 1 or hi > page_count or lo > hi:
            raise PageRangeError(f"page range {part!r} is outside 1-{page_count}")
        numbers.update(range(lo, hi + 1))
    return sorted(numbers)


def book_id_for(path: str | Path, explicit: str | None) -> str:
    if explicit:
        return check_book_id(explicit)
    try:
        return slugify(Path(path).expanduser().resolve().name)
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError before Python 3.13, OSError after
        raise InputError(f"{path}: cannot be resolved ({exc}); is it a symbolic link that points to itself?") from None


@dataclass
class RunPlan:
    """A checked OCR request: the source (open, hashed once), the book id, the pages asked for, and the
    engine with its checked options. Made by :func:`plan_run`; run once by :func:`run_plan`."""

    book: str
    source: Source
    pages: list[int]
    options: RunOptions

    @property
    def info(self) -> SourceInfo:
        return self.source.info

    def close(self) -> None:
        self.source.close()


def plan_run(corpus: Corpus, path: str | Path, options: RunOptions | None = None) -> RunPlan:
    """Check an OCR request without writing anything: the engine and its options, the book id, the file,
    the pages, and that the id does not hold another file. Raises :class:`BookOcrError` saying what to fix."""
    options = options or RunOptions()
    engine_options = engine_class(options.engine).check_options(options.engine_options)
    book_id = book_id_for(path, options.book)
    source = open_source(path, options.open_check)
    try:
        pages = parse_pages(options.pages, source.info.page_count)
        corpus.existing_book(book_id, source.info, options.replace)  # raises if the id holds another file
    except BaseException:
        source.close()
        raise
    return RunPlan(book_id, source, pages, dataclasses.replace(options, book=book_id, engine_options=engine_options))


def pages_to_do(corpus: Corpus, plan: RunPlan, retry_failed: bool = True) -> list[int]:
    """The planned pages not done yet (``retry_failed=False``: failed ones count as done); a done page whose
    file is missing or not the one written is not done."""
    book = None if plan.options.redo else corpus.existing_book(plan.book, plan.info, plan.options.replace)
    if book is None:
        return list(plan.pages)
    finished = ("ok", "fallback") if retry_failed else ("ok", "fallback", "failed")
    return [n for n in plan.pages if book.page(n).status not in finished or book.page_damage(n)]


def ocr_book(
    corpus: Corpus,
    path: str | Path,
    options: RunOptions | None = None,
    progress: ProgressFn | None = None,
    engine: OcrEngine | None = None,
    listeners: list[PageListener] | None = None,
    cancel: threading.Event | None = None,
) -> Progress:
    """OCR a book into the corpus (or resume it): :func:`plan_run`, then :func:`run_plan`."""
    return run_plan(corpus, plan_run(corpus, path, options), progress, engine, listeners, cancel)


def run_plan(
    corpus: Corpus,
    plan: RunPlan,
    progress: ProgressFn | None = None,
    engine: OcrEngine | None = None,
    listeners: list[PageListener] | None = None,
    cancel: threading.Event | None = None,
    engine_started: bool = False,
) -> Progress:
    """Run a plan (and close its source). ``engine`` replaces the one the plan names (tests, benchmarks, a
    library job sharing one engine across its books: ``engine_started`` says it is up already)."""
    options = plan.options
    own_engine = False
    try:
        # The engine comes up before the corpus is touched (the lock included): a missing account,
        # network or deployment leaves no trace. The manifest is read again under the lock.
        if pages_to_do(corpus, plan):
            engine, own_engine = engine or _make_engine(corpus, plan), engine is None
            if own_engine or not engine_started:
                engine.start()
        with corpus.lock(plan.book, wait=options.wait_for_lock):
            todo = pages_to_do(corpus, plan)
            if todo and engine is None:  # another run changed the book while we waited for the lock
                engine, own_engine = _make_engine(corpus, plan), True
                engine.start()
            return _run_book(
                corpus, plan.book, plan.source, plan.pages, todo, engine, options, progress, listeners or [], cancel
            )
    finally:
        if own_engine and engine is not None:
            engine.close()
        plan.close()


def _make_engine(corpus: Corpus, plan: RunPlan) -> OcrEngine:
    return create_engine(
        plan.options.engine, pages_dir=corpus.root / plan.book / "pages", **plan.options.engine_options
    )


def _run_book(
    corpus: Corpus,
    book_id: str,
    source: Source,
    pages: list[int],
    todo: list[int],
    engine: OcrEngine | None,
    options: RunOptions,
    progress: ProgressFn | None,
    listeners: list[PageListener],
    cancel: threading.Event | None,
) -> Progress:
    book = corpus.prepare_book(book_id, source.info, options.engine, replace=options.replace)
    if options.search_index:
        sync_book_quietly(corpus, book)  # pages done before indexing existed, or a replaced book
        listeners = [index_listener(corpus), *listeners]  # indexed before others hear of the page
    state = Progress(
        book=book_id, total=len(todo), skipped=len(pages) - len(todo), page_count=book.page_count, engine=options.engine
    )
    if not todo or engine is None:
        state.state = "complete"
        if refresh_labels(book, source) or not book.document_is_current():
            book.write_document()
    else:
        try:
            _run(book, source, engine, todo, options.render, state, progress, listeners, cancel)
        finally:
            book.flush()
            refresh_labels(book, source)
            book.write_document()
        state.state = "cancelled" if cancel is not None and cancel.is_set() else "complete"
    if progress:
        progress(state)
    return state


def refresh_labels(book: Book, source: Source) -> bool:
    """Recompute the printed page labels of the whole book and keep the PDF's outline.

    Labels are fitted over every stored page (one page alone cannot tell a misread number
    from a restart). Never raises: a failure here must not cost the run its pages.
    Returns whether the manifest changed.
    """
    try:
        pages = [
            (record.furniture if record else [], book.read_page(number).markdown if record else "")
            for number, record in enumerate(book.pages, start=1)
        ]
        labels = book_labels(source.page_labels(), pages)
        changed = book.set_labels([(found.label, found.source) if found else None for found in labels])
        changed |= book.set_outline(source.outline())
        book.flush()
        return changed
    except Exception:  # pragma: no cover - a bug here must not lose the OCR'd pages
        logger.exception("could not compute the printed page labels of book %s", book.id)
        return False


def _run(
    book: Book,
    source: Source,
    engine: OcrEngine,
    todo: list[int],
    settings: RenderSettings,
    state: Progress,
    progress: ProgressFn | None,
    listeners: list[PageListener],
    cancel: threading.Event | None,
) -> None:
    stop = threading.Event()
    prepared: dict[int, PageInput] = {}
    pages = _render_ahead(source, engine, todo, settings, stop, prepared, cancel)
    if progress:
        progress(state)
    try:
        for result in engine.recognize_many(pages):
            page = prepared.pop(result.number, None)
            book.record(result, page.render if page else None, page.render_seconds if page else 0.0)
            state.done += 1
            state.failed += result.status == "failed"
            state.fallback += result.status == "fallback"
            state.page_finished(result.number)
            for listener in listeners:
                listener(book, result)
            if progress:
                progress(state)
            if cancel is not None and cancel.is_set():
                break
    finally:
        stop.set()


def _render_ahead(
    source: Source,
    engine: OcrEngine,
    todo: list[int],
    settings: RenderSettings,
    stop: threading.Event,
    prepared: dict[int, PageInput],
    cancel: threading.Event | None = None,
) -> Iterator[PageInput]:
    """Yield pages prepared by a worker thread that runs up to RENDER_AHEAD pages ahead."""
    ready: queue.Queue[PageInput | None | BaseException] = queue.Queue(maxsize=RENDER_AHEAD)

    def put(item: PageInput | None | BaseException) -> bool:
        while not stop.is_set() and not (cancel is not None and cancel.is_set()):
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for number in todo:
                if not put(_prepare(source, engine, number, settings)):
                    return
            put(None)
        except BaseException as exc:  # surfaced in the consumer
            put(exc)

    thread = threading.Thread(target=worker, name="bookocr-render", daemon=True)
    thread.start()
    try:
        while True:
            item = _next_prepared(ready, thread, cancel)
            if item is None or (cancel is not None and cancel.is_set()):
                return
            if isinstance(item, BaseException):
                raise item
            prepared[item.number] = item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _next_prepared(
    ready: queue.Queue[PageInput | None | BaseException], thread: threading.Thread, cancel: threading.Event | None
) -> PageInput | None | BaseException:
    """The render worker's next item; None once it has ended or the run is cancelled.
    Never waits past RENDER_TIMEOUT_S."""
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while True:
        try:
            return ready.get(timeout=0.1)
        except queue.Empty:
            if (cancel is not None and cancel.is_set()) or not thread.is_alive() and ready.empty():
                return None
            if time.monotonic() > deadline:
                raise RenderTimeoutError(
                    f"a page took more than {RENDER_TIMEOUT_S:.0f} s to render, so the run stopped; pages done so far "
                    "are kept, and running the same command again resumes (leave a broken page out with --pages)"
                ) from None


def _prepare(source: Source, engine: OcrEngine, number: int, settings: RenderSettings) -> PageInput:
    start = time.perf_counter()
    page = PageInput(number=number)
    try:
        page.text_layer = source.text_layer(number)
        if engine.needs_image(page):
            page.image, page.render = source.render(number, settings)
    except Exception as exc:  # a broken page fails alone; the book goes on
        page.error = f"could not render page {number}: {type(exc).__name__}: {exc}"
    page.render_seconds = time.perf_counter() - start
    return page


# --- library jobs: many books in one run ------------------------------------------------------------------
@dataclass(frozen=True)
class ShelfEntry:
    """One source of a library job and the book id it gets."""

    book: str
    path: Path
    renamed_from: str | None = None  # the id its file name gives, already taken by an earlier path


def is_library_folder(path: str | Path) -> bool:
    """A folder with no page images of its own that holds PDFs (at any depth) is a library: each PDF is a
    book. A folder with page images is one book's pages."""
    folder = Path(path)
    if not folder.is_dir():
        return False
    if any(f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") for f in folder.iterdir()):
        return False
    return bool(find_pdfs(folder))


def find_pdfs(folder: Path) -> list[Path]:
    """Every PDF under ``folder``, hidden files and folders left out; links to folders are not followed."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f) for f in files if f.lower().endswith(".pdf") and not f.startswith(".")]
    return found


def shelf_entries(paths: list[str | Path]) -> list[ShelfEntry]:
    """The books of a library job: folders expanded to their PDFs, each file once, in sorted path order.

    The id is the file name's slug; where two files give the same id, the first in sorted path order keeps
    it and the others get ``ID-2``, ``ID-3``... (skipping ids another file's name gives), so the same files
    always get the same ids."""
    files: set[Path] = set()
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            if not is_library_folder(p):
                raise InputError(f"{p}: the folder holds no PDFs (a folder of page images is one book: OCR it alone)")
            files.update(f.absolute() for f in find_pdfs(p))
        else:
            files.add(p.absolute())
    ordered = sorted(files, key=str)
    bases = [book_id_for(f, None) for f in ordered]
    taken = set(bases)
    owner: dict[str, Path] = {}
    entries = []
    for path, base in zip(ordered, bases):
        if base not in owner:
            owner[base] = path
            entries.append(ShelfEntry(base, path))
            continue
        book = _free_id(base, taken)
        taken.add(book)
        entries.append(ShelfEntry(book, path, renamed_from=base))
    return entries


def _free_id(base: str, taken: set[str]) -> str:
    n = 2
    while True:
        suffix = f"-{n}"
        book = f"{base[: 100 - len(suffix)]}{suffix}"
        if book not in taken:
            return book
        n += 1


@dataclass
class ShelfBook:
    """One book of a library job and how it went. ``state``: pending | running | complete |
    complete-with-failures | incomplete | cancelled | unreadable (its file could not be opened) | locked
    (another run holds it) | error (the run stopped: ``error`` says why)."""

    book: str
    path: str
    state: str = "pending"
    pages: int = 0
    run_pages: int = 0  # pages this job has to do for the book
    done: int = 0  # of run_pages
    skipped: int = 0  # done by an earlier run
    failed: int = 0  # failed pages of the book after the job
    fallback: int = 0
    renamed_from: str | None = None
    error: str | None = None
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SHELF_PROBLEMS = ("unreadable", "locked", "error")


@dataclass
class ShelfProgress(Pace):
    """A library job as it goes: every book, and the one running now (``current``)."""

    books: list[ShelfBook]
    current: Progress | None = None  # the book that reported last (several run at once with some engines)
    state: str = "running"
    started: float = field(default_factory=time.monotonic)
    running: dict[str, Progress] = field(default_factory=dict)  # every book running now

    def book_ended(self, book: str) -> None:
        """``book`` stopped running: the bar follows another book still running, if any."""
        ended = self.running.pop(book, None)
        others = list(self.running.values())  # one copy: other books' threads change it as they go
        if ended is not None and self.current is ended and others:
            self.current = others[0]

    @property
    def total(self) -> int:
        return sum(b.run_pages for b in self.books)

    @property
    def done(self) -> int:
        return sum(b.done for b in self.books)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.books)

    @property
    def finished_books(self) -> int:
        return sum(b.state not in ("pending", "running") for b in self.books)

    @property
    def stalled_for(self) -> float | None:
        return self.current.stalled_for if self.current is not None and self.state == "running" else None


__all__ = ["RunOptions", "Progress", "ocr_book", "parse_pages", "book_id_for", "BookOcrError"]
