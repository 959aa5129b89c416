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
import fcntl
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from ocr_backend.engines.base import PageResult
from ocr_backend.errors import BookOcrError
from ocr_backend.sources import SourceInfo
from server.labels import label_runs, pages_with_label

MANIFEST_FORMAT = 1
DONE_STATUSES = ("ok", "fallback")
BOOK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
PAGE_MARKER = "<!-- page {number}{label} -->"
FLUSH_EVERY_S = 1.0
LOCK_WAIT_S = 3600.0  # how long a run asked to wait for another run on the same book waits by default
LOCK_POLL_S = 0.5
GUARD_WAIT_S = 10.0  # taking a lock takes milliseconds; a guard held this long belongs to a stuck process
HOLDER_RE = re.compile(r"pid (?P<pid>\d+)(?: on (?P<host>\S+))?")  # what a lock file says while held

log = logging.getLogger("bookocr.corpus")


class UnknownBookError(BookOcrError):
    pass


class PageRangeError(BookOcrError):
    pass


class BookLockedError(BookOcrError):
    pass


class BookConflictError(BookOcrError):
    pass


class UnknownLabelError(BookOcrError):
    """A printed page label that no page carries, or that several pages carry."""


def default_corpus_dir() -> Path:
    return Path(os.environ.get("BOOKOCR_CORPUS") or "corpus").expanduser()


def slugify(name: str) -> str:
    """Book id from a file or folder name: lower case, [a-z0-9_-], at most 100 chars."""
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    slug = re.sub(r"[^a-z0-9_]+", "-", stem.lower()).strip("-_")[:100].strip("-_")
    return slug or "book"


def check_book_id(book_id: str) -> str:
    if not isinstance(book_id, str) or not BOOK_ID_RE.match(book_id):
        raise BookOcrError(
            f"invalid book id {book_id!r}: use 1-100 characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
        )
    return book_id


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass
class PageView:
    """A stored page as readers see it."""

    book: str
    number: int
    page_count: int
    markdown: str
    meta: dict[str, Any]

    @property
    def status(self) -> str:
        return self.meta.get("status", "pending")

    @property
    def label(self) -> str | None:
        return self.meta.get("label")


