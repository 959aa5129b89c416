"""Full-text search over the library: one SQLite FTS5 index per corpus, BM25 ranking.

The index (``CORPUS/index.sqlite``) is derived data: every page's clean markdown, normalised by
:mod:`server.normalize`, in a contentless FTS5 table, beside a ``pages`` table that keeps the
page text (for snippets) and its terms (for proximity and exact deletes), both compressed.
Pages are added as the runner writes them, so a book can be searched while its OCR runs;
``reindex`` rebuilds everything from the ``.mmd`` files.

A query runs as a ladder of ever looser match tiers, and every hit of a tier ranks above every
hit of the next; a looser tier is only tried while the stricter ones found too few pages:

  3  exact        every term (and quoted phrase) as typed, after normalisation
  2  corrected    terms missing from the index vocabulary replaced by near spellings
  1  fuzzy        every term also matched to near spellings (finds OCR errors like posteri0r)
  0  partial      all terms but one

Near spellings (rapidfuzz, 1 edit for 4-7 letters, 2 from 8) of a term the index lacks are kept
unless they are misreadings of a far more common one; an indexed term is only widened to spellings
far rarer or far more common than itself (posteri0r beside posterior; never word4 beside word5).
Quoted phrases skip tier 1. ``total`` counts the pages of every tier that was searched. In large
libraries a single term on over a fifth of the pages (x, 1, i in formulas) is left out of the
FTS5 match, which it would slow down, and counts only in the ranking.

A query typed as a phrase or formula (four terms or more, stopwords counted) splits each tier:
pages where its terms stand together (FTS5 NEAR) come first. Within a step, pages are ordered by
BM25 over the query's terms (a term's accepted spellings counted as one term) times a proximity
factor that rewards the terms close together, in the typed order, and the whole typed run of
words (stopwords too) found as typed. ``score`` is ``tier`` + 0.5 where the terms stand together
+ 0.5 * relevance / (1 + relevance), so scores fall down the list and the integer part is the tier.

Thread safety: one connection per thread (WAL mode, busy timeout), one writer per process at
a time; any number of threads may search while a run writes pages.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA

from ocr_backend.engines.base import PageResult
from ocr_backend.errors import BookOcrError
from server.corpus import DONE_STATUSES, Book, Corpus, PageRangeError, UnknownBookError
from server.normalize import NORMALIZER_VERSION, normalize, terms, tokenize_fast

log = logging.getLogger(__name__)

INDEX_FILE = "index.sqlite"
INDEX_FORMAT = "bookocr-search/1"
PAGE_BITS = 20  # rowid = book number << PAGE_BITS | page: a book's pages are one rowid range
PAGE_MASK = (1 << PAGE_BITS) - 1
MAX_LIMIT = 200
MAX_QUERY_TERMS = 32
MAX_SEQUENCE = 64
POSITIONS_KEPT = 64  # per group and page, for the proximity measures
RERANK_BLOCK = 100  # BM25 order is re-ranked by proximity in fixed blocks, so paging is stable ...
RERANK_FIRST = 200  # ... the first one larger, for queries of several terms (the block a page must reach)
MAX_EXPANSIONS = 8  # near spellings kept per query term
MAX_PHRASE_VARIANTS = 16
OCR_VARIANT_RARITY = 2  # an indexed term also matches near spellings on at most 1/2 as many pages ...
TYPO_RARITY = 10  # ... or on at least 10 times as many
MISREADING_SHARE = 100  # a mistyped term's near spellings on under 1/100 as many pages as the best are dropped
BM25_K1, BM25_B = 1.2, 0.5  # b below the usual 0.75: a page is a fixed unit, and long ones are not padded
PHRASE_LIKE_TERMS = 4  # a query of this many terms (stopwords too) is a typed phrase or formula ...
NEAR_SLACK = 4  # ... whose terms "stand together" within its length plus this many tokens
COMMON_SHARE = 0.2  # a single term on more than this share of pages is not required by the match ...
COMMON_MIN_PAGES = 2000  # ... in libraries this large (smaller ones are cheap to match exactly)
SNIPPET_CHARS = 220
SYNC_EVERY_S = 10.0  # how often a search checks the index against the books' manifests
BUSY_TIMEOUT_MS = 15_000
PROXIMITY_WEIGHT = 0.5  # weight of "all terms inside a short window"
ORDER_WEIGHT = 0.5  # weight of "consecutive terms adjacent, in the typed order"
SEQUENCE_WEIGHT = 3.0  # weight of "the typed words, stopwords too, run on the page as typed" (squared share)

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how if in into is it its itself just me more most my no nor not now of off on once only or
    other our ours out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours
    """.split()
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS books(num INTEGER PRIMARY KEY, book TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS pages(
    id INTEGER PRIMARY KEY,  -- book num << {PAGE_BITS} | page
    label TEXT,
    gen INTEGER NOT NULL,    -- write generation, lets readers pick up new vocabulary cheaply
    text BLOB NOT NULL,      -- zlib: the page markdown, for snippets
    norm BLOB NOT NULL       -- zlib: its normalised terms, for proximity and exact deletes
);
CREATE INDEX IF NOT EXISTS pages_gen ON pages(gen);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    body, content='', detail=full, tokenize='unicode61 remove_diacritics 0'
);
"""


class SearchIndexError(BookOcrError):
    pass


# --- results -----------------------------------------------------------------------------
@dataclass
class SearchHit:
    book: str
    page: int
    label: str | None
    score: float
    snippet: str  # matched words marked with **…**

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResponse:
    query: str
    total: int
    offset: int
    limit: int
    elapsed_ms: float
    hits: list[SearchHit]

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "elapsed_ms": self.elapsed_ms,
            "hits": [hit.as_dict() for hit in self.hits],
        }


def search_library(
    corpus: Corpus,
    query: str,
    *,
    books: list[str] | None = None,
    pages: tuple[int, int] | None = None,
    limit: int = 10,
    offset: int = 0,
) -> SearchResponse:
    """Search the library (the call both the CLI and the MCP server make)."""
    return SearchIndex(corpus).search(query, books=books, pages=pages, limit=limit, offset=offset)


# --- query parsing -----------------------------------------------------------------------
@dataclass
class QueryGroup:
    """One unit every hit must contain: a term, or a quoted phrase (several terms)."""

    terms: tuple[str, ...]
    position: int  # where its first term stands among the query's terms (stopwords counted)
    variants: list[tuple[str, ...]] = field(default_factory=list)  # accepted spellings, exact first
    common: bool = False  # on so many pages that matching it costs much and tells little (x, 1, i)
    pages: int = 0  # pages holding its term (0 for phrases)

    def expression(self) -> str:
        return " OR ".join(f'"{" ".join(v)}"' for v in self.variants)


@dataclass
class ParsedQuery:
    groups: list[QueryGroup]
    sequence: list[str]  # every term in the typed order, stopwords included (rewarded when a page has them so)
    quoted_only: bool  # only "phrases": the user asked for these words exactly


def read_query(query: str) -> ParsedQuery:
    """Terms and "quoted phrases" of a query; stopwords dropped outside quotes when other terms remain."""
    pieces = query.split('"')
    if len(pieces) % 2 == 0:  # an unclosed quote quotes nothing
        pieces = [" ".join(pieces)]
    groups: list[QueryGroup] = []
    quoted: list[bool] = []
    sequence: list[str] = []
    for index, piece in enumerate(pieces):
        found = terms(piece)
        if index % 2 == 1 and found:
            groups.append(QueryGroup(tuple(found), len(sequence)))
            quoted.append(True)
        else:
            groups.extend(QueryGroup((term,), len(sequence) + i) for i, term in enumerate(found))
            quoted.extend([False] * len(found))
        sequence.extend(found)
    kept = [(g, q) for g, q in zip(groups, quoted) if q or g.terms[0] not in STOPWORDS] or list(zip(groups, quoted))
    kept = kept[:MAX_QUERY_TERMS]
    for group, _ in kept:
        group.variants = [group.terms]
    return ParsedQuery([g for g, _ in kept], sequence[:MAX_SEQUENCE], bool(kept) and all(q for _, q in kept))


def parse_query(query: str) -> list[QueryGroup]:
    return read_query(query).groups


def max_edits(term: str) -> int:
    """Edit distance allowed when matching a term to near spellings (none for numbers and short terms)."""
    if len(term) < 4 or term.isdigit() or term in STOPWORDS:
        return 0
    return 1 if len(term) < 8 else 2


# --- the vocabulary, for near spellings ----------------------------------------------------
def _char_bit(char: str) -> int:
    if "a" <= char <= "z":
        return 1 << (ord(char) - 97)
    if "0" <= char <= "9":
        return 1 << 26
    return 1 << (27 + ord(char) % 5)


def _char_mask(term: str) -> int:
    mask = 0
    for char in set(term):
        mask |= _char_bit(char)
    return mask


class Vocabulary:
    """Every indexed term with its page count, kept in memory per process and index file.

    Near spellings are found with rapidfuzz (OSA edit distance) among terms of a close length
    whose letter sets differ little: d edits change at most 2d bits of a term's letter mask,
    a filter numpy applies to a whole length bucket at once.
    """

    def __init__(self, epoch: str, generation: int, doc_freq: dict[str, int], pages: int) -> None:
        self.epoch = epoch
        self.generation = generation
        self.doc_freq = doc_freq
        self.pages = pages
        self._buckets: dict[int, tuple[list[str], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._add_terms(list(doc_freq))

    def __contains__(self, term: str) -> bool:
        return self.doc_freq.get(term, 0) > 0

    def __len__(self) -> int:
        return sum(len(names) for names, _ in self._buckets.values())

    def add_pages(self, page_terms: Iterable[Iterable[str]], generation: int, pages: int) -> None:
        with self._lock:
            if generation <= self.generation:  # another thread brought it up to date meanwhile
                return
            self.pages = pages
            new: list[str] = []
            for found in page_terms:
                for term in set(found):
                    count = self.doc_freq.get(term, 0)
                    if count == 0:
                        new.append(term)
                    self.doc_freq[term] = count + 1
            self._add_terms(new)
            self.generation = max(self.generation, generation)

    def _add_terms(self, new: list[str]) -> None:
        by_length: dict[int, list[str]] = {}
        for term in new:
            by_length.setdefault(len(term), []).append(term)
        buckets = dict(self._buckets)  # copy on write: a concurrent reader keeps the buckets it took
        for length, names in by_length.items():
            masks = np.fromiter((_char_mask(t) for t in names), dtype=np.uint32, count=len(names))
            old_names, old_masks = buckets.get(length, ([], np.zeros(0, dtype=np.uint32)))
            buckets[length] = (old_names + names, np.concatenate([old_masks, masks]))
        self._buckets = buckets

    def near(self, term: str, keep: Callable[[str], bool] | None = None, limit: int | None = MAX_EXPANSIONS) -> list[str]:
        """Indexed terms within :func:`max_edits` of ``term`` that ``keep`` accepts, closest and most common first."""
        edits = max_edits(term)
        if edits == 0:
            return []
        mask, buckets = _char_mask(term), self._buckets
        candidates: list[str] = []
        for length in range(len(term) - edits, len(term) + edits + 1):
            names, masks = buckets.get(length, ([], None))
            if names:
                count = min(len(names), len(masks))
                candidates.extend(names[i] for i in np.flatnonzero(_popcount(masks[:count] ^ mask) <= 2 * edits))
        found = process.extract(term, candidates, scorer=OSA.distance, score_cutoff=edits, limit=None)
        ranked = sorted((dist, -self.doc_freq.get(name, 0), name) for name, dist, _ in found if name != term)
        return [name for _, count, name in ranked if count < 0 and (keep is None or keep(name))][:limit]


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(values)
    return _BYTE_BITS[values.view(np.uint8)].reshape(-1, 4).sum(axis=1)


# --- the index ---------------------------------------------------------------------------
class TermStats:
    """Page counts of terms for one search: from the vocabulary when this process holds it, else
    looked up term by term, so that a query the exact tier answers never waits for the whole of it."""

    def __init__(self, index: SearchIndex, conn: sqlite3.Connection) -> None:
        self._index = index
        self._conn = conn
        self._vocab = index.vocabulary(load=False)
        self._counts: dict[str, int] = {}
        self.pages = self._vocab.pages if self._vocab else index.page_count()

    def doc_freq(self, term: str) -> int:
        if self._vocab is not None:
            return self._vocab.doc_freq.get(term, 0)
        if term not in self._counts:
            row = self._conn.execute("SELECT doc FROM temp.vocab WHERE term = ?", (term,)).fetchone()
            self._counts[term] = int(row[0]) if row else 0
        return self._counts[term]

    def __contains__(self, term: str) -> bool:
        return self.doc_freq(term) > 0

    def near(self, term: str, keep: Callable[[str], bool] | None = None, limit: int | None = MAX_EXPANSIONS) -> list[str]:
        if self._vocab is None:
            self._vocab = self._index.vocabulary()
        assert self._vocab is not None
        return self._vocab.near(term, keep, limit)


class _Shared:
    """Per-process state of one index file, shared by every SearchIndex on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = str(path.parent)
        self.lock = threading.RLock()  # opening, validating and rebuilding
        self.write_lock = threading.Lock()  # one writer per process; busy timeout across processes
        self.local = threading.local()
        self.ready_inode: int | None = None
        self.vocabulary: Vocabulary | None = None
        self.last_sync = 0.0
        self.manifests: dict[str, tuple[tuple[int, int], dict[int, str | None], set[int]]] = {}
        self.notice: str | None = None


