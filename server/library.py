"""The library: everything bookocr does with books, as typed calls.

The two shells, the CLI (:mod:`server.cli`) and the MCP server (:mod:`server.mcp_server`), only parse
arguments and format what these calls return; neither builds a corpus path or reads a manifest field.
Errors are :mod:`ocr_backend.errors` types whose messages say what to do next.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocr_backend.deepseek.pricing import CostTally
from ocr_backend.engines import OcrEngine, create_engine, engine_class, engine_classes
from ocr_backend.engines.base import Estimate
from ocr_backend.errors import BookLockedError, BookOcrError, DamagedBookError, PageRangeError, UnknownBookError
from server.contents import Contents, book_contents
from server.corpus import Book, Corpus, PageRecord, PageView, check_book_id
from server.jobs import EngineGroup, Job, JobManager
from server.runner import (
    SHELF_PROBLEMS,
    PageListener,
    Progress,
    ProgressFn,
    RunOptions,
    ShelfBook,
    ShelfEntry,
    ShelfProgress,
    pages_to_do,
    parse_pages,
    plan_run,
    run_plan,
    shelf_entries,
)
from server.search.results import SearchHit, SearchResponse
from server.sections import (
    DEFINITION,
    HEADING,
    PROMOTE_WITHIN,
    STRONG,
    SectionCache,
    SectionIndex,
    defining_heading_score,
    definition_score,
    heading_score,
    page_headings,
    query_words,
)

MAX_LISTED_PAGES = 50  # failed / flagged page lists are cut here to keep answers small


# --- what the calls return ----------------------------------------------------------------------------
@dataclass
class BookStatus:
    """Where a book stands. ``state``: queued | running | running-elsewhere | complete |
    complete-with-failures | incomplete | error | damaged (its manifest cannot be read: ``error`` says
    why); ``detail`` is "stalled" when a run has gone quiet."""

    book: str
    state: str
    pages: int
    done: int  # pages with text: ok + fallback
    ok: int
    fallback: int
    failed: int
    pending: int
    engine: str | None
    engines_used: list[str]
    quality_flags: list[str]
    flagged_pages: dict[str, list[int]]  # the first MAX_LISTED_PAGES of each
    failed_pages: list[int]  # the first MAX_LISTED_PAGES
    source: str
    source_path: str
    updated: float | None = None
    eta_s: float | None = None
    pages_per_s: float | None = None
    error: str | None = None
    detail: str | None = None
    stalled_s: float | None = None
    message: str = ""
    damaged_pages: list[int] = field(default_factory=list)  # done pages whose file is missing or changed

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class OcrAnswer(BookStatus):
    """A book's status; for a library job, the totals over its books, each book in ``library``."""

    library: Any = None  # dict | None; typed Any to keep the tool schema small


@dataclass
class JobEstimate:
    """What OCRing some books would take, before anything runs: books, pages and (for an engine that bills
    a GPU) the cost; a file that cannot be read is named in ``unreadable`` and left out of the sums."""

    engine: str
    books: int
    pages: int
    estimate: Estimate | None
    unreadable: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "books": self.books,
            "pages": self.pages,
            "estimate": self.estimate.as_dict() if self.estimate else None,
            "unreadable": self.unreadable,
        }

    def describe(self) -> str:
        text = f"{self.books} book(s), {self.pages} page(s)"
        text += "".join(f"\nnot read: {why}" for why in self.unreadable.values())
        if self.estimate is None:
            return text + f"\nengine {self.engine} runs on this machine, at no cost but its time"
        return text + f"\n{self.estimate.describe()}"


@dataclass
class PageText:
    """One page as a reader gets it."""

    book: str
    page: int
    page_count: int
    label: str | None  # the number printed on the page, when known
    label_source: str | None
    status: str  # ok | fallback | failed | pending | damaged (its file is missing or not the one written)
    engine: str | None
    flags: list[str]
    reason: str
    markdown: str
    section: str | None = None  # the contents entry the page falls in: "§2.3.3 Summary"

    @property
    def body(self) -> str:
        """The text, or what to do about a page that has none."""
        if self.status in ("ok", "fallback"):
            return self.markdown.strip() or "(this page has no text: it is blank or a picture)"
        if self.status == "damaged":
            return (
                f"(page {self.page} is damaged: {self.reason}. Its text is not shown; run the OCR again on the same "
                "file to redo it.)"
            )
        if self.status == "failed":
            why = f": {self.reason}" if self.reason else ""
            return (
                f"(OCR failed on page {self.page}{why}. Look at the scan, or run the OCR again to retry failed pages.)"
            )
        return f"(page {self.page} has no text yet: OCR has not reached it.)"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PageRange:
    """Pages ``pages[0].page`` to ``pages[-1].page``; cut short (``truncated``) when the answer grew too large."""

    book: str
    page_count: int
    pages: list[PageText]
    requested_last: int
    truncated: bool
    book_state: str

    @property
    def first(self) -> PageText:
        return self.pages[0]

    @property
    def last(self) -> PageText:
        return self.pages[-1]

    @property
    def continue_from(self) -> int | None:
        return self.last.page + 1 if self.truncated else None


