"""The MCP server: the book library as tools and resources for LLM agents.

Every tool is a thin shell over the library calls the CLI uses (Corpus, the job
runner, search). Errors a model can act on become ``ToolError`` messages that say
what to do next; anything else is a crash the model sees only as a generic error.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from ocr_backend.engines import engine_classes
from ocr_backend.errors import BookOcrError
from ocr_backend.render import RenderSettings
from ocr_backend.sources import Source, open_source
from server.contents import book_contents
from server.corpus import DONE_STATUSES, Book, Corpus, PageView, check_book_id
from server.jobs import ACTIVE_STATES, JobManager
from server.runner import RunOptions
from server.safety import InputPolicy, PathNotAllowedError
from server.search import SearchResponse, search_library

log = logging.getLogger("bookocr.mcp")

SERVER_NAME = "bookocr"
WAIT_S = 3.0  # ocr_book waits this long for progress before it returns (clients time out at ~60 s)
POLL_S = 0.25
MAX_RANGE_CHARS = 32_000  # about 8-10k tokens: under Claude Code's 10k warning, far under its 25k cut
MAX_RANGE_PAGES = 20
MAX_QUERY_CHARS = 500
MAX_SEARCH_LIMIT = 50
IMAGE_LONG_SIDE = 1280  # px; enough to read a formula, small enough for any client's image limit
IMAGE_QUALITY = 80
MAX_LISTED_BOOKS = 50
EXIT_GRACE_S = 5.0  # after the server has stopped, the process is ended if anything still holds it this long

INSTRUCTIONS = """\
bookocr is a library of books turned from scans into per-page markdown.
- Find what is in the library with list_books; add a book with ocr_book(path), which runs in the \
background: call book_status(book) to follow it. Pages that are done can be read while the rest run.
- Pages are numbered 1..N in file order (the PDF page index), not by the numbers printed on the pages; \
the printed number, when known, is shown as the page's label.
- search_book(query) finds pages; get_page(book, page) reads one, or a range with to_page. \
A page cited by its printed number ("p. 37", "p. xii") is read with get_page(book, printed="37"). \
get_contents(book) lists chapters and sections with their pages. \
get_page_image(book, page) shows the scan, to check a formula, a table or a doubtful word.
"""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
# ocr_book writes only into the library and never overwrites another file's book, and a second
# call with the same arguments changes nothing; it reads files from outside the library (and
# a cloud engine, if one is chosen, runs elsewhere), hence open-world.
OCR_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)


# --- structured results --------------------------------------------------------------------
class BookStatus(BaseModel):
    book: str
    state: str = Field(description="queued | running | running-elsewhere | complete | complete-with-failures | incomplete | error")
    pages: int = Field(description="pages in the book")
    done: int = Field(description="pages with text (ok + fallback)")
    ok: int
    fallback: int = Field(description="pages whose text came from a fallback (e.g. the PDF's own text layer)")
    failed: int
    pending: int
    engine: str | None
    engines_used: list[str]
    quality_flags: list[str]
    flagged_pages: dict[str, list[int]] = Field(description="pages per quality flag (first 50)")
    failed_pages: list[int] = Field(description="failed pages (first 50)")
    source: str
    source_path: str
    eta_s: float | None = Field(description="seconds left, while running")
    pages_per_s: float | None
    error: str | None
    detail: str | None = Field(default=None, description="stalled: running, but no page has finished for stalled_s seconds")
    stalled_s: float | None = Field(default=None, description="seconds since a page last finished, when stalled")
    message: str = Field(description="where the book stands and what to call next")


class BookList(BaseModel):
    books: list[BookStatus]
    message: str


class PageInfo(BaseModel):
    page: int
    label: str | None = Field(description="the page number printed on the page, when known")
    status: str = Field(description="ok | fallback | failed | pending")
    engine: str | None
    quality_flags: list[str]


class PageMeta(BaseModel):
    book: str
    page: int = Field(description="first page returned (1-based file order)")
    to_page: int = Field(description="last page returned")
    page_count: int
    label: str | None = Field(description="printed page number of the first page, when known")
    status: str
    engine: str | None
    quality_flags: list[str]
    previous_page: int | None
    next_page: int | None
    pages: list[PageInfo]
    truncated: bool = Field(description="true when the range was cut to keep the answer small")
    continue_from: int | None = Field(description="when truncated: call get_page again with this page")
    book_state: str


class ContentsEntryModel(BaseModel):
    level: int = Field(description="1 for chapters (or the outline's top level), 2 for sections, ...")
    title: str
    page: int = Field(description="PDF page number (1-based file order), for get_page")
    printed: str | None = Field(description="the number printed on that page, when known")


class ContentsResult(BaseModel):
    book: str
    source: str = Field(description="outline (the PDF's own bookmarks) | headings (found in the OCRed text)")
    pages: int
    entries: list[ContentsEntryModel]
    message: str


class SearchHitModel(BaseModel):
    book: str
    page: int
    label: str | None
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


# --- helpers -------------------------------------------------------------------------------
@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """Library errors carry messages written for the user; the model reads them as ToolErrors."""
    try:
        yield
    except BookOcrError as exc:
        raise ToolError(str(exc)) from exc


class SourceCache:
    """Open book sources for page images, kept a while: opening a source hashes the whole file."""

    def __init__(self, size: int = 4) -> None:
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
                entry = (key, open_source(path), threading.Lock())
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


def page_marker(view: PageView) -> str:
    label = f' printed="{view.label}"' if view.label else ""
    return f"<!-- page {view.number}{label} -->"


def page_body(view: PageView) -> str:
    if view.status in DONE_STATUSES:
        return view.markdown.strip() or "(this page has no text: it is blank or a picture)"
    reason = view.meta.get("reason") or ""
    if view.status == "failed":
        return (f"(OCR failed on page {view.number}{': ' + reason if reason else ''}. Look at it with "
                f"get_page_image, or try again with ocr_book(..., retry_failed=true).)")
    return f"(page {view.number} has no text yet: OCR has not reached it. Call book_status to follow the OCR run.)"


def page_info(view: PageView) -> PageInfo:
    return PageInfo(page=view.number, label=view.label, status=view.status, engine=view.meta.get("engine"),
                    quality_flags=list(view.meta.get("flags", [])))


def read_range(book: Book, first: int, last: int) -> tuple[list[PageView], bool]:
    """Pages first..last, cut where the answer would grow past the size cap (never before one page)."""
    views: list[PageView] = []
    size = 0
    for number in range(first, last + 1):
        view = book.read_page(number)
        size += len(view.markdown) + 40
        if views and (size > MAX_RANGE_CHARS or len(views) >= MAX_RANGE_PAGES):
            return views, True
        views.append(view)
    return views, False


def format_pages(book: Book, views: list[PageView], requested_last: int, truncated: bool) -> str:
    first, last = views[0], views[-1]
    if len(views) == 1 and requested_last == first.number:
        v = first
        label = f' (printed "{v.label}")' if v.label else ""
        engine = f", engine {v.meta.get('engine')}" if v.meta.get("engine") else ""
        flags = f", flags: {', '.join(v.meta.get('flags', []))}" if v.meta.get("flags") else ""
        prev = f"previous page {v.number - 1}" if v.number > 1 else "first page"
        nxt = f"next page {v.number + 1}" if v.number < book.page_count else "last page"
        head = f"<!-- {book.id}: page {v.number} of {book.page_count}{label}; {v.status}{engine}{flags}; {prev}, {nxt} -->"
        return f"{head}\n\n{page_body(v)}\n"
    head = f"<!-- {book.id}: pages {first.number}-{last.number} of {book.page_count} -->"
    parts = [head] + [f"{page_marker(v)}\n\n{page_body(v)}\n" for v in views]
    if truncated:
        parts.append(f"<!-- cut after page {last.number} to keep this answer short; continue with "
                     f"get_page(book=\"{book.id}\", page={last.number + 1}, to_page={requested_last}) -->")
    elif last.number < book.page_count:
        parts.append(f"<!-- next page: {last.number + 1} -->")
    return "\n\n".join(parts)


def compose_document(book: Book) -> str:
    """The whole book with page markers, as document.mmd has it; built from the pages while a run writes them."""
    return "\n".join(f"{page_marker(v)}\n\n{page_body(v)}\n" for v in (book.read_page(n) for n in range(1, book.page_count + 1)))


# --- the server ----------------------------------------------------------------------------
def create_server(
    corpus: Corpus,
    policy: InputPolicy | None = None,
    jobs: JobManager | None = None,
    wait_s: float = WAIT_S,
) -> MCPServer:
    """Build the server over one corpus. ``policy`` says which input files may be read."""
    policy = policy or InputPolicy()
    jobs = jobs or JobManager(corpus)
    sources = SourceCache()
    engines = "; ".join(f"{name}: {cls.description}" if cls.description else name for name, cls in engine_classes().items())

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:  # a run stopped here resumes on the next ocr_book call
            await anyio.to_thread.run_sync(jobs.shutdown)
            sources.close()

    mcp: MCPServer = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, lifespan=lifespan, log_level="WARNING")

    def known_books() -> list[str]:
        return sorted(set(corpus.book_ids()) | set(jobs.active_books()))

    def unknown_book(book_id: str) -> ToolError:
        books = known_books()
        if not books:
            return ToolError(f"no book {book_id!r}: the library is empty. Add a book with ocr_book(path).")
        shown = ", ".join(books[:MAX_LISTED_BOOKS]) + (f" and {len(books) - MAX_LISTED_BOOKS} more" if len(books) > MAX_LISTED_BOOKS else "")
        return ToolError(f"no book {book_id!r} in the library. Books: {shown}. Call list_books for their state, or ocr_book(path) to add a book.")

    def open_book(book_id: str) -> Book:
        check_book_id(book_id)
        if not corpus.has_book(book_id):
            raise unknown_book(book_id)
        return jobs.open_book(book_id)

    def book_status_of(book_id: str) -> BookStatus:
        check_book_id(book_id)
        if not corpus.has_book(book_id) and jobs.job(book_id) is None:
            raise unknown_book(book_id)
        return BookStatus(**jobs.status(book_id))

    # --- tools ---------------------------------------------------------------------------
    @mcp.tool(title="OCR a book (in the background)", annotations=OCR_ANNOTATIONS, description=f"""\
