"""Background OCR jobs: one per book, each in its own thread, reporting progress as it goes.

:meth:`JobManager.start` validates the input at once (in the caller's thread), then
returns while a worker thread runs :func:`server.runner.ocr_book`. Calling it again
for the same book reports on the job instead of starting a second one; a book whose
pages are all done costs nothing. A run stopped part way resumes where it stopped,
because the runner only does pages that are not done yet.

Used by the MCP server; the CLI can use it too (``start`` then ``wait``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocr_backend.engines import PageResult, engine_classes
from ocr_backend.errors import BookOcrError, EngineError
from ocr_backend.sources import SourceInfo, open_source
from server.corpus import DONE_STATUSES, Book, BookConflictError, BookLockedError, Corpus, check_book_id
from server.runner import Progress, RunOptions, book_id_for, ocr_book, parse_pages

log = logging.getLogger("bookocr.jobs")

ACTIVE_STATES = ("queued", "running")
MAX_LISTED_PAGES = 50  # failed / flagged page lists are cut here to keep answers small
SHUTDOWN_S = 3.0  # how long shutdown waits for jobs to stop after their current page
SLOT_POLL_S = 0.5  # a queued job checks this often whether it was cancelled

RunFn = Callable[..., Progress]


@dataclass
class Job:
    """One background run over one book."""

    book: str
    source: SourceInfo
    options: RunOptions
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued | running | complete | cancelled | error | locked
    error: str | None = None
    progress: Progress | None = None
    live_book: Book | None = None  # the runner's own Book: fresher than manifest.json on disk
    started: float = field(default_factory=time.time)
    finished: float | None = None
    thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def on_progress(self, progress: Progress) -> None:
        self.progress = progress

    def on_page(self, book: Book, result: PageResult) -> None:
        self.live_book = book


class JobManager:
    """Runs OCR jobs in background threads, at most ``max_parallel`` at a time (others queue)."""

    def __init__(self, corpus: Corpus, max_parallel: int = 1, run: RunFn = ocr_book) -> None:
        self.corpus = corpus
        self._run = run
        self._jobs: dict[str, Job] = {}
        self._stored: dict[str, tuple[tuple[int, int, int], Book]] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_parallel)
        self._stop_by: float | None = None  # set by shutdown: no job starts after it

    # --- starting -------------------------------------------------------------------
    def start(self, path: str | Path, options: RunOptions | None = None, retry_failed: bool = False) -> str:
        """Validate the input and start (or resume) its OCR in the background; returns the book id.

        Raises :class:`BookOcrError` with a message to act on when the input cannot be used.
        Starts nothing when the book's job is already running, another process holds the
        book, or every requested page is done (or failed, unless ``retry_failed``).
        """
        options = options or RunOptions()
        book_id = book_id_for(path, options.book)
        job = self._jobs.get(book_id)
        if job is not None and job.active and job.source.path == str(Path(path).resolve()):
            return book_id  # asking again while it runs: no need to re-read (and hash) the file
        check_engine(options.engine)
        with open_source(path) as source:
            info = source.info
            pages = parse_pages(options.pages, info.page_count)
        self._check_same_source(book_id, info)
        with self._lock:
            if self._stop_by is not None:
                raise BookOcrError("the server is shutting down; call ocr_book again once it has restarted")
            job = self._jobs.get(book_id)
            if job is not None and job.active:
                return book_id
            if self.corpus.is_locked(book_id):
                if not self.corpus.has_book(book_id):
                    raise BookLockedError(f"another bookocr process is starting OCR of book {book_id!r}; call book_status('{book_id}') in a moment")
                return book_id  # status() reports it as running elsewhere
            if self._nothing_to_do(book_id, pages, retry_failed):
                return book_id
            job = Job(book=book_id, source=info, options=dataclasses.replace(options, book=book_id))
            job.thread = threading.Thread(target=self._work, args=(job, Path(path)), name=f"bookocr-job-{book_id}", daemon=True)
            self._jobs[book_id] = job
            job.thread.start()
        log.info("started OCR of %s as %r (%d pages, engine %s)", info.name, book_id, len(pages), options.engine)
        return book_id

    def _check_same_source(self, book_id: str, info: SourceInfo) -> None:
        """Refuse, before anything runs, to put a different file under an existing book id."""
        if not self.corpus.has_book(book_id):
            return
        old = self.corpus.book(book_id).manifest["source"]
        if old["sha256"] != info.sha256:
            raise BookConflictError(
                f"book {book_id!r} already holds {old['name']}, a different file from {info.name}; "
                f"pass another book id (book=...) to OCR this file as a new book"
            )

    def _nothing_to_do(self, book_id: str, pages: list[int], retry_failed: bool) -> bool:
        if not self.corpus.has_book(book_id):
            return False
        book = self.corpus.book(book_id)
        finished = DONE_STATUSES if retry_failed else (*DONE_STATUSES, "failed")
        return all(book.page_meta(n).get("status") in finished for n in pages)

    def _work(self, job: Job, path: Path) -> None:
        if not self._take_slot(job):
            self._finish(job, "cancelled")
            return
        job.state = "running"
        try:
            # ocr_book indexes each page for search as it lands; job.on_page only tracks progress
            result = self._run(self.corpus, path, job.options, progress=job.on_progress, listeners=[job.on_page], cancel=job.cancel)
            self._finish(job, result.state)
        except BookLockedError:
            self._finish(job, "locked")
        except BookOcrError as exc:
            self._finish(job, "error", str(exc))
        except Exception as exc:  # the job dies, the server does not
            log.exception("OCR job for %r crashed", job.book)
            self._finish(job, "error", f"{type(exc).__name__}: {exc}")
        finally:
            self._slots.release()

    def _take_slot(self, job: Job) -> bool:
        """Wait for a free slot; False if the job is cancelled first (a queued job must not hold up shutdown)."""
        while not job.cancel.is_set():
            if self._slots.acquire(timeout=SLOT_POLL_S):
                if not job.cancel.is_set():
                    return True
                self._slots.release()
        return False

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        log.info("OCR job %r ended: %s%s", job.book, state, f" ({error})" if error else "")

    # --- reading --------------------------------------------------------------------
    def job(self, book_id: str) -> Job | None:
        return self._jobs.get(book_id)

    def open_book(self, book_id: str) -> Book:
        """The book as readers should see it: the running job's live copy, else the stored one."""
        job = self._jobs.get(book_id)
        if job is not None and job.active and job.live_book is not None:
            return job.live_book
        return self.stored_book(book_id)

    def stored_book(self, book_id: str) -> Book:
        """The book as on disk, parsed once per manifest version: readers must not modify it."""
        check_book_id(book_id)
        try:
            st = (self.corpus.root / book_id / "manifest.json").stat()
        except FileNotFoundError:
            return self.corpus.book(book_id)  # raises UnknownBookError, listing the books
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # a manifest is replaced, never edited in place
        cached = self._stored.get(book_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        book = self.corpus.book(book_id)
        self._stored[book_id] = (key, book)
        return book

    def status(self, book_id: str) -> dict[str, Any]:
        """State, page counts, engine, quality flags, ETA and what to do next, for one book."""
        job = self._jobs.get(book_id)
        if job is None:
            status = _book_fields(self.stored_book(book_id))
        else:
            book = job.live_book if job.active else None
            if book is None and self.corpus.has_book(book_id):
                book = self.stored_book(book_id)
            status = _book_fields(book) if book is not None else _new_book_fields(job)
            status["engine"] = job.options.engine
            if job.active:
                status["state"] = job.state
                if job.progress is not None:
                    status["eta_s"] = None if job.progress.eta is None else round(job.progress.eta, 1)
                    status["pages_per_s"] = round(job.progress.rate, 3)
                    stalled = job.progress.stalled_for if job.state == "running" else None
                    if stalled is not None:
                        status["detail"], status["stalled_s"] = "stalled", round(stalled, 1)
            elif job.state == "error" and status["state"] != "complete":
                status["state"], status["error"] = "error", job.error
        if status["state"] == "running" and not (job is not None and job.active):  # locked, not by a job of ours
            status["state"] = "running-elsewhere"
        status["message"] = next_step(status)
        return status

    def wait(self, book_id: str, timeout: float) -> bool:
        """Block until the book's job ends (True) or ``timeout`` seconds pass (False)."""
        job = self._jobs.get(book_id)
        if job is None or job.thread is None:
            return True
        job.thread.join(timeout)
        return not job.thread.is_alive()

    def active_books(self) -> list[str]:
        return [b for b, j in self._jobs.items() if j.active]

    def shutdown(self, timeout: float = SHUTDOWN_S) -> bool:
        """Ask every job to stop after its current page and wait up to ``timeout`` s; True if all stopped.

        Pages done so far are kept, and a later ocr_book resumes the book. A job still running after
        that is stuck inside its engine (a thread cannot be stopped): its book's manifest is written
        now, so that the caller may end the process, which frees the book's lock. Calling this again
        waits no longer than the first call's deadline.
        """
        with self._lock:
            first = self._stop_by is None
            if first:
                self._stop_by = time.monotonic() + timeout
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, self._stop_by - time.monotonic()))
        stuck = [job for job in jobs if job.thread is not None and job.thread.is_alive()]
        for job in stuck if first else []:
            log.warning("OCR job %r did not stop within %.0f s (a page is still in its engine); its finished pages are kept", job.book, timeout)
            _save(job)
        return not stuck


