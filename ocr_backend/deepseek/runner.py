"""The vLLM side of DeepSeek-OCR: one runner shared by the Modal class and ``deepseek-local``.

Importing this module needs neither torch nor vLLM; :func:`build_llm` and
:func:`sampling_params` import vLLM when they are called, inside the GPU
container or on a user's own CUDA machine. Tests hand :class:`DeepseekRunner`
a fake object shaped like ``vllm.LLM`` instead.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ocr_backend.deepseek.clean import detect_repetition
from ocr_backend.deepseek.constants import DEFAULT_MODEL, GPU_ENV

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
TABLE_CELL_TOKEN_IDS = frozenset({128821, 128822})  # <td>, </td>: a table may repeat them
MAX_MODEL_LEN = 8192
# The first attempt's anti-loop budget. The real samples in shared/testdata/deepseek_ocr_raw run
# from ~300 to ~2,700 tokens for a dense page of notes (bytes / 4: the looping sample filled 8,192
# tokens with 35,838 bytes); at 4,096 tokens, 1.5x the densest, a page whose text ends in a loop
# is stopped, which halves what a loop costs before its retry. A page that is merely long is not
# looping and decodes on to MAX_MODEL_LEN, so it is never decoded twice. One generate() call
# (deepseek-local) cannot look mid-way, so there it is a cap on the first attempt.
FIRST_MAX_TOKENS = 4096
# The async runner (the Modal class) looks every LOOP_CHECK_EVERY tokens instead, and stops a page once
# LOOP_CONFIRMATIONS checks in a row see one: in the looping sample the loop begins ~600 tokens in
# and detect_repetition first sees it ~700 tokens later: stopped at 1,792 tokens, not 4,096 or 8,192.
# A repetitive passage that ends (a long table, dot leaders) is seen once, not twice in a row.
LOOP_CHECK_EVERY = 256
LOOP_CONFIRMATIONS = 2
# vLLM's running batch per container. DeepSeek's own scripts use 100 on an A100-40GB; with fewer,
# each page decodes faster (one token a step each), and a book ends on its last long pages
# (bench/bench_deepseek_client.py), at a small loss of throughput (~2,300 tokens/s against ~2,500).
MAX_NUM_SEQS = 64
# A rough weight for splitting one generate() call's time over its pages: prompt
# (image) tokens are prefilled in parallel and cost far less per token than decoding.
PREFILL_TOKEN_WEIGHT = 0.05


@dataclass(frozen=True)
class DecodeSettings:
    """Sampling settings for one attempt. Gundam mode (1024 global view + 640 tiles)
    is vLLM's default for this model, so it needs no setting here."""

    ngram_size: int = 30
    window_size: int = 90
    max_tokens: int = 8192
    prompt: str = PROMPT
    priority: int = 0  # vLLM's scheduling priority: lower goes first among the waiting requests
    loop_check_tokens: int = 0  # stop the page here if its text ends in a loop (0: never check)
    loop_check_every: int = 0  # the async runner: look for a loop this often instead (0: at loop_check_tokens)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DecodeSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


FIRST_ATTEMPT = DecodeSettings(loop_check_tokens=FIRST_MAX_TOKENS, loop_check_every=LOOP_CHECK_EVERY)
# A retry bans repeats over a longer stretch (a loop whose period is longer than
# window - ngram tokens slips past the first settings) and may use the full length.
# It goes ahead of the first attempts waiting in the container, so a page found long or looping
# late in a book does not wait behind the rest of it. A retry that loops again would fail its
# check at the end anyway: it is stopped at the loop's onset too, not decoded to 8,192 tokens.
RETRY_ATTEMPT = DecodeSettings(
    ngram_size=40, window_size=300, max_tokens=MAX_MODEL_LEN, priority=-1, loop_check_every=LOOP_CHECK_EVERY
)


def sampling_params(settings: DecodeSettings) -> Any:
    """vLLM ``SamplingParams`` for an attempt. The n-gram processor does nothing
    unless ``ngram_size`` is in ``extra_args``."""
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0,
        max_tokens=settings.max_tokens,
        skip_special_tokens=False,
        extra_args={
            "ngram_size": settings.ngram_size,
            "window_size": settings.window_size,
            "whitelist_token_ids": set(TABLE_CELL_TOKEN_IDS),
        },
    )


