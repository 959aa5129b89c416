"""The ``deepseek`` client against a simulated Modal deployment, and its upload size on real scans.

Usage: .venv/bin/python bench/bench_deepseek_client.py [--data ../shared/testdata] [--runs 5]
           [--pages 600] [--containers 4] [--page-gpu-s 0.5] [--batch-latency-s 0.8]
           [--failure-rate 0.02] [--transient-rate 0.02] [--time-scale 0.05]

1. GPU busy fraction. The real engine (batching, in-flight calls, validation, retry,
   fallback) runs against a simulated class: each call waits half the round-trip
   latency (upload, queue), takes a free container, holds it for the pages' GPU time
   (jittered per page), frees it, waits the other half (download). A share of pages
   loop on the first attempt (half of those again on the retry, then fall back to a
   simulated CPU engine), and a share of calls fail transiently. Times are simulated
   seconds scaled by --time-scale, so a 600-page book takes a few real seconds. The
   busy fraction is the containers' GPU time over containers x the whole run's wall
   time (first page asked for to last result), so start-up and the tail count against
   it. Containers are warm: cold starts (about 90 s, once per container) are not in it.
   Floor: 0.95 with 4 containers on a 600-page book.
2. Bytes uploaded per page for the image-only scans in --data, as the engine encodes
   them (runner's default 1600 px render, JPEG q70), against a 2x-zoom PNG of the same
   page (what the replaced client sent). Floor: median <= 250 KiB and under half the
   PNG's. Skipped (exit 0) when the data is absent.

Medians over --runs are reported, all measured in one invocation.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

import modal.exception
from cpu_report import describe
from PIL import Image

from ocr_backend.deepseek.client import encode_page
from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.engines.deepseek import DeepseekEngine

GOOD = "<|ref|>text<|/ref|><|det|>[[100, 100, 900, 300]]<|/det|>\nA simulated page with \\(x^2\\) in it.<｜end▁of▁sentence｜>"
LOOP = "<|ref|>text<|/ref|><|det|>[[100, 100, 900, 300]]<|/det|>\n" + "\n\n".join(["overline[[overline][||"] * 600)
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


@dataclass
class Sim:
    containers: int = 4
    page_gpu_s: float = 0.5
    jitter: float = 0.6  # per-page GPU time varies +-60% (sparse vs dense pages)
    batch_latency_s: float = 0.8  # round trip per call: upload, queue, download
    render_s: float = 0.06  # the runner's render worker, per page
    fallback_s: float = 1.5  # the CPU engine on a page that failed twice
    failure_rate: float = 0.02  # pages that loop on the first attempt (half of them again on the retry)
    transient_rate: float = 0.02  # calls that fail with a transient Modal error
    time_scale: float = 0.05
    seed: int = 0


@dataclass
class SimulatedModal:
    """A stand-in for the deployed class with ``containers`` GPUs and Modal's input queue."""

    sim: Sim
    busy: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    first_attempt_calls: int = 0
    first_attempt_pages: int = 0
    transient_failures: int = 0

    def __post_init__(self) -> None:
        self._free: Queue[int] = Queue()
        for container in range(self.sim.containers):
            self._free.put(container)
        self.busy = [0.0] * self.sim.containers
        self._rng = random.Random(self.sim.seed)
        self._lock = threading.Lock()

    def _random(self) -> float:
        with self._lock:
            return self._rng.random()

    def _wait(self, simulated_s: float) -> None:
        time.sleep(simulated_s * self.sim.time_scale)

    def ocr(self, images: list[bytes], options: dict[str, Any], timeout: float | None = None) -> list[dict[str, Any]]:
        self._wait(self.sim.batch_latency_s / 2)
        if self._random() < self.sim.transient_rate:
            with self._lock:
                self.transient_failures += 1
            raise modal.exception.InternalFailure("simulated: container lost")
        retry = options.get("ngram_size", 30) != 30
        outputs = []
        for _ in images:
            seconds = self.sim.page_gpu_s * (1 + self.sim.jitter * (2 * self._random() - 1))
            loops = self._random() < (0.5 if retry else self.sim.failure_rate)
            outputs.append(
                {
                    "text": LOOP if loops else GOOD,
                    "finish_reason": "length" if loops else "stop",
                    "gpu_seconds": seconds,
                    "gpu": "A100",
                }
            )
        container = self._free.get()
        start = time.perf_counter()
        self._wait(sum(o["gpu_seconds"] for o in outputs))
        used = time.perf_counter() - start
        self._free.put(container)
        with self._lock:
            self.busy[container] += used
            self.calls.append(len(images))
            self.first_attempt_pages += 0 if retry else len(images)
            self.first_attempt_calls += 0 if retry else 1
        self._wait(self.sim.batch_latency_s / 2)
        return outputs

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        return {"gpu": "A100", "model": "simulated", "startup_error": None}


class SimulatedCpuEngine(OcrEngine):
    name = "sim-cpu"

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.pages = 0

    def version(self) -> str:
        return "sim"

    def recognize(self, page: PageInput) -> PageResult:
        time.sleep(self.sim.fallback_s * self.sim.time_scale)
        self.pages += 1
        return PageResult(page.number, "cpu text", "ok", self.name, "sim")


