"""Background OCR jobs: one per book, each in its own thread, reporting progress as it goes.

:meth:`JobManager.start` checks the request at once, in the caller's thread (:func:`server.runner.plan_run`:
the file is opened and hashed once), then returns while a worker thread runs the plan. Calling it again
for the same book reports on the job instead of starting a second one; a book whose pages are all done
costs nothing. A run stopped part way resumes where it stopped, because the runner only does pages that
are not done yet. Where a book stands is :meth:`server.library.Library.status`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ocr_backend.engines import OcrEngine, PageResult, engine_class
from ocr_backend.errors import BookLockedError, BookOcrError
from ocr_backend.sources import SourceInfo
from server.corpus import Book, Corpus
from server.runner import Progress, RunOptions, RunPlan, book_id_for, pages_to_do, plan_run, run_plan

log = logging.getLogger("bookocr.jobs")

ACTIVE_STATES = ("queued", "running")
SHUTDOWN_S = 3.0  # how long shutdown waits for jobs to stop after their current page
SLOT_POLL_S = 0.5  # a queued job checks this often whether it was cancelled
GROUP_POLL_S = 0.1  # a book of an engine group checks this often whether the engine has room for it
ENGINE_START_WAIT_S = 1200.0  # a book waits this long for another book of its group to start their engine

RunFn = Callable[..., Progress]  # run_plan's signature


@dataclass
class Job:
    """One background run over one book."""

    book: str
    plan: RunPlan
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"  # queued | running | complete | cancelled | error | locked
    error: str | None = None
    progress: Progress | None = None
    live_book: Book | None = None  # the runner's own Book: fresher than manifest.json on disk
    started: float = field(default_factory=time.time)
    finished: float | None = None
    thread: threading.Thread | None = None
    group: EngineGroup | None = None  # the books it shares one engine with (an MCP library job on DeepSeek)

    @property
    def source(self) -> SourceInfo:
        return self.plan.info

    @property
    def options(self) -> RunOptions:
        return self.plan.options

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def on_progress(self, progress: Progress) -> None:
        self.progress = progress

    def on_page(self, book: Book, result: PageResult) -> None:
        self.live_book = book


class EngineGroup:
    """The books of one library job whose engine takes pages of several books at once (DeepSeek's streaming
    client): one engine, started by the first book to run and shared by all, so their pages share the GPU
    containers; the next book starts as soon as the engine has room for it
    (:meth:`~ocr_backend.engines.base.OcrEngine.wants_another_book`), outside the manager's one slot; the
    engine is closed when the last book of the group has ended and no more will join (:meth:`seal`)."""

    def __init__(self, engine: OcrEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._running = 0
        self._members = 0
        self._sealed = False
        self._started = False
        self._start_error: BookOcrError | None = None

    def join(self) -> None:
        with self._lock:
            self._members += 1

    def seal(self) -> None:
        """Every book has been added: the engine closes with the last one (now, if none joined)."""
        with self._lock:
            self._sealed = True
            done = self._members == 0
        if done:
            self.engine.close()

    def leave(self) -> None:
        with self._lock:
            self._members -= 1
            done = self._sealed and self._members == 0
        if done:
            self.engine.close()

    def try_take(self) -> bool:
        with self._lock:
            if self._running >= self.engine.books_at_once() or not self.engine.wants_another_book(self._running):
                return False
            self._running += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._running -= 1

    def start_engine(self) -> None:
        """Start the engine once; a start that failed fails each book of the group with the same reason."""
        if not self._start_lock.acquire(timeout=ENGINE_START_WAIT_S):
            raise BookOcrError(f"the engine did not start within {ENGINE_START_WAIT_S:.0f} s; call ocr_book again")
        try:
            if self._start_error is not None:
                raise self._start_error
            if not self._started:
                try:
                    self.engine.start()
                except BookOcrError as exc:
                    self._start_error = exc
                    raise
                self._started = True
        finally:
            self._start_lock.release()


class JobManager:
    """Runs OCR jobs in background threads, at most ``max_parallel`` at a time (others queue)."""

    def __init__(self, corpus: Corpus, max_parallel: int = 1, run: RunFn = run_plan) -> None:
        self.corpus = corpus
        self._run = run
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_parallel)
        self._stop_by: float | None = None  # set by shutdown: no job starts after it

    # --- starting -------------------------------------------------------------------
    def start(
        self,
        path: str | Path,
        options: RunOptions | None = None,
        retry_failed: bool = False,
        group: EngineGroup | None = None,
    ) -> str:
        """Check the request and start (or resume) its OCR in the background; returns the book id. With
        ``group``, the book shares the group's engine with the other books of its library job.

        Raises :class:`BookOcrError` with a message to act on when the request cannot be run.
        Starts nothing when the book's job is already running, another process holds the
        book, or every requested page is done (or failed, unless ``retry_failed``).
        """
        options = options or RunOptions()
        engine_class(options.engine).check_options(options.engine_options)  # cheap: checked even while a job runs
        book_id = book_id_for(path, options.book)
        job = self._jobs.get(book_id)
        if job is not None and job.active and job.source.path == str(Path(path).resolve()):
            return book_id  # asking again while it runs: no need to re-read (and hash) the file
        plan = plan_run(self.corpus, path, options)
        try:
            job = self._start(plan, retry_failed, group)
        except BaseException:
            plan.close()
            raise
        if job is None:
            plan.close()
        else:
            log.info(
                "started OCR of %s as %r (%d pages, engine %s)",
                plan.info.name,
                book_id,
                len(plan.pages),
                options.engine,
            )
        return book_id

    def _start(self, plan: RunPlan, retry_failed: bool, group: EngineGroup | None = None) -> Job | None:
        with self._lock:
            if self._stop_by is not None:
                raise BookOcrError("the server is shutting down; call ocr_book again once it has restarted")
            job = self._jobs.get(plan.book)
            if job is not None and job.active:
                return None
            if self.corpus.is_locked(plan.book):
                if not self.corpus.has_book(plan.book):
                    raise BookLockedError(
                        f"another bookocr process is starting OCR of book {plan.book!r}; call "
                        f"book_status('{plan.book}') in a moment"
                    )
                return None  # its status says it is running elsewhere
            if not pages_to_do(self.corpus, plan, retry_failed):
                return None
            job = Job(book=plan.book, plan=plan, group=group)
            if group is not None:
                group.join()
            job.thread = threading.Thread(target=self._work, args=(job,), name=f"bookocr-job-{plan.book}", daemon=True)
            self._jobs[plan.book] = job
            job.thread.start()
            return job

    def _work(self, job: Job) -> None:
        try:
            self._work_in_turn(job)
        except Exception as exc:  # waiting for its turn went wrong: the job ends with the reason, the server goes on
            log.exception("OCR job for %r crashed", job.book)
            self._finish(job, "error", f"{type(exc).__name__}: {exc}")
        finally:
            if job.group is not None:
                job.group.leave()

    def _work_in_turn(self, job: Job) -> None:
        take, release = self._slot_for(job)
        if job.cancel.is_set() or not take():
            # Queued: the file is closed while it waits (a library job of 1,000 books queues 999 of them;
            # macOS gives a process 256 open files) and checked again, and hashed, when its turn comes.
            job.plan.close()
            if not self._take_slot(job, take, release):
                self._finish(job, "cancelled")
                return
            try:
                job.plan = plan_run(self.corpus, job.source.path, job.options)
            except Exception as exc:  # the file changed or went away while it waited
                release()
                reason = str(exc) if isinstance(exc, BookOcrError) else f"{type(exc).__name__}: {exc}"
                self._finish(job, "error", reason)
                return
        job.state = "running"
        try:
            # run_plan indexes each page for search as it lands; job.on_page only tracks progress
            shared = {}
            if job.group is not None:
                job.group.start_engine()
                shared = {"engine": job.group.engine, "engine_started": True}
            result = self._run(
                self.corpus, job.plan, progress=job.on_progress, listeners=[job.on_page], cancel=job.cancel, **shared
            )
            self._finish(job, result.state)
        except BookLockedError:
            self._finish(job, "locked")
        except BookOcrError as exc:
            self._finish(job, "error", str(exc))
        except Exception as exc:  # the job dies, the server does not
            log.exception("OCR job for %r crashed", job.book)
            self._finish(job, "error", f"{type(exc).__name__}: {exc}")
        finally:
            release()

    def _slot_for(self, job: Job) -> tuple[Callable[[], bool], Callable[[], None]]:
        """How the job takes its turn (without waiting) and gives it back: the manager's slots, or its group's."""
        if job.group is not None:
            return job.group.try_take, job.group.release
        return lambda: self._slots.acquire(blocking=False), self._slots.release

    @staticmethod
    def _take_slot(job: Job, take: Callable[[], bool], release: Callable[[], None]) -> bool:
        """Wait for the job's turn; False if the job is cancelled first (a queued job must not hold up shutdown)."""
        poll = GROUP_POLL_S if job.group is not None else SLOT_POLL_S
        while not job.cancel.is_set():
            if take():
                if not job.cancel.is_set():
                    return True
                release()
            job.cancel.wait(poll)
        return False

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        log.info("OCR job %r ended: %s%s", job.book, state, f" ({error})" if error else "")

    # --- reading --------------------------------------------------------------------
    def job(self, book_id: str) -> Job | None:
        return self._jobs.get(book_id)

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
            log.warning(
                "OCR job %r did not stop within %.0f s (a page is still in its engine); its finished pages are kept",
                job.book,
                timeout,
            )
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
