"""Engine ``local``: RapidOCR (PP-OCR ONNX models shipped in the wheel) on the CPU, no network.

RapidOCR returns unordered text lines; :mod:`ocr_backend.layout` rebuilds the page.
"""

from __future__ import annotations

import logging
import threading
import time
from importlib import metadata
from typing import Any

import numpy as np

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.errors import EngineError
from ocr_backend.layout import TextLine, build_markdown

MIN_LINE_SCORE = 0.5


class LocalEngine(OcrEngine):
    name = "local"
    description = "RapidOCR (PP-OCR) on the CPU; works offline"

    def __init__(self, **_: Any) -> None:
        self._ocr: Any = None
        self._lock = threading.Lock()

    def version(self) -> str:
        try:
            return f"rapidocr-{metadata.version('rapidocr')}"
        except metadata.PackageNotFoundError:
            return "rapidocr-unknown"

    def _model(self) -> Any:
        with self._lock:
            if self._ocr is None:
                try:
                    from rapidocr import RapidOCR
                except ImportError as exc:  # pragma: no cover - a broken install
                    raise EngineError("the local engine needs the 'rapidocr' and 'onnxruntime' packages: pip install rapidocr onnxruntime") from exc
                for name in ("RapidOCR", "rapidocr"):
                    logging.getLogger(name).setLevel(logging.WARNING)
                self._ocr = RapidOCR()
            return self._ocr

    def recognize(self, page: PageInput) -> PageResult:
        if page.image is None:
            return PageResult.failed(page, self, "no page image was rendered")
        start = time.perf_counter()
        lines = self.read_lines(np.asarray(page.image))
        layout = build_markdown(lines, page.image.width, page.image.height)
        flags = [] if layout.markdown else ["empty"]
        low = [ln for ln in lines if ln.score < 0.8]
        if lines and len(low) > 0.3 * len(lines):
            flags.append("low-confidence")
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

    def read_lines(self, pixels: np.ndarray) -> list[TextLine]:
        result = self._model()(pixels)
        if result.boxes is None or result.txts is None:
            return []
        lines = []
        for box, text, score in zip(result.boxes, result.txts, result.scores):
            if score < MIN_LINE_SCORE or not text.strip():
                continue
            xs, ys = box[:, 0], box[:, 1]
            lines.append(TextLine(text=text, x0=float(xs.min()), y0=float(ys.min()), x1=float(xs.max()), y1=float(ys.max()), score=float(score)))
        return lines