Add a scanned book (PDF, image, multi-page TIFF, or a folder of page images) to the library, or resume it.
The file is checked at once; the OCR then runs in the background and this call returns within a few \
seconds with the book id, pages done/failed/total, state and ETA. A 600-page book takes a long time: \
do not wait for it in one call. Call book_status(book) (or ocr_book again with the same arguments) \
to follow progress; pages already done can be read with get_page at any time. Calling again never \
redoes finished pages; a finished book returns at once.
path: absolute path of the file or folder (it must lie under the folders this server may read).
book: the id to store it under (a-z, 0-9, '-', '_'); default: made from the file name.
engine (default auto): {engines}.
pages: only these pages, e.g. "1-20,35" (default: all).
retry_failed: also try again pages that failed in an earlier run.""")
    async def ocr_book(path: str, ctx: Context, book: str | None = None, engine: str = "auto",
                       pages: str | None = None, retry_failed: bool = False) -> BookStatus:
        with tool_errors():
            resolved = await anyio.to_thread.run_sync(policy.check_input, path)
            options = RunOptions(book=book, engine=engine, pages=pages)
            book_id = await anyio.to_thread.run_sync(jobs.start, resolved, options, retry_failed)
            status = await wait_reporting(ctx, book_id)
        return BookStatus(**status)

    async def wait_reporting(ctx: Context, book_id: str) -> dict[str, Any]:
        """Follow the job for up to ``wait_s``, sending a progress notification whenever a page is done."""
        deadline = anyio.current_time() + wait_s
        reported = -1
        while True:
            status = await anyio.to_thread.run_sync(jobs.status, book_id)
            if status["done"] > reported:
                reported = status["done"]
                await ctx.report_progress(reported, status["pages"], f"{book_id}: {reported}/{status['pages']} pages done")
            if status["state"] not in ACTIVE_STATES or anyio.current_time() >= deadline:
                return status
            await anyio.sleep(POLL_S)

    @mcp.tool(title="List books", annotations=READ_ONLY)
    def list_books() -> BookList:
        """List every book in the library with its state (running, complete, ...), pages done / failed / \