def rendered_pages(count: int, sim: Sim) -> Iterator[PageInput]:
    blank = Image.new("L", (300, 420), 255)
    for number in range(1, count + 1):
        time.sleep(sim.render_s * sim.time_scale)
        yield PageInput(number=number, image=blank.copy())


@dataclass
class RunResult:
    busy_fraction: float
    pages_per_s: float  # simulated
    wall_s: float  # simulated
    calls: int
    pages_per_call: float  # first attempts only: retries are small calls by nature
    retried: int
    fallbacks: int
    transient: int


def simulate(pages: int, sim: Sim, **engine_options: Any) -> RunResult:
    remote = SimulatedModal(sim)
    cpu = SimulatedCpuEngine(sim)
    engine = DeepseekEngine(
        remote=remote,
        fallback=cpu,
        containers=sim.containers,
        sleep=lambda s: time.sleep(s * sim.time_scale),
        **engine_options,
    )
    start = time.perf_counter()
    results = list(engine.recognize_many(rendered_pages(pages, sim)))
    wall = time.perf_counter() - start
    numbers = sorted(r.number for r in results)
    assert numbers == list(range(1, pages + 1)), "a page was dropped or duplicated"
    return RunResult(
        busy_fraction=sum(remote.busy) / (sim.containers * wall),
        pages_per_s=pages / (wall / sim.time_scale),
        wall_s=wall / sim.time_scale,
        calls=len(remote.calls),
        pages_per_call=remote.first_attempt_pages / max(1, remote.first_attempt_calls),
        retried=sum(1 for r in results if "retried" in r.flags),
        fallbacks=sum(1 for r in results if r.status == "fallback"),
        transient=remote.transient_failures,
    )


def report_simulation(args: argparse.Namespace) -> bool:
    sim = Sim(
        args.containers,
        args.page_gpu_s,
        args.jitter,
        args.batch_latency_s,
        args.render_s,
        args.fallback_s,
        args.failure_rate,
        args.transient_rate,
        args.time_scale,
    )
    runs = [simulate(args.pages, Sim(**{**sim.__dict__, "seed": seed})) for seed in range(args.runs)]
    busy = statistics.median(r.busy_fraction for r in runs)
    print(
        f"1. simulated deployment: {args.pages} pages, {sim.containers} containers, {sim.page_gpu_s} GPU-s/page (+-{sim.jitter:.0%}), "
        f"{sim.batch_latency_s} s per call round trip, {sim.render_s} s render/page, {sim.failure_rate:.0%} looping pages, "
        f"{sim.transient_rate:.0%} transient call failures, time scale {sim.time_scale}"
    )
    print(
        f"   GPU busy fraction per run: {', '.join(f'{r.busy_fraction:.3f}' for r in runs)}; median {busy:.3f} (floor 0.95)"
    )
    mid = sorted(runs, key=lambda r: r.busy_fraction)[len(runs) // 2]
    print(
        f"   median run: {mid.wall_s:.0f} s simulated wall ({mid.pages_per_s:.2f} pages/s), {mid.calls} calls ({mid.pages_per_call:.1f} pages per first-attempt call), "
        f"{mid.retried} retried ok, {mid.fallbacks} fell back, {mid.transient} transient errors retried"
    )
    old = simulate(
        min(args.pages, 200), Sim(**{**sim.__dict__, "containers": 1}), batch_size=4, min_batch=4, max_in_flight=1
    )
    print(
        f"   for contrast, the replaced shape (one 4-page batch at a time, 1 GPU, 200 pages): busy {old.busy_fraction:.3f}, {old.pages_per_s:.2f} pages/s"
    )
    return busy >= 0.95


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
    ratios = [a / b for a, b in zip(ours, png2x)]
    print(
        f"2. upload per page, {len(ours)} scanned pages from {len(files)} files: median {med_ours / 1024:.0f} KiB "
        f"(max {max(ours) / 1024:.0f} KiB) vs 2x-zoom PNG median {med_png / 1024:.0f} KiB; ratio of medians {med_ours / med_png:.2f}, "
        f"median per-page ratio {statistics.median(ratios):.2f} (floor: <= 250 KiB and < 0.5)"
    )
    return med_ours <= 250 * 1024 and med_ours < 0.5 * med_png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pages", type=int, default=600)
    d = Sim()
    for name in (
        "containers",
        "page_gpu_s",
        "jitter",
        "batch_latency_s",
        "render_s",
        "fallback_s",
        "failure_rate",
        "transient_rate",
        "time_scale",
    ):
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(d, name)), default=getattr(d, name))
    args = parser.parse_args()
    print(describe())
    busy_ok = report_simulation(args)
    upload_ok = report_upload(args.data)
    print(
        f"floors: GPU busy {'met' if busy_ok else 'MISSED'}; upload {'skipped' if upload_ok is None else 'met' if upload_ok else 'MISSED'}"
    )
    return 0 if busy_ok and upload_ok is not False else 1


if __name__ == "__main__":
    sys.exit(main())
