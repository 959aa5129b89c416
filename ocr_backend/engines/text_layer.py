"""Engine ``text-layer``: the PDF's own text, in reading order, as markdown paragraphs."""

from __future__ import annotations

import time

import pymupdf

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.layout import build_markdown


class TextLayerEngine(OcrEngine):
    name = "text-layer"
    description = "the PDF's own text layer (born-digital PDFs); no OCR"

    def version(self) -> str:
        return f"pymupdf-{pymupdf.VersionBind}"

    def needs_image(self, page: PageInput) -> bool:
        return False

    def recognize(self, page: PageInput) -> PageResult:
        start = time.perf_counter()
        layer = page.text_layer
        if layer is None:
            return PageResult.failed(
                page, self, "the source has no text layer (it is an image); use --engine local or auto"
            )
        layout = build_markdown(layer.lines, layer.width, layer.height)
        flags = [] if layout.markdown else ["empty"]
        return PageResult(
            number=page.number,
            markdown=layout.markdown,
            status="ok",
            engine=self.name,
            engine_version=self.version(),
            seconds=time.perf_counter() - start,
            flags=flags,
            furniture=layout.furniture,
        )
