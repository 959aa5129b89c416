"""Page images: render each page to a target size, or take the scan's own pixels.

Pages are sized by their long side in pixels (never a fixed zoom), so a
small-format book page and a large one both come out at a size OCR models read well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ocr_backend.errors import InputError

# pymupdf and Pillow (~60 ms to import) load where a page is drawn: a command that only reads the corpus
# (`bookocr search`) never pays for them.
if TYPE_CHECKING:
    import pymupdf
    from PIL import Image

DEFAULT_LONG_SIDE = 1600
# Under 64 px no text survives; over 10,000 px a page image takes 300 MB and reads no better.
MIN_LONG_SIDE, MAX_LONG_SIDE = 64, 10_000
MAX_PIXELS = 120_000_000  # refuse anything larger: a decompression bomb, not a book page


@dataclass(frozen=True)
class RenderSettings:
    long_side: int = DEFAULT_LONG_SIDE
    use_native: bool = True  # take a full-page scan image's own pixels when it is as good

    def __post_init__(self) -> None:
        if (
            isinstance(self.long_side, bool)
            or not isinstance(self.long_side, int)
            or not MIN_LONG_SIDE <= self.long_side <= MAX_LONG_SIDE
        ):
            raise InputError(
                f"the page image size (long side) must be {MIN_LONG_SIDE}-{MAX_LONG_SIDE} px, not {self.long_side!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """Resize so the long side is ``long_side`` px (up or down), keeping the aspect ratio."""
    from PIL import Image

    w, h = image.size
    scale = long_side / max(w, h)
    if abs(scale - 1.0) < 0.01:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def normalise_mode(image: Image.Image) -> Image.Image:
    from PIL import Image

    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("1", "I;16", "I", "F"):
        return image.convert("L")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        background = Image.new("RGB", image.size, "white")
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def render_pdf_page(page: pymupdf.Page, settings: RenderSettings) -> tuple[Image.Image, dict[str, Any]]:
    """Render one PDF page; returns the image and what was done (recorded in the manifest)."""
    import pymupdf
    from PIL import Image

    if settings.use_native:
        native = _native_scan(page)
        if native is not None:
            image = fit_long_side(normalise_mode(native), settings.long_side)
            meta = {"source": "native", "native_size": list(native.size)}
            return image, _describe(image, page, meta)
    rect = page.rect
    zoom = settings.long_side / max(rect.width, rect.height)
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    return image, _describe(image, page, {"source": "rendered"})


def _describe(image: Image.Image, page: pymupdf.Page, meta: dict[str, Any]) -> dict[str, Any]:
    dpi = 72.0 * max(image.size) / max(page.rect.width, page.rect.height)
    return {**meta, "width": image.width, "height": image.height, "dpi": round(dpi, 1)}


def _native_scan(page: pymupdf.Page) -> Image.Image | None:
    """The page's single full-page scan image, when it can be used as is.

    Only when the page is unrotated, the image is drawn upright and unflipped
    over (nearly) the whole page, and nothing else is drawn on top of it.
    """
    import pymupdf
    from PIL import Image

    if page.rotation % 360:
        return None
    infos = page.get_image_info(xrefs=True)
    if len(infos) != 1 or not infos[0].get("xref"):
        return None
    info = infos[0]
    a, b, c, d, _, _ = info["transform"]
    if abs(b) > 1e-6 or abs(c) > 1e-6 or a <= 0 or d <= 0:
        return None
    covered = abs(pymupdf.Rect(info["bbox"]) & page.rect) / (abs(page.rect) or 1.0)
    if covered < 0.97 or info.get("has-mask"):
        return None
    if info["width"] * info["height"] > MAX_PIXELS:
        return None
    if page.get_drawings() or page.get_text("text").strip():
        return None  # something else is drawn on the page: render it all
    try:
        pix = pymupdf.Pixmap(page.parent, info["xref"])
        if pix.n - pix.alpha not in (1, 3):
            pix = pymupdf.Pixmap(pymupdf.csRGB, pix)
        if pix.alpha:
            pix = pymupdf.Pixmap(pix, 0)
        mode = "L" if pix.n == 1 else "RGB"
        return Image.frombytes(mode, (pix.width, pix.height), pix.samples)
    except Exception:
        return None
