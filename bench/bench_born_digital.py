"""Born-digital throughput: `bookocr ocr --engine auto` on a whole text-layer book.

Usage: .venv/bin/python bench/bench_born_digital.py [--data ../shared/testdata] [--runs 3]
Skips (exit 0) when the data is absent. Each run uses a fresh corpus; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cpu_report import describe

from server.corpus import Corpus
from server.runner import RunOptions, ocr_book

BOOK = "gitenberg_whitehead_41568/41568-pdf.pdf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(describe())
    pdf = args.data / BOOK
    if not pdf.is_file():
        print(f"skip: {pdf} not found (pass --data)")
        return 0
    rates, engines = [], set()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Corpus(Path(tmp))
            start = time.perf_counter()
            state = ocr_book(corpus, pdf, RunOptions(engine="auto"))
            elapsed = time.perf_counter() - start
            book = corpus.book(state.book)
            engines |= {m.engine for m in book.pages if m}
            rates.append(book.page_count / elapsed)
    print(f"book: {pdf.name}, {book.page_count} pages, engine auto -> {sorted(engines)}")
    print(f"pages/s per run: {', '.join(f'{r:.1f}' for r in rates)}; median {statistics.median(rates):.1f} (floor 50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
