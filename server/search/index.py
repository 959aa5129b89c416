"""The library's search index: writing pages, rebuilding and repairing the file, keeping it in
line with the books' manifests, and answering searches (the runner's listeners too).

Thread safety: one connection per thread (WAL mode, busy timeout), one writer per process at
a time; any number of threads may search while a run writes pages.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from ocr_backend.engines.base import PageResult
from ocr_backend.errors import BookOcrError, PageRangeError, UnknownBookError
from server.corpus import DONE_STATUSES, Book, Corpus
from server.search.books import BookFacts, facts_of, read_facts, store_facts
from server.search.normalize import NORMALIZER_VERSION, normalize
from server.search.query import read_query
from server.search.ranking import rank_query
from server.search.results import SearchHit, SearchResponse
from server.search.store import (
    BUSY_TIMEOUT_MS,
    INDEX_FILE,
    NORMALIZER,
    OUTDATED,
    PAGE_BITS,
    PAGE_MASK,
    SearchIndexError,
    book_rows,
    check_index_file,
    connect,
    connect_read_only,
    count_pages,
    create_schema,
    file_inode,
    is_corruption,
    manifest_stamp,
    move_aside,
    pack,
    remove_index,
    rowid_filter,
    shared_for,
    unpack,
)
from server.search.vocabulary import TermStats, count_terms

log = logging.getLogger(__name__)

MAX_LIMIT = 200
SYNC_EVERY_S = 10.0  # how often a search checks the index against the books' manifests
FACTS_WAIT_MS = 200  # a search waits this long at most for another process's write, to store book facts


def search_library(
    corpus: Corpus,
    query: str,
    *,
    books: list[str] | None = None,
    pages: tuple[int, int] | None = None,
    limit: int = 10,
    offset: int = 0,
    snippets: bool = True,
    fill: int | None = None,
) -> SearchResponse:
    """Search the library (the call both the CLI and the MCP server make, through ``Library.search``);
    without ``snippets`` the hits have none until :meth:`SearchResponse.make_snippets` makes them. With
    ``fill``, once that many hits are ranked no lower tier is started (its hits would all come after them):
    for a caller that re-orders hits only within their tier and hands on the first ``fill``."""
    return SearchIndex(corpus).search(
        query, books=books, pages=pages, limit=limit, offset=offset, snippets=snippets, fill=fill
    )


class SearchIndex:
    """The library's search index: ``CORPUS/index.sqlite``."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.path = corpus.root / INDEX_FILE
        self._shared = shared_for(self.path)
        self.not_indexed: dict[str, str] = {}  # books the last rebuild left out, and why

    @property
    def notice(self) -> str | None:
        """The last message about the index file being rebuilt, if any."""
        return self._shared.notice

    # --- connections and validation ------------------------------------------------------
    def _conn(self, rebuild: bool = True) -> sqlite3.Connection:
        if self.corpus.read_only:
            return self._read_only_conn()
        shared = self._shared
        local = shared.local
        inode = file_inode(self.path)
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and inode is not None and local.inode == inode == shared.ready_inode:
            return conn
        if conn is not None:
            conn.close()
            local.conn = None
        with shared.lock:
            if inode is None or inode != shared.ready_inode:
                self._open_or_rebuild(rebuild)
            conn = connect(self.path)
            local.conn, local.inode = conn, shared.ready_inode
        return conn

    def _read_only_conn(self) -> sqlite3.Connection:
        """On a read-only corpus the index is used as it is: never rebuilt, never moved aside."""
        local = self._shared.local
        conn: sqlite3.Connection | None = getattr(local, "read_only_conn", None)
        if conn is not None:
            return conn
        problem = check_index_file(self.path, read_only=True) if self.path.exists() else "there is none"
        if problem not in (None, NORMALIZER):  # an older normalisation still finds most words
            raise SearchIndexError(
                f"the search index {self.path} cannot be used ({problem}) and the corpus is read-only, so it "
                "cannot be rebuilt; run `bookocr reindex` on a writable copy of the corpus"
            )
        local.read_only_conn = conn = connect_read_only(self.path)
        return conn

    def _open_or_rebuild(self, rebuild: bool) -> None:
        """Make the file a valid index of this version, rebuilding it when it is missing, foreign or corrupt."""
        shared = self._shared
        self.corpus.root.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        if existed:
            problem = check_index_file(self.path)
            if problem == NORMALIZER:
                self._rebuild_after(f"search index {self.path} was made by another text normalisation", rebuild)
                return
            if problem == OUTDATED:
                remove_index(self.path)
                self._rebuild_after(f"search index {self.path} was made by an older bookocr", rebuild)
                return
            if problem:
                moved = move_aside(self.path)
                self._rebuild_after(
                    f"{self.path} is not a usable bookocr search index ({problem}); moved it to {moved.name}", rebuild
                )
                return
            shared.ready_inode = file_inode(self.path)
            return
        with connect(self.path) as conn:
            create_schema(conn)
        shared.ready_inode = file_inode(self.path)
        if rebuild and self.corpus.book_ids():
            self._rebuild_after(f"search index {self.path} was missing", rebuild)

    def _rebuild_after(self, reason: str, rebuild: bool = True) -> None:
        shared = self._shared
        if not self.path.exists() or check_index_file(self.path) not in (None, NORMALIZER):
            with connect(self.path) as conn:
                create_schema(conn)
        shared.ready_inode = file_inode(self.path)
        if not rebuild:
            shared.notice = f"{reason}; starting a new index"
            log.warning("bookocr: %s", shared.notice)
            return
        conn = connect(self.path)
        try:
            count = self._write(self._rebuild_all, conn)
        finally:
            conn.close()
        shared.notice = f"{reason}; rebuilt it from the .mmd files ({count} pages)"
        log.log(logging.WARNING if count else logging.INFO, "bookocr: %s", shared.notice)

    # --- writing ---------------------------------------------------------------------------
    def add_page(self, book: str, page: int, markdown: str, label: str | None = None) -> None:
        """Index (or re-index) one page; searchable as soon as this returns."""
        self.add_pages([(book, page, markdown, label)])

    def add_pages(self, pages: Iterable[tuple[str, int, str, str | None]]) -> int:
        """Index many pages in one transaction (much faster than one by one)."""
        return self._write(lambda conn: self._insert_pages(conn, pages))

    def remove_page(self, book: str, page: int) -> None:
        def remove(conn: sqlite3.Connection) -> int:
            num = self._book_number(conn, book, create=False)
            return 0 if num is None else self._delete_rows(conn, [num << PAGE_BITS | page])

        self._write(remove)

    def reindex(self, book: str | None = None) -> int:
        """Rebuild from the ``.mmd`` files (one book, or the whole library); returns pages indexed."""
        if book is not None:
            stamp = self._stamp(book)  # before the manifest is read: a later change is seen by the next sync
            source = self.corpus.book(book)  # raises UnknownBookError listing the books
            return self._write(lambda conn: self._replace_book(conn, source, stamp))
        self._conn(rebuild=False)  # a missing or broken file becomes an empty index first
        return self._write(self._rebuild_all)

    def sync_book(self, book: Book | str) -> int:
        """Bring one book's index in line with its manifest: add done pages missing, drop others.
        Returns pages changed."""
        source = book if isinstance(book, Book) else self.corpus.book(book)
        done = set(source.done_pages())
        conn = self._conn()
        num = self._book_number(conn, source.id, create=False)
        indexed = set() if num is None else {rowid & PAGE_MASK for rowid in book_rows(conn, num)}
        missing, extra = sorted(done - indexed), sorted(indexed - done)
        if not missing and not extra:
            return 0

        def fix(conn: sqlite3.Connection) -> int:
            number = self._book_number(conn, source.id, create=True)
            self._delete_rows(conn, [number << PAGE_BITS | n for n in extra])
            return self._insert_pages(conn, _book_pages(source, missing)) + len(extra)

        return self._write(fix)

    def page_listener(self, book: Book, result: PageResult) -> None:
        """A runner :data:`~server.runner.PageListener`: index each page as it lands."""
        if result.status in DONE_STATUSES:
            self.add_page(book.id, result.number, result.markdown, book.page(result.number).label)
        else:
            self.remove_page(book.id, result.number)

    def _write(self, action: Callable[[sqlite3.Connection], int], conn: sqlite3.Connection | None = None) -> int:
        """Run ``action`` in one write transaction, on this thread's connection unless given another."""
        if conn is None:
            conn = self._conn()
        with self._shared.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = action(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (disk full) may have ended it: keep the real error
                    conn.execute("ROLLBACK")
                raise
        return count

    def _book_number(self, conn: sqlite3.Connection, book: str, create: bool) -> int | None:
        """The book's number, read in the caller's transaction: another process may have rebuilt the index."""
        row = conn.execute("SELECT num FROM books WHERE book=?", (book,)).fetchone()
        if row is None and create:
            conn.execute("INSERT INTO books(book) VALUES(?)", (book,))
            row = conn.execute("SELECT num FROM books WHERE book=?", (book,)).fetchone()
        return None if row is None else int(row[0])

    def _insert_pages(self, conn: sqlite3.Connection, pages: Iterable[tuple[str, int, str, str | None]]) -> int:
        numbers: dict[str, int | None] = {}
        fts_rows: list[tuple[int, str]] = []
        page_rows: list[tuple[int, str | None, bytes, bytes]] = []
        found: Counter[str] = Counter()
        for book, page, markdown, label in pages:
            if not isinstance(page, int) or not 1 <= page <= PAGE_MASK:
                raise PageRangeError(f"page {page!r} cannot be indexed: pages are numbered 1-{PAGE_MASK}")
            if book not in numbers:
                numbers[book] = self._book_number(conn, book, create=True)
            rowid = int(numbers[book] or 0) << PAGE_BITS | page
            body = normalize(markdown)
            found.update(set(body.split()))
            fts_rows.append((rowid, body))
            page_rows.append((rowid, label, pack(markdown), pack(body)))
        self._delete_rows(conn, [row[0] for row in page_rows])
        conn.executemany("INSERT INTO fts(rowid, body) VALUES(?, ?)", fts_rows)
        conn.executemany("INSERT INTO pages(id, label, text, norm) VALUES(?, ?, ?, ?)", page_rows)
        count_terms(conn, found, 1)
        count_pages(conn, len(page_rows))
        return len(page_rows)

    def _delete_rows(self, conn: sqlite3.Connection, rowids: list[int]) -> int:
        """Delete pages; a contentless FTS5 row is deleted by handing back exactly the terms it was given."""
        deleted = 0
        for start in range(0, len(rowids), 500):
            chunk = rowids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            old = [(i, unpack(n)) for i, n in conn.execute(f"SELECT id, norm FROM pages WHERE id IN ({marks})", chunk)]
            conn.executemany("INSERT INTO fts(fts, rowid, body) VALUES('delete', ?, ?)", old)
            count_terms(conn, Counter(t for _, body in old for t in set(body.split())), -1)
            conn.execute(f"DELETE FROM pages WHERE id IN ({marks})", chunk)
            deleted += len(old)
        count_pages(conn, -deleted)
        return deleted

    def _replace_book(self, conn: sqlite3.Connection, book: Book, stamp: str | None) -> int:
        """Index the book's done pages afresh; ``stamp``: its manifest's version, taken before it was read."""
        num = self._book_number(conn, book.id, create=True)
        assert num is not None
        self._delete_rows(conn, book_rows(conn, num))
        count = self._insert_pages(conn, _book_pages(book, book.done_pages()))
        conn.execute("UPDATE books SET stamp = ? WHERE num = ?", (stamp, num))
        if stamp is not None:
            store_facts(conn, num, read_facts(book, stamp))
        return count

    def _stamp(self, book_id: str) -> str | None:
        return manifest_stamp(self.corpus.root, book_id)

    def _rebuild_all(self, conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO fts(fts) VALUES('delete-all')")
        conn.execute("DELETE FROM terms")
        conn.execute("DELETE FROM pages")  # book numbers stay: a search running meanwhile still names its hits right
        conn.execute("INSERT OR REPLACE INTO meta VALUES('pages', '0')")
        conn.execute("INSERT OR REPLACE INTO meta VALUES('epoch', ?)", (uuid.uuid4().hex,))
        conn.execute("INSERT OR REPLACE INTO meta VALUES('normalizer', ?)", (str(NORMALIZER_VERSION),))
        count = 0
        book_ids = self.corpus.book_ids()
        for book_id in book_ids:
            stamp = self._stamp(book_id)
            try:
                book = self.corpus.book(book_id)
            except BookOcrError as exc:
                log.warning("bookocr: not indexing %s: %s", book_id, exc)
                self.not_indexed[book_id] = str(exc)
                continue
            count += self._replace_book(conn, book, stamp)
        marks = ",".join("?" * len(book_ids))
        conn.execute(
            f"DELETE FROM books WHERE book NOT IN ({marks}) AND num NOT IN (SELECT DISTINCT id >> {PAGE_BITS} "
            "FROM pages)",
            book_ids,
        )
        conn.execute("DELETE FROM book_facts WHERE num NOT IN (SELECT num FROM books)")
        return count

    # --- reading ---------------------------------------------------------------------------
    def book_ids(self) -> list[str]:
        return [b for (b,) in self._conn().execute("SELECT book FROM books ORDER BY book")]

    def page_count(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'pages'").fetchone()
        return int(row[0]) if row else 0

    def search(
        self,
        query: str,
        *,
        books: list[str] | None = None,
        pages: tuple[int, int] | None = None,
        limit: int = 10,
        offset: int = 0,
        snippets: bool = True,
        fill: int | None = None,
    ) -> SearchResponse:
        started = time.perf_counter()
        _check_paging(limit, offset)
        if not self.corpus.root.is_dir():
            _check_books(books, [])
            return SearchResponse(query, 0, offset, limit, _ms(started), [])
        try:
            return self._search(query, books, pages, limit, offset, started, snippets, fill)
        except sqlite3.DatabaseError as exc:
            if self.corpus.read_only or (isinstance(exc, sqlite3.OperationalError) and not is_corruption(exc)):
                raise SearchIndexError(
                    f"the search index {self.path} cannot be read ({exc}); try again, or run `bookocr reindex`"
                ) from exc
            with self._shared.lock:
                moved = move_aside(self.path)
                self._shared.ready_inode = None
                self._rebuild_after(f"{self.path} is corrupt ({exc}); moved it to {moved.name}")
            return self._search(query, books, pages, limit, offset, started, snippets, fill)

    def _search(
        self,
        query: str,
        books: list[str] | None,
        pages: tuple[int, int] | None,
        limit: int,
        offset: int,
        started: float,
        snippets: bool,
        fill: int | None,
    ) -> SearchResponse:
        conn = self._conn()
        if not self.corpus.read_only:
            self._sync_stale_books()
        book_nums = self._book_filter(conn, books)
        where, params = rowid_filter(book_nums, pages)
        parsed = read_query(query)
        if not parsed.groups or book_nums == []:
            return SearchResponse(query, 0, offset, limit, _ms(started), [])
        stats = TermStats(conn, self.page_count)
        total, ranked = rank_query(conn, parsed, stats, where, params, offset, limit, fill)
        found = SearchResponse(query, total, offset, limit, 0.0, self._hits(conn, ranked), parsed.groups)
        if snippets:
            found.make_snippets(found.hits)
        found.elapsed_ms = _ms(started)
        return found

    def _hits(self, conn: sqlite3.Connection, ranked: list[tuple[float, int]]) -> list[SearchHit]:
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        stored = {
            r: (label, text)
            for r, label, text in conn.execute(
                f"SELECT id, label, text FROM pages WHERE id IN ({marks})", [r for _, r in ranked]
            )
        }
        names = {num: book for book, num in self._all_book_numbers(conn).items()}
        facts = self.book_facts(names.get(rowid >> PAGE_BITS, "?") for _, rowid in ranked)
        hits = []
        for score, rowid in ranked:
            if rowid not in stored:  # deleted between ranking and reading
                continue
            label, blob = stored[rowid]
            book, page, text = names.get(rowid >> PAGE_BITS, "?"), rowid & PAGE_MASK, unpack(blob)
            if book in facts:  # labels are refitted after the page was indexed: the manifest's, as it is now
                label = facts[book].label(page)
            hits.append(SearchHit(book, page, label, round(score, 4), "", text=text))
        return hits

    def book_facts(self, books: Iterable[str]) -> dict[str, BookFacts]:
        """The printed labels and contents of these books as their manifests say now (see :mod:`.books`);
        a book that cannot be read now is left out."""
        found, fresh = facts_of(self._conn(), self.corpus, books, self._shared.facts)
        if fresh and not self.corpus.read_only:
            self._store_facts(fresh)
        return found

    def _store_facts(self, fresh: list[tuple[int, BookFacts]]) -> None:
        """Keep facts just read for the next process, unless a write is under way (they are read again then)."""
        if not self._shared.write_lock.acquire(blocking=False):
            return
        conn = self._conn()
        try:
            conn.execute(f"PRAGMA busy_timeout={FACTS_WAIT_MS}")
            conn.execute("BEGIN IMMEDIATE")
            for num, facts in fresh:
                store_facts(conn, num, facts)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.debug("bookocr: book facts not stored: %s", exc)
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._shared.write_lock.release()

    def _all_book_numbers(self, conn: sqlite3.Connection) -> dict[str, int]:
        return dict(conn.execute("SELECT book, num FROM books").fetchall())

    def _book_filter(self, conn: sqlite3.Connection, books: list[str] | None) -> list[int] | None:
        if not books:
            return None
        numbers = self._all_book_numbers(conn)
        _check_books(books, sorted(set(numbers) | set(self.corpus.book_ids())))
        return sorted({numbers[b] for b in books if b in numbers})

    # --- keeping the index in line with the corpus ---------------------------------------------
    def _sync_stale_books(self) -> None:
        """Now and then, index books whose manifest lists done pages the index lacks (made before
        indexing, or a failed run). A book whose manifest is the version last found in line is skipped
        unread, so that a library of 1,000 books is checked with a stat per book."""
        shared = self._shared
        if time.monotonic() - shared.last_sync < SYNC_EVERY_S:
            return
        shared.last_sync = time.monotonic()
        conn = self._conn()
        known = {book: (num, stamp) for num, book, stamp in conn.execute("SELECT num, book, stamp FROM books")}
        checked: list[tuple[str, BookFacts]] = []
        for book_id in self.corpus.book_ids():
            num, stamp = known.get(book_id, (None, None))
            now = self._stamp(book_id)
            if now is None or now == stamp or self.corpus.is_locked(book_id):
                continue
            try:
                book = self.corpus.book(book_id)
                if len(book.done_pages()) != (0 if num is None else len(book_rows(conn, num))):
                    self.sync_book(book)
                checked.append((book_id, read_facts(book, now)))
            except (BookOcrError, sqlite3.Error) as exc:
                log.warning("bookocr: could not bring %s into the search index: %s", book_id, exc)
        if checked:
            self._write(lambda conn: _set_checked(conn, checked))


def _set_checked(conn: sqlite3.Connection, checked: list[tuple[str, BookFacts]]) -> int:
    """Record the manifest versions the index was found in line with, and the books' facts read from them."""
    numbers = dict(conn.execute("SELECT book, num FROM books").fetchall())
    for book_id, facts in checked:
        if book_id in numbers:
            conn.execute("UPDATE books SET stamp = ? WHERE num = ?", (facts.stamp, numbers[book_id]))
            store_facts(conn, numbers[book_id], facts)
    return len(checked)


def _book_pages(book: Book, numbers: Iterable[int]) -> Iterator[tuple[str, int, str, str | None]]:
    for number in numbers:
        view = book.read_page(number)
        if view.damage:
            log.warning(
                "bookocr: page %d of book %s is not searchable: %s; `bookocr ocr` redoes it",
                number,
                book.id,
                view.damage,
            )
        elif view.status in DONE_STATUSES:
            yield book.id, number, view.markdown, view.label


def _check_paging(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise BookOcrError(f"limit {limit!r} is out of range: use 1-{MAX_LIMIT}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BookOcrError(f"offset {offset!r} is out of range: use 0 or more")


def _check_books(books: list[str] | None, known: list[str]) -> None:
    unknown = [b for b in books or [] if b not in known]
    if unknown:
        listed = ", ".join(known) or "none yet; run `bookocr ocr FILE` first"
        raise UnknownBookError(f"no book {', '.join(map(repr, unknown))} in the library; books: {listed}")


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def index_listener(corpus: Corpus) -> Callable[[Book, PageResult], None]:
    """A runner page listener that indexes pages as they land and never stops the run.

    If indexing fails (disk full, a locked index), the run goes on; the next search or run
    brings the book's pages into the index from its files.
    """
    index = SearchIndex(corpus)
    failed = threading.Event()

    def listen(book: Book, result: PageResult) -> None:
        if failed.is_set():
            return
        try:
            index.page_listener(book, result)
        except Exception as exc:  # the OCR run matters more than its index
            failed.set()
            log.warning(
                "bookocr: search indexing stopped for %s (%s); run `bookocr reindex %s` later", book.id, exc, book.id
            )

    return listen


def sync_book_quietly(corpus: Corpus, book: Book) -> None:
    """Bring a book's index in line with its manifest before a run; problems are logged, not raised."""
    try:
        SearchIndex(corpus).sync_book(book)
    except Exception as exc:
        log.warning("bookocr: could not update the search index for %s: %s", book.id, exc)
