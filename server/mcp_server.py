"""The MCP server: the book library as tools and resources for LLM agents.

A thin shell over :class:`server.library.Library`, which the CLI uses too: :class:`BookTools` holds one
method per tool (testable without a client), :func:`create_server` registers them. Library errors carry
messages written for people; the model reads them as ``ToolError`` messages that say what to do next.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hmac
import importlib.metadata
import io
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, ImageContent, Resource, TextContent, Tool, ToolAnnotations
from pydantic import BaseModel, Field, StrictInt, StrictStr, ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ocr_backend.engines import engine_classes
from ocr_backend.errors import BookOcrError, PathNotAllowedError
from ocr_backend.render import RenderSettings
from ocr_backend.sources import OpenCheck, Source, open_source
from server.contents import Contents
from server.corpus import page_marker
from server.jobs import ACTIVE_STATES
from server.library import BookStatus, JobEstimate, Library, OcrAnswer, PageRange, PageText
from server.runner import RunOptions, is_library_folder
from server.safety import InputPolicy
from server.search import SearchResponse

log = logging.getLogger("bookocr.mcp")

SERVER_NAME = "bookocr"
WAIT_S = 3.0  # ocr_book waits this long for progress before it returns (clients time out at ~60 s)
POLL_S = 0.25
MAX_RANGE_CHARS = 32_000  # about 8-10k tokens: under Claude Code's 10k warning, far under its 25k cut
MAX_RANGE_PAGES = 20
MAX_QUERY_CHARS = 500
MAX_SEARCH_LIMIT = 50
MAX_LIST_LIMIT = 200
IMAGE_LONG_SIDE = 1280  # px; enough to read a formula, small enough for any client's image limit
IMAGE_QUALITY = 80
EXIT_GRACE_S = 5.0  # after the server has stopped, the process is ended if anything still holds it this long

INSTRUCTIONS = """\
bookocr is a library of books turned from scans into per-page markdown.
- Find what is in the library with list_books; add a book with ocr_book(path), which runs in the \
background: call book_status(book) to follow it. Pages that are done can be read while the rest run. \
Before a paid engine (deepseek) runs, estimate_ocr with the same arguments says what it would cost.
- Pages are numbered 1..N in file order (the PDF page index), not by the numbers printed on the pages; \
the printed number, when known, is shown as the page's label.
- search_book(query) finds pages (defined=true: where a term is defined); get_page(book, page) reads one, \
or a range with to_page. A page cited by its printed number ("p. 37", "pp. 37-38") is read with \
get_page(book, printed="37", to_printed="38"). \
get_contents(book) lists chapters and sections with their pages. \
get_page_image(book, page) shows the scan, to check a formula, a table or a doubtful word.
"""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
# ocr_book writes only into the library and never overwrites another file's book, and a second
# call with the same arguments changes nothing; it reads files from outside the library (and
# a cloud engine, if one is chosen, runs elsewhere), hence open-world.
OCR_ANNOTATIONS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


# --- structured results that are the MCP's own views --------------------------------------------
class BookSummary(BaseModel):
    book: str
    state: str
    pages: int
    done: int
    failed: int
    engine: str | None
    source: str
    error: str | None = Field(None, description="why a damaged book cannot be read, and the fix")


class BookList(BaseModel):
    total: int
    offset: int
    limit: int
    next_offset: int | None
    states: dict[str, int] = Field(description="how many books of the whole library are in each state")
    books: list[BookSummary]
    message: str


class PageInfo(BaseModel):
    page: int
    label: str | None = Field(description="the page number printed on the page, when known")
    status: str = Field(description="ok | fallback | failed | pending | damaged")
    engine: str | None
    quality_flags: list[str]


class PageMeta(BaseModel):
    book: str
    page: int = Field(description="first page returned (1-based file order)")
    to_page: int = Field(description="last page returned")
    page_count: int
    label: str | None = Field(description="printed page number of the first page, when known")
    section: str | None = Field(description='the contents entry the first page falls in, e.g. "§2.3.3 Summary"')
    status: str
    engine: str | None
    quality_flags: list[str]
    previous_page: int | None
    next_page: int | None
    pages: list[PageInfo]
    truncated: bool = Field(description="true when the range was cut to keep the answer small")
    continue_from: int | None = Field(description="when truncated: call get_page again with this page")
    book_state: str


class SearchHitModel(BaseModel):
    book: str
    page: int
    label: str | None
    section: str | None = None
    defines: str | None = Field(None, description="heading | definition: the page names or defines the query")
    score: float
    snippet: str


class SearchResult(BaseModel):
    query: str
    total: int
    offset: int
    limit: int
    elapsed_ms: float
    hits: list[SearchHitModel]
    next_offset: int | None = Field(description="offset for the next page of hits, if any")


@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """Library errors carry messages written for the user; the model reads them as ToolErrors."""
    try:
        yield
    except BookOcrError as exc:
        raise ToolError(str(exc)) from exc


def check_one_source(path: str, paths: tuple[str, ...]) -> None:
    what = "path (a book, or a folder of PDFs) or paths (a list of PDF files)"
    if not path and not paths:
        raise ToolError(f"say what to read: give {what}")
    if path and paths:
        raise ToolError(f"give {what}, not both")


def reported(method: Callable[..., Any]) -> Callable[..., Any]:
    """A tool method whose library errors reach the model as ToolErrors."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with tool_errors():
            return method(*args, **kwargs)

    return wrapper


