"""Deploying the DeepSeek-OCR class to the user's Modal workspace: ``modal deploy`` of
:mod:`ocr_backend.deepseek.modal_app`, with the choices passed in its environment, then one
CPU-only run of its ``download_weights`` that fills the weights Volume before any GPU starts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from ocr_backend.deepseek import client, deployment
from ocr_backend.deepseek.constants import (
    APP_NAME_ENV,
    CONTAINERS_ENV,
    DEFAULT_CONTAINERS,
    DEFAULT_GPU,
    DEFAULT_MODEL,
    GPU_CHOICES,
    GPU_ENV,
    MODEL_ENV,
    app_name,
)
from ocr_backend.errors import BookOcrError, EngineError

MODAL_APP_MODULE = f"{__package__}.modal_app"

Runner = Callable[[list[str], dict[str, str]], int]  # (argv, extra environment) -> exit code


def deploy_command(
    gpu: str = DEFAULT_GPU,
    model: str = DEFAULT_MODEL,
    max_containers: int = DEFAULT_CONTAINERS,
    app: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``modal deploy`` command line and the environment that carries the choices."""
    if gpu not in GPU_CHOICES:
        raise ValueError(f"GPU {gpu!r} is not one of {', '.join(GPU_CHOICES)}")
    if max_containers < 1:
        raise ValueError("max containers must be at least 1")
    env = {GPU_ENV: gpu, MODEL_ENV: model, CONTAINERS_ENV: str(max_containers), APP_NAME_ENV: app or app_name()}
    return [sys.executable, "-m", "modal", "deploy", "-m", MODAL_APP_MODULE], env


def weights_command() -> list[str]:
    """Download the model into the Volume on a CPU container (bounded by the function's 30 min timeout)."""
    return [sys.executable, "-m", "modal", "run", "-m", f"{MODAL_APP_MODULE}::download_weights"]


def deploy(
    gpu: str = DEFAULT_GPU,
    model: str = DEFAULT_MODEL,
    max_containers: int = DEFAULT_CONTAINERS,
    run: Runner | None = None,
) -> dict[str, object]:
    """Deploy the class (``run`` runs the command; default: a subprocess, its output on the terminal).

    Returns what was deployed; raises EngineError without a Modal token or when ``modal deploy``
    fails, BookOcrError for a choice it cannot deploy."""
    if not client.has_modal_credentials():
        raise EngineError(f"no Modal token is configured: {client.MODAL_SETUP}, then run `bookocr deploy` again")
    try:
        argv, env = deploy_command(gpu, model, max_containers)
    except ValueError as exc:
        raise BookOcrError(str(exc)) from None
    run = run or _run_subprocess
    code = run(argv, env)
    if code != 0:
        raise EngineError(f"`modal deploy` failed (exit {code}); its output above says why")
    recorded = deployment.remember(app_name(), gpu, max_containers, model, "deploy")  # the class is there now
    code = run(weights_command(), env)
    if code != 0:
        raise EngineError(
            f"the class is deployed, but downloading the weights into its Volume failed (exit {code}); its output "
            "above says why. Run `bookocr deploy` again, or let the first GPU start download them"
        )
    return {
        "deployed": True,
        "gpu": gpu,
        "model": model,
        "max_containers": max_containers,
        "weights": "ready",
        "recorded": str(deployment.record_path(app_name())) if recorded else None,
    }


def _run_subprocess(argv: list[str], env: dict[str, str]) -> int:
    return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode


__all__ = ["MODAL_APP_MODULE", "deploy", "deploy_command", "weights_command"]
