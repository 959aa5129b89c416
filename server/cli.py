"""The ``bookocr`` command line. It mirrors the Python API; every command takes --json."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocr_backend.errors import BookOcrError
from ocr_backend.render import DEFAULT_LONG_SIDE, RenderSettings
from server.corpus import LOCK_WAIT_S, Corpus, default_corpus_dir
from server.progress import ProgressBar, format_duration
from server.deepseek_cli import GpuTally, add_deepseek_options, add_deploy, add_reclean, cmd_estimate, deepseek_engine_options
from server.runner import RunOptions, book_id_for, ocr_book

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
    p.add_argument("--redo", action="store_true", help="redo the selected pages even if already done (e.g. with another engine)")
    p.add_argument("--wait", action="store_true",
                   help=f"wait for another run on the same book instead of stopping (at most {LOCK_WAIT_S / 3600:g} h; see --max-wait)")
    p.add_argument("--max-wait", type=float, metavar="SECONDS", help="with --wait, wait at most this long (implies --wait)")
    add_deepseek_options(p)
    p.set_defaults(handler=cmd_ocr)


def cmd_ocr(args: argparse.Namespace, corpus: Corpus) -> int:
    if getattr(args, "estimate", False):
        return cmd_estimate(args, corpus)
    options = RunOptions(
        book=args.book,
        engine=args.engine,
        pages=args.pages,
        render=RenderSettings(long_side=args.long_side),
        replace=args.replace,
        redo=args.redo,
        wait_for_lock=lock_wait(args),
        engine_options=deepseek_engine_options(args, corpus, book_id_for(args.path, args.book)),
    )
    bar = ProgressBar()
    tally = GpuTally()
    try:
        result = ocr_book(corpus, args.path, options, progress=None if args.json else bar, listeners=[tally])
    finally:
        bar.close()
    book = corpus.book(result.book)
    summary = {**book.summary(), "run": result.as_dict(), "document": str(book.dir / "document.mmd")}
    text = (
        f"{result.book}: {result.done} page(s) done this run, {result.skipped} already done, "
        f"{result.failed} failed, {result.fallback} fallback in {format_duration(result.elapsed)} "
        f"({result.rate:.2f} pages/s)\nstate: {summary['state']}\ndocument: {summary['document']}"
    )
    if tally.pages:
        summary["gpu"] = tally.as_dict()
        text += f"\n{tally.describe()}"
    emit(args, summary, text)
    return 0 if result.failed == 0 else 3


def lock_wait(args: argparse.Namespace) -> bool | float:
    """False (stop if another run holds the book), or how many seconds to wait for it (True: the default)."""
    max_wait = getattr(args, "max_wait", None)
    if max_wait is not None:
        if max_wait < 0:
            raise BookOcrError(f"--max-wait must be 0 or more seconds, not {max_wait:g}")
        return max_wait
    return bool(args.wait)


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
    p.add_argument("page", type=int, nargs="?", help="PDF page number (1-based); or give --printed")
    p.add_argument("--printed", metavar="LABEL", help="the number printed on the page instead, e.g. 37 or xii")
    p.add_argument("--to", type=int, dest="to_page", help="last page of a range (PDF page number)")
    p.add_argument("--to-printed", metavar="LABEL", help="last page of a range, by its printed number")
    p.set_defaults(handler=cmd_get)


def cmd_get(args: argparse.Namespace, corpus: Corpus) -> int:
    book = corpus.book(args.book)
    if (args.page is None) == (args.printed is None):
        raise BookOcrError("give a PDF page number or --printed LABEL (one of the two), e.g. `bookocr get BOOK 52` or `bookocr get BOOK --printed 37`")
    first = book.find_printed(args.printed) if args.printed is not None else book.check_page(args.page)
    last = book.find_printed(args.to_printed) if args.to_printed is not None else args.to_page or first
    book.check_page(last)
    if last < first:
        raise BookOcrError(f"the range ends (PDF page {last}) before it starts (PDF page {first})")
    views = [book.read_page(n) for n in range(first, last + 1)]
    data = [
        {"book": v.book, "page": v.number, "label": v.label, "label_source": v.meta.get("label_source"), "status": v.status, "markdown": v.markdown}
        for v in views
    ]
    text = "\n\n".join(f"<!-- page {v.number}{_printed(v.label)} ({v.status}) -->\n\n{v.markdown}" for v in views)
    emit(args, data if last != first or args.to_page or args.to_printed else data[0], text)
    return 0


def _printed(label: str | None) -> str:
    return f' printed="{label}"' if label else ""


# --- contents -------------------------------------------------------------------------
def add_contents(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contents", help="a book's table of contents (PDF outline, else the headings found), with pages")
    p.add_argument("book")
    p.set_defaults(handler=cmd_contents)


def cmd_contents(args: argparse.Namespace, corpus: Corpus) -> int:
    from server.contents import book_contents

    contents = book_contents(corpus.book(args.book))
    lines = []
    for entry in contents["entries"]:
        printed = f" (printed {entry['printed']})" if entry["printed"] else ""
        lines.append(f"{'  ' * (entry['level'] - 1)}{entry['title']}  ... page {entry['page']}{printed}")
    if not lines:
        lines.append(f"no contents found for {contents['book']}: the PDF has no outline and no headings were recognised")
    else:
        lines.insert(0, f"# {contents['book']}: contents from the {'PDF outline' if contents['source'] == 'outline' else 'headings found in the text'}")
    emit(args, contents, "\n".join(lines))
    return 0


# --- search / reindex -----------------------------------------------------------------
def add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help='search every book (typos, OCR errors and typed formulas tolerated; "quote" phrases)')
    p.add_argument("query", nargs="+", help='words, "a quoted phrase", or a formula as typed, e.g. Gamma(theta | alpha+1, beta+y)')
    p.add_argument("--book", action="append", dest="books", metavar="ID", help="only this book (repeat for several)")
    p.add_argument("--pages", help="only PDF pages FIRST-LAST, e.g. 10-40")
    p.add_argument("--limit", type=int, default=10, help="hits to show (default 10)")
    p.add_argument("--offset", type=int, default=0, help="hits to skip, for paging")
    p.set_defaults(handler=cmd_search)


def cmd_search(args: argparse.Namespace, corpus: Corpus) -> int:
    from server.search import search_library

    pages = None
    if args.pages:
        try:
            first, _, last = args.pages.partition("-")
            pages = (int(first), int(last or first))
        except ValueError:
            raise BookOcrError(f"bad --pages {args.pages!r}: use FIRST-LAST, e.g. 10-40") from None
    result = search_library(corpus, " ".join(args.query), books=args.books, pages=pages, limit=args.limit, offset=args.offset)
    shown = f"{result.offset + 1}-{result.offset + len(result.hits)}" if result.hits else "none"
    lines = [f"{result.total} page(s) match {result.query!r} (showing {shown}; {result.elapsed_ms:.1f} ms)"]
    for rank, hit in enumerate(result.hits, start=result.offset + 1):
        lines.append(f"{rank:>3}. {hit.book} page {hit.page}{_printed(hit.label)}  score {hit.score:.3f}")
        lines.append(f"     {hit.snippet}")
    emit(args, result.as_dict(), "\n".join(lines))
    return 0


def add_reindex(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reindex", help="rebuild the search index from the .mmd files (one book, or all)")
    p.add_argument("book", nargs="?", help="book id (default: every book)")
    p.set_defaults(handler=cmd_reindex)


def cmd_reindex(args: argparse.Namespace, corpus: Corpus) -> int:
    import time

    from server.search import SearchIndex

    index = SearchIndex(corpus)
    started = time.perf_counter()
    pages = index.reindex(args.book)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in index.path.parent.glob(index.path.name + "*") if p.name.endswith(("sqlite", "-wal")))
    data = {"book": args.book, "pages": pages, "seconds": round(seconds, 3), "index": str(index.path), "bytes": size}
    text = f"indexed {pages} page(s) of {args.book or 'every book'} in {seconds:.1f} s; index {index.path} ({size / 1e6:.1f} MB)"
    emit(args, data, text)
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
    args.path, args.book, args.pages, args.replace, args.redo, args.wait = str(pdf), "statistics-sample", None, True, False, False
    args.long_side = DEFAULT_LONG_SIDE
    code = cmd_ocr(args, corpus)
    if not args.json:
        document = corpus.book("statistics-sample").dir / "document.mmd"
        print(f"\n===== {document} =====\n")
        print(document.read_text(encoding="utf-8"))
    return code


# --- MCP server -----------------------------------------------------------------------
def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the MCP server for LLM agents (stdio, for Claude Desktop; or --http)")
    p.add_argument("--http", action="store_true", help="serve streamable HTTP on 127.0.0.1 (at /mcp) instead of stdio")
    p.add_argument("--port", type=int, default=8000, help="port for --http (default 8000)")
    _add_allow_options(p)
    p.set_defaults(handler=cmd_serve)


def _add_allow_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow", action="append", metavar="DIR",
                   help="a folder the server may read books from (repeatable); default: your home folder and the working directory")
    p.add_argument("--max-file-mb", type=int, default=None, help="refuse books larger than this (default 1024)")


def cmd_serve(args: argparse.Namespace, corpus: Corpus) -> int:
    from server.jobs import JobManager
    from server.mcp_server import leave, serve
    from server.safety import InputPolicy

    jobs = JobManager(corpus)
    try:
        serve(corpus, InputPolicy.from_options(args.allow, args.max_file_mb), http=args.http, port=args.port, jobs=jobs)
    finally:
        # The server's lifespan has asked the jobs to stop (this waits no longer than it did); a job
        # stuck in a page must not keep the process, and its book's lock, alive once the client is gone.
        leave(jobs.shutdown())
    return 0


def add_mcp_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp-config", help="print a claude_desktop_config.json entry that starts `bookocr serve`")
    p.add_argument("--name", default="bookocr", help="the server's name in the config (default bookocr)")
    _add_allow_options(p)
    p.set_defaults(handler=cmd_mcp_config)


def cmd_mcp_config(args: argparse.Namespace, corpus: Corpus) -> int:
    from server.mcp_server import desktop_config

    print(json.dumps(desktop_config(corpus.root, args.allow, args.name, args.max_file_mb), indent=2))
    if not args.allow:
        print("note: no --allow given; the server will read books under your home folder only", file=sys.stderr)
    print("add this to claude_desktop_config.json (merge it into an existing \"mcpServers\"), then restart Claude Desktop", file=sys.stderr)
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_ocr, add_list, add_status, add_get, add_contents, add_search, add_reindex, add_demo, add_serve, add_mcp_config, add_deploy, add_reclean]


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
    except BrokenPipeError:  # `bookocr get ... | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
