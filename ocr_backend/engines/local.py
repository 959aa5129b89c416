"""Engine ``local``: PP-OCR (the ONNX models that ship in the ``rapidocr`` wheel) on the CPU, no network.

:mod:`ocr_backend.ppocr` finds and reads the text lines; :mod:`ocr_backend.layout` rebuilds the page
from them. Pages are OCRed by a small pool of workers, each with its own single-threaded models: on a
few cores, whole pages in parallel beat one page on many threads. The workers are processes
(:mod:`ocr_backend.workers`), so a page that hangs inside the models is given a deadline, not the run.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ocr_backend.engines.base import PageInput, PageResult
from ocr_backend.errors import EngineError
from ocr_backend.layout import TextLine, build_markdown
from ocr_backend.workers import PoolEngine, WorkerSpec

if TYPE_CHECKING:  # the models (OpenCV, OpenVINO) are loaded only where pages are read: in the workers
    from ocr_backend import ppocr

MIN_LINE_SCORE = 0.5
LOW_CONFIDENCE = 0.8
MAX_WORKERS = 4  # each worker holds its own models (~150 MB)
# The detector's boxes overhang the ink by about this share of their height on the left and
# right (measured against a PDF's own line boxes); trimmed so narrow column gutters show.
BOX_OVERHANG = 0.15
# The detector sees the page at most this size; lines are read from the full-size page. 960 would take
# 0.6x the time at the same error rate on Whitehead's scans, but its slightly different boxes sent a
# line of the small type on the rasterised multi_column_miss.pdf into the wrong paragraph (measured).
DET_LONG_SIDE = 1280


def _read_page(
    finder: ppocr.LineFinder, reader: ppocr.LineRecognizer, pixels: np.ndarray
) -> list[tuple[np.ndarray, tuple[str, float]]]:
    """Each line's box (4 corner points) with its text and confidence."""
    from ocr_backend import ppocr

    return [(box, reader.read(ppocr.crop_line(pixels, box))) for box in finder.find(pixels)]


BACKEND_ENV = "BOOKOCR_LOCAL_BACKEND"  # openvino or onnxruntime: overrides the choice below


def default_backend() -> str:
    """OpenVINO runs the same ONNX models about 2x faster end to end on the CPU (measured); used when installed."""
    return os.environ.get(BACKEND_ENV) or ("openvino" if importlib.util.find_spec("openvino") else "onnxruntime")


class LocalEngine(PoolEngine):
    name = "local"
    description = "PP-OCR (RapidOCR's models) on the CPU; works offline"

    def __init__(
        self,
        workers: int | None = None,
        threads: int | None = None,
        backend: str | None = None,
        page_timeout: float | None = None,
        int8_recognizer: str | None = None,
        **_: Any,
    ) -> None:
        cores = os.cpu_count() or 1
        self.workers = max(1, workers or min(cores, MAX_WORKERS))
        self.threads = max(1, threads or cores // self.workers)
        self.backend = backend or default_backend()
        if self.backend not in ("onnxruntime", "openvino"):
            raise EngineError(f"unknown backend {self.backend!r} for the local engine: onnxruntime or openvino")
        if page_timeout is not None and page_timeout <= 0:
            raise EngineError(f"page_timeout must be a positive number of seconds, not {page_timeout}")
        self.page_timeout = page_timeout
        self.int8_recognizer = int8_recognizer  # the cached int8 recogniser, found or built by start()
        self._local = threading.local()

    def start(self) -> None:
        """With ``BOOKOCR_LOCAL_INT8=1``: find (or build, once per machine) the int8 recogniser before the workers
        load their models."""
        from ocr_backend import quantize

        if self.backend == "openvino" and self.int8_recognizer is None and quantize.enabled():
            from ocr_backend import ppocr  # OpenCV: loaded in this process only when int8 is asked for

            path = quantize.ensure_int8_recognizer(ppocr.model_path(ppocr.RECOGNIZER_FILE))
            self.int8_recognizer = str(path) if path else None
        super().start()

    def worker_spec(self) -> WorkerSpec:
        kwargs = {"threads": self.threads, "backend": self.backend, "int8_recognizer": self.int8_recognizer}
        return WorkerSpec("ocr_backend.engines.local:loaded_engine", kwargs)

    def version(self) -> str:
        try:
            version = metadata.version("rapidocr")
        except metadata.PackageNotFoundError:
            version = "unknown"
        if self.backend == "onnxruntime":
            return f"rapidocr-{version}+onnxruntime"
        return f"rapidocr-{version}+openvino-latin" + ("-int8" if self.int8_recognizer else "")

    @classmethod
    def languages(cls) -> list[str]:
        """Latin-script languages and Greek: the compact head on OpenVINO keeps only those scripts' characters."""
        latin = ["en", "de", "fr", "es", "it", "pt", "nl", "la", "el"]
        return latin if default_backend() == "openvino" else [*latin, "zh"]

    def _models(self) -> tuple[ppocr.LineFinder, ppocr.LineRecognizer]:
        """This thread's detector and recogniser: a compiled model runs one inference at a time."""
        models = getattr(self._local, "models", None)
        if models is None:
            from ocr_backend import ppocr

            threads = self.workers * self.threads
            if self.backend == "openvino":
                int8 = Path(self.int8_recognizer) if self.int8_recognizer else None
                models = ppocr.openvino_models(threads, DET_LONG_SIDE, int8_recognizer=int8)
            else:
                models = ppocr.onnxruntime_models(threads, DET_LONG_SIDE)
            self._local.models = models
        return models

    def recognize(self, page: PageInput) -> PageResult:
        if page.image is None:
            return PageResult.failed(page, self, "no page image was rendered")
        start = time.perf_counter()
        lines = self.read_lines(np.asarray(page.image))
        layout = build_markdown(lines, page.image.width, page.image.height)
        flags = [] if layout.markdown else ["empty"]
        low = [ln for ln in lines if ln.score < LOW_CONFIDENCE]
        if lines and len(low) > 0.3 * len(lines):
            flags.append("low-confidence")
        if layout.columns > 1:
            flags.append(f"columns-{layout.columns}")
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
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)  # the models read 3-channel images
        finder, reader = self._models()
        lines = []
        for box, (text, score) in _read_page(finder, reader, pixels):
            if score < MIN_LINE_SCORE or not text.strip():
                continue
            xs, ys = box[:, 0], box[:, 1]
            x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
            trim = min(BOX_OVERHANG * (y1 - y0), 0.25 * (x1 - x0))
            lines.append(TextLine(text=text, x0=x0 + trim, y0=y0, x1=x1 - trim, y1=y1, score=float(score)))
        return lines

    def close(self) -> None:
        super().close()
        self._local = threading.local()


def loaded_engine(threads: int, backend: str, int8_recognizer: str | None = None) -> LocalEngine:
    """The engine inside one worker process: one reader, its models built before the first page."""
    engine = LocalEngine(workers=1, threads=threads, backend=backend, int8_recognizer=int8_recognizer)
    engine._models()
    return engine
