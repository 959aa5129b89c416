"""The ``bookocr`` command line: a thin shell over :class:`server.library.Library`.

Each command parses its arguments, makes one library call and prints the result: as text, or as JSON
with ``--json``. Errors are one line on stderr and exit code 2; ``ocr`` exits 3 when pages failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocr_backend.engines import EngineOption, engine_class, engine_classes
from ocr_backend.errors import BookOcrError
from ocr_backend.render import DEFAULT_LONG_SIDE, RenderSettings
from server.corpus import Corpus, default_corpus_dir
from server.formatting import clock, describe_duration
from server.library import Library, PageRange, ShelfSummary
from server.locks import LOCK_WAIT_S
from server.progress import ProgressBar
from server.runner import RunOptions, is_library_folder

Handler = Callable[[argparse.Namespace, Library], int]


class Parser(argparse.ArgumentParser):
    """An argument parser that can finish itself when first used (to parse, or to print help or usage):
    the ``ocr`` command's engine options are found by importing every engine, with numpy, pymupdf and
    asyncio, which would make every other command (a ``search``) start ~100 ms slower."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_first_use: list[Callable[[], None]] = []

    def finish(self) -> None:
        while self.on_first_use:
            self.on_first_use.pop(0)()

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        self.finish()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.finish()
        return super().format_usage()

    def format_help(self) -> str:
        self.finish()
        return super().format_help()


def on_first_use(p: argparse.ArgumentParser, finish: Callable[[], None]) -> None:
    """Run ``finish`` when ``p`` is first used (a :class:`Parser`), else now."""
    if isinstance(p, Parser):
        p.on_first_use.append(finish)
    else:
        finish()


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False, default=_jsonable) if args.json else text)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "__dataclass_fields__"):
        return dataclasses.asdict(value)
    return str(value)


# --- ocr ------------------------------------------------------------------------------
def add_ocr(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ocr", help="OCR a PDF, image, TIFF or folder of page images into the corpus (resumes); several: a library job"
    )
    p.add_argument(
        "path",
        nargs="*",
        help="PDF, image, multi-page TIFF, or folder of page images; several PDFs, or a folder holding PDFs "
        "(and no page images), make a library job with one book per PDF",
    )
    p.add_argument(
        "--library",
        action="append",
        default=[],
        metavar="DIR",
        help="OCR every PDF under DIR, each its own book named after its file (repeatable)",
    )
    p.add_argument("--book", help="book id (default: slug of the file or folder name)")
    engine = p.add_argument("--engine", default="auto")
    p.add_argument("--pages", help="pages to do, e.g. 1-20,35 (default: all)")
    p.add_argument("--long-side", type=int, default=DEFAULT_LONG_SIDE, help="page image size in px on the long side")
    p.add_argument("--replace", action="store_true", help="replace a book of the same id made from a different file")
    p.add_argument(
        "--redo", action="store_true", help="redo the selected pages even if already done (e.g. with another engine)"
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help=f"wait for another run on the same book instead of stopping (at most {LOCK_WAIT_S / 3600:g} h; "
        "see --max-wait)",
    )
    p.add_argument(
        "--max-wait", type=float, metavar="SECONDS", help="with --wait, wait at most this long (implies --wait)"
    )
    p.add_argument("--estimate", action="store_true", help="print the pages and the expected cost of the run, and stop")
    p.add_argument(
        "--repair",
        action="store_true",
        help="rebuild a damaged book's manifest from its page files and source (PATH: the book id or the source), "
        "and stop; `bookocr ocr SOURCE` then resumes it",
    )
    on_first_use(p, lambda: add_engine_options(p, engine))
    p.set_defaults(handler=cmd_ocr)


