"""Engine ``deepseek-local``: the same DeepSeek-OCR runner in this process, on your own CUDA GPU.

Needs Linux, an NVIDIA GPU with ~16 GB or more, and vLLM (``pip install vllm==0.16.0``, the pin in
:mod:`ocr_backend.deepseek.constants`).
Everything else (validation, retry, fallback, cleaning) is the ``deepseek`` engine's, with
its batch client (the offline engine takes one ``generate`` call at a time); only the remote
is replaced by the runner itself.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

from ocr_backend.deepseek.constants import DEFAULT_MODEL, LOCAL_ENGINE, VLLM_REQUIREMENT, VLLM_VERSION
from ocr_backend.deepseek.pricing import GpuEstimate
from ocr_backend.deepseek.runner import DeepseekRunner, build_llm
from ocr_backend.engines.base import Estimate
from ocr_backend.engines.deepseek import FIGURES_OPTION, GPU_PRICE_OPTION, DeepseekEngine
from ocr_backend.errors import EngineError

LOCAL_BATCH_SIZE = 48  # one GPU: bigger batches keep vLLM's queue full between calls
# CUDA graphs are captured for batch sizes up to max_num_seqs; more than a batch never runs.
LOCAL_MAX_NUM_SEQS = LOCAL_BATCH_SIZE
MEMORY_HEADROOM_GB = 1.0  # left free on the card: a desktop's display and the CUDA context
MIN_MEMORY_FRACTION = 0.5  # ~8 GB on a 16 GB card: the weights (~6.2 GiB) and a small KV cache
MAX_MEMORY_FRACTION = 0.9


class RunnerRemote:
    """A :class:`~ocr_backend.deepseek.client.RemoteOcr` that calls a runner directly.

    An in-process call cannot be cancelled: the engine abandons one past its deadline.
    The lock keeps the next call from entering vLLM (not thread-safe) while it still runs."""

    def __init__(self, runner: DeepseekRunner) -> None:
        self.runner = runner
        self._lock = threading.Lock()

    def ocr(
        self, images: Sequence[bytes], options: dict[str, Any], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return self.runner.run(images, options)

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        return {
            "gpu": self.runner.gpu,
            "device": self.runner.device,
            "model": self.runner.model_id,
            "vllm": VLLM_VERSION,
        }


def load_local_runner(model: str = DEFAULT_MODEL) -> DeepseekRunner:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        raise EngineError(
            f"deepseek-local needs vLLM on a CUDA machine: pip install {VLLM_REQUIREMENT}; "
            "or run DeepSeek-OCR on Modal with --engine deepseek"
        ) from None
    if not torch.cuda.is_available():
        raise EngineError(
            "deepseek-local needs an NVIDIA GPU with CUDA, and none was found; use --engine deepseek (Modal) "
            "or --engine local (CPU)"
        )
    free, total = torch.cuda.mem_get_info()
    fraction = memory_fraction(free, total)
    return DeepseekRunner(build_llm(model, LOCAL_MAX_NUM_SEQS, fraction), model_id=model, gpu="local")


def memory_fraction(free_bytes: int, total_bytes: int) -> float:
    """The share of the card vLLM may take: what is free now, less some headroom. vLLM refuses
    to start when the fraction asks for more than is free (a 16 GB card driving a display)."""
    fraction = (free_bytes - MEMORY_HEADROOM_GB * 2**30) / total_bytes
    if fraction < MIN_MEMORY_FRACTION:
        raise EngineError(
            f"deepseek-local needs about {MIN_MEMORY_FRACTION * total_bytes / 2**30:.0f} GB of GPU memory free and "
            f"{free_bytes / 2**30:.1f} GB is; close what uses the GPU, or use --engine deepseek (Modal)"
        )
    return round(min(MAX_MEMORY_FRACTION, fraction), 2)


class DeepseekLocalEngine(DeepseekEngine):
    name = LOCAL_ENGINE
    description = "DeepSeek-OCR with vLLM on this machine's own CUDA GPU"
    options = (GPU_PRICE_OPTION, FIGURES_OPTION)  # the GPU is the one in this machine
    bills_gpu = False

    @classmethod
    def planned_deployment(cls) -> tuple[int, str | None, str]:
        return 1, None, "this machine's own GPU, assumed as fast as an A100"

    @classmethod
    def estimate(cls, pages: int, options: dict[str, Any]) -> Estimate | None:
        planned = super().estimate(pages, options)
        return dataclasses.replace(planned, gpu="own GPU") if isinstance(planned, GpuEstimate) else planned

    def __init__(self, runner: DeepseekRunner | None = None, model: str | None = None, **options: Any) -> None:
        options.setdefault("batch_size", LOCAL_BATCH_SIZE)
        # one GPU and one vLLM engine, which is not thread-safe: one call at a time,
        # while the feeder encodes the next batch
        options.update(containers=1, max_in_flight=1, client="batch")
        super().__init__(model=model, **options)
        self._runner = runner

    def connect(self) -> RunnerRemote:
        if self._remote is None:
            self._remote = RunnerRemote(self._runner or load_local_runner(self.model))
        return self._remote  # type: ignore[return-value]
