"""Open a book source (PDF, image, multi-page TIFF, folder of page images) and validate it.

Everything a user can get wrong is caught here, before the corpus is touched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from ocr_backend.errors import InputError, PathNotAllowedError
from ocr_backend.pdf_text import TextLayer, extract_text_layer
from ocr_backend.render import MAX_PIXELS, RenderSettings, fit_long_side, normalise_mode, render_pdf_page

if TYPE_CHECKING:  # loaded by load_libraries() when a source is opened (see ocr_backend.render)
    import pymupdf
    from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2", ".pbm", ".pgm", ".ppm"}
MIN_PAGE_PT = 36.0  # half an inch
MAX_PAGE_PT = 14_400.0  # 200 inches, the PDF format's own limit

_DAMAGE_WARNINGS = (
    "cannot load content stream",
    "object is not a stream",
    "page tree load failed",
    "cannot find object",
    "premature end of data",
    "page may not be correct",
)
# Warnings many intact PDFs give too (MuPDF recovers); damage only in a file whose xref had to be rebuilt.
_REPAIRED_DAMAGE_WARNINGS = ("Length incorrect", "object missing 'endobj'", "unexpected end", "syntax error")
_MUPDF_WARNINGS = threading.Lock()  # MuPDF keeps one warning log per process

T = TypeVar("T")

OpenCheck = Callable[[Path], None]
"""Given the real path of a file just opened, raises to refuse it (the MCP server's allowed folders)."""


@functools.cache
def load_libraries() -> None:
    """Import pymupdf and Pillow, once, and set them up for reading sources: done by :func:`open_source`,
    so a process that only reads the corpus never imports them."""
    import pymupdf
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow raises DecompressionBombError beyond twice this
    pymupdf.TOOLS.mupdf_display_errors(False)


@dataclass(frozen=True)
class SourceInfo:
    path: str
    name: str
    kind: str  # "pdf" | "image" | "image-folder"
    sha256: str
    bytes: int
    page_count: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Source(ABC):
    """A book's pages. Not thread-safe: one worker uses it at a time."""

    info: SourceInfo

    @abstractmethod
    def text_layer(self, number: int) -> TextLayer | None:
        """The page's own text (PDFs only)."""

    @abstractmethod
    def render(self, number: int, settings: RenderSettings) -> tuple[Image.Image, dict[str, Any]]:
        """The page image, sized by ``settings``, and a description of how it was made."""

    def page_labels(self) -> list[str] | None:
        """Printed page labels the file declares for itself, if any."""
        return None

    def outline(self) -> list[tuple[int, str, int]]:
        """The file's own table of contents as (level, title, page), if any."""
        return []

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(path: str | os.PathLike[str], check: OpenCheck | None = None) -> Source:
    """Open and validate a source; raises :class:`InputError` with a specific message. ``check`` is
    called on every file the source opens, with the file's real path once it is open."""
    load_libraries()
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p}: {_link_problem(p) or 'no such file or folder'}")
    if p.is_dir():
        return ImageFolderSource(p, check)
    if not p.is_file():
        raise InputError(f"{p}: not a regular file; give a PDF, an image, or a folder of page images")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: cannot read the file (permission denied)")
    try:
        with open_checked(p, check) as fh:
            head = fh.read(1024)
    except OSError as exc:
        raise InputError(f"{p}: cannot read the file ({exc.strerror or exc})") from exc
    if not head:
        raise InputError(f"{p}: the file is empty")
    if head.startswith(b"%PDF"):
        return PdfSource(p, check)
    if p.suffix.lower() == ".pdf":
        if b"%PDF-" in head:  # readers accept a little junk before the header
            return PdfSource(p, check)
        raise InputError(
            f"{p}: named .pdf but it is not a PDF (it starts like {_looks_like(head)}); "
            "give the real PDF, or the image under its own name"
        )
    return ImageFileSource(p, check)


def open_checked(path: Path, check: OpenCheck | None = None) -> BinaryIO:
    """Open a file, then check the file actually opened: a link swapped in after an earlier check of the
    path is caught, because ``check`` sees where the open file really is."""
    fh = path.open("rb")
    if check is not None:
        try:
            check(opened_path(fh, path))
        except BaseException:
            fh.close()
            raise
    return fh


def opened_path(fh: BinaryIO, path: Path) -> Path:
    """The real path of an open file: Linux names it in /proc; elsewhere the path is resolved after the open
    and must still be the very file opened (or it changed under us, and is refused)."""
    with contextlib.suppress(OSError):
        return Path(os.readlink(f"/proc/self/fd/{fh.fileno()}"))
    real = Path(os.path.realpath(path))
    opened, found = os.fstat(fh.fileno()), real.stat()
    if (opened.st_dev, opened.st_ino) != (found.st_dev, found.st_ino):
        raise PathNotAllowedError(f"{path} changed while it was being opened; try again")
    return real