def add_engine_options(p: argparse.ArgumentParser, engine: argparse.Action) -> None:
    """The engines' names in the help of ``--engine``, and each engine's own options (``--gpu`` ...),
    declared by the engines themselves."""
    engine.help = f"{', '.join(engine_classes())} (default auto); see `bookocr engines`"
    group = p.add_argument_group("engine options (each applies to the engines named)")
    seen: dict[str, list[str]] = {}
    options: dict[str, EngineOption] = {}
    for name, cls in engine_classes().items():
        for option in cls.options:
            seen.setdefault(option.name, []).append(name)
            options.setdefault(option.name, option)
    for key, option in options.items():
        engines = "/".join(seen[key])
        if option.type is bool:
            group.add_argument(
                option.flag, dest=f"engine_{key}", action="store_true", default=None, help=f"{engines}: {option.help}"
            )
        else:
            group.add_argument(
                option.flag,
                dest=f"engine_{key}",
                metavar=key.upper(),
                default=None,
                help=f"{engines}: {option.help} ({option.describe_type()})",
            )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options given on the command line; one the chosen engine does not take is an error."""
    given = {
        key.removeprefix("engine_"): value
        for key, value in vars(args).items()
        if key.startswith("engine_") and value is not None
    }
    return engine_class(args.engine).check_options(given)


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        book=args.book,
        engine=args.engine,
        pages=args.pages,
        render=RenderSettings(long_side=args.long_side),
        replace=args.replace,
        redo=args.redo,
        wait_for_lock=lock_wait(args),
        engine_options=engine_options(args),
    )


def cmd_ocr(args: argparse.Namespace, library: Library) -> int:
    paths = args.path if isinstance(args.path, list) else [args.path]
    if is_library_job(paths, getattr(args, "library", [])):
        return cmd_ocr_many(args, library, [*paths, *args.library])
    if not paths:
        raise BookOcrError("give a file or folder to OCR (or --library DIR)")
    args.path = paths[0]
    if args.repair:
        return cmd_repair(args, library)
    options = run_options(args)
    if args.estimate:
        return show_estimate(args, library, options)
    bar = ProgressBar()
    try:
        summary = library.ocr(args.path, options, progress=None if args.json else bar)
    finally:
        bar.close()
    run = summary.run
    text = (
        f"{run.book}: {run.done} page(s) done this run, {run.skipped} already done, "
        f"{run.failed} failed, {run.fallback} fallback in {clock(run.elapsed)} "
        f"({run.rate:.2f} pages/s)\nstate: {summary.status.state}\ndocument: {summary.document}"
    )
    if summary.cost.pages:
        text += f"\n{summary.cost.describe()}"
    emit(args, summary.as_dict(), text)
    return 0 if run.failed == 0 else 3


def is_library_job(paths: list[str], folders: list[str]) -> bool:
    return bool(folders) or len(paths) > 1 or (len(paths) == 1 and is_library_folder(paths[0]))


def cmd_ocr_many(args: argparse.Namespace, library: Library, paths: list[str]) -> int:
    if args.repair or args.book or args.pages:
        raise BookOcrError("--repair, --book and --pages take one book; a library job names each book after its file")
    for folder in getattr(args, "library", []):
        if not Path(folder).expanduser().is_dir():
            raise BookOcrError(f"--library {folder}: no such folder")
    options = run_options(args)
    if args.estimate:
        return show_shelf_estimate(args, library, paths, options)
    bar = ProgressBar()
    try:
        summary = library.ocr_many(paths, options, progress=None if args.json else bar)
    finally:
        bar.close()
    emit(args, summary.as_dict(), shelf_text(summary))
    return summary.exit_code


def shelf_text(summary: ShelfSummary) -> str:
    """The job summary: one line per book, then the totals."""
    width = max((len(b.book) for b in summary.books), default=4)
    lines = [f"library job: {len(summary.books)} book(s), {summary.state}"]
    for b in summary.books:
        renamed = f" (renamed: {b.renamed_from!r} is an earlier file's id)" if b.renamed_from else ""
        if b.error:
            lines.append(f"  {b.book:<{width}} {b.state}: {b.error}{renamed}")
            continue
        failed = f", {b.failed} failed" if b.failed else ""
        fallback = f", {b.fallback} fallback" if b.fallback else ""
        lines.append(
            f"  {b.book:<{width}} {b.state:<22} {b.pages:>5} pages, {b.done} done now, {b.skipped} before"
            f"{failed}{fallback}{renamed}"
        )
    t = summary.totals()
    lines.append(
        f"books: {t['books_complete']} complete, {t['books_with_failures']} with failed pages, "
        f"{t['books_not_read']} not read; pages: {t['pages']} in all, {t['pages_done_this_run']} done this run, "
        f"{t['pages_already_done']} already done, {t['failed']} failed, {t['fallback']} fallback"
    )
    lines.append(f"time: {clock(summary.elapsed_s)} ({t['pages_per_s']:.2f} pages/s)")
    if summary.cost.pages:
        lines.append(summary.cost.describe())
    if summary.exit_code:
        lines.append("run the same command again to retry what is not done")
    return "\n".join(lines)


def show_shelf_estimate(args: argparse.Namespace, library: Library, paths: list[str], options: RunOptions) -> int:
    """The whole job's pages and cost; a file that cannot be read is named and left out of the sum."""
    job = library.estimate_job(list(paths), options)
    emit(args, job.as_dict(), job.describe())
    return 2 if job.unreadable else 0