def _save(job: Job) -> None:
    """Write the manifest of a job that cannot be stopped, from another thread: best effort."""
    if job.live_book is None:
        return
    try:
        job.live_book.flush()
    except Exception:  # the job thread may be changing the manifest as we write it
        log.exception("could not save the progress of book %r", job.book)


def check_engine(name: str) -> str:
    names = list(engine_classes())
    if name not in names:
        raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(names)}")
    return name


def _book_fields(book: Book) -> dict[str, Any]:
    summary = book.summary()
    failed, flagged = [], {}
    for number, meta in enumerate(book.pages, start=1):
        meta = meta or {}
        if meta.get("status") == "failed":
            failed.append(number)
        for flag in meta.get("flags", []):
            flagged.setdefault(flag, []).append(number)
    return {
        "book": book.id,
        "state": summary["state"],
        "pages": summary["pages"],
        "done": summary["done"],
        "ok": summary["ok"],
        "fallback": summary["fallback"],
        "failed": summary["failed"],
        "pending": summary["pending"],
        "engine": summary["engine"],
        "engines_used": summary["engines_used"],
        "quality_flags": summary["quality_flags"],
        "flagged_pages": {flag: pages[:MAX_LISTED_PAGES] for flag, pages in sorted(flagged.items())},
        "failed_pages": failed[:MAX_LISTED_PAGES],
        "source": summary["source"],
        "source_path": summary["source_path"],
        "eta_s": None,
        "pages_per_s": None,
        "error": None,
        "detail": None,
        "stalled_s": None,
    }


