"""The deployed Modal app: DeepSeek-OCR on vLLM, one engine per GPU container.

Deploy with ``bookocr deploy`` (which runs ``modal deploy -m ocr_backend.deepseek.modal_app``).
Deploy-time choices come from the environment, so the same file serves every GPU
and model without edits (names and defaults in :mod:`ocr_backend.deepseek.constants`):

    BOOKOCR_GPU             A100 (default, 40 GB), A100-80GB, H100, H200, L40S
    BOOKOCR_DEEPSEEK_MODEL  deepseek-ai/DeepSeek-OCR (default) or deepseek-ai/DeepSeek-OCR-2
    BOOKOCR_MAX_CONTAINERS  how many GPUs one library job may fan out to (default 4)
    BOOKOCR_DEEPSEEK_REVISION  a Hub commit to pin the model to (default: constants.MODEL_REVISIONS, else the newest)
    BOOKOCR_HF_SECRET       a Modal secret holding HF_TOKEN, for the weights download (optional)
    BOOKOCR_MODAL_APP       the app name (default "bookocr")

Nothing here imports torch or vLLM at module level: tests run the class body
in-process with ``.local()``.
"""

from __future__ import annotations

import os
from typing import Any

import modal

from ocr_backend.deepseek.constants import (
    CLASS_NAME,
    CONTAINERS_ENV,
    DEFAULT_CONTAINERS,
    DEFAULT_GPU,
    DEFAULT_MODEL,
    GPU_ENV,
    HF_SECRET_ENV,
    MAX_INPUTS,
    MODEL_ENV,
    REVISION_ENV,
    SCALEDOWN_WINDOW_S,
    VLLM_REQUIREMENT,
    VLLM_VERSION,
    app_name,
    default_revision,
)
from ocr_backend.deepseek.runner import MAX_NUM_SEQS, DeepseekRunner, build_async_llm, cuda_device_name

APP_NAME = app_name()
GPU = os.environ.get(GPU_ENV, DEFAULT_GPU)
MODEL_ID = os.environ.get(MODEL_ENV, DEFAULT_MODEL)
REVISION = os.environ.get(REVISION_ENV) or default_revision(MODEL_ID)
MAX_CONTAINERS = int(os.environ.get(CONTAINERS_ENV, DEFAULT_CONTAINERS))
HF_SECRET = os.environ.get(HF_SECRET_ENV, "")
CALL_TIMEOUT_S = 15 * 60  # a call of a few pages, each up to 8,192 tokens in a full batch, fits many times
HF_CACHE = "/root/.cache/huggingface"
VLLM_CACHE = "/root/.cache/vllm"

app = modal.App(APP_NAME)

# Weights (6.7 GB) and vLLM's compile cache live in Volumes, so a cold start reads
# them from Modal's storage instead of downloading from the Hub again.
weights_volume = modal.Volume.from_name("bookocr-hf-cache", create_if_missing=True)
compile_volume = modal.Volume.from_name("bookocr-vllm-cache", create_if_missing=True)

image = (
    modal.Image.from_registry("nvidia/cuda:12.8.1-devel-ubuntu22.04", add_python="3.12")
    .entrypoint([])
    .uv_pip_install(VLLM_REQUIREMENT, "pillow>=10")
    .env({GPU_ENV: GPU, MODEL_ENV: MODEL_ID, REVISION_ENV: REVISION or "", CONTAINERS_ENV: str(MAX_CONTAINERS)})
    .add_local_python_source("ocr_backend")
)


def load_runner(model_id: str = MODEL_ID, revision: str | None = REVISION) -> DeepseekRunner:
    """Build the async vLLM engine once per container. Tests replace :func:`build_async_llm`."""
    return DeepseekRunner(build_async_llm(model_id, MAX_NUM_SEQS, revision=revision), model_id=model_id)


# A CPU-only function that fills the weights Volume once, at deploy, so GPU containers never
# download (and never race each other writing the same files). An HF token is optional (the
# model is public): name a Modal secret holding HF_TOKEN in BOOKOCR_HF_SECRET at deploy.
download_image = (
    modal.Image.debian_slim(python_version="3.12")
    .uv_pip_install("huggingface_hub>=0.30", "pillow>=10")
    .env({"HF_HOME": HF_CACHE, HF_SECRET_ENV: HF_SECRET, MODEL_ENV: MODEL_ID, REVISION_ENV: REVISION or ""})
    .add_local_python_source("ocr_backend")
)


@app.function(
    image=download_image,
    volumes={HF_CACHE: weights_volume},
    secrets=[modal.Secret.from_name(HF_SECRET)] if HF_SECRET else [],
    timeout=30 * 60,
    cpu=2,
)
def download_weights(model_id: str = MODEL_ID, revision: str | None = REVISION) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    path = snapshot_download(model_id, revision=revision, token=os.environ.get("HF_TOKEN") or None)
    weights_volume.commit()
    return {"model": model_id, "revision": revision, "path": path}


@app.cls(
    gpu=GPU,
    image=image,
    volumes={HF_CACHE: weights_volume, VLLM_CACHE: compile_volume},
    scaledown_window=SCALEDOWN_WINDOW_S,
    timeout=CALL_TIMEOUT_S,
    max_containers=MAX_CONTAINERS,
    retries=modal.Retries(max_retries=1, initial_delay=1.0),
)
# Many small calls share one continuous batch: up to MAX_NUM_SEQS decode while the rest
# wait inside vLLM, so a finishing sequence is replaced at once, without a round trip.
@modal.concurrent(max_inputs=MAX_INPUTS)
class DeepseekOcr:
    @modal.enter()
    def load(self) -> None:
        self.runner: DeepseekRunner | None = None
        self.startup_error: str | None = None
        try:
            self.runner = load_runner(MODEL_ID, REVISION)
        except Exception as exc:
            # Kept, not raised: Modal restarts a container whose start-up crashes, for ever,
            # and a caller would wait all that time. Every method reports it instead.
            self.startup_error = f"loading {MODEL_ID} on {GPU} failed: {type(exc).__name__}: {exc}"

    @modal.method()
    async def info(self) -> dict[str, Any]:
        """What this container serves and how the client should plan, or ``startup_error``:
        a cheap first call for the client."""
        return {
            "gpu": GPU,
            "device": self.runner.device if self.runner else cuda_device_name(),
            "model": MODEL_ID,
            "revision": REVISION,
            "vllm": VLLM_VERSION,
            "max_containers": MAX_CONTAINERS,
            "max_inputs": MAX_INPUTS,
            "max_num_seqs": MAX_NUM_SEQS,
            "startup_error": self.startup_error,
        }

    @modal.method()
    async def ocr(self, images: list[bytes], options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """OCR a few encoded page images (JPEG/PNG bytes); each joins the running batch.

        Returns per page, in order: text (raw, with grounding tags), finish_reason,
        prompt_tokens, output_tokens, gpu_seconds, gpu, model; error for an image
        that could not be decoded; startup_error on every page when the model did not load.
        """
        if self.runner is None:
            failed = {
                "text": "",
                "finish_reason": "error",
                "error": self.startup_error,
                "startup_error": self.startup_error,
            }
            return [dict(failed) for _ in images]
        return await self.runner.run_async(images, options)


__all__ = ["APP_NAME", "CLASS_NAME", "app", "DeepseekOcr", "download_weights", "load_runner"]
