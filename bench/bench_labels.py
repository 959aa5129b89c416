"""Benchmark issue 6: printed page labels, furniture kept out of bodies, and contents.

Each book is rasterised to an image-only PDF, OCR'd with the local engine through the real
runner (``ocr_book``) into a throwaway corpus, and scored against the born-digital original:

* label accuracy: the share of pages whose fitted printed label is right. Truth is the number
  the original page prints; a page that prints none is expected to carry the label its declared
  run implies (PDF page labels) when that run prints numbers elsewhere, and no label otherwise.
* furniture kept out: the share of running-head / page-number lines of the original (text in the
  head and foot margins) that do not reappear at the top or bottom of the stored page body.
* contents: entries recovered from the OCR'd headings, and whether each sits on the right page.

OCR is slow on a small machine, so the recognised lines are cached per page under
``--work`` (default /tmp/bookocr-bench-labels); layout, labels and contents are recomputed on
every run from the cached lines, so changes to those stages are measured without re-OCR.

    .venv/bin/python bench/bench_labels.py            # both books
    .venv/bin/python bench/bench_labels.py --book bws  # one
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pymupdf
from cpu_report import describe
from rapidfuzz import fuzz

from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.engines.local import LocalEngine
from ocr_backend.layout import TextLine
from server.contents import book_contents
from server.corpus import Corpus
from server.labels import body_lines, detect_labels, format_label, label_runs, page_candidates, parse_label, parse_roman
from server.runner import RunOptions, ocr_book
from server.sample_book import rasterise_pdf

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@dataclass(frozen=True)
class BenchBook:
    key: str
    source: Path
    head_zone: float  # y (pt) above which a line of the original is running head / folio
    foot_zone: float  # y (pt) below which a line of the original is a foot / folio
    engine: str = "local"  # "text-layer": read the born-digital original itself, no scan, no OCR


BWS = TESTDATA / "olmocr_tests/gnarly_pdfs/bws_book_ch2.pdf"
BOOKS = {
    "bws": BenchBook("bws", BWS, head_zone=112, foot_zone=680),
    "whitehead": BenchBook(
        "whitehead", TESTDATA / "gitenberg_whitehead_41568/41568-pdf.pdf", head_zone=20, foot_zone=460
    ),
    # bws has no declared page labels, so its born-digital text layer exercises detection too
    "bws-text": BenchBook("bws-text", BWS, head_zone=112, foot_zone=680, engine="text-layer"),
}


class CachedLocalEngine(LocalEngine):
    """The local engine, with its recognised lines cached per page so re-runs skip recognition."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(workers=1)  # one worker: the page number below is per engine, not per thread
        self.cache_dir = cache_dir
        self._page = 0

    def recognize(self, page: PageInput) -> PageResult:
        self._page = page.number
        return super().recognize(page)

    def recognize_many(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        """In this process, one page at a time: the cache lives here, not in the engine's worker processes."""
        return OcrEngine.recognize_many(self, pages)

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
    start = time.perf_counter()
    if book.engine == "text-layer":
        ocr_book(corpus, book.source, RunOptions(book=book.key, engine="text-layer"))
    else:
        engine = CachedLocalEngine(work / book.key / "lines")
        ocr_book(corpus, scan_of(book, work), RunOptions(book=book.key, engine="local"), engine=engine)
    print(f"{book.key}: pipeline {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return corpus


# --- ground truth from the born-digital original ------------------------------------------
@dataclass
class PageTruth:
    printed: str | None  # the folio the page prints
    expected: str | None  # the label a reader would give the page
    furniture: list[str]  # running head / folio lines in the head and foot margins


def _lines(page: pymupdf.Page) -> list[tuple[float, str, float]]:
    out = []
    for block in page.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            text = "".join(span["text"] for span in line["spans"]).strip()
            if text:
                out.append((line["bbox"][1], text, max(span["size"] for span in line["spans"])))
    return sorted(out)


def _is_folio(text: str) -> bool:
    return text.isdigit() or (parse_label(text) is not None)


def ground_truth(book: BenchBook) -> list[PageTruth]:
    """What each page of the original prints, and the label a reader would give it."""
    truths = []
    with pymupdf.open(book.source) as doc:
        declared = (
            [doc[i].get_label() for i in range(doc.page_count)] if doc.get_page_labels() else [None] * doc.page_count
        )
        for page in doc:
            margin = [text for y, text, _ in _lines(page) if y < book.head_zone or y > book.foot_zone]
            printed = next((t for t in margin if _is_folio(t)), None)
            truths.append(PageTruth(printed, printed, margin))
    # A page that prints no number carries the label of its declared run, if that run prints any.
    runs = [(first, last) for _, _, first, last in label_runs(declared)]
    for first, last in runs:
        if any(truths[n - 1].printed for n in range(first, last + 1)):
            for n in range(first, last + 1):
                truths[n - 1].expected = truths[n - 1].printed or declared[n - 1]
    return truths


def contents_truth(book: BenchBook) -> list[tuple[str, int]]:
    """(key, page) of every heading the contents should list."""
    with pymupdf.open(book.source) as doc:
        outline = doc.get_toc(simple=True)
        if outline:  # Whitehead: chapters and back matter from the original's bookmarks
            entries = []
            for _, title, page in outline:
                chapter = re.match(r"^([IVXL]+): ", title)
                if chapter:
                    entries.append((f"chapter {parse_roman(chapter.group(1))}", page))
                elif title.rstrip(".").lower() in ("contents", "notes", "bibliography", "index"):
                    entries.append((title.rstrip(".").lower(), page))
            return entries
        entries = []  # bws: "Chapter 2" and the numbered section headings, set in a larger size
        for number, page in enumerate(doc, start=1):
            for _, text, size in _lines(page):
                if size >= 11.5 and re.fullmatch(r"\d+(\.\d+)+", text):
                    entries.append((text, number))
                elif size >= 20 and (m := re.fullmatch(r"Chapter (\d+)", text)):
                    entries.append((f"chapter {m.group(1)}", number))
        return entries


# --- scoring -------------------------------------------------------------------------------
def _norm(text: str) -> str:
    """Letters and digits only; case kept, since running heads are set in capitals and the
    section heading they repeat is not."""
    return re.sub(r"[^0-9A-Za-z]+", " ", unicodedata.normalize("NFKD", text)).strip()


def _in_body_edge(line: str, edge: list[str]) -> bool:
    """Whether a margin line of the original reappears in the body's first or last lines."""
    target = _norm(line)
    for body_line in edge:
        candidate = _norm(body_line)
        if _is_folio(line.strip()):
            if re.search(rf"(^| ){re.escape(target)}( |$)", candidate):
                return True
        elif len(target) >= 3 and len(candidate) >= 0.6 * len(target) and fuzz.partial_ratio(target, candidate) >= 85:
            return True
    return False


def score_labels(book: BenchBook, corpus: Corpus) -> dict[str, Any]:
    stored = corpus.book(book.key)
    truths = ground_truth(book)
    labels = stored.labels()
    right = [n for n, (t, got) in enumerate(zip(truths, labels), start=1) if t.expected == got]
    wrong = [(n, t.expected, got) for n, (t, got) in enumerate(zip(truths, labels), start=1) if t.expected != got]
    printed_pages = [n for n, t in enumerate(truths, start=1) if t.printed]
    lines_total = kept_out = 0
    leaked: list[tuple[int, str]] = []
    for number, truth in enumerate(truths, start=1):
        body = body_lines(stored.read_page(number).markdown)
        edge = body[:2] + body[-2:]
        for line in truth.furniture:
            lines_total += 1
            if _in_body_edge(line, edge):
                leaked.append((number, line))
            else:
                kept_out += 1
    sources: dict[str, int] = {}
    for meta in stored.pages:
        key = (meta or {}).get("label_source", "none")
        sources[key] = sources.get(key, 0) + 1
    return {
        "pages": len(truths),
        "label_right": len(right),
        "label_accuracy": round(len(right) / len(truths), 4),
        "printed_pages_right": sum(1 for n in printed_pages if labels[n - 1] == truths[n - 1].printed),
        "printed_pages": len(printed_pages),
        "label_sources": sources,
        "wrong": wrong[:20],
        "furniture_lines": lines_total,
        "furniture_kept_out": kept_out,
        "furniture_kept_out_share": round(kept_out / lines_total, 4) if lines_total else None,
        "furniture_leaked": leaked[:10],
        "runs": stored.label_runs(),
    }


def stress_labels(book: BenchBook, corpus: Corpus, seed: int = 0) -> dict[str, float]:
    """Label accuracy when the OCR'd pages are made worse on purpose, to show what the run
    fitting absorbs: the layout keeping nothing apart (furniture back at the top of the body),
    misread numbers on 15% of pages, and no number read at all on 30% of pages."""
    stored = corpus.book(book.key)
    truths = ground_truth(book)
    pages = [
        ((meta or {}).get("furniture", []), stored.read_page(n).markdown)
        for n, meta in enumerate(stored.pages, start=1)
    ]
    rng = random.Random(seed)

    def misread(line: str) -> str:
        return re.sub(r"\d+", lambda m: str(rng.randrange(1, 400)), line)

    variants = {
        "furniture_left_in_body": [([], "\n\n".join([*furniture, markdown])) for furniture, markdown in pages],
        "misread_15pct": [
            ([misread(f) for f in furniture] if rng.random() < 0.15 else furniture, markdown)
            for furniture, markdown in pages
        ],
        "unread_30pct": [([] if rng.random() < 0.30 else furniture, markdown) for furniture, markdown in pages],
    }
    scores = {}
    for name, variant in {"as_ocred": pages, **variants}.items():
        fitted = [f.label if f else None for f in detect_labels(variant)]
        scores[name] = _accuracy(truths, fitted)
        scores[name + "_unfitted"] = _accuracy(truths, [_best_read(f, m) for f, m in variant])
    return scores


def _best_read(furniture: list[str], markdown: str) -> str | None:
    """The baseline without run fitting: the page's strongest folio candidate, as read."""
    found = page_candidates(furniture, markdown)
    best = max(found, key=lambda c: c.weight, default=None)
    return format_label(best.value, best.style) if best else None


def _accuracy(truths: list[PageTruth], labels: list[str | None]) -> float:
    return round(sum(t.expected == got for t, got in zip(truths, labels)) / len(truths), 4)


def _entry_key(title: str) -> str | None:
    if m := re.match(r"^(\d+(?:\.\d+)+)\b", title):
        return m.group(1)
    if m := re.match(r"^chapter\s*([0-9]+|[ivxl]+)\b", title, re.IGNORECASE):
        num = m.group(1)
        return f"chapter {int(num) if num.isdigit() else parse_roman(num)}"
    word = title.strip(" .").lower()
    return word if word in ("contents", "notes", "bibliography", "index") else None


def score_contents(book: BenchBook, corpus: Corpus) -> dict[str, Any]:
    contents = book_contents(corpus.book(book.key))
    found = {}
    for entry in contents["entries"]:
        key = _entry_key(entry["title"])
        if key and key not in found:
            found[key] = entry["page"]
    truth = contents_truth(book)
    present = [(key, page) for key, page in truth if key in found]
    right = [(key, page) for key, page in present if found[key] == page]
    truth_keys = {key for key, _ in truth}
    return {
        "source": contents["source"],
        "entries": len(contents["entries"]),
        "expected": len(truth),
        "found": len(present),
        "on_right_page": len(right),
        "missing": [key for key, _ in truth if key not in found],
        "wrong_page": [(key, page, found[key]) for key, page in present if found[key] != page],
        "extra": [e["title"] for e in contents["entries"] if _entry_key(e["title"]) not in truth_keys][:15],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", choices=sorted(BOOKS), action="append", help="book(s) to run (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bookocr-bench-labels"))
    parser.add_argument("--ocr-only", action="store_true", help="fill the OCR cache and stop")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every detail (wrong pages, leaked lines)")
    args = parser.parse_args(argv)
    print(describe())
    results: dict[str, Any] = {}
    for key in args.book or sorted(BOOKS):
        book = BOOKS[key]
        if not book.source.exists():
            print(f"{key}: {book.source} is missing; skipped", file=sys.stderr)
            continue
        corpus = run_pipeline(book, args.work)
        if args.ocr_only:
            continue
        labels = score_labels(book, corpus)
        contents = score_contents(book, corpus)
        stress = stress_labels(book, corpus)
        results[key] = {"labels": labels, "contents": contents, "stress": stress}
        print(
            f"{key}: labels right {labels['label_right']}/{labels['pages']} = {labels['label_accuracy']:.3f} "
            f"(pages that print a number: {labels['printed_pages_right']}/{labels['printed_pages']}); "
            f"furniture kept out of bodies {labels['furniture_kept_out']}/{labels['furniture_lines']} = "
            f"{labels['furniture_kept_out_share']:.3f}; contents ({contents['source']}) {contents['found']}/{contents['expected']} "
            f"found, {contents['on_right_page']} on the right page, {len(contents['extra'])} extra\n"
            "  label accuracy, fitted (as read per page, unfitted): "
            + ", ".join(
                f"{name} {value:.3f} ({stress[name + '_unfitted']:.3f})"
                for name, value in stress.items()
                if not name.endswith("_unfitted")
            )
        )
    if results:
        out = args.work / "results.json"
        out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
        print(json.dumps(results, indent=1, ensure_ascii=False) if args.verbose else f"details: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
