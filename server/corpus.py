"""The corpus directory: one folder per book, written atomically. Storage lives here only.

Layout::

    CORPUS/
      BOOK/manifest.json         source, page count, per-page status/engine/timings/flags
      BOOK/pages/page_0001.mmd   the clean markdown of each page
      BOOK/pages/page_0001.raw.mmd  the engine's raw output, when it differs (DeepSeek)
      BOOK/document.mmd          every page in order, each preceded by a page marker
      .locks/BOOK.lock           held while a run writes the book (outside the book's folder, so a
                                 run that fails before writing anything leaves no trace); it names
                                 the holder ("pid N on HOST"), so a lock left by a dead run is taken over
      .locks/.guard              held for a moment while a run takes a book's lock
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ocr_backend.engines.base import PageResult
from ocr_backend.errors import (
    BookConflictError,
    BookOcrError,
    DamagedBookError,
    PageRangeError,
    UnknownBookError,
    UnknownLabelError,
)
from ocr_backend.files import atomic_write
from ocr_backend.sources import SourceInfo
from server import locks
from server.labels import label_runs, pages_with_label

MANIFEST_FORMAT = 1
DONE_STATUSES = ("ok", "fallback")
BOOK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
FLUSH_EVERY_S = 1.0

log = logging.getLogger("bookocr.corpus")


def page_marker(number: int, label: str | None = None) -> str:
    """The comment before each page in ``document.mmd`` and in multi-page answers."""
    printed = f' printed="{label}"' if label else ""
    return f"<!-- page {number}{printed} -->"


def default_corpus_dir() -> Path:
    return Path(os.environ.get("BOOKOCR_CORPUS") or "corpus").expanduser()


def slugify(name: str) -> str:
    """Book id from a file or folder name: lower case, [a-z0-9_-], at most 100 chars."""
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    slug = re.sub(r"[^a-z0-9_]+", "-", stem.lower()).strip("-_")[:100].strip("-_")
    return slug or "book"


def check_book_id(book_id: str) -> str:
    if not isinstance(book_id, str) or not BOOK_ID_RE.fullmatch(book_id):
        raise BookOcrError(
            f"invalid book id {book_id!r}: use 1-100 characters from a-z, 0-9, '-' and '_', starting with a "
            "letter or digit"
        )
    return book_id


def manifest_problem(data: Any) -> str | None:
    """What makes a parsed manifest unusable, or None."""
    if not isinstance(data, dict):
        return "is not a JSON object"
    source, pages = data.get("source"), data.get("pages")
    if not isinstance(source, dict) or not all(isinstance(source.get(k), str) for k in ("name", "path", "sha256")):
        return 'lacks the "source" name, path and sha256'
    if not isinstance(pages, list) or data.get("page_count") != len(pages):
        return 'lacks "pages" or its "page_count" does not match them'
    statuses = (*DONE_STATUSES, "failed", "pending")
    if not all(p is None or (isinstance(p, dict) and p.get("status", "pending") in statuses) for p in pages):
        return "has a page entry that is not a page record"
    return None


@dataclass
class PageRecord:
    """One page's entry in ``manifest.json``: what became of it, with which engine, and why."""

    status: str = "pending"  # ok | fallback | failed | pending
    engine: str | None = None
    engine_version: str = ""
    reason: str = ""  # why this engine, or why the page failed or fell back
    flags: list[str] = field(default_factory=list)  # quality flags: empty, low-confidence, columns-2, ...
    render: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # render, ocr
    chars: int = 0
    furniture: list[str] = field(default_factory=list)  # running heads and page numbers kept out of the body
    attempts: int = 0
    updated: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific numbers (gpu_seconds, cost_usd, ...)
    label: str | None = None  # the number printed on the page
    label_source: str | None = None  # pdf | printed | inferred
    size: int | None = None  # bytes of the page file as written (None in manifests older than issue 16)
    sha256: str | None = None  # of the page file as written

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PageRecord | None:
        if data is None:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("extra", "label", "label_source", "size", "sha256"):
            if not data[optional]:
                del data[optional]
        return data


PENDING = PageRecord()


@dataclass
class PageView:
    """A stored page as readers see it."""

    book: str
    number: int
    page_count: int
    markdown: str
    record: PageRecord
    damage: str = ""  # why a done page's file cannot be trusted (then ``markdown`` is empty)

    @property
    def status(self) -> str:
        return "damaged" if self.damage else self.record.status

    @property
    def label(self) -> str | None:
        return self.record.label


