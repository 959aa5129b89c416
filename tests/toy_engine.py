"""A toy engine in one module, with options of its own: adding an engine touches one file.

Importing this module registers it (engines register by subclassing OcrEngine with a name).
"""

from __future__ import annotations

from typing import Any

from ocr_backend.engines.base import EngineOption, OcrEngine, PageInput, PageResult


class ToyEngine(OcrEngine):
    name = "toy"
    description = "writes which page it was given (a test engine)"
    options = (
        EngineOption("prefix", str, "the word before the page number"),
        EngineOption("shout", bool, "write it in capitals"),
        EngineOption("repeat", int, "how many times to write it", minimum=1),
    )

    def __init__(self, prefix: str = "page", shout: bool = False, repeat: int = 1, **_: Any) -> None:
        self.prefix, self.shout, self.repeat = prefix, shout, repeat

    def version(self) -> str:
        return "toy-1"

    def needs_image(self, page: PageInput) -> bool:
        return False

    def recognize(self, page: PageInput) -> PageResult:
        text = " ".join([f"{self.prefix} {page.number}"] * self.repeat)
        return PageResult(page.number, text.upper() if self.shout else text, "ok", self.name, self.version())
