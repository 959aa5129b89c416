"""The one small interface every OCR engine implements.

Modelled on ocrmypdf's ``OcrEngine``: an engine has a name, a version, the
languages it reads, and one call that turns pages into results. Engines that
batch (DeepSeek on a GPU) override :meth:`OcrEngine.recognize_many`; the rest
only implement :meth:`OcrEngine.recognize`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from PIL import Image

    from ocr_backend.textlayer import TextLayer

PageStatus = Literal["ok", "fallback", "failed"]


@dataclass
class PageInput:
    """One page handed to an engine. ``number`` is the 1-based page index in the source."""

    number: int
    image: Image.Image | None = None
    text_layer: TextLayer | None = None
    render: dict[str, Any] = field(default_factory=dict)
    render_seconds: float = 0.0
    error: str | None = None  # set when the page could not be prepared (render failed)


@dataclass
class PageResult:
    """What an engine made of one page. ``markdown`` is the clean page body."""

    number: int
    markdown: str
    status: PageStatus
    engine: str
    engine_version: str
    seconds: float = 0.0
    flags: list[str] = field(default_factory=list)
    reason: str = ""  # why this engine was chosen, or why the page failed / fell back
    raw: str | None = None  # the engine's raw output, kept beside the page when it differs
    furniture: list[str] = field(default_factory=list)  # running heads, page numbers: kept out of the body
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific numbers (gpu_seconds, cost_usd, ...)

    @classmethod
    def failed(cls, page: PageInput, engine: OcrEngine | str, reason: str, version: str = "") -> PageResult:
        name = engine if isinstance(engine, str) else engine.name
        ver = version if isinstance(engine, str) else engine.version()
        return cls(number=page.number, markdown="", status="failed", engine=name, engine_version=ver, reason=reason)


class OcrEngine(ABC):
    """Turns pages into markdown. Subclasses set ``name`` and implement :meth:`recognize`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def version(self) -> str:
        """Version string of the engine and its model, recorded per page in the manifest."""

    def languages(self) -> list[str]:
        return ["en"]

    def start(self) -> None:
        """Check the engine can run (account, network, deployment, models) and raise
        :class:`~ocr_backend.errors.EngineError` if not. Called before anything is written."""

    def needs_image(self, page: PageInput) -> bool:
        """Whether the page must be rendered before :meth:`recognize` sees it.

        Called in the render worker with ``page.text_layer`` filled in (for PDFs).
        """
        return True

    @abstractmethod
    def recognize(self, page: PageInput) -> PageResult:
        """OCR one page. Must not raise for a bad page: return a ``failed`` result instead."""

    def recognize_many(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        """OCR a stream of pages; results may come back in any order (each carries its number)."""
        for page in pages:
            yield self.safe_recognize(page)

    def recognize_one(self, page: PageInput) -> PageResult:
        """One page, from any thread (a fallback for another engine). Engines whose models live in
        worker processes override this; the rest just read the page."""
        return self.safe_recognize(page)

    def safe_recognize(self, page: PageInput) -> PageResult:
        if page.error:
            return PageResult.failed(page, self, page.error)
        try:
            return self.recognize(page)
        except Exception as exc:  # one bad page must never stop the book
            return PageResult.failed(page, self, f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Release models, connections, worker pools."""
