"""The vLLM side of DeepSeek-OCR: one runner shared by the Modal class and ``deepseek-local``.

Importing this module needs neither torch nor vLLM; :func:`build_llm` and
:func:`sampling_params` import vLLM when they are called, inside the GPU
container or on a user's own CUDA machine. Tests hand :class:`DeepseekRunner`
a fake object shaped like ``vllm.LLM`` instead.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from ocr_backend.deepseek.constants import DEFAULT_MODEL, GPU_ENV

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
TABLE_CELL_TOKEN_IDS = frozenset({128821, 128822})  # <td>, </td>: a table may repeat them
MAX_MODEL_LEN = 8192
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DecodeSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


FIRST_ATTEMPT = DecodeSettings()
# A retry bans repeats over a longer stretch: a loop whose period is longer than
# window - ngram tokens slips past the first settings.
RETRY_ATTEMPT = DecodeSettings(ngram_size=40, window_size=300)


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


def build_llm(model_id: str = DEFAULT_MODEL, max_num_seqs: int = 128, gpu_memory_utilization: float = 0.9) -> Any:
    """The vLLM engine with upstream DeepSeek-OCR support (``DeepseekOCRForCausalLM``,
    or ``DeepseekOCR2ForCausalLM`` for DeepSeek-OCR-2, chosen from the model's config)."""
    from vllm import LLM
    from vllm.model_executor.models.deepseek_ocr import NGramPerReqLogitsProcessor

    return LLM(
        model=model_id,
        enable_prefix_caching=False,
        mm_processor_cache_gb=0,
        logits_processors=[NGramPerReqLogitsProcessor],
        max_model_len=MAX_MODEL_LEN,
        max_num_seqs=max_num_seqs,
        gpu_memory_utilization=gpu_memory_utilization,
    )


def cuda_device_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # the name is informational only
        return "unknown"


class DeepseekRunner:
    """Runs one batch of page images through the model in a single ``generate`` call,
    so vLLM's continuous batching sees the whole batch at once."""

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

    def run(self, images: Sequence[bytes], options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Per input image, in order: text, finish_reason, token counts, gpu_seconds.

        An image that cannot be decoded gets ``error`` set instead of failing the batch.
        """
        settings = DecodeSettings.from_dict(options)
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
    "RETRY_ATTEMPT",
    "DeepseekRunner",
    "build_llm",
    "sampling_params",
]