total, engine, quality flags and source file. Use the book ids with get_page, search_book and book_status."""
        with tool_errors():
            books = [BookStatus(**jobs.status(b)) for b in known_books()]
        message = (f"{len(books)} book(s). Read a page with get_page(book, page); search with search_book(query)."
                   if books else "The library is empty. Add a book with ocr_book(path).")
        return BookList(books=books, message=message)

    @mcp.tool(title="Book status", annotations=READ_ONLY)
    def book_status(book: str) -> BookStatus:
        """One book's state and progress: pages done / failed / fallback / pending of the total, ETA while \
the background OCR runs, the engine, quality flags with the pages they concern, failed pages, the source \
file, and a message saying what to call next."""
        with tool_errors():
            return book_status_of(book)

    @mcp.tool(title="Read a page", annotations=READ_ONLY)
    def get_page(book: str, page: int | None = None, to_page: int | None = None, printed: str | int | None = None) -> Annotated[CallToolResult, PageMeta]:
        """Read a page of a book as markdown (formulas in LaTeX and tables in HTML where the engine reads them).
page: 1-based page number in file order (the PDF page index), not the number printed on the page; \
the printed number is shown as "printed" when known. Book pages run from 1 to the book's page count \
(see book_status).
printed: instead of page, the number printed on the page, as a reader cites it ("37", "xii"): \
use this when a person says "see p. 37".
to_page: read pages page..to_page in one call (a PDF page number, also after printed). Long ranges \
are cut to keep the answer small (about 8k tokens, at most 20 pages); the answer then says where to \
continue. A page that is not OCRed yet (or failed) says so instead of giving text."""
        with tool_errors():
            b = open_book(book)
            first = first_page(b, page, printed)
            last = page_range_end(b, first, to_page)
            views, truncated = read_range(b, first, last)
            return page_result(b, views, last, truncated)

    def first_page(book: Book, page: int | None, printed: str | int | None) -> int:
        if (page is None) == (printed is None):
            raise ToolError(
                f'give page (the PDF page number, 1-{book.page_count}) or printed (the number printed on the page, '
                f'e.g. printed="37" or printed="xii"), one of the two'
            )
        return book.check_page(page) if printed is None else book.find_printed(str(printed))

    def page_range_end(book: Book, first: int, to_page: int | None) -> int:
        if to_page is None:
            return first
        if isinstance(to_page, bool) or to_page < first:
            raise ToolError(f"to_page ({to_page}) must not be before page ({first}); book {book.id!r} has pages 1-{book.page_count}")
        return min(to_page, book.page_count)

    def page_result(book: Book, views: list[PageView], requested_last: int, truncated: bool) -> CallToolResult:
        first, last = views[0], views[-1]
        meta = PageMeta(
            book=book.id, page=first.number, to_page=last.number, page_count=book.page_count, label=first.label,
            status=first.status, engine=first.meta.get("engine"), quality_flags=list(first.meta.get("flags", [])),
            previous_page=first.number - 1 if first.number > 1 else None,
            next_page=last.number + 1 if last.number < book.page_count else None,
            pages=[page_info(v) for v in views], truncated=truncated,
            continue_from=last.number + 1 if truncated else None, book_state=book.state(),
        )
        text = format_pages(book, views, requested_last, truncated)
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=meta.model_dump(mode="json"))

    @mcp.tool(title="Table of contents", annotations=READ_ONLY)
    def get_contents(book: str) -> Annotated[CallToolResult, ContentsResult]:
        """A book's table of contents: chapters and sections, each with its page (the PDF page number, \
for get_page) and the number printed on that page. It is the PDF's own outline when the file has one, \
else the headings found in the OCRed text ("Chapter 2 ...", "2.7 ..."). Use it to go to a chapter or \
section without searching: get_page(book, page=entry.page)."""
        with tool_errors():
            contents = book_contents(open_book(book))
        result = ContentsResult(**contents, message=contents_message(contents))
        return CallToolResult(content=[TextContent(type="text", text=format_contents(result))], structured_content=result.model_dump(mode="json"))

    @mcp.tool(title="Search books", annotations=READ_ONLY)
    def search_book(query: str, book: str | None = None, limit: int = 10, offset: int = 0) -> Annotated[CallToolResult, SearchResult]:
        """Search the text of the library's books (or of one book) for words or a phrase; returns the best \
matching pages with book, page, printed page label, score and a snippet. Then read a hit with \
get_page(book, page). limit: hits per call (1-50, default 10); offset: skip this many hits, to see more."""
        with tool_errors():
            query = query.strip()
            if not query or len(query) > MAX_QUERY_CHARS:
                raise ToolError(f"give a query of 1-{MAX_QUERY_CHARS} characters: words or a phrase to find")
            if not 1 <= limit <= MAX_SEARCH_LIMIT or offset < 0:
                raise ToolError(f"limit must be 1-{MAX_SEARCH_LIMIT} and offset 0 or more")
            if book is not None:
                open_book(book)
            response = search_library(corpus, query, books=[book] if book else None, limit=limit, offset=offset)
            return search_result(response)

    @mcp.tool(title="See a page's scan", annotations=READ_ONLY)
    def get_page_image(book: str, page: int) -> CallToolResult:
        """The scanned image of a page (downscaled to 1280 px on the long side), to check a formula, a table, \
a figure or a doubtful word against the original. page: 1-based page number in file order, as in get_page."""
        with tool_errors():
            b = open_book(book)
            number = b.check_page(page)
            data, size = render_page_image(b, number)
        caption = f"{b.id} page {number} of {b.page_count}: the scan, {size[0]} x {size[1]} px"
        return CallToolResult(content=[ImageContent(type="image", data=data, mime_type="image/jpeg"), TextContent(type="text", text=caption)])

    def render_page_image(book: Book, number: int) -> tuple[str, tuple[int, int]]:
        source_path = book.manifest["source"]["path"]
        unavailable = f"the scan of book {book.id!r} ({source_path}) cannot be shown"
        try:
            path = policy.check_readable(source_path)
        except PathNotAllowedError:
            raise ToolError(f"{unavailable}: it is outside the folders this server may read ({policy.describe_roots()}); "
                            f"ask the user to {policy.allow_hint}. The page's text is available with get_page.") from None
        except BookOcrError:
            raise ToolError(f"{unavailable}: the file is gone or unreadable. The page's text is available with get_page.") from None
        with sources.open(path) as source:
            if source.info.page_count != book.page_count:
                raise ToolError(f"{unavailable}: the file has changed since the book was made. The page's text is available with get_page.")
            image, _ = source.render(number, RenderSettings(long_side=IMAGE_LONG_SIDE))
        buffer = io.BytesIO()
        image.convert("L" if image.mode == "L" else "RGB").save(buffer, format="JPEG", quality=IMAGE_QUALITY)
        return base64.b64encode(buffer.getvalue()).decode(), image.size

    # --- resources -----------------------------------------------------------------------
    @mcp.resource("book://{book}/page/{n}", mime_type="text/markdown", description="One page of a book as markdown (n: 1-based page number in file order).")
    def page_resource(book: str, n: str) -> str:
        b = resource_book(book)
        if not n.isdigit() or not 1 <= int(n) <= b.page_count:
            raise ResourceNotFoundError(f"page {n!r} is out of range: book {book!r} has pages 1-{b.page_count}")
        view = b.read_page(int(n))
        return f"{page_marker(view)}\n\n{page_body(view)}\n"

    @mcp.resource("book://{book}/document", mime_type="text/markdown", description="A whole book as markdown, each page after a <!-- page N --> marker.")
    def document_resource(book: str) -> str:
        b = resource_book(book)
        path = b.dir / "document.mmd"
        job = jobs.job(b.id)
        if path.exists() and not (job is not None and job.active):
            return path.read_text(encoding="utf-8")
        return compose_document(b)

    def resource_book(book_id: str) -> Book:
        try:
            return open_book(book_id)
        except (ToolError, BookOcrError) as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    return mcp


