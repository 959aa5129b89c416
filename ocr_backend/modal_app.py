"""The deployed Modal app: DeepSeek-OCR on vLLM, one engine per GPU container.

Deploy with ``bookocr deploy`` (which runs ``modal deploy -m ocr_backend.modal_app``).
Deploy-time choices come from the environment, so the same file serves every GPU
and model without edits:

    BOOKOCR_GPU             A100 (default, 40 GB), A100-80GB, H100, L40S
    BOOKOCR_DEEPSEEK_MODEL  deepseek-ai/DeepSeek-OCR (default) or deepseek-ai/DeepSeek-OCR-2
    BOOKOCR_MAX_CONTAINERS  how many GPUs one library job may fan out to (default 4)
    BOOKOCR_MODAL_APP       the app name (default "bookocr")

Nothing here imports torch or vLLM at module level: the client imports this file
only for names, and tests run the class body in-process with ``.local()``.
"""

from __future__ import annotations

import os
from typing import Any

import modal

from ocr_backend.deepseek_runner import DEFAULT_MODEL, VLLM_VERSION, DeepseekRunner, build_llm, cuda_device_name

APP_NAME = os.environ.get("BOOKOCR_MODAL_APP", "bookocr")
CLASS_NAME = "DeepseekOcr"
GPU_CHOICES = ("A100", "A100-80GB", "H100", "L40S")
DEFAULT_GPU = "A100"
GPU = os.environ.get("BOOKOCR_GPU", DEFAULT_GPU)
MODEL_ID = os.environ.get("BOOKOCR_DEEPSEEK_MODEL", DEFAULT_MODEL)
MAX_CONTAINERS = int(os.environ.get("BOOKOCR_MAX_CONTAINERS", "4"))
# Long enough to bridge the gap between two books of a library job, short enough
# that an idle container costs cents, not dollars, after the last book.
SCALEDOWN_WINDOW_S = 120
BATCH_TIMEOUT_S = 15 * 60  # a 64-page batch of worst-case 8192-token pages still fits
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
    .uv_pip_install(f"vllm=={VLLM_VERSION}", "pillow>=10")
    .env({"BOOKOCR_GPU": GPU, "BOOKOCR_DEEPSEEK_MODEL": MODEL_ID})
    .add_local_python_source("ocr_backend")
)


def load_runner(model_id: str = MODEL_ID) -> DeepseekRunner:
    """Build the vLLM engine once per container. Tests replace :func:`build_llm`."""
    return DeepseekRunner(build_llm(model_id), model_id=model_id)


@app.cls(
    gpu=GPU,
    image=image,
    volumes={HF_CACHE: weights_volume, VLLM_CACHE: compile_volume},
    scaledown_window=SCALEDOWN_WINDOW_S,
    timeout=BATCH_TIMEOUT_S,
    max_containers=MAX_CONTAINERS,
    retries=modal.Retries(max_retries=1, initial_delay=1.0),
)
class DeepseekOcr:
    @modal.enter()
    def load(self) -> None:
        self.runner: DeepseekRunner | None = None
        self.startup_error: str | None = None
        try:
            self.runner = load_runner(MODEL_ID)
        except Exception as exc:
            # Kept, not raised: Modal restarts a container whose start-up crashes, for ever,
            # and a caller would wait all that time. Every method reports it instead.
            self.startup_error = f"loading {MODEL_ID} on {GPU} failed: {type(exc).__name__}: {exc}"

    @modal.method()
    def info(self) -> dict[str, Any]:
        """What this container serves, or ``startup_error``: a cheap first call for the client."""
        return {
            "gpu": GPU,
            "device": self.runner.device if self.runner else cuda_device_name(),
            "model": MODEL_ID,
            "vllm": VLLM_VERSION,
            "startup_error": self.startup_error,
        }

    @modal.method()
    def ocr(self, images: list[bytes], options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """OCR a batch of encoded page images (JPEG/PNG bytes) in one vLLM call.

        Returns per page, in order: text (raw, with grounding tags), finish_reason,
        prompt_tokens, output_tokens, gpu_seconds, gpu, model; error for an image
        that could not be decoded; startup_error on every page when the model did not load.
        """
        if self.runner is None:
            failed = {"text": "", "finish_reason": "error", "error": self.startup_error, "startup_error": self.startup_error}
            return [dict(failed) for _ in images]
        return self.runner.run(images, options)


def deploy_command(gpu: str = DEFAULT_GPU, model: str = DEFAULT_MODEL, max_containers: int = MAX_CONTAINERS, app_name: str = APP_NAME) -> tuple[list[str], dict[str, str]]:
    """The ``modal deploy`` command line and the environment that carries the choices."""
    import sys

    if gpu not in GPU_CHOICES:
        raise ValueError(f"GPU {gpu!r} is not one of {', '.join(GPU_CHOICES)}")
    if max_containers < 1:
        raise ValueError("max containers must be at least 1")
    env = {
        "BOOKOCR_GPU": gpu,
        "BOOKOCR_DEEPSEEK_MODEL": model,
        "BOOKOCR_MAX_CONTAINERS": str(max_containers),
        "BOOKOCR_MODAL_APP": app_name,
    }
    return [sys.executable, "-m", "modal", "deploy", "-m", "ocr_backend.modal_app"], env


__all__ = ["APP_NAME", "CLASS_NAME", "GPU_CHOICES", "DEFAULT_GPU", "app", "DeepseekOcr", "deploy_command", "load_runner"]
