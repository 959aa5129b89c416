"""GPU prices and the cost of a DeepSeek run: the estimate before, the tally after.

Prices are Modal's per-second list prices (2026); override one with ``--gpu-price``
(dollars per GPU-hour) or all of them with ``BOOKOCR_GPU_PRICES`` (a JSON object of
dollars per GPU-hour by GPU name).

Throughput is a planning figure, not a measurement from this project: DeepSeek
report ~2,500 output tokens/s (200k+ pages a day) on one A100-40GB with vLLM; a
dense book page is ~1,000-1,500 output tokens, so 1.5 pages/s on an A100 leaves
room. The others are scaled by their usual vLLM decode speed relative to an A100
(the H200 from the H100 by its memory bandwidth, 4.8 against 3.35 TB/s, rounded down).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ocr_backend.deepseek.constants import DEFAULT_CONTAINERS, DEFAULT_GPU, SCALEDOWN_WINDOW_S

if TYPE_CHECKING:
    from ocr_backend.engines.base import PageResult

PRICE_PER_SECOND = {
    "A100": 0.000583,  # 40 GB
    "A100-80GB": 0.000694,
    "H100": 0.001097,
    "H200": 0.001261,
    "L40S": 0.000542,
    "L4": 0.000222,
}
PAGES_PER_SECOND = {"A100": 1.5, "A100-80GB": 1.6, "H100": 2.5, "H200": 3.0, "L40S": 0.9, "L4": 0.35}
COLD_START_S = 90.0  # load 6.7 GB from the Volume, profile memory, capture CUDA graphs
MIN_PAGES_PER_CONTAINER = 32  # below this a further container costs a cold start for little gain
# Modal also bills a container's CPU and memory by the second: $0.0000131 a physical core and (an
# assumption from Modal's price list, not checked by this project) $0.00000222 a GiB. What a vLLM
# container uses is assumed too: ~4 cores and ~16 GiB while it loads and serves.
CPU_PER_CORE_SECOND = 0.0000131
MEMORY_PER_GIB_SECOND = 0.00000222
CONTAINER_CORES = 4
CONTAINER_MEMORY_GIB = 16
# The first run after a deploy: vLLM compiles the model and fills its compile cache (a Volume) on
# every container that starts before the cache exists; a guess of two minutes each.
FIRST_RUN_EXTRA_S = 120.0


def gpu_key(name: str | None) -> str:
    """Normalise a GPU name ("a100-40gb", "h100") to a key of the price table."""
    if not name:
        return DEFAULT_GPU
    upper = name.strip().upper()
    if upper in ("A100-40GB", "A100-40G"):
        return "A100"
    if upper in ("A100-80G",):
        return "A100-80GB"
    return upper


def price_per_second(gpu: str | None, override_per_hour: float | None = None) -> float:
    """Dollars per GPU-second for ``gpu``; raises ValueError for a GPU with no known price."""
    if override_per_hour is not None:
        if override_per_hour < 0:
            raise ValueError("a GPU price cannot be negative")
        return override_per_hour / 3600.0
    key = gpu_key(gpu)
    env = os.environ.get("BOOKOCR_GPU_PRICES")
    if env:
        try:
            table = {gpu_key(k): float(v) / 3600.0 for k, v in json.loads(env).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"BOOKOCR_GPU_PRICES must be a JSON object of dollars per GPU-hour: {exc}") from None
        if key in table:
            return table[key]
    if key not in PRICE_PER_SECOND:
        raise ValueError(
            f"no price known for GPU {gpu!r}; known: {', '.join(PRICE_PER_SECOND)}; give its price in dollars per hour "
            '(--gpu-price, or options {"gpu_price": ...} over MCP)'
        )
    return PRICE_PER_SECOND[key]


@dataclass(frozen=True)
class GpuEstimate:
    """What a run of ``pages`` is expected to cost on ``containers`` x ``gpu``."""

    pages: int
    gpu: str
    containers: int  # containers the run is expected to use
    gpu_seconds: float  # pure OCR work
    overhead_seconds: float  # cold starts and the idle scale-down window, all containers
    price_per_second: float
    wall_seconds: float
    host_per_second: float = CPU_PER_CORE_SECOND * CONTAINER_CORES + MEMORY_PER_GIB_SECOND * CONTAINER_MEMORY_GIB
    basis: str = ""  # where the containers and GPU planned for come from

    @property
    def compute_usd(self) -> float:
        return self.gpu_seconds * self.price_per_second

    @property
    def cpu_memory_usd(self) -> float:
        """The containers' CPU and memory over the same seconds as their GPUs."""
        return (self.gpu_seconds + self.overhead_seconds) * self.host_per_second

    @property
    def total_usd(self) -> float:
        return (self.gpu_seconds + self.overhead_seconds) * self.price_per_second + self.cpu_memory_usd

    @property
    def first_run_usd(self) -> float:
        """What the first run after a deploy adds (compiling on each container)."""
        return self.containers * FIRST_RUN_EXTRA_S * (self.price_per_second + self.host_per_second)

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "pages": self.pages,
            "gpu": self.gpu,
            "containers": self.containers,
            "gpu_seconds": round(self.gpu_seconds, 1),
            "overhead_seconds": round(self.overhead_seconds, 1),
            "usd_per_gpu_hour": round(self.price_per_second * 3600, 3),
            "compute_usd": round(self.compute_usd, 4),
            "cpu_memory_usd": round(self.cpu_memory_usd, 4),
            "total_usd": round(self.total_usd, 4),
            "first_run_extra_usd": round(self.first_run_usd, 4),
            "wall_seconds": round(self.wall_seconds, 1),
            "basis": self.basis,
        }

    def describe(self) -> str:
        return (
            f"{self.pages} page(s) on {self.containers} x {self.gpu} "
            f"(${self.price_per_second * 3600:.2f}/GPU-hour): ~{self.gpu_seconds:.0f} GPU-s of OCR = "
            f"${self.compute_usd:.2f}; with cold starts, the idle window, CPU and memory ~${self.total_usd:.2f}; "
            f"~{self.wall_seconds / 60:.1f} min wall; the first run after a deploy adds ~${self.first_run_usd:.2f}"
            + (f"; planned for {self.basis}" if self.basis else "")
        )


