"""Writing files that readers may read at any moment: the old content or the new, never a torn one."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from ocr_backend.errors import DiskFullError


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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"the disk is full: cannot write {path} ({exc.strerror}); the file is as it was. Free some space and "
                "run the same command again to resume"
            ) from exc
        raise


__all__ = ["atomic_write"]
