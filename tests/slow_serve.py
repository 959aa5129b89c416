"""`bookocr` with one extra, test-only engine ``test-slow``, for tests that need a job to be running.

Run as ``python -m tests.slow_serve --corpus C serve ...`` (the real CLI, server included). Pages
from ``BOOKOCR_TEST_SLOW_FROM`` on (default 1) take ``BOOKOCR_TEST_SLOW_S`` seconds (default 600:
stuck, as a hung OCR worker is); earlier pages take a few milliseconds. Each page's text names the
process that wrote it, so a test can tell a resumed page from a redone one.
"""

from __future__ import annotations

import os
import sys
import time

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from server.cli import main


class SlowTestEngine(OcrEngine):
    name = "test-slow"

    def version(self) -> str:
        return "1"

    def needs_image(self, page: PageInput) -> bool:
        return False

    def recognize(self, page: PageInput) -> PageResult:
        slow_from = int(os.environ.get("BOOKOCR_TEST_SLOW_FROM", "1"))
        time.sleep(float(os.environ.get("BOOKOCR_TEST_SLOW_S", "600")) if page.number >= slow_from else 0.01)
        text = f"page {page.number} written by pid {os.getpid()}"
        return PageResult(
            number=page.number, markdown=text, status="ok", engine=self.name, engine_version=self.version()
        )


if __name__ == "__main__":
    sys.exit(main())
