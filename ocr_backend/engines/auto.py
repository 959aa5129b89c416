"""Engine ``auto`` (the default): per page, the text layer where it is trustworthy, local OCR elsewhere."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.engines.local import LocalEngine
from ocr_backend.engines.text_layer import TextLayerEngine
from ocr_backend.errors import EngineError
from ocr_backend.pdf_text import judge_text_layer

_END = None
POLL_S = 1.0  # how often a wait on the OCR thread checks that it is still alive


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
        return self._explained(engine.safe_recognize(page), verdict.reason)

    def recognize_many(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        """Text-layer pages come back at once; pages that need OCR stream through the OCR engine's
        own ``recognize_many`` (its worker pool) on a background thread, started only if needed.
        Every wait on that thread is bounded: if it ends early, its error is raised here."""
        to_ocr: queue.Queue[PageInput | None] = queue.Queue(maxsize=2)
        done: queue.Queue[PageResult | BaseException] = queue.Queue()
        reasons: dict[int, str] = {}
        worker: threading.Thread | None = None
        outstanding = 0

        def run_ocr() -> None:
            try:
                for result in self.ocr.recognize_many(iter(to_ocr.get, _END)):
                    done.put(result)
            except BaseException as exc:  # surfaced to the consumer below
                done.put(exc)

        def take(block: bool) -> PageResult | None:
            """The next OCR result: waits (in POLL_S steps) only while the OCR thread is alive."""
            while True:
                try:
                    item = done.get(timeout=POLL_S) if block else done.get_nowait()
                except queue.Empty:
                    if not block:
                        return None
                    if worker is None or not worker.is_alive() and done.empty():
                        raise EngineError(f"the {self.ocr.name} engine stopped with pages outstanding") from None
                    continue
                if isinstance(item, BaseException):
                    raise item
                return item

        def collect(block: bool) -> Iterator[PageResult]:
            nonlocal outstanding
            while outstanding:
                item = take(block)
                if item is None:
                    return
                outstanding -= 1
                yield self._explained(item, reasons.pop(item.number, ""))

        def send(page: PageInput | None) -> None:
            while True:
                try:
                    to_ocr.put(page, timeout=POLL_S)
                    return
                except queue.Full:
                    if worker is not None and not worker.is_alive():
                        take(block=False)  # raises the error it ended with
                        raise EngineError(f"the {self.ocr.name} engine stopped taking pages") from None

        try:
            for page in pages:
                verdict = judge_text_layer(page.text_layer)
                if verdict.trusted:
                    yield self._explained(self.text.safe_recognize(page), verdict.reason)
                else:
                    if worker is None:
                        worker = threading.Thread(target=run_ocr, name="bookocr-auto-ocr", daemon=True)
                        worker.start()
                    reasons[page.number] = verdict.reason
                    outstanding += 1
                    send(page)
                yield from collect(block=False)
            if worker is not None:
                send(_END)
            yield from collect(block=True)
        finally:
            if worker is not None and worker.is_alive():
                _drain_then_end(to_ocr)

    @staticmethod
    def _explained(result: PageResult, reason: str) -> PageResult:
        if not result.reason:
            result.reason = reason
        return result

    def close(self) -> None:
        self.ocr.close()


def _drain_then_end(pages: queue.Queue[PageInput | None]) -> None:
    """Stop the OCR thread early (the run was cancelled): drop queued pages, then say 'no more'."""
    while True:
        try:
            pages.get_nowait()
        except queue.Empty:
            break
    try:
        pages.put_nowait(_END)
    except queue.Full:  # the OCR thread is gone; closing the engine stops its workers
        pass