def contents_message(contents: dict[str, Any]) -> str:
    if contents["entries"]:
        return 'read an entry with get_page(book, page=entry.page); the printed number works too: get_page(book, printed="...")'
    return ("no contents: the PDF has no outline and no chapter or section headings were recognised in the text "
            "(is the book fully OCRed? see book_status); use search_book to find a section by its words")


def format_contents(result: ContentsResult) -> str:
    origin = "the PDF outline" if result.source == "outline" else "headings found in the text"
    lines = [f"{result.book}: contents from {origin} ({len(result.entries)} entries, {result.pages} pages)"]
    for e in result.entries:
        printed = f' (printed "{e.printed}")' if e.printed else ""
        lines.append(f"{'  ' * (e.level - 1)}- {e.title}: page {e.page}{printed}")
    lines.append(result.message)
    return "\n".join(lines)


def search_result(response: SearchResponse) -> CallToolResult:
    hits = [SearchHitModel(book=h.book, page=h.page, label=h.label, score=round(float(h.score), 4), snippet=h.snippet) for h in response.hits]
    end = response.offset + len(hits)
    next_offset = end if end < response.total else None
    result = SearchResult(query=response.query, total=response.total, offset=response.offset, limit=response.limit,
                          elapsed_ms=round(float(response.elapsed_ms), 2), hits=hits, next_offset=next_offset)
    return CallToolResult(content=[TextContent(type="text", text=format_hits(result))], structured_content=result.model_dump(mode="json"))


