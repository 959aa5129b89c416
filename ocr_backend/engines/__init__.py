"""Engine registry. Each engine lives in one module of this package and registers itself
by subclassing :class:`OcrEngine` with a ``name``; adding an engine touches one file."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from ocr_backend.engines.base import EngineOption, OcrEngine, PageInput, PageResult
from ocr_backend.errors import EngineError

__all__ = ["OcrEngine", "EngineOption", "PageInput", "PageResult", "engine_class", "engine_classes", "create_engine"]


def engine_classes() -> dict[str, type[OcrEngine]]:
    """All engines by name, found by importing every module in this package."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    found: dict[str, type[OcrEngine]] = {}
    stack = list(OcrEngine.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(cls, "name", None):
            found[cls.name] = cls
    return dict(sorted(found.items()))


def engine_class(name: str) -> type[OcrEngine]:
    """The engine called ``name``; the one place an unknown engine is refused."""
    classes = engine_classes()
    if not isinstance(name, str) or name not in classes:
        raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(classes)}")
    return classes[name]


def create_engine(name: str, **options: Any) -> OcrEngine:
    return engine_class(name)(**options)
