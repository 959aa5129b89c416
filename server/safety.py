"""Which input files the MCP server may read: only under allowed roots, and not too large.

A model chooses the paths the server opens, so every path is resolved (symlinks
included) before it is compared with the roots, and a folder of page images is
checked file by file: a link inside an allowed folder must not reach outside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocr_backend.errors import BookOcrError, FileTooLargeError, PathNotAllowedError
from ocr_backend.sources import IMAGE_SUFFIXES

DEFAULT_MAX_FILE_MB = 1024


def default_roots() -> list[Path]:
    """The user's home and the working directory (unless that is the filesystem root,
    as it often is for desktop apps, where it would allow everything)."""
    roots = [Path.home()]
    cwd = Path.cwd()
    if cwd.resolve() != Path(cwd.anchor):
        roots.append(cwd)
    return roots


@dataclass
class InputPolicy:
    roots: list[Path] = field(default_factory=default_roots)
    max_bytes: int = DEFAULT_MAX_FILE_MB * 1024 * 1024
    allow_hint: str = (
        'start the server with `--allow DIR` (in claude_desktop_config.json: add "--allow", "DIR" to args)'
    )

    def __post_init__(self) -> None:
        self.roots = _unique(Path(r).expanduser().resolve() for r in self.roots)

    @classmethod
    def from_options(
        cls, allow: Sequence[str | os.PathLike[str]] | None, max_file_mb: int | None = None
    ) -> InputPolicy:
        """Explicit ``--allow`` folders replace the defaults (home and working directory)."""
        roots = [Path(a) for a in allow] if allow else default_roots()
        return cls(roots=roots, max_bytes=(max_file_mb or DEFAULT_MAX_FILE_MB) * 1024 * 1024)

    def describe_roots(self) -> str:
        return ", ".join(str(r) for r in self.roots) or "(none)"

    def is_allowed(self, resolved: Path) -> bool:
        return any(resolved == root or resolved.is_relative_to(root) for root in self.roots)

    def check_input(self, path: str | os.PathLike[str]) -> Path:
        """The resolved path of a book source the server may read; raises with what to do otherwise."""
        resolved = self._resolve(path)
        if resolved.is_dir():
            files = self._folder_images(resolved)
            total = sum(f.stat().st_size for f in files)
        else:
            total = resolved.stat().st_size
        if total > self.max_bytes:
            raise FileTooLargeError(
                f"{resolved} is {_size(total)}, over this server's limit of {self.max_bytes // (1 << 20)} MB per book; "
                f"split the book, or ask the user to restart the server with a higher `--max-file-mb`"
            )
        return resolved

    def check_readable(self, path: str | os.PathLike[str]) -> Path:
        """Resolve a path and check it lies under a root (no size limit: for reading a stored book's source)."""
        return self._resolve(path)

    def check_opened(self, real: Path) -> None:
        """Refuse a file already open whose real path lies outside the roots: a link swapped in after
        :meth:`check_input` is caught here (see :func:`ocr_backend.sources.open_checked`)."""
        if not self.is_allowed(real):
            raise PathNotAllowedError(
                f"{real} is outside the folders this server may read ({self.describe_roots()}) and was reached "
                f"through a link; remove the link, or ask the user to {self.allow_hint}"
            )

    def _resolve(self, path: str | os.PathLike[str]) -> Path:
        text = os.fspath(path)
        if not text.strip() or "\0" in text:
            raise BookOcrError(
                f"{text!r} is not a file path; give the absolute path of a PDF, image or folder of page images"
            )
        given = Path(text).expanduser()
        try:
            resolved = given.resolve(strict=True)
        except FileNotFoundError:
            raise BookOcrError(
                f"{given.absolute()}: no such file or folder; give an absolute path that exists"
            ) from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise BookOcrError(f"{given.absolute()}: cannot be opened ({exc})") from None
        if not self.is_allowed(resolved):
            shown = f"{given.absolute()} (which links to {resolved})" if resolved != given.absolute() else str(resolved)
            raise PathNotAllowedError(
                f"{shown} is outside the folders this server may read ({self.describe_roots()}); "
                f"move the file into one of them, or ask the user to {self.allow_hint}"
            )
        return resolved

    def _folder_images(self, folder: Path) -> list[Path]:
        files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        for f in files:
            target = f.resolve()
            if not self.is_allowed(target):
                raise PathNotAllowedError(
                    f"{f} links to {target}, outside the folders this server may read ({self.describe_roots()}); "
                    f"remove the link, or ask the user to {self.allow_hint}"
                )
        return [f for f in files if f.is_file()]


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: list[Path] = []
    for p in paths:
        if p not in seen:
            seen.append(p)
    return seen


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"