class SourceCache:
    """Open book sources for page images, kept a while: opening a source hashes the whole file."""

    def __init__(self, check: OpenCheck, size: int = 4) -> None:
        self.check = check  # every file a source opens, checked once open: links swapped in are refused
        self.size = size
        self._entries: dict[str, tuple[tuple[int, int], Source, threading.Lock]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def open(self, path: Path) -> Iterator[Source]:
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            entry = self._entries.get(str(path))
            if entry is None or entry[0] != key:
                if entry is not None:
                    self._drop(str(path))
                if len(self._entries) >= self.size:
                    self._drop(next(iter(self._entries)))  # the oldest
                entry = (key, open_source(path, self.check), threading.Lock())
                self._entries[str(path)] = entry
        _, source, source_lock = entry
        with source_lock:  # a Source is not thread-safe
            yield source

    def _drop(self, name: str) -> None:
        _, source, source_lock = self._entries.pop(name)
        with source_lock:  # not while another thread renders from it
            source.close()

    def close(self) -> None:
        with self._lock:
            for name in list(self._entries):
                self._drop(name)


# --- formatting ------------------------------------------------------------------------------------
def page_info(page: PageText) -> PageInfo:
    return PageInfo(page=page.page, label=page.label, status=page.status, engine=page.engine, quality_flags=page.flags)


def format_pages(pages: PageRange) -> str:
    first, last = pages.first, pages.last
    if len(pages.pages) == 1 and pages.requested_last == first.page:
        p = first
        label = f' (printed "{p.label}")' if p.label else ""
        engine = f", engine {p.engine}" if p.engine else ""
        flags = f", flags: {', '.join(p.flags)}" if p.flags else ""
        prev = f"previous page {p.page - 1}" if p.page > 1 else "first page"
        nxt = f"next page {p.page + 1}" if p.page < pages.page_count else "last page"
        section = f", {p.section}" if p.section else ""
        where = f"{pages.book}: page {p.page} of {pages.page_count}{label}{section}"
        head = f"<!-- {where}; {p.status}{engine}{flags}; {prev}, {nxt} -->"
        return f"{head}\n\n{p.body}\n"
    section = f", {first.section}" if first.section else ""
    head = f"<!-- {pages.book}: pages {first.page}-{last.page} of {pages.page_count}{section} -->"
    parts = [head] + [f"{page_marker(p.page, p.label)}\n\n{p.body}\n" for p in pages.pages]
    if pages.truncated:
        parts.append(
            f"<!-- cut after page {last.page} to keep this answer short; continue with "
            f'get_page(book="{pages.book}", page={last.page + 1}, to_page={pages.requested_last}) -->'
        )
    elif last.page < pages.page_count:
        parts.append(f"<!-- next page: {last.page + 1} -->")
    return "\n\n".join(parts)


def page_result(pages: PageRange) -> CallToolResult:
    first, last = pages.first, pages.last
    meta = PageMeta(
        book=pages.book,
        page=first.page,
        to_page=last.page,
        page_count=pages.page_count,
        label=first.label,
        section=first.section,
        status=first.status,
        engine=first.engine,
        quality_flags=first.flags,
        previous_page=first.page - 1 if first.page > 1 else None,
        next_page=last.page + 1 if last.page < pages.page_count else None,
        pages=[page_info(p) for p in pages.pages],
        truncated=pages.truncated,
        continue_from=pages.continue_from,
        book_state=pages.book_state,
    )
    return CallToolResult(
        content=[TextContent(type="text", text=format_pages(pages))], structured_content=meta.model_dump(mode="json")
    )


def contents_message(contents: Contents) -> str:
    if contents.entries:
        return (
            "read an entry with get_page(book, page=entry.page); "
            'the printed number works too: get_page(book, printed="...")'
        )
    return (
        "no contents: the PDF has no outline and no chapter or section headings were recognised in the text "
        "(is the book fully OCRed? see book_status); use search_book to find a section by its words"
    )


def contents_result(contents: Contents) -> CallToolResult:
    origin = "the PDF outline" if contents.source == "outline" else "headings found in the text"
    lines = [f"{contents.book}: contents from {origin} ({len(contents.entries)} entries, {contents.pages} pages)"]
    for e in contents.entries:
        printed = f' (printed "{e.printed}")' if e.printed else ""
        lines.append(f"{'  ' * (e.level - 1)}- {e.title}: page {e.page}{printed}")
    message = contents_message(contents)
    lines.append(message)
    structured = {**contents.as_dict(), "message": message}
    return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))], structured_content=structured)


