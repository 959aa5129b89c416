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
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from ocr_backend.pdf_text import TextLayer

PageStatus = Literal["ok", "fallback", "failed"]
OptionType = type[str] | type[int] | type[float] | type[bool]


@dataclass(frozen=True)
class EngineOption:
    """A setting an engine takes, declared once: the CLI makes ``--name`` of it, the MCP ``ocr_book`` tool
    takes it in ``options``, and :meth:`OcrEngine.check_options` validates it for both. ``name`` is also
    the keyword the engine's constructor takes."""

    name: str
    type: OptionType
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None  # for numbers
    maximum: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, value: Any, engine: str) -> Any:
        """The value as this option's type; raises EngineError saying what is wrong."""
        from ocr_backend.errors import EngineError

        wrong = EngineError(f"engine {engine!r}: option {self.name} must be {self.describe_type()}, not {value!r}")
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise wrong
        if isinstance(value, bool) or (self.type is not str and isinstance(value, str) and not value.strip()):
            raise wrong
        try:
            converted = self.type(value)
        except (TypeError, ValueError):
            raise wrong from None
        if self.choices is not None and converted not in self.choices:
            raise wrong
        if self.minimum is not None and not converted >= self.minimum:  # NaN is no number here
            raise wrong
        if self.maximum is not None and not converted <= self.maximum:
            raise wrong
        return converted

    def describe_type(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        kind = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}[self.type]
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} from {self.minimum:g} to {self.maximum:g}"
        return f"{kind} >= {self.minimum:g}" if self.minimum is not None else kind


class Estimate(Protocol):
    """What a run is expected to cost before it starts (an engine's own record, e.g. GPU seconds and dollars)."""

    def as_dict(self) -> dict[str, Any]:
        """The figures, for JSON."""

    def describe(self) -> str:
        """One line for a person."""


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
    options: ClassVar[tuple[EngineOption, ...]] = ()  # what a user may set; the constructor takes them by name

    def __init__(self, **_: Any) -> None:
        """Engines are built with their checked options and ``pages_dir`` (where the book's page files go);
        each takes what it uses."""

    @classmethod
    def check_options(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The user's option values, checked and converted (``None`` values dropped); raises EngineError
        for an option this engine does not take or a value it cannot use."""
        from ocr_backend.errors import EngineError

        known = {option.name: option for option in cls.options}
        checked = {}
        for name, value in values.items():
            if value is None:
                continue
            if name not in known:
                takes = ", ".join(sorted(known)) or "no options"
                raise EngineError(f"engine {cls.name!r} has no option {name!r}; it takes {takes}")
            checked[name] = known[name].convert(value, cls.name)
        return checked

    @classmethod
    def estimate(cls, pages: int, options: dict[str, Any]) -> Estimate | None:
        """What OCRing ``pages`` pages with these (unchecked) option values would cost, or None when it
        costs nothing but this machine's time. Checks the options as a run would."""
        cls.check_options(options)
        return None

    @abstractmethod
    def version(self) -> str:
        """Version string of the engine and its model, recorded per page in the manifest."""

    @classmethod
    def languages(cls) -> list[str]:
        """Languages the engine reads (ISO 639-1 codes)."""
        return ["en"]

    def start(self) -> None:
        """Check the engine can run (account, network, deployment, models) and raise
        :class:`~ocr_backend.errors.EngineError` if not. Called before anything is written."""

    def books_at_once(self) -> int:
        """How many books of a library job may stream pages into this one engine at once (each book through
        its own :meth:`recognize_many`, from its own thread); 1: one book after another."""
        return 1

    def wants_another_book(self, running: int) -> bool:
        """With ``running`` books streaming into it, whether this engine has room for the next book's pages
        (up to :meth:`books_at_once`)."""
        return running == 0

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