def cmd_repair(args: argparse.Namespace, library: Library) -> int:
    status = library.repair(args.path, args.book, lock_wait(args))
    emit(
        args,
        status.as_dict(),
        f"{status.book}: manifest rebuilt; {status.done} of {status.pages} page(s) kept, {status.pending} to do "
        f"(`bookocr ocr {status.source_path}` does them)",
    )
    return 0


def show_estimate(args: argparse.Namespace, library: Library, options: RunOptions) -> int:
    pages, estimate = library.estimate(args.path, options)
    if estimate is None:
        emit(
            args,
            {"estimate": None, "engine": args.engine, "pages": pages},
            f"{pages} page(s): engine {args.engine} runs on this machine, at no cost but its time",
        )
    else:
        emit(args, {"estimate": estimate.as_dict(), "engine": args.engine, "pages": pages}, estimate.describe())
    return 0


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


def cmd_list(args: argparse.Namespace, library: Library) -> int:
    books = library.statuses()
    lines = [
        f"{b.book:<30} {b.state:<22} {b.error}"
        if b.state == "damaged"
        else f"{b.book:<30} {b.state:<22} {b.done:>5}/{b.pages:<5} {b.source}"
        for b in books
    ]
    emit(
        args,
        {"corpus": str(library.corpus.root), "books": books},
        "\n".join(lines)
        or f"no books in {library.corpus.root.resolve()} (another corpus: --corpus DIR or $BOOKOCR_CORPUS)",
    )
    return 0


def add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="a book's state, page counts, engines and quality flags")
    p.add_argument("book")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace, library: Library) -> int:
    status = library.status(args.book)
    data = status.as_dict()
    emit(args, data, "\n".join(f"{key}: {human_value(key, value)}" for key, value in data.items() if key != "message"))
    return 0


def human_value(key: str, value: Any) -> str:
    """A status field as a person reads it: dates, durations, plain lists."""
    if value is None or value == [] or value == {}:
        return "-"
    if key == "updated" and isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if key in ("eta_s", "stalled_s") and isinstance(value, (int, float)):
        return describe_duration(value)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{name}: {human_value(name, item)}" for name, item in value.items())
    return str(value)


def add_get(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="print a page (or a range) of a book's markdown")
    p.add_argument("book")
    p.add_argument("page", type=int, nargs="?", help="PDF page number (1-based); or give --printed")
    p.add_argument("--printed", metavar="LABEL", help="the number printed on the page instead, e.g. 37 or xii")
    p.add_argument("--to", type=int, dest="to_page", help="last page of a range (PDF page number)")
    p.add_argument("--to-printed", metavar="LABEL", help="last page of a range, by its printed number")
    p.set_defaults(handler=cmd_get)


def cmd_get(args: argparse.Namespace, library: Library) -> int:
    pages = library.read_pages(
        args.book, args.page, printed=args.printed, to_page=args.to_page, to_printed=args.to_printed
    )
    data = [page.as_dict() for page in pages.pages]
    emit(
        args,
        data if _is_range(args, pages) else data[0],
        "\n\n".join(
            f"<!-- page {p.page}{_printed(p.label)}{_section(p.section)} ({p.status}) -->\n\n{p.body}"
            for p in pages.pages
        ),
    )
    return 0


