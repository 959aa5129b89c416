"""Pages OCRed in worker processes, each holding its own models, under a deadline per page.

A Python thread stuck inside a native library cannot be stopped, and one that holds the GIL stops the
whole process (seen with OpenVINO: a deadlock while two threads built models froze the MCP server). A
process can be killed. So an engine that runs on the CPU hands each page to one of a few worker
processes; a page whose worker does not answer within its deadline, or dies, is taken back, the worker
is killed and replaced, and the page is tried once more, then recorded ``failed`` with the reason. No
wait here is unbounded: starting a worker, each page, and closing the pool all have deadlines.

Protocol over two pipes (pickled messages; the worker's stdout is not used, so a library printing
there cannot corrupt it):

    parent -> worker   (factory, kwargs) once, then PageInput for each page, then None to stop
    worker -> parent   ("ready", version) | ("start-failed", reason) | ("result", PageResult)
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.errors import EngineError

log = logging.getLogger(__name__)

MIN_PAGE_TIMEOUT_S = 120.0  # no page is given up on sooner, whatever the running median says
PAGE_TIMEOUT_MEDIANS = 10  # a page may take this many times the running median page time
START_TIMEOUT_S = 120.0  # importing and building the models takes about 1 s; a worker silent this long is stuck
MAX_START_FAILURES = 3  # workers that fail to start in a row before the engine gives up with the reason
ATTEMPTS = 2  # a page that times out or kills its worker is tried once more before it is recorded failed
CLOSE_GRACE_S = 2.0  # how long closing waits for workers to leave on their own before killing them
POLL_S = 1.0  # the longest the pool sleeps between deadline checks
SPAWN_TIMEOUT_S = 30.0  # starting a process takes milliseconds


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process runs: ``factory`` ("module:callable") called with ``kwargs`` gives the
    in-process :class:`OcrEngine` that reads the pages, its models already loaded."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class PoolEngine(OcrEngine):
    """An engine whose pages run in worker processes (see the module docstring).

    Subclasses implement :meth:`recognize` (what runs inside a worker) and :meth:`worker_spec`.
    """

    workers: int = 1
    page_timeout: float | None = None  # fixed deadline per page; None: adaptive, never under MIN_PAGE_TIMEOUT_S
    start_timeout: float = START_TIMEOUT_S
    _pool: WorkerPool | None = None
    _one_at_a_time = threading.Lock()  # recognize_one's turns (one pool run at a time; shared by all pool engines)

    def worker_spec(self) -> WorkerSpec:
        raise NotImplementedError

    def start(self) -> None:
        """Start the workers and wait (bounded) until one has its models: a worker that cannot start
        is reported here, before the corpus is touched."""
        self.pool().wait_until_ready()

    def pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(self.worker_spec(), self.workers, self, self.page_timeout, self.start_timeout)
        return self._pool

    def recognize_many(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        yield from self.pool().run(pages)

    def recognize_one(self, page: PageInput) -> PageResult:
        """One page through the workers, from any thread: callers take turns, each wait bounded."""
        turn = ATTEMPTS * (self.start_timeout + (self.page_timeout or MIN_PAGE_TIMEOUT_S))
        if not self._one_at_a_time.acquire(timeout=turn):
            return PageResult.failed(page, self, f"timed out: waited {turn:.0f} s for the {self.name} engine's workers")
        try:
            return list(self.pool().run([page]))[0]
        finally:
            self._one_at_a_time.release()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class _Spawner:
    """Starts every worker process from one thread that lives as long as this process.

    Workers ask Linux to kill them when their parent goes (``PR_SET_PDEATHSIG``), so that none outlives
    a killed bookocr. But Linux sends that signal when the *thread* that started the process ends, and
    pools are driven from short-lived threads (MCP jobs, DeepSeek's fallback calls).
    """

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def popen(self, command: list[str], **options: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="bookocr-spawner", daemon=True)
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((future, command, options))
        return future.result(timeout=SPAWN_TIMEOUT_S)

    def _serve(self) -> None:
        while True:
            future, command, options = self._requests.get()
            try:
                future.set_result(subprocess.Popen(command, **options))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)


_SPAWNER = _Spawner()


class _Worker:
    """One worker process and what it is doing."""

    def __init__(self, spec: WorkerSpec) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            self.process = _SPAWNER.popen(
                [sys.executable, "-m", "ocr_backend.workers", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stdout may be an MCP stdio channel: nothing of ours goes there
                env=env,
                close_fds=True,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.recv_conn = Connection(from_child_r, writable=False)
        self.started = time.monotonic()
        self.ready = False
        self.page: PageInput | None = None
        self.page_sent = 0.0
        with contextlib.suppress(OSError):  # a worker that died at once is found by its closed pipe
            self.send_conn.send((spec.factory, spec.kwargs))

    def send(self, page: PageInput) -> None:
        """Hand over a page. An idle worker is always waiting to read, so this returns once the image is
        copied into the pipe (or raises OSError if the worker has died)."""
        self.page, self.page_sent = page, time.monotonic()
        self.send_conn.send(PageInput(number=page.number, image=page.image, render=page.render))

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self._reap(1.0)

    def stop(self, deadline: float) -> None:
        """Ask the worker to leave; kill it if it has not by ``deadline``."""
        with contextlib.suppress(OSError, ValueError):
            self.send_conn.send(None)
        if not self._reap(max(0.0, deadline - time.monotonic())):
            self.kill()

    def _reap(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        for conn in (self.send_conn, self.recv_conn):
            with contextlib.suppress(OSError):
                conn.close()
        return True

    def exit_description(self) -> str:
        self._reap(1.0)
        code = self.process.returncode
        if code is None:
            return "the OCR worker stopped answering"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"the OCR worker process was killed by {signal.Signals(-code).name}"
        return f"the OCR worker process exited with code {code}"


class WorkerPool:
    """Runs pages through ``size`` worker processes; see the module docstring for the guarantees."""

    def __init__(
        self,
        spec: WorkerSpec,
        size: int,
        engine: OcrEngine,
        page_timeout: float | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        self.spec = spec
        self.size = max(1, size)
        self.engine = engine  # named in the results of pages that fail here
        self.fixed_timeout = page_timeout
        self.start_timeout = start_timeout
        self.workers: list[_Worker] = []
        self.page_seconds: deque[float] = deque(maxlen=50)
        self.start_failures = 0
        self.closed = False  # set by close(), possibly from another thread while run() goes on

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        while not self.closed and len(self.workers) < self.size:
            self.workers.append(_Worker(self.spec))

    def close(self) -> None:
        self.closed = True
        workers, self.workers = self.workers, []
        deadline = time.monotonic() + CLOSE_GRACE_S
        for worker in workers:
            worker.stop(deadline)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        if worker in self.workers:
            self.workers.remove(worker)
        self.start()

    def page_timeout(self) -> float:
        if self.fixed_timeout is not None:
            return self.fixed_timeout
        if not self.page_seconds:
            return MIN_PAGE_TIMEOUT_S
        return max(MIN_PAGE_TIMEOUT_S, PAGE_TIMEOUT_MEDIANS * statistics.median(self.page_seconds))

    # --- running pages ---------------------------------------------------------------------------
    def wait_until_ready(self) -> None:
        """Start the workers; return once one has its models, or raise EngineError (bounded by the start deadline)."""
        self.start()
        retry: deque[PageInput] = deque()
        while not self.closed and not any(w.ready for w in self.workers):
            for worker, message in self._receive():
                list(self._handle(worker, message, retry, {}))  # no page is out yet: nothing to yield
            list(self._enforce_deadlines(retry, {}))

    def run(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        """Each page's result as it finishes (in any order). A page whose worker hangs or dies is
        retried once on a fresh worker, then comes back ``failed`` with the reason."""
        self.start()
        source = iter(pages)
        retry: deque[PageInput] = deque()
        failures: dict[int, list[str]] = {}
        exhausted = False
        try:
            while not self.closed:
                exhausted, early = self._dispatch(source, retry, exhausted)
                yield from early
                if exhausted and not retry and not any(w.page for w in self.workers):
                    return
                for worker, message in self._receive():
                    yield from self._handle(worker, message, retry, failures)
                yield from self._enforce_deadlines(retry, failures)
        finally:
            for worker in [w for w in self.workers if w.page is not None]:
                worker.kill()  # its page was abandoned mid-way: a late answer must not reach the next run
                self.workers.remove(worker)

    def _dispatch(
        self, source: Iterator[PageInput], retry: deque[PageInput], exhausted: bool
    ) -> tuple[bool, list[PageResult]]:
        """Give each idle, ready worker a page (retries first). Pages that could not be rendered fail here."""
        early: list[PageResult] = []
        for worker in self.workers:
            while worker.ready and worker.page is None:
                if retry:
                    page = retry.popleft()
                elif exhausted:
                    break
                else:
                    page = next(source, None)
                    if page is None:
                        exhausted = True
                        break
                    if page.error:
                        early.append(PageResult.failed(page, self.engine, page.error))
                        continue
                try:
                    worker.send(page)
                except OSError:  # it died while idle: replaced below when its pipe reports the end
                    retry.appendleft(page)
                    worker.page = None
                    break
        return exhausted, early

    def _receive(self) -> list[tuple[_Worker, Any]]:
        """Messages that arrive before the nearest deadline (or POLL_S); ``None`` for a worker that died."""
        by_conn = {w.recv_conn: w for w in self.workers}
        timeout = min([POLL_S, *(self._deadline(w) - time.monotonic() for w in self.workers)])
        received = []
        for conn in wait(list(by_conn), max(0.0, timeout)):
            worker = by_conn[conn]  # type: ignore[index]
            try:
                received.append((worker, worker.recv_conn.recv()))
            except (EOFError, OSError):
                received.append((worker, None))
        return received

    def _deadline(self, worker: _Worker) -> float:
        if not worker.ready:
            return worker.started + self.start_timeout
        if worker.page is not None:
            return worker.page_sent + self.page_timeout()
        return float("inf")

    def _handle(
        self, worker: _Worker, message: Any, retry: deque[PageInput], failures: dict[int, list[str]]
    ) -> Iterator[PageResult]:
        if message is None:
            reason = worker.exit_description()
            if worker.ready:
                yield from self._page_lost(worker, f"{reason} while reading this page", retry, failures)
            else:
                self._start_failed(worker, reason)
            return
        kind, payload = message
        if kind == "ready":
            worker.ready = True
            self.start_failures = 0
        elif kind == "start-failed":
            self._start_failed(worker, str(payload))
        elif kind == "result" and worker.page is not None:
            self.page_seconds.append(time.monotonic() - worker.page_sent)
            worker.page = None
            failures.pop(payload.number, None)
            yield payload

    def _enforce_deadlines(self, retry: deque[PageInput], failures: dict[int, list[str]]) -> Iterator[PageResult]:
        now = time.monotonic()
        for worker in list(self.workers):
            if now < self._deadline(worker):
                continue
            if worker.ready:
                reason = (
                    f"timed out: no result after {now - worker.page_sent:.0f} s (deadline {self.page_timeout():.0f} s)"
                )
                yield from self._page_lost(worker, reason, retry, failures)
            else:
                self._start_failed(worker, f"the OCR worker did not start within {self.start_timeout:.0f} s")

    def _page_lost(
        self, worker: _Worker, reason: str, retry: deque[PageInput], failures: dict[int, list[str]]
    ) -> Iterator[PageResult]:
        """The worker hung or died on its page: replace it, and retry the page or record it failed."""
        page = worker.page
        self._replace(worker)
        if page is None:
            return
        tries = failures.setdefault(page.number, [])
        tries.append(reason)
        log.warning("page %d: %s (attempt %d of %d)", page.number, reason, len(tries), ATTEMPTS)
        if len(tries) < ATTEMPTS:
            retry.append(page)
        else:
            failures.pop(page.number)
            yield PageResult.failed(page, self.engine, f"{tries[-1]} (tried {len(tries)} times)")

    def _start_failed(self, worker: _Worker, reason: str) -> None:
        self.start_failures += 1
        log.warning("OCR worker failed to start (%d in a row): %s", self.start_failures, reason)
        if self.start_failures >= MAX_START_FAILURES:
            self.close()
            raise EngineError(f"the {self.engine.name} engine's worker process could not start: {reason}")
        self._replace(worker)


# --- the worker process ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent goes, even if it is stuck in native code."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def load_factory(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def worker_main(read_fd: int, write_fd: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    parent = os.getppid()
    try:
        factory, kwargs = inbox.recv()
        engine = load_factory(factory)(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        outbox.send(("start-failed", f"{type(exc).__name__}: {exc}"))
        return
    outbox.send(("ready", engine.version()))
    while os.getppid() == parent:
        try:
            page = inbox.recv()
        except EOFError:
            return
        if page is None:
            return
        outbox.send(("result", engine.safe_recognize(page)))


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), int(sys.argv[2]))