class Book:
    """One book's folder. Readers may use it any time; writers hold :meth:`Corpus.lock`."""

    def __init__(self, corpus: Corpus, book_id: str, manifest: dict[str, Any], writable: bool = True) -> None:
        self.corpus = corpus
        self.id = book_id
        self.dir = corpus.root / book_id
        self.manifest = {k: v for k, v in manifest.items() if k != "pages"}
        self.pages: list[PageRecord | None] = [PageRecord.from_dict(p) for p in manifest["pages"]]
        self.writable = writable  # False for the shared, cached copies readers get from Corpus.book()
        self._dirty = False
        self._last_flush = 0.0
        # page -> (file stat and sha256, what is wrong): kept by the corpus, so a new manifest version of the
        # book does not read and hash every page again
        self._checked: dict[int, tuple[tuple[int, int, int, str | None], str]] = corpus.page_checks.setdefault(
            book_id, {}
        )

    # --- reading -------------------------------------------------------------------
    @property
    def page_count(self) -> int:
        return int(self.manifest["page_count"])

    @property
    def source_name(self) -> str:
        return str(self.manifest["source"]["name"])

    @property
    def source_path(self) -> str:
        return str(self.manifest["source"]["path"])

    @property
    def source_sha256(self) -> str:
        return str(self.manifest["source"]["sha256"])

    @property
    def engine(self) -> str | None:
        return self.manifest.get("engine")

    @property
    def outline(self) -> list[tuple[int, str, int]]:
        return [(int(level), str(title), int(page)) for level, title, page in self.manifest.get("outline") or []]

    def page(self, number: int) -> PageRecord:
        """The page's record (a pending one for a page not done yet)."""
        self.check_page(number)
        return self.pages[number - 1] or PENDING

    def check_page(self, number: int) -> int:
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= self.page_count:
            raise PageRangeError(f"page {number!r} is out of range: book {self.id!r} has pages 1-{self.page_count}")
        return number

    def page_path(self, number: int) -> Path:
        return self.dir / "pages" / f"page_{number:04d}.mmd"

    def raw_path(self, number: int) -> Path:
        return self.dir / "pages" / f"page_{number:04d}.raw.mmd"

    def read_page(self, number: int) -> PageView:
        record = self.page(number)
        text, damage = self._read_checked(number, record) if record.done else ("", "")
        return PageView(self.id, number, self.page_count, text, record, damage)

    def page_damage(self, number: int, thorough: bool = True) -> str:
        """Why a done page's file cannot be trusted ('' when it is sound, or the page is not done).

        ``thorough=False`` looks only at the file's presence and size (a stat, no read): cheap enough for
        every page of a library listing; a full check reads and hashes the file (cached while it is unchanged).
        """
        record = self.page(number)
        if not record.done:
            return ""
        try:
            st = self.page_path(number).stat()
        except FileNotFoundError:
            return "its page file is missing"
        except OSError as exc:
            return f"its page file cannot be read ({exc.strerror or exc})"
        if record.size is not None and st.st_size != record.size:
            return f"its page file is {st.st_size} bytes, not the {record.size} written"
        if not thorough:
            return ""
        key = (st.st_ino, st.st_mtime_ns, st.st_size, record.sha256)
        cached = self._checked.get(number)
        if cached is not None and cached[0] == key:  # the same file, checked against the same record
            return cached[1]
        damage = self._read_checked(number, record)[1]
        self._checked[number] = (key, damage)
        return damage

    def damaged_pages(self, thorough: bool = False) -> list[int]:
        """Done pages whose file is missing or of another size (``thorough``: or unreadable, or changed)."""
        return [n for n in self.done_pages() if self.page_damage(n, thorough)]

    def _read_checked(self, number: int, record: PageRecord) -> tuple[str, str]:
        """The page's text and '', or '' and what is wrong with its file."""
        try:
            raw = self.page_path(number).read_bytes()
        except FileNotFoundError:
            return "", "its page file is missing"
        except OSError as exc:
            return "", f"its page file cannot be read ({exc.strerror or exc})"
        if record.size is not None and len(raw) != record.size:
            return "", f"its page file is {len(raw)} bytes, not the {record.size} written"
        if record.sha256 and hashlib.sha256(raw).hexdigest() != record.sha256:
            return "", "its page file is not the one written (sha256 differs)"
        try:
            return raw.decode("utf-8"), ""
        except UnicodeDecodeError:
            return "", "its page file is not valid UTF-8"

    # --- printed page labels ---------------------------------------------------------
    def labels(self) -> list[str | None]:
        """The printed label of every page (None where there is none)."""
        return [record.label if record else None for record in self.pages]

    def set_labels(self, labels: list[tuple[str, str] | None]) -> bool:
        """Store ``(label, source)`` per page (pages not yet in the manifest are skipped).

        Returns whether anything changed; the caller holds the lock and flushes.
        """
        changed = False
        for record, entry in zip(self.pages, labels):
            if record is None:
                continue
            wanted = entry or (None, None)
            if (record.label, record.label_source) != wanted:
                record.label, record.label_source = wanted
                changed = True
        if changed:
            self.changed()
        return changed

    def set_outline(self, outline: list[tuple[int, str, int]]) -> bool:
        """Keep the source's own table of contents ``(level, title, page)``; returns whether it changed."""
        entries = [[int(level), str(title), int(page)] for level, title, page in outline]
        if self.manifest.get("outline", []) == entries:
            return False
        self.manifest["outline"] = entries
        self.changed()
        return True

    def label_runs(self) -> list[dict[str, Any]]:
        """The book's numbering as runs: ``{"printed": "i-xii", "pages": "1-12"}``."""
        return [
            {
                "printed": first if first == last else f"{first}-{last}",
                "pages": str(start) if start == end else f"{start}-{end}",
            }
            for first, last, start, end in label_runs(self.labels())
        ]

    def find_printed(self, label: str) -> int:
        """The PDF page number of the page printed ``label`` ("37", "xii")."""
        matches = pages_with_label(self.labels(), str(label))
        if len(matches) == 1:
            return matches[0]
        if matches:
            pages = ", ".join(str(n) for n in matches)
            raise UnknownLabelError(
                f"printed page {label!r} occurs more than once in book {self.id!r} (PDF pages {pages}: the book "
                f"restarts its numbering); ask for one of them by its PDF page number"
            )
        runs = self.label_runs()
        if not runs:
            raise UnknownLabelError(
                f"book {self.id!r} has no printed page numbers (the PDF declares none and none were read on its "
                f"pages); use the PDF page number 1-{self.page_count}"
            )
        known = "; ".join(f"printed {r['printed']} on PDF pages {r['pages']}" for r in runs[:8])
        more = f" and {len(runs) - 8} more runs" if len(runs) > 8 else ""
        raise UnknownLabelError(
            f"no page of book {self.id!r} is printed {label!r}; its numbering: {known}{more}. "
            f"Use one of those labels, or the PDF page number 1-{self.page_count}"
        )

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "fallback": 0, "failed": 0, "pending": 0}
        for record in self.pages:
            counts[(record or PENDING).status] += 1
        return counts

    def pages_with(self, status: str) -> list[int]:
        return [n for n, record in enumerate(self.pages, start=1) if (record or PENDING).status == status]

    def done_pages(self) -> list[int]:
        return [n for n, record in enumerate(self.pages, start=1) if record and record.done]

    def flagged_pages(self) -> dict[str, list[int]]:
        """The pages of each quality flag."""
        flagged: dict[str, list[int]] = {}
        for number, record in enumerate(self.pages, start=1):
            for flag in record.flags if record else ():
                flagged.setdefault(flag, []).append(number)
        return dict(sorted(flagged.items()))

    def state(self) -> str:
        if self.corpus.is_locked(self.id):
            return "running"
        c = self.counts()
        if c["pending"] == 0 and c["failed"] == 0:
            return "complete"
        if c["pending"] == 0:
            return "complete-with-failures"
        return "incomplete"

    # --- writing (caller holds the lock) --------------------------------------------
    def record(self, result: PageResult, render: dict[str, Any] | None = None, render_seconds: float = 0.0) -> None:
        number = self.check_page(result.number)
        written = (result.markdown.rstrip() + "\n").encode("utf-8") if result.status in DONE_STATUSES else None
        if written is not None:
            atomic_write(self.page_path(number), written)
            if result.raw is not None:
                atomic_write(self.raw_path(number), result.raw)
        previous = self.pages[number - 1] or PENDING
        self.pages[number - 1] = PageRecord(
            status=result.status,
            engine=result.engine,
            engine_version=result.engine_version,
            reason=result.reason,
            flags=list(result.flags),
            render=render or {},
            seconds={"render": round(render_seconds, 4), "ocr": round(result.seconds, 4)},
            chars=len(result.markdown),
            furniture=list(result.furniture),
            attempts=previous.attempts + 1,
            updated=time.time(),
            extra=dict(result.extra),
            label=previous.label,
            label_source=previous.label_source,
            size=None if written is None else len(written),
            sha256=None if written is None else hashlib.sha256(written).hexdigest(),
        )
        self.changed()
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def replace_text(self, number: int, markdown: str, flags: list[str], extra: dict[str, Any]) -> bool:
        """Store a page's text again (cleaned anew from its raw output) with its flags; whether the text changed."""
        record = self.page(number)
        path, text = self.page_path(number), markdown.rstrip() + "\n"
        changed = not path.exists() or path.read_text(encoding="utf-8") != text
        if changed:
            atomic_write(path, text)
        record.flags, record.chars = flags, len(markdown)
        record.size, record.sha256 = len(text.encode("utf-8")), hashlib.sha256(text.encode("utf-8")).hexdigest()
        record.extra.update(extra)
        self.changed()
        return changed

    def changed(self) -> None:
        """The manifest has changed in memory: :meth:`flush` writes it."""
        if not self.writable:
            raise RuntimeError(
                f"book {self.id!r} was opened for reading (Corpus.book); writers use Corpus.book_for_writing"
            )
        self._dirty = True

    def manifest_dict(self) -> dict[str, Any]:
        return {**self.manifest, "pages": [record.to_dict() if record else None for record in self.pages]}

    def flush(self) -> None:
        """Write the manifest if it changed. Pages written but not yet flushed are redone on resume."""
        if not self._dirty:
            return
        self.manifest["updated"] = time.time()
        atomic_write(self.dir / "manifest.json", json.dumps(self.manifest_dict(), ensure_ascii=False, indent=1))
        self._dirty = False
        self._last_flush = time.monotonic()

    def document_text(self) -> str:
        """The whole book as ``document.mmd`` has it: every page in order, each after its marker; a page
        without text says why in a comment."""
        parts = []
        for number in range(1, self.page_count + 1):
            view = self.read_page(number)
            if view.record.done and not view.damage:
                parts.append(f"{page_marker(number, view.label)}\n\n{view.markdown.strip()}\n")
            else:
                reason = view.damage or view.record.reason
                note = f"(page {number} {view.status}{': ' + reason if reason else ''})"
                parts.append(f"{page_marker(number, view.label)}\n\n<!-- {note.replace('--', '-')} -->\n")
        return "\n".join(parts)

    def document_is_current(self) -> bool:
        """Whether ``document.mmd`` holds exactly what :meth:`document_text` makes (not missing, cut or changed)."""
        try:
            return (self.dir / "document.mmd").read_text(encoding="utf-8") == self.document_text()
        except (OSError, UnicodeDecodeError):
            return False

    def write_document(self) -> Path:
        """Write ``document.mmd`` (see :meth:`document_text`)."""
        path = self.dir / "document.mmd"
        atomic_write(path, self.document_text())
        return path