def search_result(response: SearchResponse) -> CallToolResult:
    hits = [
        SearchHitModel(
            book=h.book,
            page=h.page,
            label=h.label,
            section=h.section,
            defines=h.defines,
            score=round(float(h.score), 4),
            snippet=h.snippet,
        )
        for h in response.hits
    ]
    end = response.offset + len(hits)
    next_offset = end if end < response.total else None
    result = SearchResult(
        query=response.query,
        total=response.total,
        offset=response.offset,
        limit=response.limit,
        elapsed_ms=round(float(response.elapsed_ms), 2),
        hits=hits,
        next_offset=next_offset,
    )
    return CallToolResult(
        content=[TextContent(type="text", text=format_hits(result))], structured_content=result.model_dump(mode="json")
    )


def format_hits(r: SearchResult) -> str:
    if not r.hits:
        more = f" (only {r.total} hits; use a smaller offset)" if r.total and r.offset else ""
        return (
            f"No pages match {quoted(r.query)}{more}. "
            "Try other words, fewer words, or check list_books for what the library holds."
        )
    lines = [f"{r.total} page(s) match {quoted(r.query)}; hits {r.offset + 1}-{r.offset + len(r.hits)}:"]
    for i, h in enumerate(r.hits, start=r.offset + 1):
        label = f' (printed "{h.label}")' if h.label else ""
        section = f" {h.section}" if h.section else ""
        defines = f" [{h.defines}]" if h.defines else ""
        snippet = " ".join(h.snippet.split())
        lines.append(f"{i}. {h.book} page {h.page}{label}{section}{defines}, score {h.score:.3g}: {snippet}")
    tail = f"More hits: search_book(query, offset={r.next_offset}). " if r.next_offset is not None else ""
    lines.append(f"{tail}Read a hit with get_page(book, page).")
    return "\n".join(lines)


def quoted(query: str) -> str:
    """The query in quotes, unless it holds its own (a phrase query): never ""proof by induction""."""
    return query if '"' in query else f'"{query}"'


def status_result(status: BookStatus) -> CallToolResult:
    """One line for the model (what stands, what to call next); the whole record in structuredContent."""
    engine = f", engine {status.engine}" if status.engine else ""
    detail = f" ({status.detail})" if status.detail else ""
    text = f"{status.book}: {status.state}{detail}{engine}. {status.message}".strip()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=status.as_dict())


def library_result(answer: OcrAnswer) -> CallToolResult:
    """Two lines: the job's totals and states, and what to call next; each book in structuredContent."""
    library = answer.library or {}
    states = ", ".join(f"{n} {state}" for state, n in sorted(library.get("states", {}).items()))
    failed = f", {answer.failed} failed" if answer.failed else ""
    text = f"{answer.book}: {states}; {answer.done}/{answer.pages} pages done{failed}.\n{answer.message}"
    if answer.error:
        text += f"\nNot OCRed: {answer.error}"
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=answer.as_dict())