def _is_range(args: argparse.Namespace, pages: PageRange) -> bool:
    return len(pages.pages) > 1 or args.to_page is not None or args.to_printed is not None


def _printed(label: str | None) -> str:
    return f' printed="{label}"' if label else ""


def _section(section: str | None) -> str:
    return f" {section}" if section else ""


# --- contents -------------------------------------------------------------------------
def add_contents(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contents", help="a book's table of contents (PDF outline, else the headings found), with pages")
    p.add_argument("book")
    p.set_defaults(handler=cmd_contents)


def cmd_contents(args: argparse.Namespace, library: Library) -> int:
    contents = library.contents(args.book)
    lines = [
        f"{'  ' * (e.level - 1)}{e.title}  ... page {e.page}{f' (printed {e.printed})' if e.printed else ''}"
        for e in contents.entries
    ]
    if not lines:
        lines.append(f"no contents found for {contents.book}: the PDF has no outline and no headings were recognised")
    else:
        origin = "PDF outline" if contents.source == "outline" else "headings found in the text"
        lines.insert(0, f"# {contents.book}: contents from the {origin}")
    emit(args, contents, "\n".join(lines))
    return 0


# --- search / reindex -----------------------------------------------------------------
def add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help='search every book (typos, OCR errors and typed formulas tolerated; "quote" phrases)'
    )
    p.add_argument(
        "query", nargs="+", help='words, "a quoted phrase", or a formula as typed, e.g. Gamma(theta | alpha+1, beta+y)'
    )
    p.add_argument("--book", action="append", dest="books", metavar="ID", help="only this book (repeat for several)")
    p.add_argument("--pages", help="only PDF pages FIRST-LAST, e.g. 10-40")
    p.add_argument("--limit", type=int, default=10, help="hits to show (default 10)")
    p.add_argument("--offset", type=int, default=0, help="hits to skip, for paging")
    p.add_argument(
        "--defined",
        action="store_true",
        help="where is it defined: pages that define the words (or head a section) first",
    )
    p.set_defaults(handler=cmd_search)


def cmd_search(args: argparse.Namespace, library: Library) -> int:
    result = library.search(
        " ".join(args.query),
        books=args.books,
        pages=args.pages,
        limit=args.limit,
        offset=args.offset,
        defined=args.defined,
    )
    shown = f"{result.offset + 1}-{result.offset + len(result.hits)}" if result.hits else "none"
    query = result.query if '"' in result.query else f'"{result.query}"'
    lines = [f"{result.total} page(s) match {query} (showing {shown}; {result.elapsed_ms:.1f} ms)"]
    for rank, hit in enumerate(result.hits, start=result.offset + 1):
        defines = f" [{hit.defines}]" if hit.defines else ""
        where = f"{hit.book} page {hit.page}{_printed(hit.label)}{_section(hit.section)}{defines}"
        lines.append(f"{rank:>3}. {where}  score {hit.score:.3f}")
        lines.append(f"     {hit.snippet}")
    emit(args, result.as_dict(), "\n".join(lines))
    return 0


