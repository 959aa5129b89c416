"""What this machine last learnt of the user's deployed DeepSeek class (its GPU, container count and
model), so that an estimate plans for the deployment there is without waking a GPU to ask it.

``bookocr deploy`` writes the record, and every run that reaches the class rewrites it from what the
class says of itself. It lives in ``$BOOKOCR_CONFIG_DIR`` (default ``$XDG_CONFIG_HOME/bookocr``, else
``~/.config/bookocr``), one small JSON file per Modal app name. A record that cannot be written (a
read-only home) or read (torn by hand) is ignored: it only refines an estimate.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ocr_backend.errors import BookOcrError
from ocr_backend.files import atomic_write

CONFIG_DIR_ENV = "BOOKOCR_CONFIG_DIR"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    app: str
    gpu: str
    max_containers: int
    model: str
    recorded_at: str  # UTC, ISO 8601
    source: str  # "deploy": what `bookocr deploy` asked for; "class": what the running class reported

    def describe(self) -> str:
        how = "deployed from here" if self.source == "deploy" else "as the class reported"
        return f"{self.max_containers} x {self.gpu}, {how} on {self.recorded_at[:10]}"


def config_dir() -> Path:
    configured = os.environ.get(CONFIG_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser() / "bookocr"


def record_path(app: str) -> Path:
    return config_dir() / "deployments" / f"{app}.json"


MAX_CONTAINERS = 1000  # beyond any Modal workspace's GPU limit: a larger count is not a real deployment


def remember(app: str, gpu: Any, max_containers: Any, model: Any, source: str) -> Deployment | None:
    """Record the deployment; None (and nothing written) when a field is missing or the file cannot be written."""
    record = Deployment(
        app, gpu, max_containers, str(model or ""), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), source
    )
    if not _valid(record):
        return None
    path = record_path(app)
    try:
        atomic_write(path, json.dumps(asdict(record), indent=1))
    except (OSError, BookOcrError) as exc:  # BookOcrError: the disk is full
        logger.info("could not record the deployment in %s: %s", path, exc)
        return None
    return record


def recall(app: str) -> Deployment | None:
    """The recorded deployment of ``app``, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(record_path(app).read_text(encoding="utf-8"))
        record = Deployment(**{name: data[name] for name in Deployment.__dataclass_fields__})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return record if _valid(record) else None


def _valid(record: Deployment) -> bool:
    texts = (record.app, record.gpu, record.model, record.recorded_at, record.source)
    count = record.max_containers
    return (
        all(isinstance(text, str) for text in texts)
        and bool(record.gpu.strip())
        and isinstance(count, int)
        and not isinstance(count, bool)
        and 1 <= count <= MAX_CONTAINERS
    )


__all__ = ["CONFIG_DIR_ENV", "Deployment", "config_dir", "recall", "record_path", "remember"]