def book_summary(status: BookStatus) -> BookSummary:
    return BookSummary(
        book=status.book,
        state=status.state,
        pages=status.pages,
        done=status.done,
        failed=status.failed,
        engine=status.engine,
        source=status.source,
        error=status.error,
    )


def list_result(statuses: list[BookStatus], limit: int, offset: int) -> CallToolResult:
    shown = [book_summary(s) for s in statuses[offset : offset + limit]]
    end = offset + len(shown)
    states: dict[str, int] = {}
    for s in statuses:
        states[s.state] = states.get(s.state, 0) + 1
    listing = BookList(
        total=len(statuses),
        offset=offset,
        limit=limit,
        next_offset=end if end < len(statuses) else None,
        states=states,
        books=shown,
        message=list_message(len(statuses), end if end < len(statuses) else None),
    )
    text = TextContent(type="text", text=format_list(listing))
    return CallToolResult(content=[text], structured_content=listing.model_dump(mode="json"))


def list_message(total: int, next_offset: int | None) -> str:
    if not total:
        return "The library is empty. Add a book with ocr_book(path)."
    more = f"More: list_books(offset={next_offset}). " if next_offset is not None else ""
    return f"{more}Details: book_status(book); read: get_page(book, page); search: search_book(query)."


def format_list(listing: BookList) -> str:
    if not listing.total:
        return listing.message
    states = ", ".join(f"{count} {state}" for state, count in sorted(listing.states.items()))
    head = f"{listing.total} book(s): {states}."
    if not listing.books:
        return f"{head} None from offset {listing.offset}."
    books = "; ".join(
        f"{b.book} ({b.state}, {b.done}/{b.pages}" + (f", {b.failed} failed)" if b.failed else ")")
        for b in listing.books
    )
    shown = f"{listing.offset + 1}-{listing.offset + len(listing.books)}"
    return f"{head} {shown}: {books}.\n{listing.message}"


TOOLS: dict[str, tuple[str, ToolAnnotations, str]] = {  # name: (title, annotations, description)
    "ocr_book": (
        "OCR a book (in the background)",
        OCR_ANNOTATIONS,
        """\
Add a scanned book (PDF, image, TIFF or folder of page images) to the library, or resume it, keeping done \
pages. Returns in seconds; OCR goes on in the background (book_status(book) follows it).
path: absolute path (under the folders this server may read); a folder of PDFs, or paths=[...]: a book per \
PDF. book: id (default: file name). engine: {engines} (default auto). pages: e.g. "1-20,35". \
retry_failed: retry failed pages. options: engine settings, e.g. {"gpu": "H100"}.""",
    ),
    "estimate_ocr": (
        "Estimate an OCR job",
        READ_ONLY,
        """\
What ocr_book with the same arguments would take: books, pages and, for deepseek, GPU seconds, dollars and \
wall time. Runs nothing.""",
    ),
    "list_books": (
        "List books",
        READ_ONLY,
        """\
The library's books: id, state, pages done / failed / total, engine, source file; a count per state. \
limit (1-200, default 50) and offset page through a large library.""",
    ),
    "book_status": (
        "Book status",
        READ_ONLY,
        """\
One book's state and progress (pages done / failed / pending, ETA, "stalled"), engine, quality flags, \
failed pages, source, and what to call next.""",
    ),
    "get_page": (
        "Read a page",
        READ_ONLY,
        """\
Read a page, or a range, as markdown (LaTeX formulas, HTML tables), with the section it falls in.
page: PDF page, 1..page count (file order). printed: instead, the number printed on the page ("37", \
"xii"), as a reader cites it. to_page / to_printed: last page of a range (PDF page / printed number). \
Long ranges are cut (about 8k tokens, 20 pages) and say where to continue.""",
    ),
    "get_contents": (
        "Table of contents",
        READ_ONLY,
        """\
A book's chapters and sections, each with its PDF page (for get_page) and printed page number: the PDF's \
outline, else headings found in the text.""",
    ),
    "search_book": (
        "Search books",
        READ_ONLY,
        """\
Find pages of the library (or of one book) by words or a "quoted phrase"; hits give book, page, printed \
page, section and a snippet. Pages whose heading names the query come first; defined=true also puts first \
the pages that define it ("X is called...", "we define X", "Definition 2.1"): use it for "where is X \
defined?". limit 1-50 (default 10); offset for more.""",
    ),
    "get_page_image": (
        "See a page's scan",
        READ_ONLY,
        """\
The scan of a page (1280 px JPEG), to check a formula, table, figure or doubtful word. page: PDF page.""",
    ),
}


