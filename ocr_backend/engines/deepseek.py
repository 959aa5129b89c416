"""Engine ``deepseek``: DeepSeek-OCR on the deployed Modal GPU class (``bookocr deploy``).

Pages stream into the containers' continuous batches: each page is its own call,
and the client keeps each container's running batch full and a few more in flight
(containers x (``max_num_seqs`` + 4), what the class says it is at start), so a long page
holds only its own place in vLLM's batch, the batch refills as sequences finish, and the
pages not yet sent wait here, free to go to whichever container frees a place. Once a
book (or a library job: its books share the calls in flight) has sent every page, a page
long in flight is sent again to a near-idle container and the call that loses is
cancelled (``FunctionCall.cancel``), so no GPU idles while another finishes the tail. Rendering (the runner's
worker), JPEG encoding (a feeder thread here) and GPU work overlap. Every page is
validated like olmOCR does: a page that stopped for any reason but "stop", looped, or
came back empty is retried as a call of its own that joins the stream ahead of new
pages (the class looks for a loop every 256 tokens and stops an attempt whose text has
looped at two checks in a row, near the loop's onset; the retry has stronger anti-repeat
settings and the full 8,192), then OCRed by the local CPU engine and marked ``fallback``
with the reason.
No page is ever dropped or returned twice, and numbers never shift. ``client="batch"``
keeps the older shape (32-page batches, one ``generate`` each) for ``deepseek-local``,
whose offline engine takes one batch at a time.

Nothing waits without a deadline: :meth:`DeepseekEngine.start` asks the class what it
serves (bounded by the start-up allowance) before the corpus is touched, and each call
gets the start-up allowance plus a budget per page. A call past its deadline is
cancelled and its pages fall back; a class whose model did not load ends the run.
A run in which no page finishes for ``BOOKOCR_DEEPSEEK_STALL_TIMEOUT_S`` (20 min) stops with a
message; the pages not done stay pending, so the same command resumes it.
All are settable: ``BOOKOCR_DEEPSEEK_STARTUP_TIMEOUT_S``, ``BOOKOCR_DEEPSEEK_PAGE_TIMEOUT_S``,
``BOOKOCR_DEEPSEEK_STALL_TIMEOUT_S``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ocr_backend.deepseek import clean as cleaning
from ocr_backend.deepseek import deployment, pricing
from ocr_backend.deepseek.client import (
    JPEG_QUALITY,
    CallCancelled,
    Cancel,
    DeadlineExceeded,
    ModalRemote,
    RemoteOcr,
    call_within,
    check_network,
    decode_page,
    encode_page,
    error_kind,
    startup_failure,
    user_error,
)
from ocr_backend.deepseek.constants import (
    CLASS_NAME,
    DEFAULT_CONTAINERS,
    DEFAULT_GPU,
    DEFAULT_MODEL,
    ENGINE,
    GPU_CHOICES,
    MAX_INPUTS,
    VLLM_VERSION,
)
from ocr_backend.deepseek.constants import app_name as default_app_name
from ocr_backend.deepseek.runner import FIRST_ATTEMPT, MAX_NUM_SEQS, RETRY_ATTEMPT, DecodeSettings
from ocr_backend.engines.base import EngineOption, Estimate, OcrEngine, PageInput, PageResult
from ocr_backend.errors import EngineError

logger = logging.getLogger(__name__)

BATCH_SIZE = 32  # dozens of pages per vLLM call: continuous batching needs a full queue
MIN_BATCH = 4  # while a GPU may be idle, send what is ready once there is this much
QUEUE_AHEAD = 2  # calls kept waiting behind the running ones, to hide upload latency
BUFFER_BATCHES = 4  # encoded pages held ahead of the GPUs, in batches
TRANSIENT_RETRIES = 3
BACKOFF_S = 1.0
# A cold container pulls the image, reads 6.7 GB of weights from a Volume and lets vLLM
# compile and capture CUDA graphs: one to three minutes, more on a first start after a
# deploy. Any call may land on a cold container, so every deadline includes this.
STARTUP_TIMEOUT_S = 600.0
# Every page of a batch running to the 8192-token limit takes about 8 s of the batch's
# time on an A100; a call may also queue behind one such batch on its container.
PAGE_TIMEOUT_S = 20.0
# A streamed page shares its container's batch with up to 63 others, one token a step (8,192
# tokens at ~28 ms a step with 64 running is ~230 s): its call gets the budget of 16 pages.
STREAM_DEADLINE_PAGES = 16
# Calls in flight per container beyond its running batch (max_num_seqs): enough to refill a finished
# sequence's place within a round trip; the rest of the book waits here, not in one container's queue.
QUEUE_PER_CONTAINER = 4
# Once no page is left to send, a page still in flight for HEDGE_AFTER_S is sent again, to run beside
# its first copy on a container with room; whichever answers first wins and the other call is cancelled.
HEDGE_AFTER_S = 30.0
HEDGE_DEPTH = 8  # hedges go out while fewer than this many calls per container are in flight: to near-idle GPUs
# Books of a library job whose pages may stream at once (earlier books first): the next starts when the running
# ones have sent all their pages, so a book's tail overlaps the next book's start.
BOOKS_AT_ONCE = 8
STALL_TIMEOUT_S = 20 * 60.0  # no page finished for this long: stop, resumable
STARTUP_TIMEOUT_ENV = "BOOKOCR_DEEPSEEK_STARTUP_TIMEOUT_S"
PAGE_TIMEOUT_ENV = "BOOKOCR_DEEPSEEK_PAGE_TIMEOUT_S"
STALL_TIMEOUT_ENV = "BOOKOCR_DEEPSEEK_STALL_TIMEOUT_S"
CLIENTS = ("stream", "batch")


@dataclass
class _Job:
    number: int
    data: bytes  # the encoded page image, as uploaded


@dataclass
class _PageState:
    """What the attempts on one page cost and why they failed."""

    gpu_seconds: float = 0.0
    upload_bytes: int = 0
    reasons: list[str] = field(default_factory=list)
    last_text: str | None = None


@dataclass
class _Task:
    """One page's next attempt in the stream (``attempt`` indexes the engine's attempts)."""

    job: _Job
    state: _PageState = field(default_factory=_PageState)
    attempt: int = 0
    hedged: bool = False  # a second call for this attempt was sent
    done: bool = False  # answered, or gone to the fallback


def plan_batch_size(
    buffered: int,
    exhausted: bool,
    in_flight: int,
    containers: int,
    batch_size: int = BATCH_SIZE,
    min_batch: int = MIN_BATCH,
    max_in_flight: int | None = None,
) -> int:
    """How many buffered pages to send now (0: wait).

    While the book streams: what is ready (at least ``min_batch``) when a GPU may be
    idle; half a batch when fewer than ``QUEUE_AHEAD`` calls wait behind the running
    ones (so a GPU that finishes finds its next batch already uploaded); otherwise
    full batches. Once the last page is in, the rest goes out in ever smaller pieces
    (guided self-scheduling, down to ``min_batch``) so the GPUs finish together; a
    short book goes in one call, since each extra container may cost a cold start.
    """
    limit = max_in_flight if max_in_flight is not None else 2 * containers
    if buffered == 0 or in_flight >= limit:
        return 0
    if exhausted:
        if in_flight == 0 and buffered <= batch_size:
            return buffered
        return min(batch_size, buffered, max(min_batch, math.ceil(buffered / (2 * containers))))
    if buffered >= batch_size:
        return batch_size
    if in_flight < containers and buffered >= min_batch:
        return buffered
    if in_flight < containers + QUEUE_AHEAD and buffered >= max(min_batch, batch_size // 2):
        return buffered
    return 0


class _Feeder:
    """Pulls pages from the runner, encodes them and holds them for the dispatcher."""

    def __init__(
        self,
        pages: Iterable[PageInput],
        encode: Callable[[PageInput], _Job | PageResult],
        wake: threading.Event,
        max_buffered: int,
    ) -> None:
        self._pages = pages
        self._encode = encode
        self._wake = wake
        self._max_buffered = max_buffered
        self._room = threading.Condition()
        self._ready: deque[_Job] = deque()
        self._unusable: deque[PageResult] = deque()
        self._stop = threading.Event()
        self.exhausted = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bookocr-deepseek-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._room:
            self._room.notify_all()

    def _run(self) -> None:
        try:
            for page in self._pages:
                item = self._encode(page)
                with self._room:
                    (self._ready if isinstance(item, _Job) else self._unusable).append(item)
                    self._wake.set()
                    while len(self._ready) >= self._max_buffered and not self._stop.is_set():
                        self._room.wait(0.5)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # surfaced by the dispatcher
            self.error = exc
        finally:
            self.exhausted = True
            self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._ready)

    def take(self, count: int) -> list[_Job]:
        with self._room:
            jobs = [self._ready.popleft() for _ in range(min(count, len(self._ready)))]
            self._room.notify_all()
        return jobs

    def take_unusable(self) -> list[PageResult]:
        with self._room:
            results = list(self._unusable)
            self._unusable.clear()
        return results


@dataclass
class _BatchOutcome:
    results: list[PageResult] = field(default_factory=list)
    failed: list[tuple[_Job, _PageState]] = field(default_factory=list)  # for the CPU fallback


def _in_thread(wake: threading.Event, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn`` in a daemon thread. Not a ThreadPoolExecutor: its workers are joined at
    exit, so Ctrl-C would wait for every GPU call in flight. The dispatcher bounds how
    many run at once."""
    future: Future[Any] = Future()
    future.add_done_callback(lambda _: wake.set())

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # re-raised in the dispatcher
            future.set_exception(exc)

    threading.Thread(target=run, name="bookocr-deepseek-call", daemon=True).start()
    return future