@dataclass
class RunSummary:
    """What one OCR run did, and where the book stands after it."""

    run: Progress
    status: BookStatus
    document: Path
    cost: CostTally

    def as_dict(self) -> dict[str, Any]:
        data = {**self.status.as_dict(), "run": self.run.as_dict(), "document": str(self.document)}
        if self.cost.pages:
            data["gpu"] = self.cost.as_dict()
        return data


@dataclass
class ShelfSummary:
    """What a library job did: each book, the totals, and the GPU it used."""

    books: list[ShelfBook]
    elapsed_s: float
    cost: CostTally
    state: str = "complete"  # complete | cancelled

    def count(self, *states: str) -> int:
        return sum(b.state in states for b in self.books)

    @property
    def exit_code(self) -> int:
        """2 when a book could not be read or run (the others were done), 3 when pages failed, else 0."""
        if self.count(*SHELF_PROBLEMS):
            return 2
        return 3 if any(b.failed for b in self.books) else 0

    def totals(self) -> dict[str, Any]:
        done = sum(b.done for b in self.books)
        return {
            "books": len(self.books),
            "books_complete": self.count("complete"),
            "books_with_failures": self.count("complete-with-failures"),
            "books_not_read": self.count(*SHELF_PROBLEMS),
            "pages": sum(b.pages for b in self.books),
            "pages_done_this_run": done,
            "pages_already_done": sum(b.skipped for b in self.books),
            "failed": sum(b.failed for b in self.books),
            "fallback": sum(b.fallback for b in self.books),
            "elapsed_s": round(self.elapsed_s, 3),
            "pages_per_s": round(done / self.elapsed_s, 3) if self.elapsed_s > 0 else 0.0,
            "gpu_seconds": round(self.cost.gpu_seconds, 2),
            "cost_usd": round(self.cost.cost_usd, 4),
        }

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, **self.totals(), "books_detail": [b.as_dict() for b in self.books]}


@dataclass
class ShelfStart:
    """A library job handed to the background: the books started (or already done) and those refused."""

    books: list[ShelfBook]

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for b in self.books:
            counts[b.state] = counts.get(b.state, 0) + 1
        return counts

    def answer(self, statuses: dict[str, BookStatus]) -> OcrAnswer:
        """The job as one compact record: totals over its books, each book's state (refreshed from
        ``statuses``), and what to call next."""
        for b in self.books:
            if b.book in statuses and b.state not in SHELF_PROBLEMS:
                s = statuses[b.book]
                b.state, b.pages, b.done, b.failed, b.fallback = s.state, s.pages, s.done, s.failed, s.fallback
        done, failed = sum(b.done for b in self.books), sum(b.failed for b in self.books)
        pages = sum(b.pages for b in self.books)
        refused = [b for b in self.books if b.state in SHELF_PROBLEMS]
        active = sum(b.state in ("queued", "running") for b in self.books)
        listed = [{k: v for k, v in b.as_dict().items() if v not in (None, 0, 0.0)} for b in self.books]
        return OcrAnswer(
            book=f"library job ({len(self.books)} books)",
            state="running" if active else "complete",
            pages=pages,
            done=done,
            ok=done - sum(b.fallback for b in self.books),
            fallback=sum(b.fallback for b in self.books),
            failed=failed,
            pending=max(0, pages - done - failed),
            **_no_details(),
            error="; ".join(f"{b.book}: {b.error}" for b in refused[:5]) or None,
            message=_shelf_message(self, active, refused),
            library={
                "books": len(self.books),
                "states": self.states(),
                "listed": listed[:MAX_LISTED_PAGES],
                "renamed": {b.book: b.renamed_from for b in self.books if b.renamed_from},
            },
        )


def _shelf_message(start: ShelfStart, active: int, refused: list[ShelfBook]) -> str:
    first = start.books[0].book if start.books else "BOOK"
    text = (
        f"{active} book(s) queued or running in the background; follow them with "
        f"list_books() or book_status('{first}'). "
        if active
        else "Every book is done. "
    )
    if refused:
        text += f"{len(refused)} file(s) could not be OCRed (see error); the other books go on. "
    return text + "Search them all with search_book(query)."


@dataclass
class EngineInfo:
    name: str
    description: str
    languages: list[str]
    options: list[dict[str, Any]] = field(default_factory=list)