def estimate(
    pages: int,
    gpu: str | None = None,
    containers: int = DEFAULT_CONTAINERS,
    override_per_hour: float | None = None,
    scaledown_s: float = SCALEDOWN_WINDOW_S,
) -> GpuEstimate:
    """Raises ValueError for a GPU with no known price (and no override)."""
    key = gpu_key(gpu)
    rate = price_per_second(key, override_per_hour)
    per_page = 1.0 / PAGES_PER_SECOND.get(key, PAGES_PER_SECOND[DEFAULT_GPU])
    used = max(1, min(containers, math.ceil(pages / MIN_PAGES_PER_CONTAINER))) if pages else 0
    gpu_seconds = pages * per_page
    overhead = used * (COLD_START_S + scaledown_s)
    wall = (COLD_START_S + gpu_seconds / used) if used else 0.0
    return GpuEstimate(pages, key, used, gpu_seconds, overhead, rate, wall)


def page_cost(gpu_seconds: float, gpu: str | None, override_per_hour: float | None = None) -> float:
    """Dollars for one page's share of GPU time; 0 for a GPU without a known price."""
    try:
        return gpu_seconds * price_per_second(gpu, override_per_hour)
    except ValueError:
        return 0.0


@dataclass
class CostTally:
    """A runner page listener that adds up the GPU seconds and dollars a run spent."""

    pages: int = 0
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    gpus: set[str] = field(default_factory=set)

    def __call__(self, book: Any, result: PageResult) -> None:
        extra = result.extra or {}
        if "gpu_seconds" not in extra:
            return
        self.pages += 1
        self.gpu_seconds += float(extra.get("gpu_seconds") or 0.0)
        self.cost_usd += float(extra.get("cost_usd") or 0.0)
        if extra.get("gpu"):
            self.gpus.add(str(extra["gpu"]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "gpu_seconds": round(self.gpu_seconds, 2),
            "cost_usd": round(self.cost_usd, 4),
            "gpus": sorted(self.gpus),
        }

    def describe(self) -> str:
        per_page = self.gpu_seconds / self.pages if self.pages else 0.0
        on = f" on {', '.join(sorted(self.gpus))}" if self.gpus else ""
        return (
            f"GPU: {self.gpu_seconds:.1f} s{on} for {self.pages} page(s) ({per_page:.2f} s/page), "
            f"${self.cost_usd:.4f} of OCR work (container start-up and idle time are billed on top)"
        )


__all__ = [
    "PRICE_PER_SECOND",
    "PAGES_PER_SECOND",
    "CostTally",
    "GpuEstimate",
    "estimate",
    "gpu_key",
    "page_cost",
    "price_per_second",
]