def engine_kwargs(
    model_id: str, max_num_seqs: int, gpu_memory_utilization: float, revision: str | None = None
) -> dict[str, Any]:
    """vLLM's settings for DeepSeek-OCR (upstream ``DeepseekOCRForCausalLM``, or
    ``DeepseekOCR2ForCausalLM`` for DeepSeek-OCR-2, chosen from the model's config)."""
    from vllm.model_executor.models.deepseek_ocr import NGramPerReqLogitsProcessor

    return {
        "model": model_id,
        "revision": revision,
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        "logits_processors": [NGramPerReqLogitsProcessor],
        "max_model_len": MAX_MODEL_LEN,
        "max_num_seqs": max_num_seqs,
        "gpu_memory_utilization": gpu_memory_utilization,
    }


def build_llm(
    model_id: str = DEFAULT_MODEL,
    max_num_seqs: int = MAX_NUM_SEQS,
    gpu_memory_utilization: float = 0.9,
    revision: str | None = None,
) -> Any:
    """The offline engine (``vllm.LLM``): one ``generate`` call per batch; ``deepseek-local``."""
    from vllm import LLM

    return LLM(**engine_kwargs(model_id, max_num_seqs, gpu_memory_utilization, revision))


def build_async_llm(
    model_id: str = DEFAULT_MODEL,
    max_num_seqs: int = MAX_NUM_SEQS,
    gpu_memory_utilization: float = 0.9,
    revision: str | None = None,
) -> Any:
    """The async engine (``AsyncLLM``): every request joins the running batch as it comes,
    so one container serves many concurrent calls from one continuous batch."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    settings = engine_kwargs(model_id, max_num_seqs, gpu_memory_utilization, revision)
    # A retry (priority -1) goes ahead of the first attempts waiting in the engine.
    args = AsyncEngineArgs(**settings, scheduling_policy="priority")
    return AsyncLLM.from_engine_args(args)


def cuda_device_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # the name is informational only
        return "unknown"


class GpuMeter:
    """Shares a container's GPU time among the requests decoding at once: each stretch
    of time is split evenly over the requests running in it. Used from one event loop."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._active: dict[str, float] = {}
        self._last = clock()

    def _advance(self) -> None:
        now = self.clock()
        if self._active:
            share = (now - self._last) / len(self._active)
            for key in self._active:
                self._active[key] += share
        self._last = now

    def start(self, key: str) -> None:
        self._advance()
        self._active[key] = 0.0

    def stop(self, key: str) -> float:
        self._advance()
        return self._active.pop(key, 0.0)


