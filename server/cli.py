"""The ``bookocr`` command line. It mirrors the Python API; every command takes --json."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocr_backend.errors import BookOcrError
from ocr_backend.render import DEFAULT_LONG_SIDE, RenderSettings
from server.corpus import Corpus, default_corpus_dir
from server.progress import ProgressBar, format_duration
from server.runner import RunOptions, ocr_book

Handler = Callable[[argparse.Namespace, Corpus], int]


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=None if args.json else 1) if args.json else text)


# --- ocr ------------------------------------------------------------------------------
def add_ocr(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ocr", help="OCR a PDF, image, TIFF or folder of page images into the corpus (resumes)")
    p.add_argument("path", help="PDF, image, multi-page TIFF, or folder of page images")
    p.add_argument("--book", help="book id (default: slug of the file or folder name)")
    p.add_argument("--engine", default="auto", help="auto (default), text-layer, local, deepseek, deepseek-local")
    p.add_argument("--pages", help="pages to do, e.g. 1-20,35 (default: all)")
    p.add_argument("--long-side", type=int, default=DEFAULT_LONG_SIDE, help="page image size in px on the long side")
    p.add_argument("--replace", action="store_true", help="replace a book of the same id made from a different file")
    p.add_argument("--wait", action="store_true", help="wait for another run on the same book instead of stopping")
    p.set_defaults(handler=cmd_ocr)


def cmd_ocr(args: argparse.Namespace, corpus: Corpus) -> int:
    options = RunOptions(
        book=args.book,
        engine=args.engine,
        pages=args.pages,
        render=RenderSettings(long_side=args.long_side),
        replace=args.replace,
        wait_for_lock=args.wait,
    )
    bar = ProgressBar()
    try:
        result = ocr_book(corpus, args.path, options, progress=None if args.json else bar)
    finally:
        bar.close()
    book = corpus.book(result.book)
    summary = {**book.summary(), "run": result.as_dict(), "document": str(book.dir / "document.mmd")}
    text = (
        f"{result.book}: {result.done} page(s) done this run, {result.skipped} already done, "
        f"{result.failed} failed, {result.fallback} fallback in {format_duration(result.elapsed)} "
        f"({result.rate:.2f} pages/s)\nstate: {summary['state']}\ndocument: {summary['document']}"
    )
    emit(args, summary, text)
    return 0 if result.failed == 0 else 3


# --- list / status / get --------------------------------------------------------------
def add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the books in the corpus")
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace, corpus: Corpus) -> int:
    books = [corpus.book(book_id).summary() for book_id in corpus.book_ids()]
    lines = [f"{b['book']:<30} {b['state']:<22} {b['done']:>5}/{b['pages']:<5} {b['source']}" for b in books]
    emit(args, {"corpus": str(corpus.root), "books": books}, "\n".join(lines) or f"no books in {corpus.root}")
    return 0


def add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="a book's state, page counts, engines and quality flags")
    p.add_argument("book")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace, corpus: Corpus) -> int:
    book = corpus.book(args.book)
    s = book.summary()
    failed = [i + 1 for i, m in enumerate(book.pages) if m and m.get("status") == "failed"]
    s["failed_pages"] = failed
    text = "\n".join(f"{k}: {v}" for k, v in s.items())
    emit(args, s, text)
    return 0


def add_get(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="print a page (or a range) of a book's markdown")
    p.add_argument("book")
    p.add_argument("page", type=int)
    p.add_argument("--to", type=int, dest="to_page", help="last page of a range")
    p.set_defaults(handler=cmd_get)


def cmd_get(args: argparse.Namespace, corpus: Corpus) -> int:
    book = corpus.book(args.book)
    last = args.to_page or args.page
    book.check_page(args.page)
    book.check_page(last)
    views = [book.read_page(n) for n in range(args.page, last + 1)]
    data = [{"book": v.book, "page": v.number, "label": v.label, "status": v.status, "markdown": v.markdown} for v in views]
    text = "\n\n".join(f"<!-- page {v.number} ({v.status}) -->\n\n{v.markdown}" for v in views)
    emit(args, data if args.to_page else data[0], text)
    return 0


# --- demo -----------------------------------------------------------------------------
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate a scanned sample statistics book, OCR it, and show the result")
    p.add_argument("--out", type=Path, default=Path("sample/statistics-sample.pdf"), help="where to write the sample PDF")
    p.add_argument("--engine", default="auto", help="engine to use (default: auto, the embedded default)")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace, corpus: Corpus) -> int:
    from server.sample_book import make_sample_book

    pdf = make_sample_book(args.out)
    print(f"generated an image-only scanned sample book: {pdf}", file=sys.stderr)
    args.path, args.book, args.pages, args.replace, args.wait = str(pdf), "statistics-sample", None, True, False
    args.long_side = DEFAULT_LONG_SIDE
    code = cmd_ocr(args, corpus)
    if not args.json:
        document = corpus.book("statistics-sample").dir / "document.mmd"
        print(f"\n===== {document} =====\n")
        print(document.read_text(encoding="utf-8"))
    return code


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_ocr, add_list, add_status, add_get, add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bookocr", description="Scanned books to clean, searchable markdown for LLM agents.")
    parser.add_argument("--corpus", type=Path, default=None, help=f"library folder (default: $BOOKOCR_CORPUS or ./corpus, now {default_corpus_dir()})")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # --json and --corpus may come before or after the command
    argv = list(sys.argv[1:] if argv is None else argv)
    hoisted = [a for a in argv if a in ("--json", "-v", "--verbose")]
    rest = [a for a in argv if a not in hoisted]
    args = parser.parse_args(hoisted + rest)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    corpus = Corpus(args.corpus)
    try:
        return args.handler(args, corpus)
    except BookOcrError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        print(f"bookocr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bookocr: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