# --- the tools -------------------------------------------------------------------------------------
class BookTools:
    """The server's tools and resources over one library; each method is one tool (or resource)."""

    def __init__(self, library: Library, policy: InputPolicy | None = None, wait_s: float = WAIT_S) -> None:
        self.library = library
        self.policy = policy or InputPolicy()
        self.wait_s = wait_s
        self.sources = SourceCache(self.policy.check_opened)

    async def ocr_book(
        self,
        ctx: Context,
        path: str = "",
        paths: tuple[str, ...] = (),
        book: str | None = None,
        engine: str = "auto",
        pages: str | None = None,
        retry_failed: bool = False,
        options: dict[str, Any] | None = None,
    ) -> Annotated[CallToolResult, OcrAnswer]:
        with tool_errors():
            check_one_source(path, paths)
            run = RunOptions(
                book=book,
                engine=engine,
                pages=pages,
                engine_options=dict(options or {}),
                open_check=self.policy.check_opened,
            )
            shelf = list(paths) or await anyio.to_thread.run_sync(self.library_folder, path)
            if shelf is not None:
                return await self.ocr_library(ctx, shelf, run, retry_failed)
            resolved = await anyio.to_thread.run_sync(self.policy.check_input, path)
            book_id = await anyio.to_thread.run_sync(self.library.start, resolved, run, retry_failed)
            return status_result(await self.wait_reporting(ctx, book_id))

    async def estimate_ocr(
        self,
        path: str = "",
        paths: tuple[str, ...] = (),
        engine: str = "auto",
        pages: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> CallToolResult:
        with tool_errors():  # opening (and hashing) each file takes a moment: off the event loop
            return await anyio.to_thread.run_sync(lambda: self.estimate_result(path, paths, engine, pages, options))

    def estimate_result(
        self,
        path: str,
        paths: tuple[str, ...],
        engine: str,
        pages: str | None,
        options: dict[str, Any] | None,
    ) -> CallToolResult:
        check_one_source(path, paths)
        run = RunOptions(
            engine=engine,
            pages=pages,
            engine_options=dict(options or {}),
            open_check=self.policy.check_opened,
        )
        shelf = list(paths) or self.library_folder(path)
        if shelf is not None:
            self.check_library_job(shelf, run)
            job = self.library.estimate_job(list(shelf), run, self.policy.check_input)
        else:
            count, cost = self.library.estimate(self.policy.check_input(path), run)
            job = JobEstimate(engine, 1, count, cost)
        return CallToolResult(content=[TextContent(type="text", text=job.describe())], structured_content=job.as_dict())

    def check_library_job(self, paths: list[str], run: RunOptions) -> None:
        if run.book or run.pages:
            raise ToolError("a library job takes neither book nor pages: each file's book id is its name")
        for folder in (p for p in paths if Path(p).expanduser().is_dir()):
            self.policy.check_readable(folder)  # the files found under it are checked one by one

    def library_folder(self, path: str) -> list[str] | None:
        """``[path]`` when it is a folder of PDFs (a library job), else None (one book)."""
        resolved = self.policy.check_readable(path)
        return [str(resolved)] if is_library_folder(resolved) else None

    async def ocr_library(self, ctx: Context, paths: list[str], run: RunOptions, retry_failed: bool) -> CallToolResult:
        """Start a library job (each file checked against the allowed folders) and follow it for a moment."""
        self.check_library_job(paths, run)
        started = await anyio.to_thread.run_sync(
            lambda: self.library.start_many(list(paths), run, retry_failed, self.policy.check_input)
        )
        books = [b.book for b in started.books if b.state in ACTIVE_STATES]
        deadline = anyio.current_time() + self.wait_s
        reported = -1
        while True:
            statuses = await anyio.to_thread.run_sync(self.library_statuses, [b.book for b in started.books])
            answer = started.answer(statuses)
            if answer.done > reported:
                reported = answer.done
                await ctx.report_progress(reported, answer.pages, f"library job: {reported}/{answer.pages} pages done")
            if answer.state != "running" or not books or anyio.current_time() >= deadline:
                return library_result(answer)
            await anyio.sleep(POLL_S)

    def library_statuses(self, books: list[str]) -> dict[str, BookStatus]:
        found = {}
        for book in books:
            try:
                found[book] = self.library.status(book, thorough=False)
            except BookOcrError:  # a refused file has no book
                continue
        return found

    async def wait_reporting(self, ctx: Context, book_id: str) -> BookStatus:
        """Follow the job for up to ``wait_s``, sending a progress notification whenever a page is done."""
        deadline = anyio.current_time() + self.wait_s
        reported = -1
        while True:
            status = await anyio.to_thread.run_sync(self.library.status, book_id)
            if status.done > reported:
                reported = status.done
                await ctx.report_progress(reported, status.pages, f"{book_id}: {reported}/{status.pages} pages done")
            if status.state not in ACTIVE_STATES or anyio.current_time() >= deadline:
                return status
            await anyio.sleep(POLL_S)

    @reported
    def list_books(self, limit: int = 50, offset: int = 0) -> Annotated[CallToolResult, BookList]:
        if not 1 <= limit <= MAX_LIST_LIMIT or offset < 0:
            raise ToolError(f"limit must be 1-{MAX_LIST_LIMIT} and offset 0 or more")
        return list_result(self.library.statuses(), limit, offset)

    @reported
    def book_status(self, book: str) -> Annotated[CallToolResult, BookStatus]:
        return status_result(self.library.status(book))

    @reported
    def get_page(
        self,
        book: str,
        page: StrictInt | None = None,  # strict: JSON true is not page 1
        to_page: StrictInt | None = None,
        printed: StrictStr | StrictInt | None = None,
        to_printed: StrictStr | StrictInt | None = None,
    ) -> Annotated[CallToolResult, PageMeta]:
        if to_page is not None and to_printed is not None:
            raise ToolError("give to_page (a PDF page) or to_printed (a printed page number), not both")
        return page_result(
            self.library.read_pages(
                book,
                page,
                printed=printed,
                to_page=to_page,
                to_printed=to_printed,
                max_chars=MAX_RANGE_CHARS,
                max_pages=MAX_RANGE_PAGES,
            )
        )

    @reported
    def get_contents(self, book: str) -> CallToolResult:
        return contents_result(self.library.contents(book))

    @reported
    def search_book(
        self, query: str, book: str | None = None, limit: int = 10, offset: int = 0, defined: bool = False
    ) -> Annotated[CallToolResult, SearchResult]:
        query = query.strip()
        if not query or len(query) > MAX_QUERY_CHARS:
            raise ToolError(f"give a query of 1-{MAX_QUERY_CHARS} characters: words or a phrase to find")
        if not 1 <= limit <= MAX_SEARCH_LIMIT or offset < 0:
            raise ToolError(f"limit must be 1-{MAX_SEARCH_LIMIT} and offset 0 or more")
        books = [book] if book else None
        return search_result(self.library.search(query, books=books, limit=limit, offset=offset, defined=defined))

    @reported
    def get_page_image(self, book: str, page: int) -> CallToolResult:
        b = self.library.open_book(book)
        number = b.check_page(page)
        data, size = self.render_page_image(b.id, b.source_path, b.page_count, number)
        caption = f"{b.id} page {number} of {b.page_count}: the scan, {size[0]} x {size[1]} px"
        return CallToolResult(
            content=[
                ImageContent(type="image", data=data, mime_type="image/jpeg"),
                TextContent(type="text", text=caption),
            ]
        )

    def render_page_image(
        self, book_id: str, source_path: str, page_count: int, number: int
    ) -> tuple[str, tuple[int, int]]:
        unavailable = f"the scan of book {book_id!r} ({source_path}) cannot be shown"
        try:
            path = self.policy.check_readable(source_path)
        except PathNotAllowedError:
            raise ToolError(
                f"{unavailable}: it is outside the folders this server may read ({self.policy.describe_roots()}); "
                f"ask the user to {self.policy.allow_hint}. The page's text is available with get_page."
            ) from None
        except BookOcrError:
            raise ToolError(
                f"{unavailable}: the file is gone or unreadable. The page's text is available with get_page."
            ) from None
        with self.sources.open(path) as source:
            if source.info.page_count != page_count:
                raise ToolError(
                    f"{unavailable}: the file has changed since the book was made. The page's text is "
                    "available with get_page."
                )
            image, _ = source.render(number, RenderSettings(long_side=IMAGE_LONG_SIDE))
        buffer = io.BytesIO()
        image.convert("L" if image.mode == "L" else "RGB").save(buffer, format="JPEG", quality=IMAGE_QUALITY)
        return base64.b64encode(buffer.getvalue()).decode(), image.size

    def page_resource(self, book: str, n: str) -> str:
        with self.resource_errors():
            if not n.isdigit():
                raise ResourceNotFoundError(f"page {n!r} is not a page number: book {book!r} has pages numbered from 1")
            page = self.library.read_pages(book, int(n)).first
        return f"{page_marker(page.page, page.label)}\n\n{page.body}\n"

    def document_resource(self, book: str) -> str:
        with self.resource_errors():
            return self.library.document(book)

    @contextlib.contextmanager
    def resource_errors(self) -> Iterator[None]:
        try:
            yield
        except BookOcrError as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    def close(self) -> None:
        self.sources.close()


class BookServer(MCPServer):
    """The SDK's server, with argument errors in one plain line and a listed resource per book."""

    library: Library

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(argument_errors(name, exc.__cause__)) from None
            raise

    async def list_tools(self) -> list[Tool]:
        """The SDK's tools without pydantic's "title" on every field (a third of ``tools/list``, telling nothing)."""
        tools = await super().list_tools()
        return [
            tool.model_copy(
                update={
                    "input_schema": untitled(tool.input_schema),
                    "output_schema": untitled(tool.output_schema) if tool.output_schema else None,
                }
            )
            for tool in tools
        ]

    async def list_resources(self) -> list[Resource]:
        listed = await super().list_resources()
        books = await anyio.to_thread.run_sync(self.library.book_ids)
        return listed + [book_resource(book) for book in books]


def untitled(schema: Any, in_properties: bool = False) -> Any:
    """A copy of a JSON schema without "title" keywords (a property named "title" is kept)."""
    if isinstance(schema, list):
        return [untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: untitled(value, in_properties=key in ("properties", "$defs"))
        for key, value in schema.items()
        if in_properties or not (key == "title" and isinstance(value, str))
    }


def argument_errors(tool: str, error: ValidationError) -> str:
    """pydantic's complaint without its URLs and input dumps: "get_page: page: Input should be a valid integer"."""
    problems = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"] if part != "arguments")
        problems.append(f"{where}: {problem['msg']}" if where else problem["msg"])
    return f"{tool}: invalid arguments: {'; '.join(problems)}"


def book_resource(book: str) -> Resource:
    return Resource(
        uri=f"book://{book}/document",
        name=book,
        title=f"{book} (whole book)",
        description=f"The book {book} as markdown, each page after a <!-- page N --> marker.",
        mime_type="text/markdown",
    )


def package_version() -> str:
    try:
        return importlib.metadata.version("bookocr")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def create_server(library: Library, policy: InputPolicy | None = None, wait_s: float = WAIT_S) -> MCPServer:
    """Build the server over one library. ``policy`` says which input files may be read."""
    tools = BookTools(library, policy, wait_s)
    engines = ", ".join(engine_classes())

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:  # a run stopped here resumes on the next ocr_book call
            await anyio.to_thread.run_sync(library.shutdown)
            tools.close()

    mcp = BookServer(
        SERVER_NAME, instructions=INSTRUCTIONS, version=package_version(), lifespan=lifespan, log_level="WARNING"
    )
    mcp.library = library
    for name, (title, hints, description) in TOOLS.items():
        described = description.replace("{engines}", engines)
        mcp.tool(name=name, title=title, annotations=hints, description=described)(getattr(tools, name))
    mcp.resource(
        "book://{book}/page/{n}",
        name="page",
        mime_type="text/markdown",
        description="One page of a book as markdown (n: 1-based page number in file order).",
    )(tools.page_resource)
    mcp.resource(
        "book://{book}/document",
        name="document",
        mime_type="text/markdown",
        description="A whole book as markdown, each page after a <!-- page N --> marker.",
    )(tools.document_resource)
    return mcp


def serve(
    library: Library,
    policy: InputPolicy,
    http: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
) -> None:
    """Run the server over stdio (for desktop apps) or streamable HTTP (``token``: the bearer token HTTP
    clients must send, if any). Logs go to stderr only.

    Returns when the client closes stdin, or the HTTP server is stopped, once the OCR jobs have been
    asked to stop (the lifespan does it). A process that ends here should call :func:`leave`.
    """
    mcp = create_server(library, policy)
    log.info(
        "serving %s (corpus %s; may read %s)",
        "HTTP" if http else "stdio",
        library.corpus.root.resolve(),
        policy.describe_roots(),
    )
    if http:
        anyio.run(serve_http, mcp, host, port, token)
    else:
        mcp.run("stdio")


async def serve_http(mcp: MCPServer, host: str, port: int, token: str | None) -> None:
    """What ``mcp.run("streamable-http")`` does, with the app behind :class:`BearerTokenGuard` when a token
    is set, and a start-up line that says where it listens and who may connect."""
    import uvicorn

    app: ASGIApp = mcp.streamable_http_app(host=host)
    if token:
        app = BearerTokenGuard(app, token)
    print(http_start_line(host, port, token), file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=mcp.settings.log_level.lower())
    await uvicorn.Server(config).serve()


def http_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/mcp"


def http_start_line(host: str, port: int, token: str | None) -> str:
    if token:
        return f"bookocr: MCP server at {http_url(host, port)}; clients must send 'Authorization: Bearer <token>'"
    return (
        f"bookocr: MCP server at {http_url(host, port)}; no token set, so any local process can connect and read "
        "the library (set BOOKOCR_TOKEN, or --token, to require one)"
    )


class BearerTokenGuard:
    """ASGI middleware: an HTTP request without ``Authorization: Bearer TOKEN`` gets 401 (lifespan passes)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.authorized(scope):
            response = JSONResponse(
                {"error": "unauthorized", "error_description": "send the server's token: Authorization: Bearer TOKEN"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="bookocr"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def authorized(self, scope: Scope) -> bool:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, credentials = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)


def leave(jobs_stopped: bool) -> None:
    """Make sure the process ends now that the server has, so that it frees its book locks. Only for
    the end of a process that ran :func:`serve`: it ends the process.

    A job thread stuck in a page (inside a native library, which no thread can interrupt) would keep
    the process alive as an orphan of its client, holding the book's lock: then it ends at once.
    Otherwise the interpreter shuts down as usual, but a watchdog ends it if some other thread (an
    engine's worker, a tool call) still holds it after ``EXIT_GRACE_S``.
    """
    if not jobs_stopped:
        log.warning("an OCR job is stuck in its engine; ending the process now (the book resumes on the next ocr_book)")
        exit_now()
    watchdog = threading.Timer(EXIT_GRACE_S, exit_now)
    watchdog.daemon = True
    watchdog.start()


def exit_now() -> None:
    """End the process at once: ``os._exit`` skips the interpreter's shutdown, which would wait for the
    stuck threads forever. Logs are flushed first; the kernel frees the book locks (flock)."""
    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stderr, sys.stdout):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def server_command() -> list[str]:
    """An absolute command that starts bookocr: desktop apps start servers with a minimal PATH."""
    bin_dir = Path(sys.executable).absolute().parent  # not resolved: a venv's python links out of the venv
    script = bin_dir / "bookocr"
    if script.is_file():
        return [str(script)]
    return [str(Path(sys.executable).absolute()), "-m", "server.cli"]


def desktop_config(
    corpus_root: Path, allow: list[str] | None = None, name: str = SERVER_NAME, max_file_mb: int | None = None
) -> dict[str, Any]:
    """A ``claude_desktop_config.json`` fragment that starts ``bookocr serve`` over stdio."""
    command, *prefix = server_command()
    args = [*prefix, "--corpus", str(corpus_root.expanduser().resolve()), "serve"]
    for folder in allow or []:
        args += ["--allow", str(Path(folder).expanduser().resolve())]
    if max_file_mb:
        args += ["--max-file-mb", str(max_file_mb)]
    return {"mcpServers": {name: {"command": command, "args": args}}}


def http_client_config(token: str, port: int = 8000, name: str = SERVER_NAME) -> dict[str, Any]:
    """An MCP client entry for ``bookocr serve --http`` (Claude Code's ``.mcp.json`` form)."""
    server = {"type": "http", "url": http_url("127.0.0.1", port), "headers": {"Authorization": f"Bearer {token}"}}
    return {"mcpServers": {name: server}}