def add_reindex(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reindex", help="rebuild the search index from the .mmd files (one book, or all)")
    p.add_argument("book", nargs="?", help="book id (default: every book)")
    p.set_defaults(handler=cmd_reindex)


def cmd_reindex(args: argparse.Namespace, library: Library) -> int:
    done = library.reindex(args.book)
    left_out = "".join(f"\nnot indexed: {why}" for why in done["not_indexed"].values())
    emit(
        args,
        done,
        f"indexed {done['pages']} page(s) of {args.book or 'every book'} in {done['seconds']:.1f} s; "
        f"index {done['index']} ({done['bytes'] / 1e6:.1f} MB){left_out}",
    )
    return 3 if done["not_indexed"] else 0


def add_reclean(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reclean", help="clean a book's DeepSeek pages again from their raw output (no GPU)")
    p.add_argument("book")
    p.add_argument(
        "--figures", action="store_true", help="also crop figures from the source file and save them beside the pages"
    )
    p.add_argument("--wait", action="store_true", help="wait for a run on the same book instead of stopping")
    p.set_defaults(handler=cmd_reclean)


def cmd_reclean(args: argparse.Namespace, library: Library) -> int:
    report = library.reclean(args.book, figures=args.figures, wait=args.wait)
    text = (
        f"{args.book}: {report.pages} DeepSeek page(s) cleaned again, {report.changed} changed, "
        f"{report.figures} figure(s) saved"
    )
    if report.missing_raw:
        text += f"\nno raw output kept for page(s) {_some(report.missing_raw)}"
    if report.flagged:
        text += (
            f"\nraw output looks like a loop on page(s) {_some(report.flagged)}: "
            "redo them with `bookocr ocr SOURCE --engine deepseek --redo --pages ...`"
        )
    emit(args, report.as_dict(), text)
    return 0


def _some(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers[:20]) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")


# --- engines / deploy -------------------------------------------------------------------
def add_engines(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engines", help="the OCR engines, with what they read and the options they take")
    p.set_defaults(handler=cmd_engines)


def cmd_engines(args: argparse.Namespace, library: Library) -> int:
    lines = []
    for engine in library.engines():
        lines.append(f"{engine.name}: {engine.description}\n  languages: {', '.join(engine.languages)}")
        lines += [f"  --{o['name'].replace('_', '-')} ({o['type']}): {o['help']}" for o in engine.options]
    emit(args, library.engines(), "\n".join(lines))
    return 0


def add_deploy(sub: argparse._SubParsersAction) -> None:
    from ocr_backend.deepseek.constants import DEFAULT_CONTAINERS, DEFAULT_GPU, DEFAULT_MODEL, GPU_CHOICES

    p = sub.add_parser("deploy", help="deploy the DeepSeek-OCR GPU class to your Modal workspace (modal deploy)")
    p.add_argument("--gpu", default=DEFAULT_GPU, choices=GPU_CHOICES, help=f"GPU type (default {DEFAULT_GPU})")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model id (e.g. deepseek-ai/DeepSeek-OCR-2)")
    p.add_argument(
        "--max-containers",
        type=int,
        default=DEFAULT_CONTAINERS,
        help=f"GPUs one job may fan out to (default {DEFAULT_CONTAINERS})",
    )
    p.set_defaults(handler=cmd_deploy)


def cmd_deploy(args: argparse.Namespace, library: Library) -> int:
    from ocr_backend.deepseek.deploy import deploy

    done = deploy(args.gpu, args.model, args.max_containers)
    emit(
        args,
        done,
        f"deployed DeepSeek-OCR ({args.model}) on {args.gpu}, up to {args.max_containers} containers; "
        "now: bookocr ocr BOOK --engine deepseek",
    )
    return 0


# --- demo -----------------------------------------------------------------------------
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate a scanned sample statistics book, OCR it, and show the result")
    p.add_argument(
        "--out", type=Path, default=Path("sample/statistics-sample.pdf"), help="where to write the sample PDF"
    )
    p.add_argument("--engine", default="auto", help="engine to use (default: auto, the embedded default)")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace, library: Library) -> int:
    from server.sample_book import make_sample_book

    pdf = make_sample_book(args.out)
    print(f"generated an image-only scanned sample book: {pdf}", file=sys.stderr)
    # the very command a user would type, so the demo follows every option `ocr` has
    ocr = ["ocr", str(pdf), "--book", "statistics-sample", "--replace", "--engine", args.engine]
    code = cmd_ocr(build_parser().parse_args(["--json", *ocr] if args.json else ocr), library)
    if not args.json:
        print(f"\n===== {library.document_path('statistics-sample')} =====\n")
        print(library.document("statistics-sample"))
    return code


# --- MCP server -----------------------------------------------------------------------
def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the MCP server for LLM agents (stdio, for Claude Desktop; or --http)")
    p.add_argument("--http", action="store_true", help="serve streamable HTTP on 127.0.0.1 (at /mcp) instead of stdio")
    p.add_argument("--port", type=int, default=8000, help="port for --http (default 8000)")
    _add_token_option(p)
    _add_allow_options(p)
    p.set_defaults(handler=cmd_serve)


def _add_token_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token",
        default=None,
        help="with --http: the bearer token clients must send (default $BOOKOCR_TOKEN; none: any local "
        "process can connect)",
    )


def http_token(args: argparse.Namespace) -> str | None:
    """The token of ``--token``, else $BOOKOCR_TOKEN; None when neither is set."""
    return args.token or os.environ.get("BOOKOCR_TOKEN") or None


def _add_allow_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow",
        action="append",
        metavar="DIR",
        help="a folder the server may read books from (repeatable); "
        "default: your home folder and the working directory",
    )
    p.add_argument("--max-file-mb", type=int, default=None, help="refuse books larger than this (default 1024)")


