"""Benchmark issue 6: printed page labels, furniture kept out of bodies, and contents.

Each book is rasterised to an image-only PDF, OCR'd with the local engine through the real
runner (``ocr_book``) into a throwaway corpus, and scored against the born-digital original:

* label accuracy: the share of pages whose fitted printed label is right. Truth is the number
  the original page prints; a page that prints none is expected to carry the label its declared
  run implies (PDF page labels) when that run prints numbers elsewhere, and no label otherwise.
* furniture kept out: the share of running-head / page-number lines of the original (text in the
  head and foot margins) that do not reappear at the top or bottom of the stored page body.
* contents: entries recovered from the OCR'd headings, and whether each sits on the right page.

RapidOCR is slow on a small machine, so its recognised lines are cached per page under
``--work`` (default /tmp/bookocr-bench-labels); layout, labels and contents are recomputed on
every run from the cached lines, so changes to those stages are measured without re-OCR.

    .venv/bin/python bench/bench_labels.py            # both books
    .venv/bin/python bench/bench_labels.py --book bws  # one
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pymupdf
from rapidfuzz import fuzz

from ocr_backend.engines.base import PageInput, PageResult
from ocr_backend.engines.local import LocalEngine
from ocr_backend.layout import TextLine
from server.corpus import Corpus
from server.runner import RunOptions, ocr_book
from server.sample_book import rasterise_pdf

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@dataclass(frozen=True)
class BenchBook:
    key: str
    source: Path
    head_zone: float  # y (pt) above which a line of the original is running head / folio
    foot_zone: float  # y (pt) below which a line of the original is a foot / folio


BOOKS = {
    "bws": BenchBook("bws", TESTDATA / "olmocr_tests/gnarly_pdfs/bws_book_ch2.pdf", head_zone=112, foot_zone=680),
    "whitehead": BenchBook("whitehead", TESTDATA / "gitenberg_whitehead_41568/41568-pdf.pdf", head_zone=20, foot_zone=460),
}


class CachedLocalEngine(LocalEngine):
    """The local engine, with RapidOCR's lines cached per page so re-runs skip recognition."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self._page = 0

    def recognize(self, page: PageInput) -> PageResult:
        self._page = page.number
        return super().recognize(page)

    def read_lines(self, pixels: np.ndarray) -> list[TextLine]:
        path = self.cache_dir / f"page_{self._page:04d}.json"
        if path.exists():
            return [TextLine(**item) for item in json.loads(path.read_text())]
        lines = super().read_lines(pixels)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([line.__dict__ for line in lines]))
        return lines


def scan_of(book: BenchBook, work: Path) -> Path:
    scan = work / book.key / "scan.pdf"
    if not scan.exists():
        print(f"rasterising {book.source.name} -> {scan}", file=sys.stderr)
        rasterise_pdf(book.source, scan, dpi=150)
    return scan


def run_pipeline(book: BenchBook, work: Path) -> Corpus:
    """OCR (cached) the scan into a fresh corpus through the real runner."""
    corpus_dir = work / book.key / "corpus"
    shutil.rmtree(corpus_dir, ignore_errors=True)
    corpus = Corpus(corpus_dir)
    engine = CachedLocalEngine(work / book.key / "lines")
    start = time.perf_counter()
    ocr_book(corpus, scan_of(book, work), RunOptions(book=book.key, engine="local"), engine=engine)
    print(f"{book.key}: pipeline {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", choices=sorted(BOOKS), action="append", help="book(s) to run (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bookocr-bench-labels"))
    parser.add_argument("--ocr-only", action="store_true", help="fill the OCR cache and stop")
    args = parser.parse_args(argv)
    for key in args.book or sorted(BOOKS):
        book = BOOKS[key]
        if not book.source.exists():
            print(f"{key}: {book.source} is missing; skipped", file=sys.stderr)
            continue
        corpus = run_pipeline(book, args.work)
        if args.ocr_only:
            continue
    return 0


if __name__ == "__main__":
    sys.exit(main())