# --- the library ----------------------------------------------------------------------------------------
class Library:
    """One corpus, with background OCR jobs for the MCP server (``jobs``)."""

    def __init__(self, corpus: Corpus, jobs: JobManager | None = None) -> None:
        self.corpus = corpus
        self.jobs = jobs or JobManager(corpus)
        self._sections = SectionCache()

    # --- books -------------------------------------------------------------------------------------
    def book_ids(self) -> list[str]:
        """Stored books and those a job of this process is just starting."""
        return sorted(set(self.corpus.book_ids()) | set(self.jobs.active_books()))

    def open_book(self, book_id: str) -> Book:
        """The book as readers should see it: a running job's live copy, else the stored one."""
        check_book_id(book_id)
        job = self.jobs.job(book_id)
        if job is not None and job.active and job.live_book is not None:
            return job.live_book
        if not self.corpus.has_book(book_id):
            raise self.unknown_book(book_id)
        return self.corpus.book(book_id)

    def unknown_book(self, book_id: str) -> UnknownBookError:
        books = self.book_ids()
        if not books:
            return UnknownBookError(
                f"no book {book_id!r}: the library ({self.corpus.root}) is empty; add a book by OCRing a file"
            )
        shown = ", ".join(books[:MAX_LISTED_PAGES]) + (
            f" and {len(books) - MAX_LISTED_PAGES} more" if len(books) > MAX_LISTED_PAGES else ""
        )
        return UnknownBookError(f"no book {book_id!r} in the library ({self.corpus.root}); books: {shown}")

    def status(self, book_id: str, thorough: bool = True) -> BookStatus:
        """Where the book stands. ``thorough`` checks every page file's hash (cached while files are
        unchanged); without it only their presence and size, cheap enough for a whole library's list."""
        check_book_id(book_id)
        job = self.jobs.job(book_id)
        if self.corpus.has_book(book_id) or (job is not None and job.active and job.live_book is not None):
            status = stored_status(self.open_book(book_id), thorough)
        elif job is not None:
            status = _new_book_status(job)
        else:
            raise self.unknown_book(book_id)
        if job is not None:
            _overlay_job(status, job)
        if status.state == "running" and not (job is not None and job.active):
            status.state = "running-elsewhere"  # locked, not by a job of this process
        status.message = next_step(status)
        return status

    def statuses(self) -> list[BookStatus]:
        """Every book's status; a damaged book is listed as such, not an error for the whole library."""
        return [self._listed_status(book_id) for book_id in self.book_ids()]

    def _listed_status(self, book_id: str) -> BookStatus:
        try:
            return self.status(book_id, thorough=False)
        except DamagedBookError as exc:
            return damaged_status(book_id, str(exc))

    def repair(self, target: str | Path, book: str | None = None, wait: bool | float = False) -> BookStatus:
        """Rebuild a damaged book's manifest from its page files and source (``target``: the book id or the
        source file); the next :meth:`ocr` then resumes it."""
        from server.repair import rebuild_manifest, repair_target
        from server.search import sync_book_quietly

        self.corpus.check_writable()
        book_id, source = repair_target(self.corpus, target, book)
        with self.corpus.lock(book_id, wait):
            repaired = rebuild_manifest(self.corpus, book_id, source)
        sync_book_quietly(self.corpus, repaired)
        return self.status(book_id)

    # --- reading -----------------------------------------------------------------------------------
    def read_pages(
        self,
        book_id: str,
        page: int | None = None,
        *,
        printed: str | int | None = None,
        to_page: int | None = None,
        to_printed: str | int | None = None,
        max_chars: int | None = None,
        max_pages: int | None = None,
    ) -> PageRange:
        """A page, or a range, chosen by PDF page number or by printed label; a range stops early (and says
        so) once it holds ``max_pages`` pages or ``max_chars`` characters, never before its first page."""
        book = self.open_book(book_id)
        first = _first_page(book, page, printed)
        last = _last_page(book, first, to_page, to_printed)
        pages: list[PageText] = []
        size = 0
        sections = self._section_index(book)
        for number in range(first, last + 1):
            text = page_text(book.read_page(number))
            text.section = sections.section_of(number)
            size += len(text.markdown) + 40
            if pages and (
                (max_chars is not None and size > max_chars) or (max_pages is not None and len(pages) >= max_pages)
            ):
                return PageRange(book.id, book.page_count, pages, last, True, book.state())
            pages.append(text)
        return PageRange(book.id, book.page_count, pages, last, False, book.state())

    def document(self, book_id: str) -> str:
        """The whole book with page markers, as ``document.mmd`` has it: composed afresh from the checked page
        files, so a damaged ``document.mmd`` (or page) is never served as the book's text."""
        return self.open_book(book_id).document_text()

    def document_path(self, book_id: str) -> Path:
        return self.open_book(book_id).dir / "document.mmd"

    def contents(self, book_id: str) -> Contents:
        return book_contents(self.open_book(book_id))

    def section_of(self, book_id: str, page: int) -> str | None:
        return self._section_index(self.open_book(book_id)).section_of(page)

    def _section_index(self, book: Book) -> SectionIndex:
        return self._sections.get(book.dir / "manifest.json", lambda: book_contents(book))

    def search(
        self,
        query: str,
        books: list[str] | None = None,
        pages: str | tuple[int, int] | None = None,
        limit: int = 10,
        offset: int = 0,
        defined: bool = False,
    ) -> SearchResponse:
        """Search the library (see :mod:`server.search`); ``pages`` is "FIRST-LAST" or a pair. Pages with a
        heading naming the query (and, with ``defined``, a sentence defining it) come first in their tier."""
        from server.search import search_library

        started = time.perf_counter()
        for book_id in books or []:
            self.open_book(book_id)  # an unknown book is an error that lists the books
        span = parse_span(pages) if isinstance(pages, str) else pages

        def search(first: int, count: int, fill: int | None = None) -> SearchResponse:  # snippets: for hits kept
            return search_library(
                self.corpus, query, books=books, pages=span, limit=count, offset=first, snippets=False, fill=fill
            )

        # bad paging values go to search_library, which refuses them with the range
        within = (
            type(limit) is int
            and type(offset) is int
            and limit >= 1
            and offset >= 0
            and offset + limit <= PROMOTE_WITHIN
        )
        # one search in the usual case; promotion stays within a tier, so lower tiers than the hits shown need
        # not be ranked (fill)
        found = search(0, PROMOTE_WITHIN, offset + limit) if within else search(offset, limit)
        if offset < PROMOTE_WITHIN and found.hits:
            head = found.hits if within else search(0, PROMOTE_WITHIN).hits
            promoted = self._promote(head, query_words(query), defined)
            rest = [] if within else search(PROMOTE_WITHIN, offset + limit - PROMOTE_WITHIN).hits
            found.hits = (promoted + rest)[offset : offset + limit]
        elif within:
            found.hits = found.hits[offset : offset + limit]
        hits = found.hits
        found.make_snippets(hits)
        for hit in hits:
            hit.section = self._hit_section(hit.book, hit.page)
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        return SearchResponse(query, found.total, offset, limit, elapsed, hits)

    def _promote(self, hits: list[SearchHit], words: list[str], defined: bool) -> list[SearchHit]:
        """Within each tier, pages whose heading names the query (then, with ``defined``, pages that define it)
        first; the tier's scores are handed out again in the new order, so they still fall down the list."""
        weight: dict[int, float] = {}
        for i, hit in enumerate(hits):
            markdown, headings = self._hit_page(hit)
            headings += page_headings(markdown)
            by_heading = heading_score(headings, words) if words else 0.0
            by_sentence = _definition_weight(markdown, headings, words) if defined and words else 0.0
            hit.defines = HEADING if by_heading else DEFINITION if by_sentence >= STRONG else None
            weight[i] = by_heading + by_sentence
        order = sorted(range(len(hits)), key=lambda i: (-int(hits[i].score), -weight[i], i))
        scores = [hit.score for hit in hits]
        promoted = [hits[i] for i in order]
        for tier in {int(score) for score in scores}:
            places = [k for k, hit in enumerate(promoted) if int(hit.score) == tier]
            for k, score in zip(places, sorted((s for s in scores if int(s) == tier), reverse=True)):
                promoted[k].score = score
        return promoted

    def _hit_page(self, hit: SearchHit) -> tuple[str, list[str]]:
        """A hit's text as indexed, and the contents headings on its page ([] when the book cannot be read now);
        both from the index, which keeps each book's contents (see :mod:`server.search.books`)."""
        from server.search.books import book_sections

        sections = book_sections(self.corpus, hit.book, self._sections)
        return hit.text, sections.headings_on(hit.page) if sections else []

    def _hit_section(self, book_id: str, page: int) -> str | None:
        from server.search.books import book_sections

        sections = book_sections(self.corpus, book_id, self._sections)
        return sections.section_of(page) if sections else None

    def reindex(self, book_id: str | None = None) -> dict[str, Any]:
        from server.search import SearchIndex

        self.corpus.check_writable()
        index = SearchIndex(self.corpus)
        started = time.perf_counter()
        pages = index.reindex(book_id)
        seconds = time.perf_counter() - started
        size = sum(
            p.stat().st_size
            for p in index.path.parent.glob(index.path.name + "*")
            if p.name.endswith(("sqlite", "-wal"))
        )
        return {
            "book": book_id,
            "pages": pages,
            "seconds": round(seconds, 3),
            "index": str(index.path),
            "bytes": size,
            "not_indexed": index.not_indexed,  # book id -> why (a damaged manifest)
        }

    def reclean(self, book_id: str, figures: bool = False, wait: bool | float = False) -> Any:
        """Clean a book's DeepSeek pages again from their raw output (no GPU); the index follows."""
        from server.reclean import reclean_book
        from server.search import SearchIndex

        self.corpus.check_writable()
        report = reclean_book(self.corpus, book_id, figures=figures, wait=wait)
        if report.changed:
            SearchIndex(self.corpus).reindex(book_id)
        return report

    # --- OCR ---------------------------------------------------------------------------------------
    def engines(self) -> list[EngineInfo]:
        return [
            EngineInfo(
                name,
                cls.description,
                cls.languages(),
                [{"name": o.name, "type": o.describe_type(), "help": o.help} for o in cls.options],
            )
            for name, cls in engine_classes().items()
        ]

    def estimate(self, path: str | Path, options: RunOptions) -> tuple[int, Estimate | None]:
        """Pages still to do (failed ones included: a run retries them) and expected cost of OCRing ``path``
        (None: the engine runs here, at no cost); writes nothing."""
        plan = plan_run(self.corpus, path, options)
        try:
            count = len(pages_to_do(self.corpus, plan))
        finally:
            plan.close()
        return count, engine_class(options.engine).estimate(count, plan.options.engine_options)

    def estimate_job(
        self, paths: list[str | Path], options: RunOptions, check: Callable[[Path], Path] | None = None
    ) -> JobEstimate:
        """Books, pages and expected cost of a library job over ``paths`` (files or folders of PDFs), priced as
        one job (the engine spreads the books over the same containers); writes nothing."""
        pages, books, unreadable = 0, 0, {}
        for entry in shelf_entries(paths):
            try:
                path = check(entry.path) if check else entry.path
                pages += self.estimate(path, dataclasses.replace(options, book=entry.book))[0]
                books += 1
            except BookOcrError as exc:
                unreadable[entry.book] = str(exc)
        cost = engine_class(options.engine).estimate(pages, options.engine_options)
        return JobEstimate(options.engine, books, pages, cost, unreadable)

    def ocr(
        self,
        path: str | Path,
        options: RunOptions,
        progress: ProgressFn | None = None,
        listeners: Iterable[PageListener] = (),
        cancel: threading.Event | None = None,
    ) -> RunSummary:
        """OCR (or resume) a book here and now."""
        self.corpus.check_writable()
        cost = CostTally()
        if options.redo and self._is_damaged(path, options.book):
            self.repair(path, options.book, options.wait_for_lock)  # keeps the pages --redo does not select
        result = run_plan(
            self.corpus, plan_run(self.corpus, path, options), progress, listeners=[cost, *listeners], cancel=cancel
        )
        return RunSummary(result, self.status(result.book), self.document_path(result.book), cost)

    def ocr_many(
        self,
        paths: list[str | Path],
        options: RunOptions,
        progress: Callable[[ShelfProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ShelfSummary:
        """OCR (or resume) many books as one job through one engine where it can be shared: one after another,
        or a few at once for an engine that takes pages of several books (``books_at_once``: the DeepSeek
        client, whose containers then stay busy across a book's tail).

        Folders among ``paths`` give every PDF under them (see :func:`server.runner.shelf_entries` for the
        ids). A book whose file cannot be read, or that another run holds (unless ``options.wait_for_lock``),
        is reported and the job goes on. Each book resumes where it stopped, so the same call resumes the job.
        """
        self.corpus.check_writable()
        if options.book or options.pages:
            raise BookOcrError("a library job takes neither a book id nor pages: each file's book id is its name")
        entries = shelf_entries(paths)
        shelf = ShelfProgress([ShelfBook(e.book, str(e.path), renamed_from=e.renamed_from) for e in entries])
        cost = CostTally()
        for entry, book in zip(entries, shelf.books):
            self._plan_shelf_book(entry, book, options)
        engine: OcrEngine | None = None
        todo = [(entry, book) for entry, book in zip(entries, shelf.books) if book.state == "pending"]
        try:
            if any(book.run_pages for _, book in todo):
                engine = _shared_engine(options)
            if engine is not None:
                engine.start()
            at_once = engine.books_at_once() if engine is not None else 1
            if engine is not None and at_once > 1 and len(todo) > 1:
                cancel = cancel or threading.Event()
                self._run_shelf_books_at_once(todo, at_once, options, shelf, engine, cost, progress, cancel)
            else:
                for entry, book in todo:
                    if cancel is not None and cancel.is_set():
                        book.state = "cancelled"
                        continue
                    self._run_shelf_book(entry, book, options, shelf, engine, cost, progress, cancel)
        finally:
            if engine is not None:
                engine.close()
        shelf.state = "cancelled" if cancel is not None and cancel.is_set() else "complete"
        if progress:
            progress(shelf)
        return ShelfSummary(shelf.books, shelf.elapsed, cost, shelf.state)

    def _run_shelf_books_at_once(
        self,
        todo: list[tuple[ShelfEntry, ShelfBook]],
        at_once: int,
        options: RunOptions,
        shelf: ShelfProgress,
        engine: OcrEngine,
        cost: CostTally,
        progress: Callable[[ShelfProgress], None] | None,
        cancel: threading.Event,
    ) -> None:
        """The books in job order, each in its own thread through the normal runner (its lock, manifest and
        document), all sharing ``engine``: the next book starts once the engine has room for its pages (the
        running books have sent all theirs), up to ``at_once`` at a time. Ctrl-C stops every book (resumable)."""
        queue = list(reversed(todo))
        listener = _Serialized(cost)
        crashed: list[BaseException] = []
        running: list[threading.Thread] = []

        def run(entry: ShelfEntry, book: ShelfBook) -> None:
            try:
                self._run_shelf_book(entry, book, options, shelf, engine, listener, progress, cancel)
            except BaseException as exc:  # a bug, not a book's problem: the job stops, as it would in order
                crashed.append(exc)
                cancel.set()

        try:
            while queue or running:
                running = [thread for thread in running if thread.is_alive()]
                if queue and cancel.is_set():
                    queue.pop()[1].state = "cancelled"
                elif queue and (not running or len(running) < at_once and engine.wants_another_book(len(running))):
                    entry, book = queue.pop()
                    running.append(threading.Thread(target=run, args=(entry, book), name="bookocr-shelf", daemon=True))
                    running[-1].start()
                elif running:  # each book's run is bounded by its engine's stall deadline
                    running[0].join(SHELF_POLL_S)
        except BaseException:  # Ctrl-C: every book stops after its current page and stays resumable
            cancel.set()
            engine.close()  # the books' streams stop waiting for calls in flight
            deadline = time.monotonic() + SHELF_STOP_S
            for thread in running:
                thread.join(max(0.0, deadline - time.monotonic()))
            raise
        if crashed:
            raise crashed[0]

    def _plan_shelf_book(self, entry: ShelfEntry, book: ShelfBook, options: RunOptions) -> None:
        """Check one book before the job starts: its pages, and what is left to do (nothing is written)."""
        try:
            plan = plan_run(self.corpus, entry.path, dataclasses.replace(options, book=entry.book))
        except BookOcrError as exc:
            book.state, book.error = "unreadable", str(exc)
            return
        try:
            book.pages = plan.info.page_count
            book.run_pages = len(pages_to_do(self.corpus, plan))
            book.skipped = len(plan.pages) - book.run_pages
        except BookOcrError as exc:  # a damaged manifest: its message names the fix
            book.state, book.error = "error", str(exc)
        finally:
            plan.close()

    def _run_shelf_book(
        self,
        entry: ShelfEntry,
        book: ShelfBook,
        options: RunOptions,
        shelf: ShelfProgress,
        engine: OcrEngine | None,
        cost: PageListener,
        progress: Callable[[ShelfProgress], None] | None,
        cancel: threading.Event | None,
    ) -> None:
        book.state = "running"

        def on_progress(p: Progress) -> None:
            shelf.current, book.done, book.failed, book.fallback = p, p.done, p.failed, p.fallback
            shelf.running[book.book] = p
            if progress:
                progress(shelf)

        try:
            # run even with nothing to do: a job killed between a book's last page and its document.mmd
            # finishes the document here
            plan = plan_run(self.corpus, entry.path, dataclasses.replace(options, book=entry.book))
            run = run_plan(self.corpus, plan, on_progress, engine, [cost], cancel, engine_started=engine is not None)
            book.elapsed_s = round(run.elapsed, 3)
            status = self.status(entry.book, thorough=False)
            book.state, book.failed, book.fallback = status.state, status.failed, status.fallback
            if cancel is not None and cancel.is_set() and status.state == "incomplete":
                book.state = "cancelled"
        except BookLockedError as exc:
            book.state, book.error = "locked", str(exc)
        except BookOcrError as exc:
            book.state, book.error = ("unreadable" if book.run_pages and not book.done else "error"), str(exc)
        finally:
            shelf.book_ended(book.book)

    def _is_damaged(self, path: str | Path, book: str | None) -> bool:
        from server.runner import book_id_for

        book_id = book_id_for(path, book)
        if not self.corpus.has_book(book_id):
            return False
        try:
            self.corpus.book(book_id)
        except DamagedBookError:
            return True
        return False

    def start(self, path: str | Path, options: RunOptions, retry_failed: bool = False) -> str:
        """Check the request at once, then OCR in the background (see :class:`~server.jobs.JobManager`)."""
        self.corpus.check_writable()
        return self.jobs.start(path, options, retry_failed)

    def start_many(
        self,
        paths: list[str | Path],
        options: RunOptions,
        retry_failed: bool = False,
        check: Callable[[Path], Path] | None = None,
    ) -> ShelfStart:
        """Start a library job in the background: each book its own job, queued one after another, or, for an
        engine that takes several books at once (DeepSeek), sharing one engine and running together as
        :meth:`ocr_many` runs them; a file that cannot be read (or that ``check`` refuses) is reported in the
        answer, the others start."""
        self.corpus.check_writable()
        entries = shelf_entries(paths)
        group = self._engine_group(options) if len(entries) > 1 else None
        books = []
        try:
            for entry in entries:
                book = ShelfBook(entry.book, str(entry.path), renamed_from=entry.renamed_from)
                try:
                    path = check(entry.path) if check else entry.path
                    self.jobs.start(path, dataclasses.replace(options, book=entry.book), retry_failed, group)
                    status = self.status(entry.book, thorough=False)
                    book.state, book.pages, book.failed = status.state, status.pages, status.failed
                except BookLockedError as exc:
                    book.state, book.error = "locked", str(exc)
                except BookOcrError as exc:
                    book.state, book.error = "unreadable", str(exc)
                books.append(book)
        finally:
            if group is not None:
                group.seal()
        return ShelfStart(books)

    def _engine_group(self, options: RunOptions) -> EngineGroup | None:
        """One engine for the books of a library job, when it takes several books at once (else None)."""
        engine = _shared_engine(options)
        if engine is None:
            return None
        if engine.books_at_once() > 1:
            return EngineGroup(engine)
        engine.close()
        return None

    def shutdown(self) -> bool:
        return self.jobs.shutdown()


# --- helpers ---------------------------------------------------------------------------------------------
def _shared_engine(options: RunOptions) -> OcrEngine | None:
    """One engine (not started) for every book of a job; None when it writes into a book's folder (figure
    crops), so each book needs its own."""
    if options.engine_options.get("figures"):
        return None
    return create_engine(options.engine, **engine_class(options.engine).check_options(options.engine_options))


SHELF_POLL_S = 0.1  # how often a library job's main thread looks up from its books (room for the next, Ctrl-C)
SHELF_STOP_S = 10.0  # after Ctrl-C, how long the books running at once get to record their pages and stop


class _Serialized:
    """A page listener shared by books that run at once: one page at a time."""

    def __init__(self, listener: PageListener) -> None:
        self._listener = listener
        self._lock = threading.Lock()

    def __call__(self, book: Book, result: Any) -> None:  # result: a PageResult
        with self._lock:
            self._listener(book, result)


def _definition_weight(markdown: str, headings: list[str], words: list[str]) -> float:
    return max(definition_score(markdown, words), defining_heading_score(headings, words))


def page_text(view: PageView) -> PageText:
    r = view.record
    return PageText(
        view.book,
        view.number,
        view.page_count,
        r.label,
        r.label_source,
        view.status,
        r.engine,
        list(r.flags),
        view.damage or r.reason,
        view.markdown,
    )


def stored_status(book: Book, thorough: bool = True) -> BookStatus:
    counts = book.counts()
    records = [r for r in book.pages if r is not None]
    damaged = book.damaged_pages(thorough)
    state = book.state()
    return BookStatus(
        book=book.id,
        state="incomplete" if damaged and state.startswith("complete") else state,
        pages=book.page_count,
        done=counts["ok"] + counts["fallback"],
        ok=counts["ok"],
        fallback=counts["fallback"],
        failed=counts["failed"],
        pending=counts["pending"],
        engine=book.engine,
        engines_used=sorted({r.engine for r in records if r.engine}),
        quality_flags=sorted({f for r in records for f in r.flags}),
        flagged_pages={flag: pages[:MAX_LISTED_PAGES] for flag, pages in book.flagged_pages().items()},
        failed_pages=book.pages_with("failed")[:MAX_LISTED_PAGES],
        source=book.source_name,
        source_path=book.source_path,
        updated=book.manifest.get("updated"),
        damaged_pages=damaged[:MAX_LISTED_PAGES],
    )


def damaged_status(book_id: str, error: str) -> BookStatus:
    """A book whose manifest cannot be read: listed, with the error saying how to repair it."""
    return BookStatus(
        book=book_id,
        state="damaged",
        pages=0,
        done=0,
        ok=0,
        fallback=0,
        failed=0,
        pending=0,
        **_no_details(),
        error=error,
        message=f"{error}. Until then its pages cannot be read; tell the user (the MCP server does not repair books).",
    )


def _no_details(**known: Any) -> dict[str, Any]:
    """The per-book fields of a status that stands for no stored book yet (a queued job, a damaged book,
    a library job's totals), fresh each time; ``known`` fills what is known."""
    return {
        "engine": None,
        "engines_used": [],
        "quality_flags": [],
        "flagged_pages": {},
        "failed_pages": [],
        "source": "",
        "source_path": "",
        **known,
    }


def _new_book_status(job: Job) -> BookStatus:
    """A job whose book folder does not exist yet (it is queued, or just starting)."""
    n = job.source.page_count
    return BookStatus(
        book=job.book,
        state=job.state,
        pages=n,
        done=0,
        ok=0,
        fallback=0,
        failed=0,
        pending=n,
        **_no_details(engine=job.options.engine, source=job.source.name, source_path=job.source.path),
    )


def _overlay_job(status: BookStatus, job: Job) -> None:
    status.engine = job.options.engine
    if job.active:
        status.state = job.state
        if job.progress is not None:
            status.eta_s = None if job.progress.eta is None else round(job.progress.eta, 1)
            status.pages_per_s = round(job.progress.rate, 3)
            stalled = job.progress.stalled_for if job.state == "running" else None
            if stalled is not None:
                status.detail, status.stalled_s = "stalled", round(stalled, 1)
    elif job.state == "error" and status.state != "complete":
        status.state, status.error = "error", job.error


def next_step(s: BookStatus) -> str:
    """One sentence: where the book stands and what to do next (worded for an agent's tool calls)."""
    from server.formatting import describe_duration

    book, state = s.book, s.state
    done = f"{s.done} of {s.pages} pages done"
    if state == "queued":
        return f"{done}; waiting for another book's OCR to finish. Call book_status('{book}') later."
    if state == "running" and s.detail == "stalled" and s.stalled_s is not None:
        return (
            f"OCR is running but stalled: no page has finished for {describe_duration(s.stalled_s)} ({done}). "
            "The run goes on "
            f"and a stuck page is given up on at its deadline; check again with book_status('{book}') in a "
            "few minutes. "
            "If it stays stalled, tell the user: restarting the bookocr server stops the run, and ocr_book "
            "then resumes it."
        )
    if state == "running":
        eta = f", about {describe_duration(s.eta_s)} left" if s.eta_s else ""
        return (
            f"OCR is running in the background: {done}{eta}. Pages already done can be read now with get_page; "
            f"call book_status('{book}') to follow progress."
        )
    if state == "running-elsewhere":
        return (
            f"{done}; another bookocr process is writing this book. "
            "Read the pages done so far, and check again later with book_status."
        )
    if state == "complete":
        return (
            f"All {s.pages} pages are done. Read them with get_page('{book}', page) "
            f"or search them with search_book(query, book='{book}')."
        )
    if state == "complete-with-failures":
        return (
            f"{done}; {s.failed} page(s) failed (see failed_pages). The rest can be read with get_page; "
            f"call ocr_book again with retry_failed=true to try the failed pages again."
        )
    if state == "error":
        return f"The OCR run stopped: {s.error}. {done}; fix the cause and call ocr_book again to resume."
    if s.damaged_pages:
        return (
            f"{len(s.damaged_pages)} page file(s) are damaged, missing or changed since they were written (see "
            "damaged_pages); call ocr_book again with the same path to redo them."
        )
    return f"{done}; {s.pending} page(s) are not done yet. Call ocr_book with the same path to resume."


def _first_page(book: Book, page: int | None, printed: str | int | None) -> int:
    if (page is None) == (printed is None):
        raise PageRangeError(
            f"give either the PDF page number (1-{book.page_count}) or the number printed on the page "
            f"(e.g. 37 or xii), one of the two"
        )
    return book.check_page(page) if printed is None else book.find_printed(str(printed))


def _last_page(book: Book, first: int, to_page: int | None, to_printed: str | int | None) -> int:
    if to_page is not None and to_printed is not None:
        raise PageRangeError("give the range's end as a PDF page number or as a printed page number, not both")
    if to_printed is not None:
        last = book.find_printed(str(to_printed))
    elif to_page is not None:
        last = book.check_page(to_page)
    else:
        return first
    if last < first:
        raise PageRangeError(
            f"the range ends (PDF page {last}) before it starts (PDF page {first}); book {book.id!r} has "
            f"pages 1-{book.page_count}"
        )
    return last


def parse_span(spec: str) -> tuple[int, int]:
    """``"10-40"`` (or ``"12"``) as a pair of page numbers."""
    try:
        first, _, last = spec.partition("-")
        return int(first), int(last or first)
    except ValueError:
        raise BookOcrError(f"bad page span {spec!r}: use FIRST-LAST, e.g. 10-40") from None


__all__ = [
    "Library",
    "BookStatus",
    "PageText",
    "PageRange",
    "Contents",
    "RunSummary",
    "EngineInfo",
    "parse_pages",
    "PageRecord",
]
