"""The names and defaults the DeepSeek client, the deployed Modal app, the engines and the CLI must
agree on, kept once. Imports nothing heavy: the client reads these without importing modal."""

from __future__ import annotations

import os

ENGINE = "deepseek"  # on the deployed Modal class
LOCAL_ENGINE = "deepseek-local"  # the same runner on this machine's own CUDA GPU
ENGINES = (ENGINE, LOCAL_ENGINE)

APP_NAME = "bookocr"
APP_NAME_ENV = "BOOKOCR_MODAL_APP"  # deploy and call a differently named app (a second workspace copy, tests)
CLASS_NAME = "DeepseekOcr"

# Modal GPU types that hold the model with room for vLLM's KV cache; each has a price in pricing.py.
GPU_CHOICES = ("A100", "A100-80GB", "H100", "H200", "L40S")
DEFAULT_GPU = "A100"  # 40 GB
DEFAULT_CONTAINERS = 4  # GPUs one job fans out to: the deployed class's max_containers, the engine's and the estimate's
# How long an idle container stays up (and is billed): long enough to bridge the gap between two
# books of a library job, short enough that it costs cents, not dollars, after the last book.
SCALEDOWN_WINDOW_S = 120

DEFAULT_MODEL = "deepseek-ai/DeepSeek-OCR"  # "deepseek-ai/DeepSeek-OCR-2" works too
VLLM_VERSION = "0.16.0"  # first release with both DeepseekOCRForCausalLM and DeepseekOCR2ForCausalLM
VLLM_REQUIREMENT = f"vllm=={VLLM_VERSION}"

# How `bookocr deploy` hands its choices to the deployed app (read there at import).
GPU_ENV = "BOOKOCR_GPU"
MODEL_ENV = "BOOKOCR_DEEPSEEK_MODEL"
CONTAINERS_ENV = "BOOKOCR_MAX_CONTAINERS"


def app_name() -> str:
    """The Modal app to deploy and call: ``BOOKOCR_MODAL_APP``, else ``bookocr``."""
    return os.environ.get(APP_NAME_ENV) or APP_NAME