class Corpus:
    """A library of books under one root directory."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_corpus_dir()
        self._cache: dict[str, tuple[tuple[int, int, int], Book]] = {}  # book id -> (manifest stat, parsed book)
        self._cache_lock = threading.Lock()
        self.page_checks: dict[str, dict[int, tuple[tuple[int, int, int, str | None], str]]] = {}

    def book_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if BOOK_ID_RE.fullmatch(p.name) and (p / "manifest.json").is_file()
        )

    def has_book(self, book_id: str) -> bool:
        return BOOK_ID_RE.fullmatch(book_id or "") is not None and (self.root / book_id / "manifest.json").is_file()

    def book(self, book_id: str) -> Book:
        """The book as stored, for reading: parsed once per version of its manifest and shared, so it
        must not be changed (writers use :meth:`book_for_writing`)."""
        path = self._manifest_path(book_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise self._unknown(book_id) from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # a manifest is replaced (atomic_write), never edited in place
        with self._cache_lock:
            cached = self._cache.get(book_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        book = Book(self, book_id, self._read_manifest(book_id, path), writable=False)
        with self._cache_lock:
            self._cache[book_id] = (key, book)
        return book

    def book_for_writing(self, book_id: str) -> Book:
        """A private copy of the stored book to change and flush; the caller holds :meth:`lock`."""
        return Book(self, book_id, self._read_manifest(book_id, self._manifest_path(book_id)))

    def _manifest_path(self, book_id: str) -> Path:
        return self.root / check_book_id(book_id) / "manifest.json"

    def _unknown(self, book_id: str) -> UnknownBookError:
        known = ", ".join(self.book_ids()) or "none yet; run `bookocr ocr FILE` first"
        return UnknownBookError(f"no book {book_id!r} in {self.root}; books: {known}")

    def _read_manifest(self, book_id: str, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self._unknown(book_id) from None
        except (OSError, ValueError) as exc:
            raise DamagedBookError.of(book_id, f"cannot be read ({exc})") from exc
        problem = manifest_problem(data)
        if problem:
            raise DamagedBookError.of(book_id, problem)
        return data

    def existing_book(self, book_id: str, source: SourceInfo, replace: bool = False) -> Book | None:
        """The stored book made from this very source, or None if there is none (or it will be replaced).

        Raises :class:`BookConflictError` when the id holds another file and ``replace`` is off.
        Reads only; safe to call before anything is written.
        """
        if not self.has_book(check_book_id(book_id)):
            return None
        try:
            book = self.book(book_id)
        except DamagedBookError:
            if replace:
                return None
            raise
        if book.source_sha256 == source.sha256 and book.page_count == source.page_count:
            return book
        if not replace:
            raise BookConflictError(
                f"book {book_id!r} already holds {book.source_name} (sha256 {book.source_sha256[:12]}), which "
                "differs from "
                f"{source.name} (sha256 {source.sha256[:12]}); give another book id to keep both, or replace "
                "the book (--replace)"
            )
        return None

    def prepare_book(self, book_id: str, source: SourceInfo, engine: str, replace: bool = False) -> Book:
        """Open the book for a run, creating it if new. The caller holds :meth:`lock`."""
        if self.existing_book(book_id, source, replace) is not None:
            book = self.book_for_writing(book_id)
            self._remove_stale_temp_files(book.dir)
            if (book.source_path, book.engine) != (source.path, engine):
                book.manifest["source"]["path"] = source.path
                book.manifest["engine"] = engine
                book.changed()
            return book
        if self.has_book(book_id):
            self._remove_book_files(book_id)
        manifest = {
            "format": MANIFEST_FORMAT,
            "book": book_id,
            "source": source.as_dict(),
            "page_count": source.page_count,
            "engine": engine,
            "created": time.time(),
            "updated": time.time(),
            "pages": [None] * source.page_count,
        }
        book = Book(self, book_id, manifest)
        book.changed()
        book.flush()
        return book

    @staticmethod
    def _remove_stale_temp_files(book_dir: Path) -> None:
        """Half-written files of a run that was killed (the lock guarantees none is live)."""
        for tmp in book_dir.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def _remove_book_files(self, book_id: str) -> None:
        book_dir = self.root / book_id
        for path in sorted(book_dir.rglob("*"), reverse=True):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()

    def _lock_path(self, book_id: str) -> Path:
        return self.root / ".locks" / f"{book_id}.lock"

    def is_locked(self, book_id: str) -> bool:
        """Whether a live run holds the book's lock (a lock left by a process that is gone does not count)."""
        if self.read_only:
            return False  # no run can write here (the lock file cannot even be opened for locking)
        return locks.is_held(self._lock_path(book_id))

    @property
    def read_only(self) -> bool:
        """Whether the corpus exists but cannot be written (a read-only mount, a backup): reads still work."""
        return self.root.is_dir() and not os.access(self.root, os.W_OK)

    def check_writable(self) -> None:
        """Raise, in one line, before a write to a read-only corpus."""
        if self.read_only:
            raise BookOcrError(
                f"the corpus {self.root} is read-only: books can be read and searched, but OCR, reindex, reclean "
                "and repair need it writable (mount it read-write, or copy it and use --corpus)"
            )

    @contextlib.contextmanager
    def lock(self, book_id: str, wait: bool | float = False) -> Iterator[None]:
        """Hold the book's write lock. If another run holds it, stop with a clear message; with ``wait``,
        poll for up to ``wait`` seconds (``True``: :data:`~server.locks.LOCK_WAIT_S`) first."""
        with locks.hold(self._lock_path(check_book_id(book_id)), book_id, wait):
            yield