class DeepseekRunner:
    """Runs page images through the model: :meth:`run` in one ``generate`` call of an
    offline ``vllm.LLM`` (``deepseek-local``), :meth:`run_async` page by page on an
    ``AsyncLLM``, where each page joins the container's running batch (the Modal class)."""

    def __init__(
        self,
        llm: Any,
        model_id: str = DEFAULT_MODEL,
        make_params: Callable[[DecodeSettings], Any] | None = None,
        gpu: str | None = None,
        device: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.llm = llm
        self.model_id = model_id
        self.make_params = make_params or sampling_params
        self.gpu = gpu or os.environ.get(GPU_ENV, "")
        self.device = device if device is not None else cuda_device_name()
        self.clock = clock
        self.meter = GpuMeter(clock)

    def run(self, images: Sequence[bytes], options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Per input image, in order: text, finish_reason, token counts, gpu_seconds.

        An image that cannot be decoded gets ``error`` set instead of failing the batch.
        """
        settings = DecodeSettings.from_dict(options)
        if settings.loop_check_tokens:  # one generate() call cannot look at a page mid-way: the check is a cap
            settings = replace(settings, max_tokens=settings.loop_check_tokens)
        decoded = [_decode(data) for data in images]
        requests = [
            {"prompt": settings.prompt, "multi_modal_data": {"image": img}}
            for img in decoded
            if not isinstance(img, str)
        ]
        start = self.clock()
        outputs = self.llm.generate(requests, self.make_params(settings), use_tqdm=False) if requests else []
        elapsed = self.clock() - start
        pages = iter(_page_output(out) for out in outputs)
        results = [_error_output(img) if isinstance(img, str) else next(pages) for img in decoded]
        _share_gpu_time(results, elapsed)
        for result in results:
            result.update(gpu=self.gpu, device=self.device, model=self.model_id, batch_size=len(images))
        return results

    async def run_async(self, images: Sequence[bytes], options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Like :meth:`run`, on an async engine: every page is its own request, so a long
        page holds only its own place in the batch. A cancelled call aborts its requests."""
        settings = DecodeSettings.from_dict(options)
        params = self.make_params(settings)
        results = await asyncio.gather(*(self._one_async(data, settings, params) for data in images))
        for result in results:
            result.update(gpu=self.gpu, device=self.device, model=self.model_id, batch_size=len(images))
        return list(results)

    async def _one_async(self, data: bytes, settings: DecodeSettings, params: Any) -> dict[str, Any]:
        image = await asyncio.to_thread(_decode, data)
        if isinstance(image, str):
            return {**_error_output(image), "gpu_seconds": 0.0}
        key = uuid.uuid4().hex
        request = {"prompt": settings.prompt, "multi_modal_data": {"image": image}}
        final, looped, watch = None, False, LoopWatch(settings)
        stream = self.llm.generate(request, params, key, priority=settings.priority)
        self.meter.start(key)
        try:
            async for output in stream:
                final = output  # cumulative: the last one holds the whole text
                if not output.finished and watch.looping(_decoded(output), output.outputs[0].text):
                    looped = True
                    break
        finally:
            await stream.aclose()  # vLLM aborts a request whose stream is closed early
            seconds = self.meter.stop(key)
        if final is None:
            return {**_error_output("the engine returned no output"), "gpu_seconds": seconds}
        result = _page_output(final)
        if looped:
            result["finish_reason"] = "repetition"
        return {**result, "gpu_seconds": seconds}


class LoopWatch:
    """When a streamed page's text has looped long enough to stop it. vLLM streams a few tokens at
    a time, so a check runs at the first output past each mark: every ``loop_check_every`` tokens,
    a loop confirmed by ``LOOP_CONFIRMATIONS`` checks in a row; or, without that, once at
    ``loop_check_tokens``."""

    def __init__(self, settings: DecodeSettings) -> None:
        self.every = settings.loop_check_every
        self.marks_at = settings.loop_check_tokens
        self.needed = LOOP_CONFIRMATIONS if self.every else 1
        self.next_mark = self.every or self.marks_at
        self.seen = 0  # checks in a row that saw a loop

    def looping(self, tokens: int, text: str) -> bool:
        if not self.next_mark or tokens < self.next_mark:
            return False
        self.next_mark = (tokens // self.every + 1) * self.every if self.every else 0
        self.seen = self.seen + 1 if detect_repetition(text) is not None else 0
        return self.seen >= self.needed


def _decoded(output: Any) -> int:
    return len(output.outputs[0].token_ids or ())


def _decode(data: bytes) -> Any:
    """A PIL RGB image, or an error message."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except Exception as exc:
        return f"could not decode the page image: {type(exc).__name__}: {exc}"


def _page_output(out: Any) -> dict[str, Any]:
    completion = out.outputs[0]
    return {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": len(out.prompt_token_ids or ()),
        "output_tokens": len(completion.token_ids or ()),
        "error": None,
    }


def _error_output(message: str) -> dict[str, Any]:
    return {"text": "", "finish_reason": "error", "prompt_tokens": 0, "output_tokens": 0, "error": message}


def _share_gpu_time(results: list[dict[str, Any]], elapsed: float) -> None:
    """Split one generate() call's wall time over its pages by the work each caused."""
    weights = [r["output_tokens"] + PREFILL_TOKEN_WEIGHT * r["prompt_tokens"] for r in results]
    total = sum(weights)
    for result, weight in zip(results, weights):
        result["gpu_seconds"] = elapsed * weight / total if total else 0.0


__all__ = [
    "PROMPT",
    "DecodeSettings",
    "FIRST_ATTEMPT",
    "FIRST_MAX_TOKENS",
    "LOOP_CHECK_EVERY",
    "LOOP_CONFIRMATIONS",
    "LoopWatch",
    "MAX_NUM_SEQS",
    "RETRY_ATTEMPT",
    "DeepseekRunner",
    "GpuMeter",
    "build_async_llm",
    "build_llm",
    "sampling_params",
]
