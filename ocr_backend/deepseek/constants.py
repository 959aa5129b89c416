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
# Hub commits to pin a model to (what `bookocr deploy` downloads and the class loads), so an
# upstream update cannot change a deployed class's output. None are pinned yet: the commit must be
# read from the Hub, which this project has not done; BOOKOCR_DEEPSEEK_REVISION pins one at deploy.
MODEL_REVISIONS: dict[str, str] = {}
VLLM_VERSION = "0.16.0"  # first release with both DeepseekOCRForCausalLM and DeepseekOCR2ForCausalLM
VLLM_REQUIREMENT = f"vllm=={VLLM_VERSION}"

# How `bookocr deploy` hands its choices to the deployed app (read there at import).
GPU_ENV = "BOOKOCR_GPU"
MODEL_ENV = "BOOKOCR_DEEPSEEK_MODEL"
CONTAINERS_ENV = "BOOKOCR_MAX_CONTAINERS"
REVISION_ENV = "BOOKOCR_DEEPSEEK_REVISION"
# The name of a Modal secret holding HF_TOKEN, for the weights download (optional: the model is public).
HF_SECRET_ENV = "BOOKOCR_HF_SECRET"
# Concurrent calls one container takes (@modal.concurrent): vLLM decodes MAX_NUM_SEQS (runner.py,
# 64) at once and the rest wait inside it, so a finished sequence is replaced without a round trip.
# 64 + 32 leaves ~1/3 of a batch queued: at ~2 pages/s a container drains 32 in ~15 s, far more
# than a call's round trip.
MAX_INPUTS = 96


def default_revision(model_id: str) -> str | None:
    return MODEL_REVISIONS.get(model_id)


def app_name() -> str:
    """The Modal app to deploy and call: ``BOOKOCR_MODAL_APP``, else ``bookocr``."""
    return os.environ.get(APP_NAME_ENV) or APP_NAME
