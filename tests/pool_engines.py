"""Engines for the worker-pool tests: what runs inside the worker processes, and the pool engine that uses it.

They live in an importable module (not a test file) because the worker processes import them by name.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.workers import PoolEngine, WorkerSpec


class ScriptedReader(OcrEngine):
    """Inside a worker: reads a page as 'page N', or hangs, or kills its own process, as scripted."""

    name = ""  # not registered

    def __init__(
        self, hang: list[int] = (), crash_once: list[int] = (), crash_always: list[int] = (), marks: str = ""
    ) -> None:
        self.hang, self.crash_once, self.crash_always = set(hang), set(crash_once), set(crash_always)
        self.marks = Path(marks) if marks else None

    def version(self) -> str:
        return "scripted-1"

    def recognize(self, page: PageInput) -> PageResult:
        if self.marks is not None:
            (self.marks / f"{page.number}.{os.getpid()}").touch()  # which worker saw which page
        if page.number in self.hang:
            threading.Event().wait()  # forever: only the pool's deadline ends this
        first_time = self.marks is not None and len(list(self.marks.glob(f"{page.number}.*"))) == 1
        if page.number in self.crash_always or (page.number in self.crash_once and first_time):
            os.kill(os.getpid(), signal.SIGKILL)
        assert page.image is not None
        return PageResult(
            number=page.number,
            markdown=f"page {page.number} read in a worker",
            status="ok",
            engine="scripted",
            engine_version=self.version(),
        )


def failing_reader(**_: Any) -> OcrEngine:
    raise RuntimeError("the models are not here")


def hanging_reader(**_: Any) -> OcrEngine:
    threading.Event().wait()
    raise AssertionError("unreachable")


class ScriptedPoolEngine(PoolEngine):
    """The parent side: pages go to worker processes running ``factory`` (a ScriptedReader by default)."""

    name = ""

    def __init__(
        self,
        workers: int = 2,
        page_timeout: float | None = 2.0,
        start_timeout: float = 60.0,
        factory: str = "tests.pool_engines:ScriptedReader",
        **reader: Any,
    ) -> None:
        self.workers = workers
        self.page_timeout = page_timeout
        self.start_timeout = start_timeout
        self.factory = factory
        self.reader = reader

    def version(self) -> str:
        return "scripted-1"

    def recognize(self, page: PageInput) -> PageResult:  # pragma: no cover - pages are read in the workers
        raise AssertionError("pages are read in worker processes")

    def worker_spec(self) -> WorkerSpec:
        return WorkerSpec(self.factory, self.reader)
