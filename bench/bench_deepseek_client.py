"""The ``deepseek`` client against a simulated vLLM-on-Modal deployment, and its upload size on real scans.

Usage: .venv/bin/python bench/bench_deepseek_client.py [--data ../shared/testdata] [--runs 3]
           [--client both|stream|batch] [--pages 600] [--containers 4] [--time-scale 0.05] [--seed 0]
           [--no-hedge] [--hedge-depth 8] [--queue-per-container 4] [--order book|longest-first]
           [--library-books 10] [--library-pages 200 800] [--library-containers 10] [--library-time-scale 0.2]
           [--library-at-once 1 0] [--skip-simulation] [--skip-upload]

Nothing here runs on a GPU: every figure is simulated.

1. The real client (``DeepseekEngine``: feeder, calls in flight, per-page deadlines, validation,
   retry, CPU fallback) drives a simulated deployment that behaves like vLLM's continuous batch:
   each container decodes up to ``max_num_seqs`` sequences at once, one token per sequence per
   step, a step taking ``a + b * n`` seconds for n running sequences (throughput rises with
   concurrency towards 1/b: ~2,300 tokens/s at 64 on the A100 figures below, ~2,500 at 100 as
   DeepSeek report), so a sequence's decode time is proportional to its output tokens. Calls
   wait in Modal's queue until a warm container has a free input (``max_inputs``); their pages
   wait inside vLLM until a batch place frees. Output lengths are drawn from a log-normal
   fitted to the token counts of the raw samples in --data/deepseek_ocr_raw (bytes / 4); 3.7%
   of pages loop to the token cap, half of those again on the retry (then the CPU fallback),
   unless the runner stops them: a loop begins somewhere in what the page should have said and
   the runner's check sees it 700 tokens later (measured on the looping sample), at its next
   check every 256 tokens, confirmed one check later (``--loop-check-every 0``: one check, at
   4,096 tokens, as before).
   Containers cold-start (90 s), 2% of calls fail transiently, and one container is preempted
   mid-run (its calls fail and are re-sent; a replacement cold-starts).
   A cancelled call (``FunctionCall.cancel``) reaches its container half a round trip later, where its
   sequences leave the batch and their places go to the next in line.
   ``--client stream`` is today's client (one page a call, each container's batch and 4 more in flight,
   the rest waiting in the client; once every page is sent, pages in flight for 30 s are sent again while
   fewer than 8 calls per container are in flight, and the losing copy is cancelled: ``--no-hedge``,
   ``--hedge-depth``); ``--order longest-first`` hands it the pages longest first, which no client could
   do (it cannot know a page's length before decoding it): a bound on what ordering could buy;
   ``--client batch`` the 32-page-batch client it replaced, on the deployment it had (one call
   per container at a time, the first attempt allowed 8,192 tokens, no loop checks: one
   ``generate()`` a call cannot look at a page mid-way).
   Reported per client: GPU busy (time a container had a sequence running / its warm time until
   the last result; floor 0.97), wall / ideal (floor 1.1; ideal: total GPU work / containers,
   the work being every token of the attempts that finished, decoded at the rate of a full batch
   of the shipped 64 sequences, spread over the containers' warm time as they were up: their
   cold starts, the preempted one's outage and its replacement's start; "flat formula": one
   90 s cold start plus work / containers, as if none were ever down), pages lost or duplicated
   (0), mean sequences per step, GPU-seconds billed (warm time, cold starts included). Times are
   simulated seconds, run at --time-scale.
3. A library job (issue 14): the real ``Library.ocr_many`` over --library-books generated PDFs of
   --library-pages pages (tiny page images, so rendering costs little real time; search indexing off), its
   engine the same client on the same deployment with --library-containers containers, built by name as
   a job builds ``deepseek`` (the ``deepseek-sim`` engine here). ``--library-at-once 1``: one book after
   another (as before); ``0``: the client's own fan-out (the next book starts once the running ones have
   sent all their pages). Reported: the share of the job's wall time with >= 80% of the containers running
   a sequence (floor 0.90; from the job's start, which includes the 90 s cold start, and from the first
   container up), wall / ideal (floor 1.15; the ideal as in 1.), pages lost or duplicated, and when each
   book's last page came back.
2. Bytes uploaded per page for the image-only scans in --data, as the engine encodes them
   (1600 px, JPEG q70), against a 2x-zoom PNG (what the client before that sent). Floor:
   median <= 250 KiB and under half the PNG's.

Each part is skipped (exit 0) when its data is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import modal.exception
from cpu_report import describe
from PIL import Image

from ocr_backend.deepseek.client import JPEG_QUALITY, CallCancelled, Cancel, encode_page
from ocr_backend.deepseek.constants import MAX_INPUTS, SCALEDOWN_WINDOW_S
from ocr_backend.deepseek.pricing import PRICE_PER_SECOND
from ocr_backend.deepseek.runner import (
    FIRST_ATTEMPT,
    LOOP_CONFIRMATIONS,
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    RETRY_ATTEMPT,
    DecodeSettings,
)
from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.engines.deepseek import (
    BOOKS_AT_ONCE,
    HEDGE_AFTER_S,
    HEDGE_DEPTH,
    QUEUE_PER_CONTAINER,
    DeepseekEngine,
)

GOOD = "<|ref|>text<|/ref|><|det|>[[100, 100, 900, 300]]<|/det|>\nA simulated page with \\(x^2\\) in it.<｜end▁of▁sentence｜>"
LOOP = "<|ref|>text<|/ref|><|det|>[[100, 100, 900, 300]]<|/det|>\n" + "\n\n".join(["overline[[overline][||"] * 600)
RAW_SAMPLES = "deepseek_ocr_raw"
# The one measured ratio: the looping sample filled its 8,192-token budget with 35,838 bytes (4.4 bytes
# a token); German prose with LaTeX packs a little less per token, so 4.0.
BYTES_PER_TOKEN = 4.0
SCANS = [
    "gitenberg_whitehead_41568/derived/whitehead_scan10.pdf",
    "olmocr_bench_sample/derived_scans/math_2503_04086_scan.pdf",
    "olmocr_bench_sample/derived_scans/openstax_caculus_pg_273_scan.pdf",
    "olmocr_bench_sample/derived_scans/mathfuncs_scan.pdf",
    "olmocr_bench_sample/pdfs/lincoln_letter.pdf",
    "olmocr_bench_sample/pdfs/mattsnotes.pdf",
    "olmocr_bench_sample/pdfs/buildingnotes.pdf",
    "olmocr_bench_sample/pdfs/small_page_size.pdf",
    "olmocr_bench_sample/pdfs/blank_book_pg1.pdf",
    "olmocr_tests/gnarly_pdfs/horribleocr.pdf",
    "olmocr_tests/gnarly_pdfs/edgar_image.pdf",
]


@dataclass(frozen=True)
class Sim:
    containers: int = 4
    max_num_seqs: int = MAX_NUM_SEQS
    max_inputs: int = MAX_INPUTS
    first_max_tokens: int = FIRST_ATTEMPT.loop_check_tokens  # where the streaming client's first attempt stops a loop
    loop_check_every: int = FIRST_ATTEMPT.loop_check_every  # the runner's loop checks (0: once, at first_max_tokens)
    # Tokens from a loop's onset until detect_repetition sees it: measured on the looping sample (its loop
    # starts at character 2,612; the check first fires at 5,687, ~700 tokens later at 4.4 bytes a token).
    loop_detect_tokens: int = 700
    step_base_s: float = 0.006  # one decode step with a single sequence (weights read once)
    step_per_seq_s: float = 0.00034  # each further sequence in the step: ~2,500 tokens/s at 100
    prefill_tokens: int = 30  # the image's prefill, in decode steps
    log_mu: float = 7.0  # output tokens ~ lognormal(mu, sigma), fitted to the raw samples
    log_sigma: float = 0.9
    loop_rate: float = 0.037  # DeepSeek's own production figure for PDF pages
    retry_loop_rate: float = 0.5
    cold_start_s: float = 90.0
    latency_s: float = 0.4  # a call's round trip: upload, queue, download
    render_s: float = 0.06
    fallback_s: float = 1.5
    transient_rate: float = 0.02
    preempt_after_s: float = 40.0  # after the containers came up; 0: never
    time_scale: float = 0.05
    seed: int = 0
    # the streaming client's settings (ocr_backend/engines/deepseek.py)
    queue_per_container: int = QUEUE_PER_CONTAINER
    hedge: bool = True
    hedge_after_s: float = HEDGE_AFTER_S
    hedge_depth: int = HEDGE_DEPTH
    order: str = "book"  # longest-first: the pages sent longest first, as only a client that knew could

    def step_s(self, n: int) -> float:
        return self.step_base_s + self.step_per_seq_s * n


@dataclass
class PageTruth:
    tokens: int
    loops_first: bool
    loops_retry: bool
    onset_first: int = 0  # where a loop begins: somewhere in what the page should have said
    onset_retry: int = 0


@dataclass
class Seq:
    remaining: float
    priority: int = 0
    tokens: float = 0.0  # its whole length, counted as work once it finishes
    done: threading.Event = field(default_factory=threading.Event)
    gpu_seconds: float = 0.0
    preempted: bool = False
    cancelled: bool = False


@dataclass
class Container:
    index: int
    up_at: float  # simulated time it is warm
    created: float = 0.0  # when it began to start (and to be billed)
    alive: bool = True
    inputs: int = 0
    running: list[Seq] = field(default_factory=list)
    waiting: list[Seq] = field(default_factory=list)
    busy_s: float = 0.0
    seq_s: float = 0.0  # integral of running sequences over time
    tokens: float = 0.0  # decoded, work lost to the preemption included
    useful: float = 0.0  # decoded by sequences that finished
    down_at: float | None = None

    def warm(self, now: float) -> bool:
        return self.alive and now >= self.up_at


class SimulatedDeployment:
    """The deployed class: ``containers`` GPUs, each a vLLM-like continuous batch, behind Modal's queue.
    Simulated time runs ``1 / time_scale`` times faster than the wall clock."""

    def __init__(self, sim: Sim, truth: dict[str, PageTruth]) -> None:
        self.sim = sim
        self.truth = truth
        self.rng = random.Random(sim.seed + 1)
        self.cond = threading.Condition()
        self.containers: list[Container] = []
        self.retired: list[Container] = []
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.started = False
        self.preempted = False
        self.transient = 0
        self.calls = 0
        self.cancelled = 0  # calls given up by the client (a hedge's loser) and stopped here
        self.busy_time: dict[int, float] = {}  # simulated seconds during which n containers had a sequence running
        self.stopped = False
        self._thread = threading.Thread(target=self._loop, name="sim-gpu", daemon=True)

    # --- time -----------------------------------------------------------------------------
    def now(self) -> float:
        return (time.perf_counter() - self.t0) / self.sim.time_scale

    def _sleep(self, simulated: float) -> None:
        time.sleep(simulated * self.sim.time_scale)

    def _start(self) -> None:
        """The first call wakes the class: every container cold-starts (Modal scales to the queue)."""
        if self.started:
            return
        self.started = True
        now = self.now()
        self.containers = [
            Container(i, now + self.sim.cold_start_s * (1 + 0.1 * self.rng.random()))
            for i in range(self.sim.containers)
        ]
        self.last = now
        self._thread.start()

    # --- the GPU ----------------------------------------------------------------------------
    def _loop(self) -> None:
        with self.cond:
            warm = 0
            while not self.stopped:
                now = self.now()
                self._advance(now)
                self._maybe_preempt(now)
                if sum(c.warm(now) for c in self.containers) != warm:  # calls queued in Modal may go now
                    warm = sum(c.warm(now) for c in self.containers)
                    self.cond.notify_all()
                self.cond.wait(self._next_event(now) * self.sim.time_scale)

    def _advance(self, now: float) -> None:
        dt = now - self.last
        self.last = now
        busy = sum(1 for c in self.containers if c.warm(now) and c.running)
        self.busy_time[busy] = self.busy_time.get(busy, 0.0) + max(0.0, dt)  # containers with a sequence running
        for c in self.containers:
            if not c.warm(now):
                continue
            self._admit(c)
            if not c.running or dt <= 0:
                continue
            n = len(c.running)
            c.busy_s += dt
            c.seq_s += n * dt
            steps = dt / self.sim.step_s(n)
            c.tokens += steps * n
            for seq in c.running:
                seq.remaining -= steps
                seq.gpu_seconds += dt / n
            for seq in [s for s in c.running if s.remaining <= 1e-6]:
                c.running.remove(seq)
                c.useful += seq.tokens
                seq.done.set()
            self._admit(c)

    def _admit(self, c: Container) -> None:
        while c.waiting and len(c.running) < self.sim.max_num_seqs:
            first = min(range(len(c.waiting)), key=lambda i: c.waiting[i].priority)  # vLLM's priority policy
            c.running.append(c.waiting.pop(first))

    def _next_event(self, now: float) -> float:
        times = [1.0]
        for c in self.containers:
            if c.alive and now < c.up_at:
                times.append(c.up_at - now)
            if c.warm(now) and c.running:
                times.append(min(s.remaining for s in c.running) * self.sim.step_s(len(c.running)))
        return max(1e-4, min(times))

    def _maybe_preempt(self, now: float) -> None:
        if self.preempted or not self.sim.preempt_after_s or len(self.containers) < 2:
            return
        victim = self.containers[1]
        if now < victim.up_at + self.sim.preempt_after_s:
            return
        self.preempted = True
        victim.alive, victim.down_at = False, now
        for seq in victim.running + victim.waiting:
            seq.preempted = True
            seq.done.set()
        victim.running, victim.waiting = [], []
        self.retired.append(victim)
        self.containers[1] = Container(victim.index, now + self.sim.cold_start_s, now)  # Modal starts a replacement

    # --- the class's methods ---------------------------------------------------------------
    def info(self, timeout: float | None = None) -> dict[str, Any]:
        with self.cond:
            self._start()
            first_up = min(c.up_at for c in self.containers)
        self._sleep(max(0.0, first_up - self.now()))
        return {
            "gpu": "A100",
            "model": "simulated",
            "vllm": "simulated",
            "max_containers": self.sim.containers,
            "max_inputs": self.sim.max_inputs,
            "max_num_seqs": self.sim.max_num_seqs,
            "startup_error": None,
        }

    def ocr(
        self, images: list[bytes], options: dict[str, Any], timeout: float | None = None, cancel: Cancel | None = None
    ) -> list[dict[str, Any]]:
        self._sleep(self.sim.latency_s / 2)
        with self.cond:
            self._start()
            self.calls += 1
            if self.rng.random() < self.sim.transient_rate:
                self.transient += 1
                raise modal.exception.InternalFailure("simulated: the call failed in transit")
        retry = options.get("ngram_size", 30) != 30
        settings = DecodeSettings.from_dict(options)
        plans = [self._plan(self.truth[_key(data)], retry, settings) for data in images]
        priority = int(options.get("priority", 0))
        seqs = [
            Seq(tokens + self.sim.prefill_tokens, priority, tokens + self.sim.prefill_tokens) for tokens, _ in plans
        ]
        container = self._place(seqs)
        if cancel is not None:
            cancel.on_cancel(lambda: self._cancel_later(container, seqs))
        for seq in seqs:
            seq.done.wait()
        with self.cond:
            container.inputs -= 1
            self.cond.notify_all()
        if any(seq.preempted for seq in seqs):
            raise modal.exception.InternalFailure("simulated: the container was preempted")
        if any(seq.cancelled for seq in seqs):
            raise CallCancelled()
        self._sleep(self.sim.latency_s / 2)
        return [
            {
                "text": GOOD if reason == "stop" else LOOP,
                "finish_reason": reason,
                "output_tokens": tokens,
                "gpu_seconds": seq.gpu_seconds,
                "gpu": "A100",
            }
            for (tokens, reason), seq in zip(plans, seqs)
        ]

    def _plan(self, page: PageTruth, retry: bool, settings: DecodeSettings) -> tuple[int, str]:
        """(tokens decoded, finish_reason): a loop runs to the cap, unless the runner's loop check stops it."""
        if page.loops_retry if retry else page.loops_first:
            if settings.loop_check_every:  # the runner's checks: the first mark past detection, then confirmations
                seen = (page.onset_retry if retry else page.onset_first) + self.sim.loop_detect_tokens
                every = settings.loop_check_every
                stop = math.ceil(seen / every) * every + every * (LOOP_CONFIRMATIONS - 1)
                return (stop, "repetition") if stop < settings.max_tokens else (settings.max_tokens, "length")
            if settings.loop_check_tokens:
                return settings.loop_check_tokens, "repetition"
            return settings.max_tokens, "length"
        if page.tokens > settings.max_tokens:
            return settings.max_tokens, "length"
        return page.tokens, "stop"

    def _place(self, seqs: list[Seq]) -> Container:
        """Modal's queue: the call waits until a warm container has an input free."""
        with self.cond:
            while True:
                now = self.now()
                free = [c for c in self.containers if c.warm(now) and c.inputs < self.sim.max_inputs]
                if free:
                    self._advance(now)
                    container = min(free, key=lambda c: c.inputs)
                    container.inputs += 1
                    container.waiting.extend(seqs)
                    self._admit(container)
                    self.cond.notify_all()
                    return container
                self.cond.wait(5 * self.sim.time_scale)

    def _cancel_later(self, container: Container, seqs: list[Seq]) -> None:
        """FunctionCall.cancel: the request reaches the container half a round trip later, where vLLM
        aborts the call's sequences and their batch places go to the next in line."""

        def cancel() -> None:
            self._sleep(self.sim.latency_s / 2)
            with self.cond:
                self._advance(self.now())
                live = [seq for seq in seqs if not seq.done.is_set()]
                for seq in live:
                    (container.running if seq in container.running else container.waiting).remove(seq)
                    seq.cancelled = True
                    seq.done.set()
                self.cancelled += bool(live)
                self._admit(container)
                self.cond.notify_all()

        threading.Thread(target=cancel, name="sim-cancel", daemon=True).start()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def _key(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class SimulatedCpuEngine(OcrEngine):
    name = "sim-cpu"

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def version(self) -> str:
        return "sim"

    def recognize(self, page: PageInput) -> PageResult:
        time.sleep(self.sim.fallback_s * self.sim.time_scale)
        return PageResult(page.number, "cpu text", "ok", self.name, "sim")


def book(count: int, sim: Sim) -> tuple[list[Image.Image], dict[str, PageTruth]]:
    """Distinct page images and what the model does on each, keyed by the bytes the client uploads."""
    rng = random.Random(sim.seed)
    onset_rng = random.Random(sim.seed + 2)  # apart, so the lengths and loops stay those of earlier versions
    images, truth = [], {}
    for number in range(1, count + 1):
        image = Image.new("L", (120, 160), 255)
        image.putpixel((number % 120, number // 120), 0)  # distinct bytes per page
        truth[_key(encode_page(image, quality=JPEG_QUALITY))] = page_truth(sim, rng, onset_rng)
        images.append(image)
    return images, truth


def page_truth(sim: Sim, rng: random.Random, onset_rng: random.Random) -> PageTruth:
    tokens = min(MAX_MODEL_LEN, max(50, round(rng.lognormvariate(sim.log_mu, sim.log_sigma))))
    loops = rng.random() < sim.loop_rate
    loops_again = loops and rng.random() < sim.retry_loop_rate
    onsets = (onset_rng.randint(0, tokens), onset_rng.randint(0, tokens))
    return PageTruth(tokens, loops, loops_again, *onsets)


def rendered(images: list[Image.Image], sim: Sim) -> Iterator[PageInput]:
    for number, image in enumerate(images, start=1):
        time.sleep(sim.render_s * sim.time_scale)
        yield PageInput(number=number, image=image.copy())


@dataclass
class RunResult:
    client: str
    busy: float
    wall_over_ideal: float
    wall_s: float
    ideal_s: float
    flat_ideal_s: float  # the earlier formula: one 90 s cold start, every container up all the time
    mean_seqs: float
    billed_gpu_s: float  # from each container's start to its end, the idle window after the last result included
    lost: int
    duplicated: int
    retried: int
    fallbacks: int
    transient: int
    calls: int
    cancelled: int


def simulate(client: str, pages: int, sim: Sim) -> RunResult:
    images, truth = book(pages, sim)
    if sim.order == "longest-first":
        images = sorted(images, key=lambda image: -truth[_key(encode_page(image, quality=JPEG_QUALITY))].tokens)
    if client == "batch":  # the class it ran on: one call per container at a time
        sim = replace(sim, max_inputs=1)
    deployment = SimulatedDeployment(sim, truth)
    engine = DeepseekEngine(remote=deployment, **engine_settings(client, sim))
    start = deployment.now()
    try:
        engine.check_started(deployment)
        results = list(engine.recognize_many(rendered(images, sim)))
    finally:
        end = deployment.now()
        deployment.stop()
    numbers = [r.number for r in results]
    containers = deployment.containers + deployment.retired
    warm = sum(max(0.0, min(c.down_at or end, end) - c.up_at) for c in containers)
    busy = sum(c.busy_s for c in containers)
    tokens = sum(c.useful for c in containers)  # the work the book needed: not what the preemption lost
    # Tokens/s at a full batch of the shipped MAX_NUM_SEQS, whatever --max-num-seqs says: a deployment
    # that decodes fewer sequences at once is slower per GPU, and the yardstick must not move with it.
    full_rate = max(sim.max_num_seqs, MAX_NUM_SEQS) / sim.step_s(max(sim.max_num_seqs, MAX_NUM_SEQS))
    flat_ideal = sim.cold_start_s + tokens / full_rate / sim.containers
    ideal = ideal_wall(containers, start, tokens / full_rate)
    return RunResult(
        client=client,
        busy=busy / warm if warm else 0.0,
        wall_over_ideal=(end - start) / ideal,
        wall_s=end - start,
        ideal_s=ideal,
        flat_ideal_s=flat_ideal,
        mean_seqs=sum(c.seq_s for c in containers) / busy if busy else 0.0,
        billed_gpu_s=sum((c.down_at or end + SCALEDOWN_WINDOW_S) - c.created for c in containers),
        lost=len(set(range(1, pages + 1)) - set(numbers)),
        duplicated=len(numbers) - len(set(numbers)),
        retried=sum(1 for r in results if "retried" in r.flags),
        fallbacks=sum(1 for r in results if r.status == "fallback"),
        transient=deployment.transient,
        calls=deployment.calls,
        cancelled=deployment.cancelled,
    )


def engine_settings(client: str, sim: Sim) -> dict[str, Any]:
    """The client's settings on the simulation: its deadlines and back-off on the simulated clock."""
    scaled = sim.time_scale
    options: dict[str, Any] = {
        "client": client,
        "containers": sim.containers,
        "fallback": SimulatedCpuEngine(sim),
        "sleep": lambda s: time.sleep(s * scaled),
        "startup_timeout_s": 600 * scaled,
        "page_timeout_s": 20 * scaled,
        "backoff_s": 1.0,
    }
    if client == "batch":  # what the batch client sent: the full 8,192 tokens on the first attempt
        options["attempts"] = (DecodeSettings(), replace(RETRY_ATTEMPT, loop_check_every=0))  # one generate() each
        return options
    first = replace(FIRST_ATTEMPT, loop_check_tokens=sim.first_max_tokens, loop_check_every=sim.loop_check_every)
    options["attempts"] = (first, replace(RETRY_ATTEMPT, loop_check_every=sim.loop_check_every))
    options.update(
        queue_per_container=sim.queue_per_container,
        hedge=sim.hedge,
        hedge_after_s=sim.hedge_after_s * scaled,
        hedge_depth=sim.hedge_depth,
    )
    return options


def ideal_wall(containers: list[Container], start: float, work_s: float) -> float:
    """The wall time by which the containers' warm time, as they were up (cold starts, the preempted
    one's outage and its replacement's start), adds up to the book's GPU work at the full batch's rate:
    total GPU work / containers, counting only the containers there were."""

    def capacity(t: float) -> float:
        return sum(max(0.0, min(c.down_at or math.inf, start + t) - max(c.up_at, start)) for c in containers)

    low, high = 0.0, 1.0
    while capacity(high) < work_s:
        high *= 2
    for _ in range(60):
        low, high = (low, (low + high) / 2) if capacity((low + high) / 2) >= work_s else ((low + high) / 2, high)
    return high


def fit_lengths(raw_dir: Path) -> tuple[float, float, list[int]] | None:
    """(mu, sigma) of log output tokens over the samples that did not loop, and every sample's tokens."""
    files = sorted(raw_dir.glob("*.raw.mmd"))
    if not files:
        return None
    tokens = {f.name: math.ceil(f.stat().st_size / BYTES_PER_TOKEN) for f in files}
    good = [math.log(n) for name, n in tokens.items() if "REPETITION" not in name]
    if len(good) < 2:
        return None
    return statistics.mean(good), statistics.stdev(good), sorted(tokens.values())


def sim_from(args: argparse.Namespace, mu: float, sigma: float) -> Sim:
    return Sim(
        containers=args.containers,
        max_num_seqs=args.max_num_seqs,
        max_inputs=args.max_inputs,
        first_max_tokens=args.first_max_tokens,
        loop_check_every=args.loop_check_every,
        log_mu=mu,
        log_sigma=sigma,
        preempt_after_s=args.preempt_after_s,
        time_scale=args.time_scale,
        seed=args.seed,
        queue_per_container=args.queue_per_container,
        hedge=not args.no_hedge,
        hedge_after_s=args.hedge_after_s,
        hedge_depth=args.hedge_depth,
        order=args.order,
    )


def report_simulation(args: argparse.Namespace) -> bool | None:
    fitted = fit_lengths(args.data / RAW_SAMPLES)
    if fitted is None:
        print(f"1. simulated deployment: skip: no raw DeepSeek-OCR samples under {args.data / RAW_SAMPLES}")
        return None
    mu, sigma, sample_tokens = fitted
    sim = sim_from(args, mu, sigma)
    print(
        f"1. simulated deployment (no GPU): {args.pages} pages, {sim.containers} containers, "
        f"max_num_seqs {sim.max_num_seqs}, step {sim.step_base_s * 1000:g} ms + {sim.step_per_seq_s * 1000:g} ms/seq; "
        f"output tokens lognormal(mu {mu:.2f}, sigma {sigma:.2f}) fitted to the samples' {sample_tokens} "
        f"(median {math.exp(mu):.0f}); {sim.loop_rate:.1%} loop to the cap ({sim.retry_loop_rate:.0%} again on the "
        f"retry); cold start {sim.cold_start_s:g} s; {sim.transient_rate:.0%} transient call failures; "
        + (
            f"container 1 preempted {sim.preempt_after_s:g} s after it came up"
            if sim.preempt_after_s
            else "no preemption"
        )
        + f"; time scale {sim.time_scale}"
    )
    clients = ["stream", "batch"] if args.client == "both" else [args.client]
    ok = True
    for client in clients:
        runs = [simulate(client, args.pages, replace(sim, seed=args.seed + i)) for i in range(args.runs)]
        mid = sorted(runs, key=lambda r: r.wall_over_ideal)[len(runs) // 2]
        lost, dup = sum(r.lost for r in runs), sum(r.duplicated for r in runs)
        print(
            f"   {client:6s}: GPU busy {', '.join(f'{r.busy:.3f}' for r in runs)} (median "
            f"{statistics.median(r.busy for r in runs):.3f}); wall/ideal {', '.join(f'{r.wall_over_ideal:.2f}' for r in runs)} "
            f"(flat formula {', '.join(f'{r.wall_s / r.flat_ideal_s:.2f}' for r in runs)}); "
            f"lost {lost}, duplicated {dup}"
        )
        print(
            f"           median run: {mid.wall_s:.0f} s wall vs {mid.ideal_s:.0f} s ideal ({mid.flat_ideal_s:.0f} s and "
            f"{mid.wall_s / mid.flat_ideal_s:.2f}x by the flat formula), {mid.mean_seqs:.1f} sequences "
            f"per step, {mid.calls} calls, {mid.retried} retried ok, {mid.fallbacks} fell back, "
            f"{mid.transient} transient failures re-sent, {mid.cancelled} calls cancelled; "
            f"{mid.billed_gpu_s:.0f} GPU-s billed "
            f"(${mid.billed_gpu_s * PRICE_PER_SECOND['A100']:.2f} on A100s, {SCALEDOWN_WINDOW_S} s idle window included)"
        )
        if client == "stream":
            ok = (
                statistics.median(r.busy for r in runs) >= 0.97
                and statistics.median(r.wall_over_ideal for r in runs) <= 1.1
                and lost == dup == 0
            )
    print("   floors (stream): busy >= 0.97, wall <= 1.1 x ideal, 0 lost or duplicated")
    return ok


# --- 3. a library job -----------------------------------------------------------------------------
LIBRARY_LONG_SIDE = 96  # px: tiny page images, so rendering thousands of pages costs little real time
ID_BITS = 14  # a page's id, drawn as black squares in a 4 x 4 grid: every page uploads different bytes


class SimulatedDeepseek(DeepseekEngine):
    """The real client on the simulated deployment, under a name a library job can be given: the job
    builds its one engine by name (``create_engine``), as it does ``deepseek``."""

    name = "deepseek-sim"
    deployment: ClassVar[SimulatedDeployment | None] = None
    settings: ClassVar[dict[str, Any]] = {}
    at_once: ClassVar[int] = 0  # books streaming at once; 0: the client's own
    made: ClassVar[list[DeepseekEngine]] = []

    def __init__(self, **options: Any) -> None:
        super().__init__(remote=self.deployment, **{**self.settings, **options})
        SimulatedDeepseek.made.append(self)

    def books_at_once(self) -> int:
        return self.at_once or super().books_at_once()


def library_shelf(folder: Path, sim: Sim, books: int, low: int, high: int) -> dict[str, PageTruth]:
    """``books`` PDFs of ``low``-``high`` pages, and what the model does on each page, keyed by the bytes the
    client uploads for it (rendered and encoded here as the job will)."""
    import pymupdf

    from ocr_backend.render import RenderSettings
    from ocr_backend.sources import open_source

    rng, onset_rng, sizes = random.Random(sim.seed), random.Random(sim.seed + 2), random.Random(sim.seed + 3)
    truth: dict[str, PageTruth] = {}
    for b in range(books):
        path = folder / f"book{b:02d}.pdf"
        doc = pymupdf.open()
        for n in range(sizes.randint(low, high)):
            page = doc.new_page(width=64, height=96)
            ident = b * 1000 + n + 1
            for bit in (bit for bit in range(ID_BITS) if ident >> bit & 1):
                x, y = 4 + 14 * (bit % 4), 4 + 14 * (bit // 4)
                page.draw_rect(pymupdf.Rect(x, y, x + 12, y + 12), color=None, fill=(0, 0, 0))
        doc.save(path)
        doc.close()
        with open_source(path) as source:
            for number in range(1, source.info.page_count + 1):
                image, _ = source.render(number, RenderSettings(long_side=LIBRARY_LONG_SIDE))
                key = _key(encode_page(image, quality=JPEG_QUALITY))
                if key in truth:
                    raise SystemExit(f"{path.name} page {number} uploads the same bytes as another page")
                truth[key] = page_truth(sim, rng, onset_rng)
    return truth


@dataclass
class LibraryResult:
    at_once: int
    pages: int
    wall_s: float
    ideal_s: float
    busy_share: float  # of the job's wall time, with >= need containers running a sequence
    busy_share_warm: float  # the same, from the moment the first container was up
    need_up_s: float  # when the need-th container was up (from the job's start): none can be busy before
    finished: dict[str, float]  # book -> simulated seconds from the job's start to its last page
    lost: int
    duplicated: int
    billed_gpu_s: float
    cancelled: int
    mean_seqs: float  # sequences per decode step while a container had any
    in_flight: float  # the client's calls in flight, on average over the job (sampled)


def simulate_library(folder: Path, truth: dict[str, PageTruth], sim: Sim, at_once: int, need: int) -> LibraryResult:
    """The real ``Library.ocr_many`` over the shelf in ``folder``, its engine on the simulated deployment."""
    import tempfile

    from ocr_backend.render import RenderSettings
    from server.corpus import Corpus
    from server.library import Library
    from server.runner import RunOptions, ShelfProgress

    deployment = SimulatedDeployment(sim, truth)
    SimulatedDeepseek.deployment, SimulatedDeepseek.at_once = deployment, at_once
    SimulatedDeepseek.settings = engine_settings("stream", sim)
    finished: dict[str, float] = {}

    def progress(shelf: ShelfProgress) -> None:
        for b in shelf.books:
            if b.run_pages and b.done >= b.run_pages and b.book not in finished:
                finished[b.book] = deployment.now() - start

    options = RunOptions(
        engine=SimulatedDeepseek.name, render=RenderSettings(long_side=LIBRARY_LONG_SIDE), search_index=False
    )
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:  # the calls the client keeps in flight: is it the client that holds the GPUs back?
        while not done.wait(0.5):
            samples.extend(engine._pool.used for engine in SimulatedDeepseek.made[-1:])

    sampler = threading.Thread(target=sample, name="sim-sampler", daemon=True)
    SimulatedDeepseek.made = []
    with tempfile.TemporaryDirectory(prefix="bookocr-shelf-") as corpus_dir:
        start = deployment.now()
        sampler.start()
        try:
            summary = Library(Corpus(Path(corpus_dir))).ocr_many([folder], options, progress=progress)
        finally:
            end = deployment.now()
            deployment.stop()
            done.set()
            sampler.join(5)
    containers = deployment.containers + deployment.retired
    full_rate = MAX_NUM_SEQS / sim.step_s(MAX_NUM_SEQS)
    work = sum(c.useful for c in containers) / full_rate
    busy = sum(t for n, t in deployment.busy_time.items() if n >= need)
    first_up = min(c.up_at for c in containers)
    need_up = sorted(c.up_at for c in containers)[need - 1] - start
    return LibraryResult(
        at_once=at_once or BOOKS_AT_ONCE,
        pages=sum(b.pages for b in summary.books),
        wall_s=end - start,
        ideal_s=ideal_wall(containers, start, work),
        busy_share=busy / (end - start),
        busy_share_warm=busy / (end - first_up),
        need_up_s=need_up,
        finished=finished,
        lost=sum(max(0, b.run_pages - b.done) for b in summary.books),
        duplicated=sum(max(0, b.done - b.run_pages) for b in summary.books),
        billed_gpu_s=sum((c.down_at or end + SCALEDOWN_WINDOW_S) - c.created for c in containers),
        cancelled=deployment.cancelled,
        mean_seqs=sum(c.seq_s for c in containers) / max(1e-9, sum(c.busy_s for c in containers)),
        in_flight=statistics.mean(samples) if samples else 0.0,
    )


def report_library(args: argparse.Namespace) -> bool | None:
    import tempfile

    fitted = fit_lengths(args.data / RAW_SAMPLES)
    if fitted is None or not args.library_books:
        print("3. library job: skip" + ("" if args.library_books else " (--library-books 0)"))
        return None
    mu, sigma, _ = fitted
    sim = replace(sim_from(args, mu, sigma), containers=args.library_containers, time_scale=args.library_time_scale)
    need = math.ceil(0.8 * sim.containers)
    low, high = args.library_pages
    with tempfile.TemporaryDirectory(prefix="bookocr-books-") as books_dir:
        truth = library_shelf(Path(books_dir), sim, args.library_books, low, high)
        print(
            f"3. library job (simulated, no GPU): the real Library.ocr_many over {args.library_books} books of "
            f"{low}-{high} pages ({len(truth)} pages, {LIBRARY_LONG_SIDE} px page images), the deployment of 1. "
            f"with {sim.containers} containers (one preempted); time scale {sim.time_scale}"
        )
        results = [simulate_library(Path(books_dir), truth, sim, at_once, need) for at_once in args.library_at_once]
    for r in results:
        order = "one after another" if r.at_once == 1 else f"{r.at_once} books at once"
        print(
            f"   {order}: >= {need} of {sim.containers} containers busy {r.busy_share:.2f} of the wall time "
            f"({r.busy_share_warm:.2f} from the first container up); wall/ideal {r.wall_s / r.ideal_s:.2f} "
            f"({r.wall_s:.0f} s vs {r.ideal_s:.0f} s); lost {r.lost}, duplicated {r.duplicated}; "
            f"{r.cancelled} calls cancelled; {r.billed_gpu_s:.0f} GPU-s billed; {r.mean_seqs:.1f} sequences per "
            f"step, {r.in_flight:.0f} calls in flight on average"
        )
        print("      books done at (s): " + ", ".join(f"{b} {t:.0f}" for b, t in sorted(r.finished.items())))
        longest = 1.15 * r.ideal_s
        print(
            f"      no client can have {need} containers busy before the {need}th is up, {r.need_up_s:.0f} s into the "
            f"job: from the job's start, at most {(r.wall_s - r.need_up_s) / r.wall_s:.2f} of this wall time, and "
            f"{(longest - r.need_up_s) / longest:.2f} of the longest wall the 1.15x floor allows"
        )
    print(
        f"   floors: >= {need} containers busy >= 0.90 of the wall time (judged from the first container up: see the "
        "bound above), wall <= 1.15 x ideal"
    )
    best = results[-1]
    return best.busy_share_warm >= 0.9 and best.wall_s <= 1.15 * best.ideal_s and best.lost == best.duplicated == 0


def report_upload(data: Path) -> bool | None:
    import pymupdf

    from ocr_backend.render import RenderSettings
    from ocr_backend.sources import open_source

    files = [data / name for name in SCANS if (data / name).is_file()]
    if not files:
        print(f"2. upload size: skip: no scans under {data} (pass --data)")
        return None
    ours, png2x = [], []
    for path in files:
        doc = pymupdf.open(path)
        with open_source(path) as source:
            for number in range(1, source.info.page_count + 1):
                image, _ = source.render(number, RenderSettings())
                ours.append(len(encode_page(image)))
                png2x.append(len(doc[number - 1].get_pixmap(matrix=pymupdf.Matrix(2, 2)).tobytes("png")))
        doc.close()
    med_ours, med_png = statistics.median(ours), statistics.median(png2x)
    print(
        f"2. upload per page, {len(ours)} scanned pages from {len(files)} files: median {med_ours / 1024:.0f} KiB "
        f"(max {max(ours) / 1024:.0f} KiB) vs 2x-zoom PNG median {med_png / 1024:.0f} KiB; ratio of medians "
        f"{med_ours / med_png:.2f} (floor: <= 250 KiB and < 0.5)"
    )
    return med_ours <= 250 * 1024 and med_ours < 0.5 * med_png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", choices=("both", "stream", "batch"), default="both")
    parser.add_argument("--pages", type=int, default=600)
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--time-scale", type=float, default=Sim.time_scale)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=Sim.max_num_seqs)
    parser.add_argument("--max-inputs", type=int, default=Sim.max_inputs)
    parser.add_argument("--first-max-tokens", type=int, default=FIRST_ATTEMPT.loop_check_tokens)
    parser.add_argument("--loop-check-every", type=int, default=Sim.loop_check_every, help="0: one check, at the cap")
    parser.add_argument("--preempt-after-s", type=float, default=Sim.preempt_after_s, help="0: no preemption")
    parser.add_argument("--queue-per-container", type=int, default=Sim.queue_per_container)
    parser.add_argument("--no-hedge", action="store_true", help="never send a page in flight again")
    parser.add_argument("--hedge-after-s", type=float, default=Sim.hedge_after_s)
    parser.add_argument("--hedge-depth", type=int, default=Sim.hedge_depth)
    parser.add_argument(
        "--order", choices=("book", "longest-first"), default="book", help="longest-first: an oracle's order"
    )
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--library-books", type=int, default=10, help="3.: books in the library job (0: skip)")
    parser.add_argument("--library-pages", type=int, nargs=2, default=(200, 800), metavar=("LOW", "HIGH"))
    parser.add_argument("--library-containers", type=int, default=10)
    parser.add_argument("--library-time-scale", type=float, default=0.2)
    parser.add_argument("--library-at-once", type=int, nargs="+", default=[1, 0], help="0: the client's own")
    args = parser.parse_args()
    print(describe())
    sim_ok = None if args.skip_simulation else report_simulation(args)
    library_ok = report_library(args)
    upload_ok = None if args.skip_upload else report_upload(args.data)
    verdict = {None: "skipped", True: "met", False: "MISSED"}
    print(f"floors: simulation {verdict[sim_ok]}; library job {verdict[library_ok]}; upload {verdict[upload_ok]}")
    return 0 if False not in (sim_ok, library_ok, upload_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