_SHARED: dict[Path, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _shared_for(path: Path) -> _Shared:
    shared = _SHARED.get(path)
    if shared is None:
        key = path.resolve()
        with _SHARED_LOCK:
            shared = _SHARED.setdefault(key, _SHARED.get(key) or _Shared(key))
            _SHARED[path] = shared
    return shared


def _pack(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), 1)


def _unpack(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8")


class SearchIndex:
    """The library's search index: ``CORPUS/index.sqlite``."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.path = corpus.root / INDEX_FILE
        self._shared = _shared_for(self.path)

    @property
    def notice(self) -> str | None:
        """The last message about the index file being rebuilt, if any."""
        return self._shared.notice

    # --- connections and validation ------------------------------------------------------
    def _conn(self, rebuild: bool = True) -> sqlite3.Connection:
        shared = self._shared
        local = shared.local
        inode = _inode(self.path)
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and inode is not None and local.inode == inode == shared.ready_inode:
            return conn
        if conn is not None:
            conn.close()
            local.conn = None
        with shared.lock:
            if inode is None or inode != shared.ready_inode:
                self._open_or_rebuild(rebuild)
            conn = _connect(self.path)
            local.conn, local.inode = conn, shared.ready_inode
        return conn

    def _open_or_rebuild(self, rebuild: bool) -> None:
        """Make the file a valid index of this version, rebuilding it when it is missing, foreign or corrupt."""
        shared = self._shared
        shared.vocabulary = None
        self.corpus.root.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        if existed:
            problem = _check_index_file(self.path)
            if problem == "normalizer":
                self._rebuild_after(f"search index {self.path} was made by another text normalisation", rebuild)
                return
            if problem:
                moved = _move_aside(self.path)
                self._rebuild_after(f"{self.path} is not a usable bookocr search index ({problem}); moved it to {moved.name}", rebuild)
                return
            shared.ready_inode = _inode(self.path)
            return
        with _connect(self.path) as conn:
            _create_schema(conn)
        shared.ready_inode = _inode(self.path)
        if rebuild and self.corpus.book_ids():
            self._rebuild_after(f"search index {self.path} was missing", rebuild)

    def _rebuild_after(self, reason: str, rebuild: bool = True) -> None:
        shared = self._shared
        if not self.path.exists() or _check_index_file(self.path) not in (None, "normalizer"):
            with _connect(self.path) as conn:
                _create_schema(conn)
        shared.ready_inode = _inode(self.path)
        if not rebuild:
            shared.notice = f"{reason}; starting a new index"
            log.warning("bookocr: %s", shared.notice)
            return
        conn = _connect(self.path)
        try:
            count = self._rebuild_all(conn)
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
            source = self.corpus.book(book)  # raises UnknownBookError listing the books
            return self._write(lambda conn: self._replace_book(conn, source))
        self._conn(rebuild=False)  # a missing or broken file becomes an empty index first
        return self._write(self._rebuild_all_locked)

    def sync_book(self, book: Book | str) -> int:
        """Bring one book's index in line with its manifest: add done pages missing, drop others. Returns pages changed."""
        source = book if isinstance(book, Book) else self.corpus.book(book)
        done = {n for n, meta in enumerate(source.pages, 1) if meta and meta.get("status") in DONE_STATUSES}
        conn = self._conn()
        num = self._book_number(conn, source.id, create=False)
        indexed = set() if num is None else {rowid & PAGE_MASK for (rowid,) in conn.execute(
            "SELECT id FROM pages WHERE id BETWEEN ? AND ?", (num << PAGE_BITS, (num << PAGE_BITS) | PAGE_MASK))}
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
            self.add_page(book.id, result.number, result.markdown, book.page_meta(result.number).get("label"))
        else:
            self.remove_page(book.id, result.number)

    def _write(self, action: Any) -> int:
        conn = self._conn()
        with self._shared.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = action(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return count

    def _next_generation(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        generation = int(row[0]) + 1 if row else 1
        conn.execute("INSERT OR REPLACE INTO meta VALUES('generation', ?)", (str(generation),))
        return generation

    def _book_number(self, conn: sqlite3.Connection, book: str, create: bool) -> int | None:
        """The book's number, read in the caller's transaction: another process may have rebuilt the index."""
        row = conn.execute("SELECT num FROM books WHERE book=?", (book,)).fetchone()
        if row is None and create:
            conn.execute("INSERT INTO books(book) VALUES(?)", (book,))
            row = conn.execute("SELECT num FROM books WHERE book=?", (book,)).fetchone()
        return None if row is None else int(row[0])

    def _insert_pages(self, conn: sqlite3.Connection, pages: Iterable[tuple[str, int, str, str | None]]) -> int:
        generation = self._next_generation(conn)
        numbers: dict[str, int | None] = {}
        fts_rows: list[tuple[int, str]] = []
        page_rows: list[tuple[int, str | None, int, bytes, bytes]] = []
        for book, page, markdown, label in pages:
            if not isinstance(page, int) or not 1 <= page <= PAGE_MASK:
                raise PageRangeError(f"page {page!r} cannot be indexed: pages are numbered 1-{PAGE_MASK}")
            if book not in numbers:
                numbers[book] = self._book_number(conn, book, create=True)
            rowid = int(numbers[book] or 0) << PAGE_BITS | page
            body = normalize(markdown)
            fts_rows.append((rowid, body))
            page_rows.append((rowid, label, generation, _pack(markdown), _pack(body)))
        self._delete_rows(conn, [row[0] for row in page_rows])
        conn.executemany("INSERT INTO fts(rowid, body) VALUES(?, ?)", fts_rows)
        conn.executemany("INSERT INTO pages(id, label, gen, text, norm) VALUES(?, ?, ?, ?, ?)", page_rows)
        _count_pages(conn, len(page_rows))
        return len(page_rows)

    def _delete_rows(self, conn: sqlite3.Connection, rowids: list[int]) -> int:
        """Delete pages; a contentless FTS5 row is deleted by handing back exactly the terms it was given."""
        deleted = 0
        for start in range(0, len(rowids), 500):
            chunk = rowids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            old = conn.execute(f"SELECT id, norm FROM pages WHERE id IN ({marks})", chunk).fetchall()
            conn.executemany("INSERT INTO fts(fts, rowid, body) VALUES('delete', ?, ?)", [(i, _unpack(n)) for i, n in old])
            conn.execute(f"DELETE FROM pages WHERE id IN ({marks})", chunk)
            deleted += len(old)
        _count_pages(conn, -deleted)
        return deleted

    def _replace_book(self, conn: sqlite3.Connection, book: Book) -> int:
        num = self._book_number(conn, book.id, create=True)
        assert num is not None
        rowids = [r for (r,) in conn.execute("SELECT id FROM pages WHERE id BETWEEN ? AND ?", (num << PAGE_BITS, num << PAGE_BITS | PAGE_MASK))]
        self._delete_rows(conn, rowids)
        done = [n for n, meta in enumerate(book.pages, 1) if meta and meta.get("status") in DONE_STATUSES]
        return self._insert_pages(conn, _book_pages(book, done))

    def _rebuild_all_locked(self, conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO fts(fts) VALUES('delete-all')")
        conn.execute("DELETE FROM pages")  # book numbers stay: a search running meanwhile still names its hits right
        conn.execute("INSERT OR REPLACE INTO meta VALUES('pages', '0')")
        conn.execute("INSERT OR REPLACE INTO meta VALUES('epoch', ?)", (uuid.uuid4().hex,))
        conn.execute("INSERT OR REPLACE INTO meta VALUES('normalizer', ?)", (str(NORMALIZER_VERSION),))
        self._shared.vocabulary = None
        count = 0
        book_ids = self.corpus.book_ids()
        for book_id in book_ids:
            try:
                book = self.corpus.book(book_id)
            except BookOcrError as exc:
                log.warning("bookocr: not indexing %s: %s", book_id, exc)
                continue
            count += self._replace_book(conn, book)
        marks = ",".join("?" * len(book_ids))
        conn.execute(f"DELETE FROM books WHERE book NOT IN ({marks}) AND num NOT IN (SELECT DISTINCT id >> {PAGE_BITS} FROM pages)", book_ids)
        return count

    def _rebuild_all(self, conn: sqlite3.Connection) -> int:
        with self._shared.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = self._rebuild_all_locked(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return count

    # --- reading ---------------------------------------------------------------------------
    def book_ids(self) -> list[str]:
        return [b for (b,) in self._conn().execute("SELECT book FROM books ORDER BY book")]

    def page_count(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'pages'").fetchone()
        return int(row[0]) if row else 0

    def vocabulary(self, load: bool = True) -> Vocabulary | None:
        """The in-memory vocabulary, brought up to date with pages written since it was read.

        Reading it whole takes a while in a large library (0.4 s at 50,000 pages), so a search
        only asks for it (``load``) once it needs near spellings.
        """
        conn = self._conn()
        shared = self._shared
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('epoch', 'generation', 'pages')").fetchall())
        epoch, generation = meta.get("epoch", ""), int(meta.get("generation", 0))
        vocab = shared.vocabulary
        if vocab is None or vocab.epoch != epoch:
            if not load:
                return None
            vocab = Vocabulary(epoch, generation, dict(conn.execute("SELECT term, doc FROM temp.vocab")), int(meta.get("pages", 0)))
            shared.vocabulary = vocab
        elif vocab.generation < generation:
            rows = conn.execute("SELECT norm FROM pages WHERE gen > ?", (vocab.generation,)).fetchall()
            vocab.add_pages((_unpack(norm).split() for (norm,) in rows), generation, int(meta.get("pages", 0)))
        return vocab

    def search(
        self,
        query: str,
        *,
        books: list[str] | None = None,
        pages: tuple[int, int] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> SearchResponse:
        started = time.perf_counter()
        limit, offset = _check_paging(limit, offset)
        if not self.corpus.root.is_dir():
            _check_books(books, [])
            return SearchResponse(query, 0, offset, limit, _ms(started), [])
        try:
            return self._search(query, books, pages, limit, offset, started)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_corruption(exc):
                raise SearchIndexError(f"the search index {self.path} cannot be read ({exc}); try again, or run `bookocr reindex`") from exc
            with self._shared.lock:
                moved = _move_aside(self.path)
                self._shared.ready_inode = None
                self._rebuild_after(f"{self.path} is corrupt ({exc}); moved it to {moved.name}")
            return self._search(query, books, pages, limit, offset, started)

    def _search(self, query: str, books: list[str] | None, pages: tuple[int, int] | None, limit: int, offset: int, started: float) -> SearchResponse:
        conn = self._conn()
        self._sync_stale_books()
        book_nums = self._book_filter(conn, books)
        where, params = _filter_sql(book_nums, pages)
        parsed = read_query(query)
        groups = parsed.groups
        if not groups or book_nums == []:
            return SearchResponse(query, 0, offset, limit, _ms(started), [])
        plan = _TierPlan(parsed, TermStats(self, conn))
        needed = offset + limit
        ranked: list[tuple[float, int]] = []  # (score, rowid) for the hits of this page of results
        total = 0
        earlier: list[str] = []
        step: _Step | None = None
        for step in plan.steps(lambda: total < needed):
            match = step.match if not earlier else f"({step.match}) NOT ({' OR '.join(f'({m})' for m in earlier)})"
            found = self._rank_tier(conn, match, where, params, parsed, plan.stats, step.band, max(0, offset - total), needed - total)
            ranked.extend(found.hits)
            total += found.size
            earlier.append(step.match)
        if step is not None and step.match != step.tier_match:  # stopped inside a tier: count all of it
            total = int(conn.execute(f"SELECT count(*) FROM fts WHERE fts MATCH ?{where}", [step.tier_match, *params]).fetchone()[0])
        hits = self._hits(conn, ranked[:limit], groups)
        return SearchResponse(query, total, offset, limit, _ms(started), hits)

    def _rank_tier(self, conn: sqlite3.Connection, match: str, where: str, params: list[Any], parsed: ParsedQuery, stats: TermStats, band: float, start: int, stop: int) -> _TierRows:
        """The tier's size and its hits ranked start..stop (BM25 re-ranked by proximity in fixed blocks)."""
        hits: list[tuple[float, int]] = []
        size: int | None = None
        first = RERANK_FIRST if len(parsed.groups) > 1 else RERANK_BLOCK
        if stop > start:
            for block in range(_block_of(start, first), _block_of(stop - 1, first) + 1):
                lo, hi = _block_bounds(block, first)
                rows = conn.execute(
                    f"SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ?{where} ORDER BY rank LIMIT ? OFFSET ?",
                    [match, *params, hi - lo, lo],
                ).fetchall()
                if len(rows) < hi - lo:
                    size = lo + len(rows)
                reranked = self._rerank(conn, rows, parsed, band, stats)
                hits.extend(reranked[max(start - lo, 0):max(0, min(stop - lo, len(reranked)))])
                if size is not None:
                    break
        if size is None:
            size = int(conn.execute(f"SELECT count(*) FROM fts WHERE fts MATCH ?{where}", [match, *params]).fetchone()[0])
        return _TierRows(size, hits)

    def _rerank(self, conn: sqlite3.Connection, rows: list[tuple[int, float]], parsed: ParsedQuery, band: float, stats: TermStats) -> list[tuple[float, int]]:
        """Order one block: FTS5's BM25 for one exact term or phrase; else BM25 over the query's groups
        (a group's spellings count as one term, so a rare misspelling weighs no more than the word)
        times the proximity factor."""
        if not rows:
            return []
        if len(parsed.groups) == 1 and band >= 3:
            scored = [(-bm25, rowid) for rowid, bm25 in rows]
        else:
            marks = ",".join("?" * len(rows))
            pages = {rowid: _unpack(norm) for rowid, norm in conn.execute(f"SELECT id, norm FROM pages WHERE id IN ({marks})", [r for r, _ in rows])}
            average = sum(text.count(" ") + 1 for text in pages.values()) / max(1, len(pages))
            weights = group_idf(parsed.groups, stats)
            options = sequence_options(parsed)
            matcher = PageMatcher(parsed.groups)
            scored = [(page_relevance(pages.get(rowid, ""), matcher, options, weights, average), rowid) for rowid, _ in rows]
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [(band + 0.5 * relevance / (1.0 + relevance), rowid) for relevance, rowid in scored]

    def _hits(self, conn: sqlite3.Connection, ranked: list[tuple[float, int]], groups: list[QueryGroup]) -> list[SearchHit]:
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        stored = {r: (label, text) for r, label, text in conn.execute(f"SELECT id, label, text FROM pages WHERE id IN ({marks})", [r for _, r in ranked])}
        names = {num: book for book, num in self._all_book_numbers(conn).items()}
        hits = []
        for score, rowid in ranked:
            if rowid not in stored:  # deleted between ranking and reading
                continue
            label, blob = stored[rowid]
            book, page = names.get(rowid >> PAGE_BITS, "?"), rowid & PAGE_MASK
            label = self._manifest_label(book, page, label)
            hits.append(SearchHit(book, page, label, round(score, 4), make_snippet(_unpack(blob), groups)))
        return hits

    def _all_book_numbers(self, conn: sqlite3.Connection) -> dict[str, int]:
        return dict(conn.execute("SELECT book, num FROM books").fetchall())

    def _book_filter(self, conn: sqlite3.Connection, books: list[str] | None) -> list[int] | None:
        if not books:
            return None
        numbers = self._all_book_numbers(conn)
        _check_books(books, sorted(set(numbers) | set(self.corpus.book_ids())))
        return sorted({numbers[b] for b in books if b in numbers})

    # --- keeping the index in line with the corpus ---------------------------------------------
    def _manifest(self, book: str) -> tuple[dict[int, str | None], set[int]] | None:
        """A book's page labels and done pages from its manifest, cached until the file changes."""
        path = os.path.join(self._shared.root, book, "manifest.json")
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._shared.manifests.get(book)
        if cached and cached[0] == key:
            return cached[1], cached[2]
        try:
            with open(path, encoding="utf-8") as fh:
                pages = json.load(fh)["pages"]
        except (OSError, ValueError, KeyError):
            return None
        labels = {n: meta.get("label") for n, meta in enumerate(pages, 1) if meta and meta.get("label")}
        done = {n for n, meta in enumerate(pages, 1) if meta and meta.get("status") in DONE_STATUSES}
        self._shared.manifests[book] = (key, labels, done)
        return labels, done

    def _manifest_label(self, book: str, page: int, indexed: str | None) -> str | None:
        found = self._manifest(book)
        if found is None:
            return indexed
        return found[0].get(page, indexed)

    def _sync_stale_books(self) -> None:
        """Now and then, index books whose manifest lists done pages the index lacks (made before indexing, or a failed run)."""
        shared = self._shared
        if time.monotonic() - shared.last_sync < SYNC_EVERY_S:
            return
        shared.last_sync = time.monotonic()
        conn = self._conn()
        counts = dict(conn.execute("SELECT id >> ?, count(*) FROM pages GROUP BY id >> ?", (PAGE_BITS, PAGE_BITS)).fetchall())
        numbers = self._all_book_numbers(conn)
        for book_id in self.corpus.book_ids():
            found = self._manifest(book_id)
            if found is None or len(found[1]) == counts.get(numbers.get(book_id, -1), 0) or self.corpus.is_locked(book_id):
                continue
            try:
                self.sync_book(book_id)
            except (BookOcrError, sqlite3.Error) as exc:
                log.warning("bookocr: could not bring %s into the search index: %s", book_id, exc)


def _block_of(position: int, first: int) -> int:
    return 0 if position < first else 1 + (position - first) // RERANK_BLOCK


def _block_bounds(block: int, first: int) -> tuple[int, int]:
    if block == 0:
        return 0, first
    lo = first + (block - 1) * RERANK_BLOCK
    return lo, lo + RERANK_BLOCK


@dataclass
class _Step:
    band: float  # the score floor of its hits: the tier, + 0.5 where the terms stand together
    match: str  # its FTS5 expression (earlier steps' pages are excluded when it runs)
    tier_match: str  # the whole tier's expression (for the total when the ladder stops inside a tier)


@dataclass
class _TierRows:
    size: int
    hits: list[tuple[float, int]]


class _TierPlan:
    """The query's match tiers, strictest first, each a superset of the one before."""

    def __init__(self, parsed: ParsedQuery, stats: TermStats) -> None:
        self.groups = groups = parsed.groups
        self.quoted_only = parsed.quoted_only
        self.stats = stats
        self._near: dict[str, list[str]] = {}
        self.phrase_like = len(parsed.sequence) >= PHRASE_LIKE_TERMS and not parsed.quoted_only
        for group in groups:
            group.pages = stats.doc_freq(group.terms[0]) if len(group.terms) == 1 else 0
            group.common = stats.pages >= COMMON_MIN_PAGES and group.pages > COMMON_SHARE * stats.pages
        self.sequence_length = len(parsed.sequence)

    def steps(self, wanted: Callable[[], bool]) -> Iterator[_Step]:
        """The ladder of match steps, strictest first; ``wanted()`` says whether more hits are still needed.

        A typed phrase or formula splits each tier in two: first the pages where its terms stand
        together (FTS5 NEAR), then the rest, so that proximity decides which pages are ranked at all.
        """
        for tier, expression in self._tiers(wanted):
            near = self._near_expression(tier) if self.phrase_like and tier != 1 else ""
            if near:
                yield _Step(tier + 0.5, f"({expression}) AND ({near})", expression)
                if not wanted():
                    return
            yield _Step(float(tier), expression, expression)

    def _tiers(self, wanted: Callable[[], bool]) -> Iterator[tuple[int, str]]:
        groups, stats = self.groups, self.stats
        unknown = {t for g in groups for t in g.terms if t not in stats}
        previous = ""
        if not unknown:
            previous = _and(groups)
            yield 3, previous
        if unknown and wanted():
            self._expand(lambda t: t in unknown)
            expression = _and(groups)
            if expression and expression != previous:
                previous = expression
                yield 2, expression
        if wanted() and not self.quoted_only:  # quotes ask for the words as typed: no OCR variants of them
            self._expand(lambda t: True)
            expression = _and(groups)
            if expression and expression != previous:
                previous = expression
                yield 1, expression
        if wanted():
            expression = _all_but_one(groups)
            if expression and expression != previous:
                yield 0, expression

    def _near_expression(self, tier: int) -> str:
        """NEAR over each group's first spelling (all groups, or each all-but-one set for the partial tier)."""
        required = _matched(self.groups)
        sets = [required] if tier > 0 else [[g for g in required if g is not skip] for skip in required]
        options = []
        for chosen in sets:
            if len(chosen) >= 2 and all(g.variants for g in chosen):
                phrases = " ".join(f'"{" ".join(g.variants[0])}"' for g in chosen)
                options.append(f"NEAR({phrases}, {self.sequence_length - len(chosen) + NEAR_SLACK})")
        return " OR ".join(options)

    def _expand(self, expand: Callable[[str], bool]) -> None:
        for group in self.groups:
            options = [self._spellings(term, expand(term)) for term in group.terms]
            while _product_size(options) > MAX_PHRASE_VARIANTS:
                max(options, key=len).pop()
            group.variants = list(itertools.product(*options))

    def _spellings(self, term: str, expand: bool) -> list[str]:
        """The term itself when indexed, then (when expanding) its near spellings, best first.

        An indexed term is only widened to spellings far rarer or far more common than itself: one of
        the two then looks like a misreading of the other, while two spellings about as common are two
        words (word4 and word5).
        """
        if term not in self.stats:
            if expand and term not in self._near:
                self._near[term] = self._likely_meant(term)
            return self._near.get(term, []) if expand else []
        if not expand:
            return [term]
        if term not in self._near:
            self._near[term] = self.stats.near(term, keep=self._unlike_in_frequency(term))
        return [term] + self._near[term]

    def _likely_meant(self, term: str) -> list[str]:
        """Near spellings of a term the index lacks, without the misreadings of them: a typed word's
        neighbours include many one-page OCR errors, which would outrank the word itself."""
        found = self.stats.near(term, limit=None)
        top = max((self.stats.doc_freq(name) for name in found), default=0)
        return [name for name in found if self.stats.doc_freq(name) * MISREADING_SHARE >= top][:MAX_EXPANSIONS]

    def _unlike_in_frequency(self, term: str) -> Callable[[str], bool]:
        """Accept a near spelling of an indexed term when one of the two is far rarer than the other."""
        doc_freq = self.stats.doc_freq
        own = doc_freq(term)
        return lambda other: doc_freq(other) * OCR_VARIANT_RARITY <= own or own * TYPO_RARITY <= doc_freq(other)


def _product_size(options: list[list[str]]) -> int:
    size = 1
    for option in options:
        size *= len(option)
    return size


def _matched(groups: list[QueryGroup]) -> list[QueryGroup]:
    """The groups the FTS5 expression requires: common single terms are left to the re-rank, as long
    as two groups (or all there are) remain; then the rarest common ones are kept."""
    rare = [g for g in groups if not g.common]
    wanted = min(2, len(groups))
    if len(rare) >= wanted:
        return rare
    common = sorted((g for g in groups if g.common), key=lambda g: g.pages)
    kept = {id(g) for g in rare + common[:wanted - len(rare)]}
    return [g for g in groups if id(g) in kept]


def _and(groups: list[QueryGroup]) -> str:
    required = _matched(groups)
    if any(not g.variants for g in required):
        return ""
    return " AND ".join(f"({g.expression()})" for g in required)


def _all_but_one(groups: list[QueryGroup]) -> str:
    required = _matched(groups)
    if len(required) < 2:
        return ""
    options = []
    for skip in range(len(required)):
        expression = _and([g for i, g in enumerate(required) if i != skip])
        if expression:
            options.append(f"({expression})")
    return " OR ".join(options)


# --- proximity and snippets --------------------------------------------------------------------
class PageMatcher:
    """Where a query's groups stand in a page's normalised text: one regex pass, no Python loop per token."""

    def __init__(self, groups: list[QueryGroup]) -> None:
        self.groups = groups
        wanted = sorted({t for g in groups for v in g.variants for t in v}, key=len, reverse=True)
        self.pattern = re.compile(r"(?<![^ ])(?:" + "|".join(map(re.escape, wanted)) + r")(?![^ ])") if wanted else None

    def positions(self, norm: str, tokens: list[str]) -> list[list[int]]:
        """Token positions of each group (a phrase group: where a spelling of it starts), at most POSITIONS_KEPT."""
        where: dict[str, list[int]] = {}
        if self.pattern is not None:
            index = at = 0
            for match in self.pattern.finditer(norm):
                index += norm.count(" ", at, match.start())
                at = match.start()
                where.setdefault(match.group(), []).append(index)
        found_all = []
        for group in self.groups:
            found: set[int] = set()
            for variant in group.variants:
                for start in where.get(variant[0], ()):
                    if len(variant) == 1 or tokens[start:start + len(variant)] == list(variant):
                        found.add(start)
            found_all.append(sorted(found)[:POSITIONS_KEPT])
        return found_all


def _group_positions(tokens: list[str], groups: list[QueryGroup]) -> list[list[int]]:
    return PageMatcher(groups).positions(" ".join(tokens), tokens)


def sequence_options(parsed: ParsedQuery) -> list[set[str]]:
    """For each typed term, the spellings a page may have there (its group's variants, or itself)."""
    options = [{term} for term in parsed.sequence]
    for group in parsed.groups:
        for k, term in enumerate(group.terms):
            if group.position + k < len(options):
                options[group.position + k] = {variant[k] for variant in group.variants} | {term}
    return options


def group_idf(groups: list[QueryGroup], stats: TermStats) -> list[float]:
    """BM25 idf of each group, counting all its spellings as one term."""
    pages = max(stats.pages, 1)
    weights = []
    for group in groups:
        if len(group.terms) == 1:
            found = min(pages, sum(stats.doc_freq(v[0]) for v in group.variants))
        else:
            found = max((min(stats.doc_freq(t) for t in v) for v in group.variants), default=0)
        weights.append(math.log(1 + (pages - found + 0.5) / (found + 0.5)))
    return weights


def page_relevance(norm: str, matcher: PageMatcher, sequence: list[set[str]], weights: list[float], average_length: float) -> float:
    """BM25 over the query's groups, times :func:`proximity_factor`."""
    tokens = norm.split(" ") if norm else []
    groups = matcher.groups
    positions = matcher.positions(norm, tokens)
    norm = BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / max(average_length, 1.0))
    score = sum(w * len(p) * (BM25_K1 + 1) / (len(p) + norm) for w, p in zip(weights, positions) if p)
    return score * proximity_factor(tokens, groups, sequence, positions)


def proximity_factor(tokens: list[str], groups: list[QueryGroup], sequence: list[set[str]] | None = None, positions: list[list[int]] | None = None) -> float:
    """1 and up: more when the terms sit close, in the typed order, and (stopwords too) run as typed."""
    positions = positions if positions is not None else _group_positions(tokens, groups)
    present = [i for i, p in enumerate(positions) if p]
    if len(present) < 2:
        return 1.0
    span_wanted = groups[-1].position + len(groups[-1].terms) - groups[0].position
    window = _smallest_window([(p, i) for i in present for p in positions[i]], len(present))
    closeness = min(1.0, span_wanted / window) * len(present) / len(groups)
    in_order = 0
    for i in range(len(groups) - 1):
        gap = groups[i + 1].position - groups[i].position
        after = set(positions[i + 1])
        if any(p + gap in after or p + gap + 1 in after for p in positions[i]):
            in_order += 1
    factor = 1.0 + PROXIMITY_WEIGHT * closeness + ORDER_WEIGHT * in_order / (len(groups) - 1)
    if sequence and len(sequence) > len(groups):
        anchors = [(p, groups[i].position) for i in present for p in positions[i][:20]]
        factor += SEQUENCE_WEIGHT * (_longest_typed_run(tokens, sequence, anchors) / len(sequence)) ** 2
    return factor


def _longest_typed_run(tokens: list[str], sequence: list[set[str]], anchors: list[tuple[int, int]]) -> int:
    """The longest stretch of the page that reads as a stretch of the typed query, grown from matched terms."""
    best = 0
    for page_at, query_at in anchors:
        left = 0
        while page_at - left > 0 and query_at - left > 0 and tokens[page_at - left - 1] in sequence[query_at - left - 1]:
            left += 1
        right = 0
        while page_at + right + 1 < len(tokens) and query_at + right + 1 < len(sequence) and tokens[page_at + right + 1] in sequence[query_at + right + 1]:
            right += 1
        best = max(best, left + right + 1)
    return best


def _smallest_window(marks: list[tuple[int, int]], kinds: int) -> int:
    """Length of the shortest run of positions holding every kind at least once."""
    marks.sort()
    counts: dict[int, int] = {}
    best = marks[-1][0] - marks[0][0] + 1
    left = 0
    for right, (pos, kind) in enumerate(marks):
        counts[kind] = counts.get(kind, 0) + 1
        while len(counts) == kinds:
            best = min(best, pos - marks[left][0] + 1)
            left_kind = marks[left][1]
            counts[left_kind] -= 1
            if counts[left_kind] == 0:
                del counts[left_kind]
            left += 1
    return best


def make_snippet(text: str, groups: list[QueryGroup], width: int = SNIPPET_CHARS) -> str:
    """The part of the page around its best match, matched words marked with **…**."""
    tokens = tokenize_fast(text)  # (term, start, end)
    group_of: dict[str, set[int]] = {}
    for index, group in enumerate(groups):
        for variant in group.variants:
            for term in variant:
                group_of.setdefault(term, set()).add(index)
    matched = [t for t in tokens if t[0] in group_of]
    if not matched:
        return _clean(text[:width]) + ("…" if len(text) > width else "")
    lo, hi = _best_span(matched, group_of, width)
    pad = max(0, width - (hi - lo)) // 2
    start = _cut_left(text, max(0, lo - pad))
    end = _cut_right(text, min(len(text), hi + pad + max(0, pad - lo)))
    marked: list[tuple[int, int]] = []  # runs of matched terms with no other term between them
    follows_match = False
    for term, token_start, token_end in tokens:
        if token_start < start or token_end > end:
            continue
        if term not in group_of:
            follows_match = False
        elif follows_match:
            marked[-1] = (marked[-1][0], max(marked[-1][1], token_end))
        else:
            marked.append((token_start, token_end))
            follows_match = True
    parts, cursor = [], start
    for a, b in marked:
        parts.append(_clean(text[cursor:a]))
        parts.append(f"**{_clean(text[a:b])}**")
        cursor = b
    parts.append(_clean(text[cursor:end]))
    body = "".join(parts).strip()
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")


def _best_span(matched: list[tuple[str, int, int]], group_of: dict[str, set[int]], width: int) -> tuple[int, int]:
    """The character span, at most ``width`` long, covering the most query groups (then the shortest)."""
    best = (0, 0, matched[0][1], matched[0][2])
    for i, (_, first_start, _) in enumerate(matched[:400]):
        seen: set[int] = set()
        for term, _, token_end in matched[i:]:
            if token_end - first_start > width:
                break
            seen |= group_of[term]
            key = (len(seen), -(token_end - first_start), first_start, token_end)
            if key[:2] > best[:2]:
                best = key
    return best[2], best[3]


def _cut_left(text: str, at: int) -> int:
    space = text.rfind(" ", max(0, at - 20), at + 1)
    return space + 1 if space > 0 else at


def _cut_right(text: str, at: int) -> int:
    space = text.find(" ", at, at + 20)
    return space if space != -1 else at


def _clean(piece: str) -> str:
    """Whitespace runs to one space (ends kept), and no stray ** from the page's own markdown."""
    collapsed = " ".join(piece.replace("**", "").split())
    if not collapsed:
        return " " if piece else ""
    return (" " if piece[0].isspace() else "") + collapsed + (" " if piece[-1].isspace() else "")


# --- helpers -----------------------------------------------------------------------------------
def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-16000")
    conn.execute("PRAGMA mmap_size=268435456")
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab USING fts5vocab(main, fts, 'row')")
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT OR IGNORE INTO meta VALUES(?, ?)",
        [("format", INDEX_FORMAT), ("normalizer", str(NORMALIZER_VERSION)), ("generation", "0"), ("epoch", uuid.uuid4().hex), ("pages", "0")],
    )


def _count_pages(conn: sqlite3.Connection, change: int) -> None:
    """Keep meta 'pages' (BM25's page count) without counting the table on every search."""
    if change:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'pages'", (change,))


def _check_index_file(path: Path) -> str | None:
    """None if the file is a current index; 'normalizer' if only its normalisation is older; else what is wrong."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            conn.execute("SELECT count(*) FROM books").fetchone()
            conn.execute("SELECT id FROM pages LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise SearchIndexError(f"the search index {path} is locked by another process; try again") from exc
        return f"not a bookocr index: {exc}"
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if meta.get("format") != INDEX_FORMAT:
        return f"format {meta.get('format')!r}, expected {INDEX_FORMAT!r}"
    if meta.get("normalizer") != str(NORMALIZER_VERSION):
        return "normalizer"
    return None


def _move_aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    if path.exists():
        os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.unlink()
    return target


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    message = str(exc).lower()
    return any(word in message for word in ("malformed", "not a database", "corrupt", "no such table"))


def _book_pages(book: Book, numbers: Iterable[int]) -> Iterator[tuple[str, int, str, str | None]]:
    for number in numbers:
        view = book.read_page(number)
        if view.status in DONE_STATUSES:
            yield book.id, number, view.markdown, view.label


def _check_paging(limit: int, offset: int) -> tuple[int, int]:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise BookOcrError(f"limit {limit!r} is out of range: use 1-{MAX_LIMIT}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BookOcrError(f"offset {offset!r} is out of range: use 0 or more")
    return limit, offset


def _check_books(books: list[str] | None, known: list[str]) -> None:
    unknown = [b for b in books or [] if b not in known]
    if unknown:
        listed = ", ".join(known) or "none yet; run `bookocr ocr FILE` first"
        raise UnknownBookError(f"no book {', '.join(map(repr, unknown))} in the library; books: {listed}")


def _filter_sql(book_nums: list[int] | None, pages: tuple[int, int] | None) -> tuple[str, list[Any]]:
    lo, hi = 1, PAGE_MASK
    if pages is not None:
        lo, hi = pages
        if not (isinstance(lo, int) and isinstance(hi, int)) or not 1 <= lo <= hi:
            raise PageRangeError(f"page range {pages!r} is invalid: use (first, last) with 1 <= first <= last")
        hi = min(hi, PAGE_MASK)
    if not book_nums:
        return ("", []) if pages is None else (" AND (rowid & ?) BETWEEN ? AND ?", [PAGE_MASK, lo, hi])
    ranges = [(num << PAGE_BITS | lo, num << PAGE_BITS | hi) for num in book_nums]
    if len(ranges) == 1:
        return " AND rowid >= ? AND rowid <= ?", list(ranges[0])
    return " AND (" + " OR ".join("rowid BETWEEN ? AND ?" for _ in ranges) + ")", [x for r in ranges for x in r]


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
            log.warning("bookocr: search indexing stopped for %s (%s); run `bookocr reindex %s` later", book.id, exc, book.id)

    return listen


def sync_book_quietly(corpus: Corpus, book: Book) -> None:
    """Bring a book's index in line with its manifest before a run; problems are logged, not raised."""
    try:
        SearchIndex(corpus).sync_book(book)
    except Exception as exc:
        log.warning("bookocr: could not update the search index for %s: %s", book.id, exc)


__all__ = ["SearchHit", "SearchResponse", "SearchIndex", "SearchIndexError", "search_library", "parse_query", "index_listener"]
