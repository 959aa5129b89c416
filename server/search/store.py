"""The index file ``CORPUS/index.sqlite``: its schema, connections, validity checks, and the
per-process state shared by every :class:`~server.search.index.SearchIndex` on one file.

Rows of ``pages`` and ``fts`` are numbered ``book number << PAGE_BITS | page``, so a book's pages
are one rowid range. ``terms`` holds every term indexed with the number of pages that have it (BM25's
weights, the tiers' choices), by length and reversed too, so that near spellings are found with a few
index range reads, never by loading the whole vocabulary or reading a common term's page list; ``books``
keeps, per book, the manifest version the index was last found in line with.

An index of an older format is rebuilt from the ``.mmd`` files when it is next opened (it is derived data).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocr_backend.errors import PageRangeError, SearchIndexError
from server.search.normalize import NORMALIZER_VERSION

if TYPE_CHECKING:
    from server.search.books import BookFacts

INDEX_FILE = "index.sqlite"
INDEX_FORMAT = "bookocr-search/2"
FORMAT_PREFIX = "bookocr-search/"
OUTDATED = "outdated"  # check_index_file: a bookocr index of another format, made anew from the .mmd files
NORMALIZER = "normalizer"  # check_index_file: only its text normalisation is another, rebuilt in place
PAGE_SIZE = 16384  # pages rows are ~1.5 KB: 4 KB database pages would hold two and waste a quarter
PAGE_BITS = 20  # rowid = book number << PAGE_BITS | page: a book's pages are one rowid range
PAGE_MASK = (1 << PAGE_BITS) - 1
BUSY_TIMEOUT_MS = 15_000

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS books(
    num INTEGER PRIMARY KEY,
    book TEXT NOT NULL UNIQUE,
    stamp TEXT               -- the manifest's version (see manifest_stamp) when the index last matched it
);
CREATE TABLE IF NOT EXISTS pages(
    id INTEGER PRIMARY KEY,  -- book num << {PAGE_BITS} | page
    label TEXT,
    text BLOB NOT NULL,      -- zlib: the page markdown, for snippets
    norm BLOB NOT NULL       -- zlib: its normalised terms, for proximity and exact deletes
);
CREATE TABLE IF NOT EXISTS terms(  -- every term indexed (one whose pages were deleted stays, with doc 0)
    len INTEGER NOT NULL,
    term TEXT NOT NULL,
    rev TEXT NOT NULL,       -- the term reversed, for suffix ranges
    doc INTEGER NOT NULL,    -- pages that have it
    PRIMARY KEY(len, term)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS terms_rev ON terms(len, rev);
CREATE TABLE IF NOT EXISTS book_facts(  -- see server.search.books
    num INTEGER PRIMARY KEY,
    stamp TEXT NOT NULL,     -- the manifest version they were read from
    facts BLOB NOT NULL      -- zlib: JSON of the printed labels and contents entries
);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    body, content='', detail=full, tokenize='unicode61 remove_diacritics 0'
);
"""


class Shared:
    """Per-process state of one index file, shared by every SearchIndex on it."""

    def __init__(self, path: Path) -> None:
        self.lock = threading.RLock()  # opening, validating and rebuilding
        self.write_lock = threading.Lock()  # one writer per process; busy timeout across processes
        self.local = threading.local()
        self.ready_inode: int | None = None
        self.facts: dict[str, BookFacts] = {}  # book id -> its labels and contents, as last read
        self.last_sync = 0.0
        self.notice: str | None = None


SHARED: dict[Path, Shared] = {}
_SHARED_LOCK = threading.Lock()


def shared_for(path: Path) -> Shared:
    shared = SHARED.get(path)
    if shared is None:
        key = path.resolve()
        with _SHARED_LOCK:
            shared = SHARED.setdefault(key, SHARED.get(key) or Shared(key))
            SHARED[path] = shared
    return shared


def pack(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), 6)


def unpack(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8")


def connect(path: Path) -> sqlite3.Connection:
    new = not path.exists() or path.stat().st_size == 0
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if new:  # only an empty file takes a page size (before WAL mode)
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-16000")
    conn.execute("PRAGMA mmap_size=268435456")
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes, for a corpus on a read-only mount."""
    conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def read_only_uri(path: Path) -> str:
    """SQLite must create the -shm file to read a WAL database, which a read-only mount forbids; without a
    -wal file there is nothing but the main file to read, so it can be opened as immutable instead."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return uri if path.with_name(path.name + "-wal").exists() else uri + "&immutable=1"


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT OR IGNORE INTO meta VALUES(?, ?)",
        [
            ("format", INDEX_FORMAT),
            ("normalizer", str(NORMALIZER_VERSION)),
            ("epoch", uuid.uuid4().hex),
            ("pages", "0"),
            ("alphabet", ""),
        ],
    )


def count_pages(conn: sqlite3.Connection, change: int) -> None:
    """Keep meta 'pages' (BM25's page count) without counting the table on every search."""
    if change:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'pages'", (change,))


def check_index_file(path: Path, read_only: bool = False) -> str | None:
    """None if the file is a current index; :data:`OUTDATED` if it is a bookocr index of another format;
    :data:`NORMALIZER` if only its text normalisation is another; else what is wrong.
    ``read_only``: the corpus is on a read-only mount (see :func:`read_only_uri`)."""
    uri = read_only_uri(path) if read_only else f"file:{path}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
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
    found = str(meta.get("format"))
    if found != INDEX_FORMAT and not found.startswith(FORMAT_PREFIX):
        return f"format {meta.get('format')!r}, expected {INDEX_FORMAT!r}"
    if found != INDEX_FORMAT:
        return OUTDATED
    if meta.get("normalizer") != str(NORMALIZER_VERSION):
        return NORMALIZER
    return None


def remove_index(path: Path) -> None:
    """Delete an outdated index file (derived data) with its WAL files, so that a new one can be made."""
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def manifest_stamp(root: Path, book_id: str) -> str | None:
    """The version of the book's manifest: it is replaced whole on every change (atomic_write), so its inode,
    time and size tell versions apart without reading it. None when there is none. (A plain os.stat: a
    search stats every book's manifest, and pathlib would take most of that time.)"""
    try:
        st = os.stat(os.path.join(root, book_id, "manifest.json"))
    except OSError:
        return None
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def move_aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    if path.exists():
        os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.unlink()
    return target


def file_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    message = str(exc).lower()
    return any(word in message for word in ("malformed", "not a database", "corrupt", "no such table"))


def book_rows(conn: sqlite3.Connection, num: int) -> list[int]:
    """Row ids of the indexed pages of book number ``num``."""
    return [
        r
        for (r,) in conn.execute(
            "SELECT id FROM pages WHERE id BETWEEN ? AND ?", (num << PAGE_BITS, num << PAGE_BITS | PAGE_MASK)
        )
    ]


def rowid_filter(book_nums: list[int] | None, pages: tuple[int, int] | None) -> tuple[str, list[Any]]:
    """SQL (`` AND ...``) and its parameters that keep an FTS5 match to these books' rows and this page range."""
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
