"""Open a book source (PDF, image, multi-page TIFF, folder of page images) and validate it.

Everything a user can get wrong is caught here, before the corpus is touched.
"""

from __future__ import annotations

import hashlib
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymupdf
from PIL import Image, UnidentifiedImageError

from ocr_backend.errors import InputError
from ocr_backend.pdf_text import TextLayer, extract_text_layer
from ocr_backend.render import MAX_PIXELS, RenderSettings, fit_long_side, normalise_mode, render_pdf_page

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


def open_source(path: str | os.PathLike[str]) -> Source:
    """Open and validate a source; raises :class:`InputError` with a specific message."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        return ImageFolderSource(p)
    if not p.is_file():
        raise InputError(f"{p}: not a regular file; give a PDF, an image, or a folder of page images")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: cannot read the file (permission denied)")
    try:
        head = p.open("rb").read(8)
    except OSError as exc:
        raise InputError(f"{p}: cannot read the file ({exc.strerror or exc})") from exc
    if not head:
        raise InputError(f"{p}: the file is empty")
    if head.startswith(b"%PDF") or p.suffix.lower() == ".pdf":
        return PdfSource(p)
    return ImageFileSource(p)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PdfSource(Source):
    def __init__(self, path: Path) -> None:
        try:
            self.doc = pymupdf.open(path, filetype="pdf")
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
        if self.doc.is_repaired:
            self._check_damage(path)
        self.info = SourceInfo(
            str(path.resolve()), path.name, "pdf", file_sha256(path), path.stat().st_size, self.doc.page_count
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
            long_side, short_side = max(rect.width, rect.height), min(rect.width, rect.height)
            if long_side > MAX_PAGE_PT or short_side < MIN_PAGE_PT:
                self.doc.close()
                raise InputError(
                    f"{path}: page {index + 1} is {rect.width:.0f} x {rect.height:.0f} pt, outside the sane range "
                    f"{MIN_PAGE_PT:.0f}-{MAX_PAGE_PT:.0f} pt; this is not a book page"
                )

    def _check_damage(self, path: Path) -> None:
        """MuPDF silently repairs broken files; refuse one whose pages lost their content."""
        pymupdf.TOOLS.reset_mupdf_warnings()
        for page in self.doc:
            page.get_text("text")
            for xref, *_ in page.get_images(full=True):
                if not self.doc.xref_is_stream(xref):
                    pymupdf.TOOLS.mupdf_warnings()  # keep the log short
                    self.doc.close()
                    raise InputError(
                        f"{path}: the PDF is truncated or corrupt (page {page.number + 1} lost its image); "
                        "re-download or repair it (e.g. qpdf) and try again"
                    )
        warnings = pymupdf.TOOLS.mupdf_warnings()
        damage = [w for w in warnings.splitlines() if any(k in w for k in _DAMAGE_WARNINGS)]
        if damage:
            self.doc.close()
            raise InputError(
                f"{path}: the PDF is truncated or corrupt ({damage[0].strip()}); re-download or repair it "
                "(e.g. qpdf) and try again"
            )

    def text_layer(self, number: int) -> TextLayer | None:
        return extract_text_layer(self.doc[number - 1])

    def render(self, number: int, settings: RenderSettings) -> tuple[Image.Image, dict[str, Any]]:
        return render_pdf_page(self.doc[number - 1], settings)

    def page_labels(self) -> list[str] | None:
        if not self.doc.get_page_labels():
            return None
        return [self.doc[i].get_label() for i in range(self.doc.page_count)]

    def outline(self) -> list[tuple[int, str, int]]:
        return [(level, title, page) for level, title, page, *_ in self.doc.get_toc(simple=True)]

    def close(self) -> None:
        self.doc.close()


class _ImagePagesSource(Source):
    """Shared by single images, multi-page TIFFs and folders: each page is one frame of a file."""

    frames: list[tuple[Path, int]]

    def text_layer(self, number: int) -> TextLayer | None:
        return None

    def render(self, number: int, settings: RenderSettings) -> tuple[Image.Image, dict[str, Any]]:
        path, frame = self.frames[number - 1]
        with Image.open(path) as img:
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


def _image_frames(path: Path) -> list[tuple[Path, int]]:
    """Validate an image file from its header and list its frames (pages)."""
    try:
        with Image.open(path) as img:
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
    def __init__(self, path: Path) -> None:
        self.frames = _image_frames(path)
        self.info = SourceInfo(
            str(path.resolve()), path.name, "image", file_sha256(path), path.stat().st_size, len(self.frames)
        )


def natural_key(name: str) -> list[Any]:
    """Sort key that puts page2 before page10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class ImageFolderSource(_ImagePagesSource):
    def __init__(self, path: Path) -> None:
        files = sorted(
            (
                f
                for f in path.iterdir()
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
            ),
            key=lambda f: natural_key(f.name),
        )
        if not files:
            raise InputError(f"{path}: the folder holds no page images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.frames = [frame for f in files for frame in _image_frames(f)]
        digest = hashlib.sha256()
        size = 0
        for f in files:
            digest.update(f.name.encode() + b"\0" + file_sha256(f).encode())
            size += f.stat().st_size
        self.info = SourceInfo(
            str(path.resolve()), path.name, "image-folder", digest.hexdigest(), size, len(self.frames)
        )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