def file_sha256(path: Path, check: OpenCheck | None = None) -> str:
    digest = hashlib.sha256()
    with open_checked(path, check) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PdfSource(Source):
    def __init__(self, path: Path, check: OpenCheck | None = None) -> None:
        try:
            self.doc = _open_pdf(path, check)
        except PathNotAllowedError:
            raise
        except Exception as exc:
            raise InputError(f"{path}: not a readable PDF ({_short(exc)}); is the file truncated or corrupt?") from exc
        if self.doc.needs_pass or self.doc.is_encrypted:
            self.doc.close()
            raise InputError(
                f"{path}: the PDF is password-protected; decrypt it first (e.g. qpdf --decrypt) and try again"
            )
        if self.doc.page_count == 0:
            self.doc.close()
            raise InputError(f"{path}: the PDF has no pages (is it truncated or corrupt?)")
        self._check_page_sizes(path)
        if self.doc.is_repaired:  # truncated or damaged: every page's content must be there
            self._check_damage(path)
        self.info = SourceInfo(
            str(path.resolve()), path.name, "pdf", file_sha256(path, check), path.stat().st_size, self.doc.page_count
        )

    def _check_page_sizes(self, path: Path) -> None:
        for index in range(self.doc.page_count):
            try:
                rect = self.doc[index].rect
            except Exception as exc:
                self.doc.close()
                raise InputError(
                    f"{path}: page {index + 1} cannot be read ({_short(exc)}); the PDF looks corrupt"
                ) from exc
            missing = _missing_structure(self.doc, index)
            if missing:
                self.doc.close()
                raise InputError(
                    f"{path}: {missing}; the PDF is truncated or corrupt, re-download or repair it (e.g. qpdf)"
                )
            long_side, short_side = max(rect.width, rect.height), min(rect.width, rect.height)
            if long_side > MAX_PAGE_PT or short_side < MIN_PAGE_PT:
                self.doc.close()
                raise InputError(
                    f"{path}: page {index + 1} is {rect.width:.0f} x {rect.height:.0f} pt, outside the sane range "
                    f"{MIN_PAGE_PT:.0f}-{MAX_PAGE_PT:.0f} pt; this is not a book page"
                )

    def _check_damage(self, path: Path) -> None:
        """MuPDF silently repairs broken files; refuse one whose pages lost their content."""
        for index in range(self.doc.page_count):
            damage = self._page_damage(index)
            if damage:
                self.doc.close()
                raise InputError(
                    f"{path}: the PDF is truncated or corrupt (page {index + 1}: {damage}); re-download or "
                    "repair it (e.g. qpdf) and try again"
                )

    def _page_damage(self, index: int) -> str:
        import pymupdf

        with _MUPDF_WARNINGS:
            pymupdf.TOOLS.reset_mupdf_warnings()
            page = self.doc[index]
            page.get_text("text")
            if any(not self.doc.xref_is_stream(xref) for xref, *_ in page.get_images(full=True)):
                pymupdf.TOOLS.reset_mupdf_warnings()  # keep the log short
                return "it lost its image"
            return damage_reported(pymupdf.TOOLS.mupdf_warnings(), repaired=True)

    def text_layer(self, number: int) -> TextLayer | None:
        return self._read_page(number, extract_text_layer)

    def render(self, number: int, settings: RenderSettings) -> tuple[Image.Image, dict[str, Any]]:
        return self._read_page(number, lambda page: render_pdf_page(page, settings))

    def _read_page(self, number: int, read: Callable[[pymupdf.Page], T]) -> T:
        """``read`` the page, failing it when MuPDF reports damage on the way (a short page is never 'ok')."""
        import pymupdf

        with _MUPDF_WARNINGS:
            pymupdf.TOOLS.reset_mupdf_warnings()
            page = self.doc[number - 1]
            damage = _missing_structure(self.doc, number - 1)
            result = read(page)
            damage = damage or damage_reported(pymupdf.TOOLS.mupdf_warnings(), self.doc.is_repaired)
        if damage:
            raise DamagedPageError(
                f"page {number} of the PDF is damaged ({damage}); the file looks truncated or corrupt: "
                "re-download or repair it (e.g. qpdf) and run again"
            )
        return result

    def page_labels(self) -> list[str] | None:
        if not self.doc.get_page_labels():
            return None
        return [self.doc[i].get_label() for i in range(self.doc.page_count)]

    def outline(self) -> list[tuple[int, str, int]]:
        return [(level, title, page) for level, title, page, *_ in self.doc.get_toc(simple=True)]

    def close(self) -> None:
        self.doc.close()


class DamagedPageError(InputError):
    """MuPDF reported damage while reading one page of a PDF."""


def damage_reported(warnings: str, repaired: bool) -> str:
    """The first of MuPDF's warnings that means lost content ('' if none); ``repaired``: the file's xref was
    rebuilt, so warnings MuPDF also gives for sloppy but whole files count too."""
    kinds = _DAMAGE_WARNINGS + (_REPAIRED_DAMAGE_WARNINGS if repaired else ())
    return next((w.strip() for w in warnings.splitlines() if any(k in w for k in kinds)), "")