class Book:
    """One book's folder. Readers may use it any time; writers hold :meth:`Corpus.lock`."""

    def __init__(self, corpus: Corpus, book_id: str, manifest: dict[str, Any]) -> None:
        self.corpus = corpus
        self.id = book_id
        self.dir = corpus.root / book_id
        self.manifest = manifest
        self._dirty = False
        self._last_flush = 0.0

    # --- reading -------------------------------------------------------------------
    @property
    def page_count(self) -> int:
        return int(self.manifest["page_count"])

    @property
    def pages(self) -> list[dict[str, Any] | None]:
        return self.manifest["pages"]

    def page_meta(self, number: int) -> dict[str, Any]:
        self.check_page(number)
        return self.pages[number - 1] or {"status": "pending"}

    def check_page(self, number: int) -> int:
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= self.page_count:
            raise PageRangeError(f"page {number!r} is out of range: book {self.id!r} has pages 1-{self.page_count}")
        return number

    def page_path(self, number: int) -> Path:
        return self.dir / "pages" / f"page_{number:04d}.mmd"

    def raw_path(self, number: int) -> Path:
        return self.dir / "pages" / f"page_{number:04d}.raw.mmd"

    def read_page(self, number: int) -> PageView:
        meta = self.page_meta(number)
        path = self.page_path(number)
        text = path.read_text(encoding="utf-8") if meta.get("status") in DONE_STATUSES and path.exists() else ""
        return PageView(self.id, number, self.page_count, text, meta)

    # --- printed page labels ---------------------------------------------------------
    def labels(self) -> list[str | None]:
        """The printed label of every page (None where there is none)."""
        return [(meta or {}).get("label") for meta in self.pages]

    def set_labels(self, labels: list[tuple[str, str] | None]) -> bool:
        """Store ``(label, source)`` per page (pages not yet in the manifest are skipped).

        Returns whether anything changed; the caller holds the lock and flushes.
        """
        changed = False
        for meta, entry in zip(self.pages, labels):
            if meta is None:
                continue
            wanted = {"label": entry[0], "label_source": entry[1]} if entry else {}
            if {k: meta[k] for k in ("label", "label_source") if k in meta} != wanted:
                meta.pop("label", None)
                meta.pop("label_source", None)
                meta.update(wanted)
                changed = True
        self._dirty |= changed
        return changed

    def set_outline(self, outline: list[tuple[int, str, int]]) -> bool:
        """Keep the source's own table of contents ``(level, title, page)``; returns whether it changed."""
        entries = [[int(level), str(title), int(page)] for level, title, page in outline]
        if self.manifest.get("outline", []) == entries:
            return False
        self.manifest["outline"] = entries
        self._dirty = True
        return True

    def label_runs(self) -> list[dict[str, Any]]:
        """The book's numbering as runs: ``{"printed": "i-xii", "pages": "1-12"}``."""
        return [
            {"printed": first if first == last else f"{first}-{last}", "pages": str(start) if start == end else f"{start}-{end}"}
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
        for meta in self.pages:
            counts[(meta or {}).get("status", "pending")] += 1
        return counts

    def state(self) -> str:
        if self.corpus.is_locked(self.id):
            return "running"
        c = self.counts()
        if c["pending"] == 0 and c["failed"] == 0:
            return "complete"
        if c["pending"] == 0:
            return "complete-with-failures"
        return "incomplete"

    def summary(self) -> dict[str, Any]:
        counts = self.counts()
        flags = sorted({f for meta in self.pages if meta for f in meta.get("flags", [])})
        engines = sorted({meta["engine"] for meta in self.pages if meta and meta.get("engine")})
        return {
            "book": self.id,
            "state": self.state(),
            "source": self.manifest["source"]["name"],
            "source_path": self.manifest["source"]["path"],
            "pages": self.page_count,
            "done": counts["ok"] + counts["fallback"],
            **counts,
            "engine": self.manifest.get("engine"),
            "engines_used": engines,
            "quality_flags": flags,
            "updated": self.manifest.get("updated"),
        }

    # --- writing (caller holds the lock) --------------------------------------------
    def record(self, result: PageResult, render: dict[str, Any] | None = None, render_seconds: float = 0.0) -> None:
        number = self.check_page(result.number)
        if result.status in DONE_STATUSES:
            atomic_write(self.page_path(number), result.markdown.rstrip() + "\n")
            if result.raw is not None:
                atomic_write(self.raw_path(number), result.raw)
        previous = self.pages[number - 1] or {}
        meta: dict[str, Any] = {
            "status": result.status,
            "engine": result.engine,
            "engine_version": result.engine_version,
            "reason": result.reason,
            "flags": list(result.flags),
            "render": render or {},
            "seconds": {"render": round(render_seconds, 4), "ocr": round(result.seconds, 4)},
            "chars": len(result.markdown),
            "furniture": list(result.furniture),
            "attempts": int(previous.get("attempts", 0)) + 1,
            "updated": time.time(),
        }
        if result.extra:
            meta["extra"] = result.extra
        for keep in ("label", "label_source"):
            if keep in previous:
                meta[keep] = previous[keep]
        self.pages[number - 1] = meta
        self._dirty = True
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Write the manifest if it changed. Pages written but not yet flushed are redone on resume."""
        if not self._dirty:
            return
        self.manifest["updated"] = time.time()
        atomic_write(self.dir / "manifest.json", json.dumps(self.manifest, ensure_ascii=False, indent=1))
        self._dirty = False
        self._last_flush = time.monotonic()

    def write_document(self) -> Path:
        """Write ``document.mmd``: every page in order, each after a marker with its number."""
        parts = []
        for number in range(1, self.page_count + 1):
            view = self.read_page(number)
            label = f' printed="{view.label}"' if view.label else ""
            marker = PAGE_MARKER.format(number=number, label=label)
            if view.status in DONE_STATUSES:
                parts.append(f"{marker}\n\n{view.markdown.strip()}\n")
            else:
                reason = view.meta.get("reason", "")
                note = f"(page {number} {view.status}{': ' + reason if reason else ''})"
                parts.append(f"{marker}\n\n<!-- {note.replace('--', '-')} -->\n")
        path = self.dir / "document.mmd"
        atomic_write(path, "\n".join(parts))
        return path


class Corpus:
    """A library of books under one root directory."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_corpus_dir()

    def book_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if BOOK_ID_RE.match(p.name) and (p / "manifest.json").is_file())

    def has_book(self, book_id: str) -> bool:
        return BOOK_ID_RE.match(book_id or "") is not None and (self.root / book_id / "manifest.json").is_file()

    def book(self, book_id: str) -> Book:
        check_book_id(book_id)
        path = self.root / book_id / "manifest.json"
        if not path.is_file():
            known = ", ".join(self.book_ids()) or "none yet; run `bookocr ocr FILE` first"
            raise UnknownBookError(f"no book {book_id!r} in {self.root}; books: {known}")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BookOcrError(f"the manifest of book {book_id!r} cannot be read ({exc}); re-run `bookocr ocr` on it") from exc
        return Book(self, book_id, manifest)

    def existing_book(self, book_id: str, source: SourceInfo, replace: bool = False) -> Book | None:
        """The stored book made from this very source, or None if there is none (or it will be replaced).

        Raises :class:`BookConflictError` when the id holds another file and ``replace`` is off.
        Reads only; safe to call before anything is written.
        """
        if not self.has_book(check_book_id(book_id)):
            return None
        book = self.book(book_id)
        old = book.manifest["source"]
        if old["sha256"] == source.sha256 and book.page_count == source.page_count:
            return book
        if not replace:
            raise BookConflictError(
                f"book {book_id!r} already holds {old['name']} (sha256 {old['sha256'][:12]}), which differs from "
                f"{source.name} (sha256 {source.sha256[:12]}); choose another id with --book or pass --replace"
            )
        return None

    def prepare_book(self, book_id: str, source: SourceInfo, engine: str, replace: bool = False) -> Book:
        """Open the book for a run, creating it if new. The caller holds :meth:`lock`."""
        book = self.existing_book(book_id, source, replace)
        if book is not None:
            self._remove_stale_temp_files(book.dir)
            book.manifest["source"]["path"] = source.path
            book.manifest["engine"] = engine
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
        book._dirty = True
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
        path = self._lock_path(book_id)
        if not path.exists():
            return False
        with path.open("a+") as fh:
            if _try_flock(fh):
                fcntl.flock(fh, fcntl.LOCK_UN)
                return False
            return _holder_alive(_read_holder(fh))

    @contextlib.contextmanager
    def lock(self, book_id: str, wait: bool | float = False) -> Iterator[None]:
        """Hold the book's write lock. If another run holds it, stop with a clear message; with ``wait``,
        poll for up to ``wait`` seconds (``True``: :data:`LOCK_WAIT_S`) first, then stop saying how long it waited.
        """
        path = self._lock_path(check_book_id(book_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        limit = _wait_limit(wait)
        started = time.monotonic()
        while True:
            fh, holder = self._acquire(book_id, path)
            if fh is not None:
                break
            waited = time.monotonic() - started
            if waited >= limit:
                raise BookLockedError(_locked_message(book_id, holder, waited if limit else None))
            time.sleep(min(LOCK_POLL_S, limit - waited))
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.seek(0)
                fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def _acquire(self, book_id: str, path: Path) -> tuple[TextIO | None, str]:
        """One try at the lock: the locked file, or None and who holds it.

        A lock file whose flock is free but which names a process that is gone (a run killed with
        ``kill -9``) is simply taken. A flock still held while the file names a process that is gone
        means another process inherited the open file (a worker forked by the run); its lock is left
        on the old file, which is replaced. Taking locks is serialised by a guard so that replacing a
        file cannot race with another run taking it.
        """
        with _guard(path.parent / ".guard"):
            fh = path.open("a+")
            try:
                holder = _read_holder(fh)
                if not _try_flock(fh):
                    if _holder_alive(holder):
                        fh.close()
                        return None, holder
                    fh.close()
                    path.unlink()
                    fh = path.open("a+")
                    if not _try_flock(fh):  # pragma: no cover - the file is new and the guard is ours
                        raise BookLockedError(f"could not take over the lock of book {book_id!r}: {path} is locked again")
                if holder and not _holder_alive(holder):
                    log.warning("took over the lock of book %s left by %s, which is no longer running", book_id, _describe(holder))
                fh.seek(0)
                fh.truncate()
                fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
                fh.flush()
                return fh, ""
            except BaseException:
                fh.close()
                raise


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        deadline = time.monotonic() + GUARD_WAIT_S
        while not _try_flock(fh):
            if time.monotonic() > deadline:
                raise BookLockedError(f"{path} has been locked for over {GUARD_WAIT_S:.0f} s; is a bookocr process stuck? Stop it and try again")
            time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _try_flock(fh: IO[Any]) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fh: IO[str]) -> str:
    fh.seek(0)
    return fh.read().strip()


def _holder_alive(holder: str) -> bool:
    """Whether the process a lock file names may still be running; anything unclear counts as running."""
    match = HOLDER_RE.fullmatch(holder)
    if match is None:
        return True
    if match["host"] and match["host"] != socket.gethostname():
        return True  # a process on another machine sharing the corpus: no way to tell
    return _pid_running(int(match["pid"]))


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped by its parent) holds nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _describe(holder: str) -> str:
    match = HOLDER_RE.fullmatch(holder)
    return f"pid {match['pid']}" if match else holder


def _wait_limit(wait: bool | float) -> float:
    if wait is True:
        return LOCK_WAIT_S
    return max(0.0, float(wait or 0.0))


def _locked_message(book_id: str, holder: str, waited: float | None) -> str:
    who = holder or "another process"
    if waited is None:
        return (f"book {book_id!r} is being written by another run ({who}); wait for it to finish, "
                f"or check progress with `bookocr status {book_id}`")
    return (f"book {book_id!r} is still being written by another run ({who}) after waiting {_minutes(waited)}; "
            f"check progress with `bookocr status {book_id}` and try again when it has finished")


def _minutes(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