def cmd_serve(args: argparse.Namespace, library: Library) -> int:
    from server.mcp_server import leave, serve
    from server.safety import InputPolicy

    if args.token and not args.http:
        raise BookOcrError("--token is for `bookocr serve --http`; a stdio server is reached only by its client")
    try:
        policy = InputPolicy.from_options(args.allow, args.max_file_mb)
        serve(library, policy, http=args.http, port=args.port, token=http_token(args) if args.http else None)
    finally:
        # The server's lifespan has asked the jobs to stop (this waits no longer than it did); a job
        # stuck in a page must not keep the process, and its book's lock, alive once the client is gone.
        leave(library.shutdown())
    return 0


def add_mcp_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp-config", help="print a claude_desktop_config.json entry that starts `bookocr serve`")
    p.add_argument("--name", default="bookocr", help="the server's name in the config (default bookocr)")
    p.add_argument(
        "--http",
        action="store_true",
        help="print an entry for HTTP clients of `bookocr serve --http`, with its token (a new one unless "
        "--token or $BOOKOCR_TOKEN gives it)",
    )
    p.add_argument("--port", type=int, default=8000, help="with --http: the server's port (default 8000)")
    _add_token_option(p)
    _add_allow_options(p)
    p.set_defaults(handler=cmd_mcp_config)


def cmd_mcp_config(args: argparse.Namespace, library: Library) -> int:
    from server.mcp_server import desktop_config

    if args.http:
        return print_http_config(args)
    print(json.dumps(desktop_config(library.corpus.root, args.allow, args.name, args.max_file_mb), indent=2))
    for folder in args.allow or []:
        if not Path(folder).expanduser().is_dir():
            print(
                f"warning: --allow {folder}: no such folder (yet); the server can read nothing there", file=sys.stderr
            )
    if not args.allow:
        print("note: no --allow given; the server will read books under your home folder only", file=sys.stderr)
    print(
        'add this to claude_desktop_config.json (merge it into an existing "mcpServers"), then restart Claude Desktop',
        file=sys.stderr,
    )
    return 0


def print_http_config(args: argparse.Namespace) -> int:
    import secrets

    from server.mcp_server import http_client_config

    token = http_token(args) or secrets.token_urlsafe(32)
    print(json.dumps(http_client_config(token, args.port, args.name), indent=2))
    print(
        f"start the server with the same token: BOOKOCR_TOKEN={token} bookocr serve --http --port {args.port}; "
        "clients send it as 'Authorization: Bearer <token>'",
        file=sys.stderr,
    )
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_ocr,
    add_list,
    add_status,
    add_get,
    add_contents,
    add_search,
    add_reindex,
    add_demo,
    add_serve,
    add_mcp_config,
    add_engines,
    add_deploy,
    add_reclean,
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bookocr", description="Scanned books to clean, searchable markdown for LLM agents.")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help=f"library folder (default: $BOOKOCR_CORPUS or ./corpus, now {default_corpus_dir()})",
    )
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
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    library = Library(Corpus(args.corpus))
    try:
        return args.handler(args, library)
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