def _missing_structure(doc: pymupdf.Document, index: int) -> str:
    """What of page ``index`` the file lacks: its page object, or a content stream ('' if nothing).
    A truncated file keeps the page tree but loses the objects after the cut; MuPDF then shows blank pages."""
    try:
        xref = doc.page_xref(index)
        if not 0 < xref < doc.xref_length() or doc.xref_object(xref, compressed=True).strip() == "null":
            return f"page {index + 1} has no page object"
        kind, value = doc.xref_get_key(xref, "Contents")
    except Exception as exc:  # MuPDF raises on a page object it cannot parse
        return f"page {index + 1} cannot be read ({_short(exc)})"
    refs = [int(r) for r in re.findall(r"(\d+) \d+ R", value)] if kind in ("xref", "array") else []
    if kind == "xref" and len(refs) == 1 and 0 < refs[0] < doc.xref_length() and not doc.xref_is_stream(refs[0]):
        held = doc.xref_object(refs[0], compressed=True).strip()  # /Contents may name an array of streams
        refs = [int(r) for r in re.findall(r"(\d+) \d+ R", held)] if held.startswith("[") else refs
    if any(not 0 < r < doc.xref_length() or not doc.xref_is_stream(r) for r in refs):
        return f"page {index + 1} lost its content stream"
    return ""


def _open_pdf(path: Path, check: OpenCheck | None) -> pymupdf.Document:
    """Open a PDF; with ``check``, MuPDF reads the very file that was checked (through /proc on Linux,
    from memory elsewhere), never whatever the path names a moment later."""
    import pymupdf

    if check is None:
        return pymupdf.open(path, filetype="pdf")
    with open_checked(path, check) as fh:
        proc = Path(f"/proc/self/fd/{fh.fileno()}")
        if proc.exists():
            return pymupdf.open(proc, filetype="pdf")
        return pymupdf.open(stream=fh.read(), filetype="pdf")


class _ImagePagesSource(Source):
    """Shared by single images, multi-page TIFFs and folders: each page is one frame of a file."""

    frames: list[tuple[Path, int]]
    check: OpenCheck | None = None

    def text_layer(self, number: int) -> TextLayer | None:
        return None

    def render(self, number: int, settings: RenderSettings) -> tuple[Image.Image, dict[str, Any]]:
        from PIL import Image

        path, frame = self.frames[number - 1]
        with open_checked(path, self.check) as fh, Image.open(fh) as img:
            img.seek(frame)
            native = normalise_mode(img)
            native.load()
        image = fit_long_side(native, settings.long_side)
        return image, {
            "source": "native",
            "native_size": list(native.size),
            "width": image.width,
            "height": image.height,
        }


def _image_frames(path: Path, check: OpenCheck | None = None) -> list[tuple[Path, int]]:
    """Validate an image file from its header and list its frames (pages)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_checked(path, check) as fh, Image.open(fh) as img:
            w, h = img.size
            frames = getattr(img, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: the image is too large to be a page ({_short(exc)})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: neither a PDF nor an image bookocr can read (PDF, PNG, JPEG, TIFF, ...)") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read the image ({_short(exc)})") from exc
    if w * h > MAX_PIXELS or max(w, h) > 60_000:
        raise InputError(f"{path}: the image is {w} x {h} px, over the {MAX_PIXELS // 1_000_000} MP limit for a page")
    if min(w, h) < 16:
        raise InputError(f"{path}: the image is {w} x {h} px, too small to be a page")
    return [(path, i) for i in range(frames)]


class ImageFileSource(_ImagePagesSource):
    def __init__(self, path: Path, check: OpenCheck | None = None) -> None:
        self.check = check
        self.frames = _image_frames(path, check)
        self.info = SourceInfo(
            str(path.resolve()), path.name, "image", file_sha256(path, check), path.stat().st_size, len(self.frames)
        )


def natural_key(name: str) -> list[Any]:
    """Sort key that puts page2 before page10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class ImageFolderSource(_ImagePagesSource):
    def __init__(self, path: Path, check: OpenCheck | None = None) -> None:
        self.check = check
        pages = [f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        for f in pages:
            problem = _link_problem(f)
            if problem:
                raise InputError(f"{f}: {problem}; remove it or link it to a page image")
        files = sorted((f for f in pages if f.is_file()), key=lambda f: natural_key(f.name))
        if not files:
            raise InputError(f"{path}: the folder holds no page images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.frames = [frame for f in files for frame in _image_frames(f, check)]
        digest = hashlib.sha256()
        size = 0
        for f in files:
            digest.update(f.name.encode() + b"\0" + file_sha256(f, check).encode())
            size += f.stat().st_size
        self.info = SourceInfo(
            str(path.resolve()), path.name, "image-folder", digest.hexdigest(), size, len(self.frames)
        )


def _link_problem(path: Path) -> str:
    """What is wrong with a symbolic link that leads to no file ('' for anything else)."""
    if not path.is_symlink():
        return ""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "a symbolic link that loops back on itself"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that loops back on itself"
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    return ""


def _looks_like(head: bytes) -> str:
    kinds = {b"\x89PNG": "a PNG image", b"\xff\xd8": "a JPEG image", b"PK": "a zip file", b"II*": "a TIFF image"}
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return kind
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<")):
        return "an HTML page, perhaps a download's error page"
    return "something else"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
