"""Book locks: one writer per book, across processes.

A lock is an ``flock`` on ``CORPUS/.locks/BOOK.lock`` (the kernel drops it when its holder dies, however
it dies), and the file names its holder ("pid N on HOST"), so that a second run can say who holds the
book, and a lock left by a process that is gone is taken over with a note. Waits are bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TextIO

from ocr_backend.errors import BookLockedError
from server.formatting import describe_duration

LOCK_WAIT_S = 3600.0  # how long a run asked to wait for another run on the same book waits by default
LOCK_POLL_S = 0.5
GUARD_WAIT_S = 10.0  # taking a lock takes milliseconds; a guard held this long belongs to a stuck process
HOLDER_RE = re.compile(r"pid (?P<pid>\d+)(?: on (?P<host>\S+))?")  # what a lock file says while held

log = logging.getLogger("bookocr.locks")


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock file (one left by a process that is gone does not count)."""
    if not path.exists():
        return False
    with path.open("a+") as fh:
        if _try_flock(fh):
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False
        return _holder_alive(_read_holder(fh))


@contextlib.contextmanager
def hold(path: Path, book_id: str, wait: bool | float = False) -> Iterator[None]:
    """Hold the book's lock file. If another run holds it, stop with a clear message; with ``wait``,
    poll for up to ``wait`` seconds (``True``: :data:`LOCK_WAIT_S`) first, then stop saying how long it waited.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = _wait_limit(wait)
    started = time.monotonic()
    while True:
        fh, holder = _acquire(book_id, path)
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


def _acquire(book_id: str, path: Path) -> tuple[TextIO | None, str]:
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
                log.warning(
                    "took over the lock of book %s left by %s, which is no longer running", book_id, _describe(holder)
                )
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {_host()}")
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
                raise BookLockedError(
                    f"{path} has been locked for over {GUARD_WAIT_S:.0f} s; is a bookocr process stuck? Stop "
                    "it and try again"
                )
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


def _host() -> str:
    import socket  # here, not at the top: a command that takes no lock (a search) never loads it

    return socket.gethostname()


def _holder_alive(holder: str) -> bool:
    """Whether the process a lock file names may still be running; anything unclear counts as running."""
    match = HOLDER_RE.fullmatch(holder)
    if match is None:
        return True
    if match["host"] and match["host"] != _host():
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
        return (
            f"book {book_id!r} is being written by another run ({who}); wait for it to finish, "
            f"or check progress with `bookocr status {book_id}`"
        )
    return (
        f"book {book_id!r} is still being written by another run ({who}) after waiting {describe_duration(waited)}; "
        f"check progress with `bookocr status {book_id}` and try again when it has finished"
    )
