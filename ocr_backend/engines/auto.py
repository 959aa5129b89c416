"""Engine ``auto`` (the default): per page, the text layer where it is trustworthy, local OCR elsewhere."""

from __future__ import annotations

from typing import Any

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.engines.local import LocalEngine
from ocr_backend.engines.text_layer import TextLayerEngine
from ocr_backend.textlayer import judge_text_layer


class AutoEngine(OcrEngine):
    name = "auto"
    description = "text layer where trustworthy, local OCR elsewhere (default)"

    def __init__(self, ocr: OcrEngine | None = None, **_: Any) -> None:
        self.text = TextLayerEngine()
        self.ocr = ocr or LocalEngine()

    def version(self) -> str:
        return f"{self.text.version()}+{self.ocr.version()}"

    def needs_image(self, page: PageInput) -> bool:
        return not judge_text_layer(page.text_layer).trusted

    def recognize(self, page: PageInput) -> PageResult:
        verdict = judge_text_layer(page.text_layer)
        engine = self.text if verdict.trusted else self.ocr
        result = engine.safe_recognize(page)
        if not result.reason:
            result.reason = verdict.reason
        return result

    def close(self) -> None:
        self.ocr.close()