def format_hits(r: SearchResult) -> str:
    if not r.hits:
        more = f" (only {r.total} hits; use a smaller offset)" if r.total and r.offset else ""
        return f'No pages match "{r.query}"{more}. Try other words, fewer words, or check list_books for what the library holds.'
    lines = [f'{r.total} page(s) match "{r.query}"; hits {r.offset + 1}-{r.offset + len(r.hits)}:']
    for i, h in enumerate(r.hits, start=r.offset + 1):
        label = f' (printed "{h.label}")' if h.label else ""
        snippet = " ".join(h.snippet.split())
        lines.append(f"{i}. {h.book} page {h.page}{label}, score {h.score:.3g}: {snippet}")
    tail = f"More hits: search_book(query, offset={r.next_offset}). " if r.next_offset is not None else ""
    lines.append(f"{tail}Read a hit with get_page(book, page).")
    return "\n".join(lines)


def serve(corpus: Corpus, policy: InputPolicy, http: bool = False, host: str = "127.0.0.1", port: int = 8000,
          jobs: JobManager | None = None) -> None:
    """Run the server over stdio (for desktop apps) or streamable HTTP. Logs go to stderr only.

    Returns when the client closes stdin, or the HTTP server is stopped, once the OCR jobs have been
    asked to stop (the lifespan does it). A process that ends here should call :func:`leave`.
    """
    mcp = create_server(corpus, policy, jobs=jobs)
    log.info("serving %s (corpus %s; may read %s)", "HTTP" if http else "stdio", corpus.root.resolve(), policy.describe_roots())
    if http:
        mcp.run("streamable-http", host=host, port=port)
    else:
        mcp.run("stdio")


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


def desktop_config(corpus_root: Path, allow: list[str] | None = None, name: str = SERVER_NAME, max_file_mb: int | None = None) -> dict[str, Any]:
    """A ``claude_desktop_config.json`` fragment that starts ``bookocr serve`` over stdio."""
    command, *prefix = server_command()
    args = [*prefix, "--corpus", str(corpus_root.expanduser().resolve()), "serve"]
    for folder in allow or []:
        args += ["--allow", str(Path(folder).expanduser().resolve())]
    if max_file_mb:
        args += ["--max-file-mb", str(max_file_mb)]
    return {"mcpServers": {name: {"command": command, "args": args}}}