def _new_book_fields(job: Job) -> dict[str, Any]:
    """A job whose book folder does not exist yet (it is queued, or just starting)."""
    n = job.source.page_count
    return {
        "book": job.book, "state": job.state, "pages": n, "done": 0, "ok": 0, "fallback": 0, "failed": 0, "pending": n,
        "engine": job.options.engine, "engines_used": [], "quality_flags": [], "flagged_pages": {}, "failed_pages": [],
        "source": job.source.name, "source_path": job.source.path, "eta_s": None, "pages_per_s": None, "error": None,
        "detail": None, "stalled_s": None,
    }


def next_step(s: dict[str, Any]) -> str:
    """One sentence for the model: where the book stands and which call to make next."""
    book, state = s["book"], s["state"]
    done = f"{s['done']} of {s['pages']} pages done"
    if state == "queued":
        return f"{done}; waiting for another book's OCR to finish. Call book_status('{book}') later."
    if state == "running" and s.get("detail") == "stalled":
        return (f"OCR is running but stalled: no page has finished for {_duration(s['stalled_s'])} ({done}). The run goes on "
                f"(a stuck page is given up after its deadline); pages already done can be read with get_page. Check again "
                f"with book_status('{book}') in a few minutes; if it stays stalled, tell the user: restarting this MCP server "
                f"stops the run, and ocr_book then resumes it where it stopped.")
    if state == "running":
        eta = f", about {_duration(s['eta_s'])} left" if s.get("eta_s") else ""
        return (f"OCR is running in the background: {done}{eta}. Pages already done can be read now with get_page; "
                f"call book_status('{book}') to follow progress.")
    if state == "running-elsewhere":
        return f"{done}; another bookocr process is writing this book. Read the pages done so far, and check again later with book_status."
    if state == "complete":
        return f"All {s['pages']} pages are done. Read them with get_page('{book}', page) or search them with search_book(query, book='{book}')."
    if state == "complete-with-failures":
        return (f"{done}; {s['failed']} page(s) failed (see failed_pages). The rest can be read with get_page; "
                f"call ocr_book again with retry_failed=true to try the failed pages again.")
    if state == "error":
        return f"The OCR run stopped: {s.get('error')}. {done}; fix the cause and call ocr_book again to resume."
    return f"{done}; {s['pending']} page(s) are not done yet. Call ocr_book with the same path to resume."


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