_Outcome = tuple[list[dict[str, Any]] | None, str]  # (one output per image, or None and why the call failed)


class _Member:
    """One stream's place in a :class:`_Pool`."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self.wants = False  # it has a page or a retry ready to send
        self.drained = False  # every page it will get has been sent (a retry may still come)


class _Pool:
    """The calls in flight over every stream of one engine, so the books of a library job share the
    containers: a stream that started earlier (an earlier book) sends first, and a hedge goes out only
    while no stream has a page waiting. Thread-safe; a freed slot wakes every stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: list[_Member] = []
        self.used = 0
        self.answered_at = time.monotonic()  # when any stream last got a page back

    def join(self, wake: threading.Event) -> _Member:
        member = _Member(wake)
        with self._lock:
            self._members.append(member)
        return member

    def leave(self, member: _Member) -> None:
        with self._lock:
            self._members.remove(member)
        self._wake_all()

    def take(self, member: _Member, capacity: int, hedge: bool = False) -> bool:
        """A slot for ``member``'s next call (``hedge``: a second copy of a page in flight), or False."""
        with self._lock:
            if self.used >= capacity:
                return False
            ahead = self._members if hedge else self._members[: self._members.index(member)]
            if any(other.wants for other in ahead):
                return False
            self.used += 1
            return True

    def drained(self, streams: int) -> bool:
        """Whether ``streams`` streams have joined and every one has sent all its pages."""
        with self._lock:
            return len(self._members) >= streams and all(m.drained and not m.wants for m in self._members)

    def give_back(self) -> None:
        with self._lock:
            self.used -= 1
        self._wake_all()

    def _wake_all(self) -> None:
        with self._lock:
            members = list(self._members)
        for member in members:
            member.wake.set()


@dataclass
class _Call:
    """One call in flight for a page's attempt; a hedged page has two."""

    task: _Task
    attempt: int
    cancel: Cancel
    sent: float  # time.monotonic()


class _Stream:
    """One ``recognize_many`` of the streaming client: every page its own call, a retry ahead of new pages,
    the calls drawn from the engine's pool of slots. Once nothing is left to send, pages long in flight are
    sent again (hedged) when the remote can cancel a call; the first answer wins, the other is cancelled."""

    def __init__(self, engine: DeepseekEngine, remote: RemoteOcr, pages: Iterable[PageInput]) -> None:
        self.engine = engine
        self.remote = remote
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.feeder = _Feeder(pages, engine._encode, self.wake, max_buffered=max(engine.batch_size, engine.slots // 4))
        self.retries: deque[_Task] = deque()
        self.calls: dict[Future[_Outcome], _Call] = {}
        self.fallbacks: set[Future[list[PageResult]]] = set()
        self.finished: set[int] = set()
        self.hedging = engine.hedge and _takes_cancel(remote)

    def run(self) -> Iterator[PageResult]:
        pool = self.engine._pool
        member = pool.join(self.wake)
        last_progress = time.monotonic()
        self.feeder.start()
        try:
            while True:
                self.wake.clear()
                for result in self._collect():
                    if result.number in self.finished:  # a page is answered once, whatever came back late
                        logger.warning("page %d came back twice; kept the first answer", result.number)
                        continue
                    self.finished.add(result.number)
                    last_progress = pool.answered_at = time.monotonic()
                    yield result
                if self.feeder.error is not None:
                    raise self.feeder.error
                self._send_more(member)
                if self.feeder.exhausted and not (self.calls or self.fallbacks or self._has_work()):
                    yield from self.feeder.take_unusable()
                    return
                if self.engine._closed.is_set():  # closed from another thread: stop; pages not done stay pending
                    return
                # a stream waiting for slots that other books' pages hold is not stalled: the class answers them
                if time.monotonic() - max(last_progress, pool.answered_at) > self.engine.stall_timeout_s:
                    raise EngineError(
                        f"no page came back from the GPU class for {self.engine.stall_timeout_s / 60:g} min, so the "
                        f"run stopped; its log: `modal app logs {self.engine.app_name}`. Run the same command again "
                        "to resume"
                    )
                self.wake.wait(0.5)
        finally:
            self.stop.set()  # calls not yet sent never are; those in flight are given up
            self.feeder.stop()
            for call in self.calls.values():
                call.cancel.cancel()
            member.wants = False
            pool.leave(member)

    def _has_work(self) -> bool:
        return bool(self.retries or self.feeder.buffered)

    def _collect(self) -> list[PageResult]:
        results = self.feeder.take_unusable()
        for future in [f for f in self.calls if f.done()]:
            call = self.calls.pop(future)
            outputs, error = future.result()  # raises for the user: fatal, or the class did not start
            result = self._settle(call, outputs, error)
            if result is not None:
                results.append(result)
        for future in [f for f in self.fallbacks if f.done()]:
            self.fallbacks.discard(future)
            results.extend(future.result())
        return results

    def _settle(self, call: _Call, outputs: list[dict[str, Any]] | None, error: str) -> PageResult | None:
        """The page's result, or None: the call lost to its other copy, another copy still runs, or the page
        goes again (retry) or to the CPU fallback."""
        task = call.task
        if task.done or call.attempt != task.attempt:
            return None  # the loser of a hedge, or an attempt already judged
        twins = [other for other in self.calls.values() if other.task is task]
        if outputs is None:
            if twins:
                return None  # its other copy may still answer
            task.state.reasons.append(f"the GPU call failed: {error}")
            self._fall_back(task)
            return None
        for twin in twins:
            twin.cancel.cancel()
        result = self.engine._judge(task.job, outputs[0], task.state, task.attempt + 1)
        if result is not None:
            task.done = True
            return result
        if task.attempt + 1 < len(self.engine.attempts):
            task.attempt += 1
            task.hedged = False
            self.retries.append(task)
        else:
            self._fall_back(task)
        return None

    def _fall_back(self, task: _Task) -> None:
        task.done = True
        self.fallbacks.add(_in_thread(self.wake, self.engine._fall_back_all, [(task.job, task.state)]))

    def _send_more(self, member: _Member) -> None:
        pool, capacity = self.engine._pool, self.engine.slots
        member.wants = self._has_work()
        while self._has_work() and pool.take(member, capacity):
            jobs = [] if self.retries else self.feeder.take(1)
            self._send(self.retries.popleft() if self.retries else _Task(jobs[0]))
        member.wants = self._has_work()
        member.drained = self.feeder.exhausted and not member.wants
        if self.hedging and member.drained:
            self._hedge(member)

    def _hedge(self, member: _Member) -> None:
        """Send again the pages longest in flight, while the containers have room and no stream waits."""
        engine, now = self.engine, time.monotonic()
        capacity = engine.containers * engine.hedge_depth
        for call in sorted(self.calls.values(), key=lambda c: c.sent):
            if now - call.sent < engine.hedge_after_s:
                break
            if call.task.hedged or call.task.done:
                continue
            if not engine._pool.take(member, capacity, hedge=True):
                break
            call.task.hedged = True
            self._send(call.task)

    def _send(self, task: _Task) -> None:
        cancel = Cancel()
        future = _in_thread(self.wake, self.engine._send, self.remote, task, self.stop, cancel)
        future.add_done_callback(lambda _: self.engine._pool.give_back())
        self.calls[future] = _Call(task, task.attempt, cancel, time.monotonic())


def _takes_cancel(remote: RemoteOcr) -> bool:
    """Whether the remote's ``ocr`` can stop a call on the server (hedging without that only adds load)."""
    try:
        return "cancel" in inspect.signature(remote.ocr).parameters
    except (TypeError, ValueError):
        return False


GPU_PRICE_OPTION = EngineOption(
    "gpu_price",
    float,
    "the GPU's price in dollars per hour, for the estimate and the cost records",
    minimum=0,
    maximum=1000,  # no GPU rents for more: a larger figure is a typo (or per-second or per-month)
)
FIGURES_OPTION = EngineOption("figures", bool, "crop figures from the page and save them beside it")


class DeepseekEngine(OcrEngine):
    name = ENGINE
    description = "DeepSeek-OCR on a deployed Modal GPU (math as LaTeX, tables as HTML); `bookocr deploy` first"
    options = (
        EngineOption("gpu", str, f"GPU to run on (default: what was deployed, {DEFAULT_GPU})", choices=GPU_CHOICES),
        GPU_PRICE_OPTION,
        FIGURES_OPTION,
    )
    bills_gpu: ClassVar[bool] = True  # Modal bills the GPU time; a user's own GPU costs nothing unless priced

    @classmethod
    def estimate(cls, pages: int, options: dict[str, Any]) -> Estimate | None:
        checked = cls.check_options(options)
        price = checked.get("gpu_price")
        if not cls.bills_gpu and price is None:
            return None
        containers, deployed_gpu, basis = cls.planned_deployment()
        chosen = checked.get("gpu")
        if chosen and pricing.gpu_key(chosen) != pricing.gpu_key(deployed_gpu):
            basis += f"; priced for --gpu {chosen}"
        try:
            planned = pricing.estimate(pages, chosen or deployed_gpu, containers, price)
        except ValueError as exc:  # a GPU without a known price
            named = (
                ""
                if chosen
                else f" (the GPU your deployment record names: {deployment.record_path(default_app_name())})"
            )
            raise EngineError(f"{exc}{named}") from None
        return dataclasses.replace(planned, basis=basis)

    @classmethod
    def planned_deployment(cls) -> tuple[int, str | None, str]:
        """(containers, GPU, where they come from) for an estimate: the deployment recorded on this machine
        (by `bookocr deploy`, or by the last run that reached the class), without waking a GPU to ask."""
        record = deployment.recall(default_app_name())
        if record is None:
            return (
                DEFAULT_CONTAINERS,
                None,
                f"the default deployment ({DEFAULT_CONTAINERS} x {DEFAULT_GPU}; none is recorded on this machine)",
            )
        return record.max_containers, record.gpu, f"your deployment ({record.describe()})"

    def __init__(
        self,
        remote: RemoteOcr | None = None,
        fallback: OcrEngine | None = None,
        *,
        gpu: str | None = None,
        gpu_price: float | None = None,
        model: str | None = None,
        figures: bool = False,
        pages_dir: str | Path | None = None,
        batch_size: int = BATCH_SIZE,
        min_batch: int = MIN_BATCH,
        containers: int = DEFAULT_CONTAINERS,
        max_in_flight: int | None = None,
        jpeg_quality: int = JPEG_QUALITY,
        attempts: Sequence[DecodeSettings] = (FIRST_ATTEMPT, RETRY_ATTEMPT),
        transient_retries: int = TRANSIENT_RETRIES,
        backoff_s: float = BACKOFF_S,
        network_check: Callable[[str, int], None] | None = None,
        app_name: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        startup_timeout_s: float | None = None,
        page_timeout_s: float | None = None,
        stall_timeout_s: float | None = None,
        client: str = "stream",
        inputs_per_container: int = MAX_INPUTS,
        max_num_seqs: int = MAX_NUM_SEQS,
        queue_per_container: int = QUEUE_PER_CONTAINER,
        hedge: bool = True,
        hedge_after_s: float | None = None,
        hedge_depth: int = HEDGE_DEPTH,
        **_: Any,
    ) -> None:
        self._remote = remote
        self._fallback = fallback
        self.gpu = gpu
        self.gpu_price = gpu_price
        self.model = model or DEFAULT_MODEL
        self.figures_dir = Path(pages_dir) if figures and pages_dir is not None else None  # where crops are saved
        if figures and self.figures_dir is None:
            raise EngineError(f"engine {self.name!r}: figures are saved beside the pages; no pages folder was given")
        self.batch_size = max(1, batch_size)
        self.min_batch = max(1, min(min_batch, self.batch_size))
        self.containers = max(1, containers)
        self.max_in_flight = max_in_flight or 2 * self.containers
        self.jpeg_quality = jpeg_quality
        self.attempts = list(attempts)
        self.transient_retries = transient_retries
        self.backoff_s = backoff_s
        self.network_check = network_check or check_network
        self.app_name = app_name or default_app_name()
        self.sleep = sleep
        self.startup_timeout_s = (
            startup_timeout_s
            if startup_timeout_s is not None
            else _seconds_from_env(STARTUP_TIMEOUT_ENV, STARTUP_TIMEOUT_S)
        )
        self.page_timeout_s = (
            page_timeout_s if page_timeout_s is not None else _seconds_from_env(PAGE_TIMEOUT_ENV, PAGE_TIMEOUT_S)
        )
        self.stall_timeout_s = (
            stall_timeout_s if stall_timeout_s is not None else _seconds_from_env(STALL_TIMEOUT_ENV, STALL_TIMEOUT_S)
        )
        if client not in CLIENTS:
            raise EngineError(f"client must be one of {', '.join(CLIENTS)}, not {client!r}")
        self.client = client
        self.inputs_per_container = max(1, inputs_per_container)
        self._closed = threading.Event()  # set by close(): no call is sent after it, and streams stop
        self._pool = _Pool()  # the calls in flight, shared by every stream (the books of a library job)
        self.max_num_seqs = max(1, max_num_seqs)
        self.queue_per_container = max(0, queue_per_container)
        self.hedge = hedge
        self.hedge_after_s = HEDGE_AFTER_S if hedge_after_s is None else hedge_after_s
        self.hedge_depth = max(1, hedge_depth)
        self.served: dict[str, Any] = {}  # what the class said it serves (info)

    @property
    def slots(self) -> int:
        """Calls kept in flight by the streaming client: each container's running batch and a few more, so a
        finished sequence is replaced at once while the rest wait here, free to go to whichever container
        frees a place first (not queued inside one container's vLLM); never more than the class takes."""
        per_container = min(self.inputs_per_container, self.max_num_seqs + self.queue_per_container)
        return self.containers * per_container

    def version(self) -> str:
        return f"{self.model}+vllm-{VLLM_VERSION}"

    @property
    def fallback(self) -> OcrEngine:
        if self._fallback is None:
            from ocr_backend.engines.local import LocalEngine

            self._fallback = LocalEngine()
        return self._fallback

    def start(self) -> None:
        reached_modal = self._remote is None and self.bills_gpu  # the Modal class, not a remote handed in
        info = self.check_started(self.connect())
        if reached_modal:
            deployment.remember(self.app_name, info.get("gpu"), info.get("max_containers"), info.get("model"), "class")

    def check_started(self, remote: RemoteOcr) -> dict[str, Any]:
        """One cheap call that wakes a container: what it serves, or why it could not start,
        within the start-up allowance."""
        timeout = self.startup_timeout_s
        try:
            info = call_within(lambda: remote.info(timeout=timeout), timeout)
        except DeadlineExceeded:
            raise self._startup_error(
                f"no answer within {timeout:g} s (its container may be failing at start-up, or no GPU of that "
                "type is free)"
            ) from None
        except EngineError:
            raise
        except Exception as exc:
            if error_kind(exc) == "fatal":
                raise user_error(exc, self.app_name, CLASS_NAME) from None
            raise self._startup_error(f"{type(exc).__name__}: {exc}") from exc
        reason = startup_failure(info)
        if reason:
            raise self._startup_error(reason)
        self.plan_from(info)
        logger.info("GPU class ready: %s", info)
        return info

    def plan_from(self, info: dict[str, Any]) -> None:
        """Fan out as far as the deployed class allows, not as far as this client guesses."""
        self.served = dict(info)
        self.model = info.get("model") or self.model
        if isinstance(info.get("max_containers"), int) and info["max_containers"] > 0:
            self.containers = info["max_containers"]
            if self.client == "batch":
                self.max_in_flight = 2 * self.containers
        if isinstance(info.get("max_inputs"), int) and info["max_inputs"] > 0:
            self.inputs_per_container = info["max_inputs"]
        if isinstance(info.get("max_num_seqs"), int) and info["max_num_seqs"] > 0:
            self.max_num_seqs = info["max_num_seqs"]

    def call_deadline(self, pages: int) -> float:
        return self.startup_timeout_s + self.page_timeout_s * pages

    def _startup_error(self, reason: str) -> EngineError:
        return EngineError(
            f"the GPU class failed to start: {reason}. Its log: `modal app logs {self.app_name}`; "
            "redeploy with `bookocr deploy`, or run on the CPU with --engine local"
        )

    def connect(self) -> RemoteOcr:
        """The remote class; the first call checks token, network and deployment, fast."""
        if self._remote is None:
            self._remote = ModalRemote(self.app_name, CLASS_NAME, gpu=self.gpu).connect(self.network_check)
        return self._remote

    def recognize(self, page: PageInput) -> PageResult:
        [result] = list(self.recognize_many([page]))
        return result

    def books_at_once(self) -> int:
        """The streaming client takes pages of several books at once: they share the calls in flight."""
        return BOOKS_AT_ONCE if self.client == "stream" else 1

    def wants_another_book(self, running: int) -> bool:
        """Room for the next book: every running book has sent all its pages (what is in flight is their tail),
        so the next book's pages fill the places their last pages free."""
        return running == 0 or self.client == "stream" and self._pool.drained(running)

    def recognize_many(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        if self.client == "batch":
            return self._recognize_batches(pages)
        return _Stream(self, self.connect(), pages).run()

    def _send(self, remote: RemoteOcr, task: _Task, stop: threading.Event, cancel: Cancel) -> _Outcome:
        return self._call(remote, [task.job.data], self.attempts[task.attempt], stop, STREAM_DEADLINE_PAGES, cancel)

    def _recognize_batches(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        """The batch client: 32-page calls, several in flight, a failed page retried in a call of its own."""
        remote = self.connect()
        wake, stop = threading.Event(), threading.Event()
        feeder = _Feeder(pages, self._encode, wake, max_buffered=BUFFER_BATCHES * self.batch_size)
        batches: set[Future[_BatchOutcome]] = set()  # at most max_in_flight GPU calls
        fallbacks: set[Future[list[PageResult]]] = set()  # CPU work apart, so it never holds a GPU slot
        feeder.start()
        try:
            while True:
                wake.clear()
                yield from feeder.take_unusable()
                for future in [f for f in batches if f.done()]:
                    batches.discard(future)
                    outcome = future.result()
                    yield from outcome.results
                    if outcome.failed:
                        fallbacks.add(_in_thread(wake, self._fall_back_all, outcome.failed))
                for future in [f for f in fallbacks if f.done()]:
                    fallbacks.discard(future)
                    yield from future.result()
                if feeder.error is not None:
                    raise feeder.error
                size = plan_batch_size(
                    feeder.buffered,
                    feeder.exhausted,
                    len(batches),
                    self.containers,
                    self.batch_size,
                    self.min_batch,
                    self.max_in_flight,
                )
                if size:
                    batches.add(_in_thread(wake, self._process_batch, remote, feeder.take(size), stop))
                    continue
                if feeder.exhausted and not (batches or fallbacks or feeder.buffered):
                    yield from feeder.take_unusable()
                    return
                wake.wait(0.5)
        finally:
            stop.set()
            feeder.stop()

    def close(self) -> None:
        if self._closed.is_set():  # once: a library job closes it early on Ctrl-C, then again on the way out
            return
        self._closed.set()  # a call waiting to be sent again (transient error) is not; streams stop
        close_remote = getattr(self._remote, "close", None)  # ModalRemote: cancels calls still waiting
        if close_remote is not None:
            close_remote()
        if self._fallback is not None:
            self._fallback.close()

    # --- one page in, one batch out ---------------------------------------------------
    def _encode(self, page: PageInput) -> _Job | PageResult:
        if page.error:
            return PageResult.failed(page, self, page.error)
        if page.image is None:
            return PageResult.failed(page, self, "no page image was rendered")
        try:
            data = encode_page(page.image, quality=self.jpeg_quality)
        except Exception as exc:
            return PageResult.failed(page, self, f"could not encode the page image: {type(exc).__name__}: {exc}")
        # The runner keeps each PageInput until its result is recorded; dropping the
        # pixels here keeps a book's worth of buffered pages to their JPEG size.
        page.image = None
        return _Job(page.number, data)

    def _process_batch(self, remote: RemoteOcr, jobs: list[_Job], stop: threading.Event) -> _BatchOutcome:
        states = {job.number: _PageState() for job in jobs}
        outcome = _BatchOutcome()
        todo = jobs
        for attempt, settings in enumerate(self.attempts, start=1):
            outputs, error = self._call(remote, [job.data for job in todo], settings, stop)
            if outputs is None:
                for job in todo:
                    states[job.number].reasons.append(f"the GPU call failed: {error}")
                break
            retry: list[_Job] = []
            for job, output in zip(todo, outputs):
                result = self._judge(job, output, states[job.number], attempt)
                if result is None:
                    retry.append(job)
                else:
                    outcome.results.append(result)
            todo = retry
            if not todo:
                break
        outcome.failed.extend((job, states[job.number]) for job in todo)
        return outcome

    def _judge(self, job: _Job, output: dict[str, Any], state: _PageState, attempt: int) -> PageResult | None:
        """The page's result when this attempt is good; None (the reason kept) when it is not."""
        state.gpu_seconds += float(output.get("gpu_seconds") or 0.0)
        state.upload_bytes += len(job.data)
        state.last_text = output.get("text") or ""
        self.model = output.get("model") or self.model
        page = cleaning.clean(state.last_text)
        verdict = judge(output, page)
        if verdict is None:
            return self._accepted(job, output, page, state, attempt)
        state.reasons.append(f"attempt {attempt}: {verdict}")
        return None

    def _call(
        self,
        remote: RemoteOcr,
        images: list[bytes],
        settings: DecodeSettings,
        stop: threading.Event,
        deadline_pages: int = 0,
        cancel: Cancel | None = None,
    ) -> _Outcome:
        """The remote call with backoff on transient errors (a preempted container, a lost
        connection: the pages are sent again); fatal ones, and a class that could not start,
        raise for the user. A call past its deadline fails its pages; none is sent once the
        run has stopped. ``cancel`` (for a remote that takes it) gives the call up."""
        timeout = self.call_deadline(max(len(images), deadline_pages))
        extra = {"cancel": cancel} if cancel is not None and _takes_cancel(remote) else {}
        for retry in range(self.transient_retries + 1):
            if stop.is_set() or self._closed.is_set():
                return None, "the run was stopped"
            if cancel is not None and cancel.is_set():
                return None, "cancelled"
            try:
                outputs = call_within(
                    lambda: remote.ocr(images, settings.as_dict(), timeout=timeout, **extra), timeout, cancel=cancel
                )
            except DeadlineExceeded as exc:
                return None, str(exc)
            except CallCancelled:
                return None, "cancelled"
            except Exception as exc:
                kind = error_kind(exc)
                if kind == "fatal":
                    raise user_error(exc, self.app_name, CLASS_NAME) from None
                if kind == "transient" and retry < self.transient_retries:
                    self.sleep(self.backoff_s * 2**retry)
                    continue
                return None, f"{type(exc).__name__}: {exc}"
            reason = startup_failure(outputs)
            if reason:  # no more work for it: the run stops, pages not done stay pending
                raise self._startup_error(reason)
            if len(outputs) != len(images):
                return None, f"{len(outputs)} results came back for {len(images)} pages"
            return outputs, ""
        return None, "unreachable"  # pragma: no cover - the loop always returns

    def _accepted(
        self, job: _Job, output: dict[str, Any], page: cleaning.CleanPage, state: _PageState, attempt: int
    ) -> PageResult:
        if self.figures_dir is not None and any(f.box for f in page.figures):
            page = cleaning.clean(
                state.last_text or "", decode_page(job.data), self.figures_dir, f"page_{job.number:04d}"
            )
        flags = page.flags + (["retried"] if attempt > 1 else [])
        return PageResult(
            number=job.number,
            markdown=page.markdown,
            status="ok",
            engine=self.name,
            engine_version=self.version(),
            seconds=state.gpu_seconds,
            flags=flags,
            reason="; ".join(state.reasons),
            raw=output.get("text") or "",
            extra={
                **self._cost(output, state),
                "attempts": attempt,
                "finish_reason": output.get("finish_reason"),
                "prompt_tokens": output.get("prompt_tokens"),
                "output_tokens": output.get("output_tokens"),
                "figures": len(page.figures),
                "malformed_boxes": page.malformed_boxes,
            },
        )

    def _fall_back_all(self, failed: list[tuple[_Job, _PageState]]) -> list[PageResult]:
        return [self._fall_back(job, state) for job, state in failed]

    def _fall_back(self, job: _Job, state: _PageState) -> PageResult:
        page = PageInput(number=job.number, image=decode_page(job.data))
        result = self.fallback.recognize_one(page)  # in the local engine's worker processes, under their deadline
        why = "; ".join(state.reasons)
        if result.status == "failed":
            result.reason = f"DeepSeek failed ({why}) and so did the {result.engine} engine: {result.reason}"
        else:
            result.status = "fallback"
            result.reason = f"DeepSeek failed ({why}); used the {result.engine} engine"
        result.raw = state.last_text  # the failed DeepSeek output, kept for diagnosis
        result.extra = {
            **result.extra,
            **self._cost({}, state),
            "attempts": len(state.reasons),
            "fallback_from": self.name,
        }
        return result

    def _cost(self, output: dict[str, Any], state: _PageState) -> dict[str, Any]:
        gpu = self.gpu or output.get("gpu") or DEFAULT_GPU
        priced = self.bills_gpu or self.gpu_price is not None
        return {
            "gpu": gpu,
            "gpu_seconds": round(state.gpu_seconds, 4),
            "cost_usd": round(pricing.page_cost(state.gpu_seconds, gpu, self.gpu_price), 8) if priced else 0.0,
            "upload_bytes": state.upload_bytes,
        }


def judge(output: dict[str, Any], page: cleaning.CleanPage) -> str | None:
    """Why an attempt failed, or None when the page is good (olmOCR's rule: only a
    clean "stop" counts, and the text must not end in a loop)."""
    if output.get("error"):
        return str(output["error"])
    reason = output.get("finish_reason")
    if reason == "repetition":
        return f"repetition loop, stopped at {output.get('output_tokens')} tokens"
    if reason != "stop":
        return "it hit the token limit (finish_reason=length)" if reason == "length" else f"finish_reason={reason}"
    if page.repetition:
        return f"repetition loop: {page.repetition}"
    if not page.markdown:
        return "no text came back"
    return None


def _seconds_from_env(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise EngineError(f"{name}={value!r} is not a number of seconds above 0")
    return seconds


__all__ = ["DeepseekEngine", "plan_batch_size", "judge"]
