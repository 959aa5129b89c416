"""DeepSeek-OCR raw output -> clean page markdown. The one place where that happens.

With the grounding prompt the model writes a run of blocks::

    <|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>
    CONTENT

Coordinates are 0-999 relative to the page image. About 0.5% of real boxes are
malformed (``[[150 876, 315, 900]]``, ``x1 > x2``, values past 999, a ``<|det|>``
that never closes, a ref with no det at all), so parsing is lenient and never
raises. Content is kept as the model wrote it: HTML tables stay HTML and math
stays ``\\( \\)`` / ``\\[ \\]``. ``image`` blocks become figure references, and
the figure is cropped from the page image and saved when asked.

The raw output is stored beside every page, so this module can be improved and
re-run over a corpus without a GPU (``bookocr reclean BOOK``).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

EOS_TOKENS = ("<｜end▁of▁sentence｜>", "<|end▁of▁sentence|>")
COORD_MAX = 999
FIGURE_LABEL = "image"
FIGURE_JPEG_QUALITY = 85

_REF_RE = re.compile(r"<\|ref\|>([^<>\n]{0,80}?)<\|/ref\|>")
_DET_OPEN_RE = re.compile(r"\s*<\|det\|>")
_DET_CLOSE = "<|/det|>"
_LEADING_BOX_RE = re.compile(r"\s*\[\[[\d\s,.\-]*\](?:\s*,\s*\[[\d\s,.\-]*\])*\]")
_STRICT_DET_RE = re.compile(r"^\s*\[\[\d+, \d+, \d+, \d+\](?:, \[\d+, \d+, \d+, \d+\])*\]\s*$")
_NUMBER_RE = re.compile(r"-?\d+")
_LEFTOVER_TAG_RE = re.compile(r"<\|/?(?:ref|det|grounding)\|>")
_CENTER_RE = re.compile(r"</?center>", re.IGNORECASE)
_BLANK_RUN_RE = re.compile(r"\n{3,}")
_CLOSED_TABLE_RE = re.compile(r"<table\b.*?</table>", re.IGNORECASE | re.DOTALL)

# Repetition detection works on the end of the page, where a decoding loop shows.
TAIL_CHARS = 4000
MIN_PERIODIC_CHARS = 300  # a sequence repeated back to back must cover this much...
MIN_PERIODIC_REPEATS = 8  # ...at least this many times
MAX_PERIOD = 200
MIN_COMPRESSIBLE_CHARS = 1500
# zlib ratio of the tail: real pages 1-6 (a pipe table 5.7, a dot-leader TOC 5.2),
# the two looping samples 16.7 and 22.4
MIN_LOOP_COMPRESSION = 10.0

Box = tuple[int, int, int, int]


@dataclass
class Block:
    """One grounded block of the raw output."""

    label: str
    content: str
    boxes: list[Box] = field(default_factory=list)
    malformed: bool = False  # the det was missing, unclosed or not four numbers per box


@dataclass
class Figure:
    index: int  # 1-based within the page
    box: Box | None
    file: str | None = None  # name of the saved crop, beside the page


@dataclass
class CleanPage:
    markdown: str
    blocks: int
    figures: list[Figure]
    malformed_boxes: int
    repetition: str | None  # why the page looks like a decoding loop, or None

    @property
    def flags(self) -> list[str]:
        flags = []
        if not self.markdown:
            flags.append("empty")
        if self.repetition:
            flags.append("repetition")
        return flags


def strip_eos(text: str) -> str:
    for token in EOS_TOKENS:
        text = text.replace(token, "")
    return text


def parse_blocks(raw: str) -> list[Block]:
    """Split raw output into blocks. Text before the first ref (or all of it, for the
    plain "Free OCR." prompt) becomes one ``text`` block."""
    text = strip_eos(raw)
    refs = list(_REF_RE.finditer(text))
    blocks: list[Block] = []
    head = text[: refs[0].start()] if refs else text
    if head.strip():
        blocks.append(Block(label="text", content=head))
    for i, ref in enumerate(refs):
        end = refs[i + 1].start() if i + 1 < len(refs) else len(text)
        det, content = _split_det(text[ref.end() : end])
        boxes, malformed = parse_boxes(det)
        blocks.append(Block(label=ref.group(1).strip(), content=content, boxes=boxes, malformed=malformed))
    return blocks


def _split_det(body: str) -> tuple[str | None, str]:
    """(det text or None, content) for the text that follows one ``<|/ref|>``."""
    opened = _DET_OPEN_RE.match(body)
    if not opened:
        return None, body
    rest = body[opened.end() :]
    close = rest.find(_DET_CLOSE)
    if close != -1:
        return rest[:close], rest[close + len(_DET_CLOSE) :]
    leading = _LEADING_BOX_RE.match(rest)  # an unclosed det: keep what follows the box as content
    if leading:
        return leading.group(0), rest[leading.end() :]
    return "", rest


def parse_boxes(det: str | None) -> tuple[list[Box], bool]:
    """Boxes from a det's text, leniently, and whether the det was malformed."""
    if det is None:
        return [], True
    malformed = not _STRICT_DET_RE.match(det)
    numbers = [int(n) for n in _NUMBER_RE.findall(det)]
    if not numbers or len(numbers) % 4:
        return [], True
    boxes = []
    for i in range(0, len(numbers), 4):
        box = normalise_box(numbers[i : i + 4])
        if box is None:
            malformed = True
        else:
            boxes.append(box)
    return boxes, malformed


def normalise_box(values: list[int]) -> Box | None:
    """Clamp to 0-999 and order the corners; None when nothing is left of the box."""
    x1, y1, x2, y2 = (min(max(v, 0), COORD_MAX) for v in values)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return x1, y1, x2, y2


def clean(
    raw: str,
    page_image: Image.Image | None = None,
    figure_dir: Path | None = None,
    figure_prefix: str = "page",
) -> CleanPage:
    """Clean one page. Figures are cropped and saved only when both an image and a
    folder are given; otherwise they become plain ``[Figure N]`` references."""
    blocks = parse_blocks(raw)
    parts: list[str] = []
    figures: list[Figure] = []
    for block in blocks:
        body = block.content.strip()
        if block.label == FIGURE_LABEL:
            figure = Figure(index=len(figures) + 1, box=block.boxes[0] if block.boxes else None)
            if page_image is not None and figure_dir is not None and figure.box is not None:
                figure.file = save_figure(page_image, figure.box, figure_dir, f"{figure_prefix}_fig{figure.index}.jpg")
            figures.append(figure)
            parts.append(figure_reference(figure))
        if body:
            parts.append(body)
    markdown = tidy("\n\n".join(parts))
    return CleanPage(
        markdown=markdown,
        blocks=len(blocks),
        figures=figures,
        malformed_boxes=sum(b.malformed for b in blocks),
        repetition=detect_repetition(markdown),
    )


def figure_reference(figure: Figure) -> str:
    if figure.file:
        return f"![Figure {figure.index}]({figure.file})"
    return f"[Figure {figure.index}]"


def tidy(text: str) -> str:
    """The text-level fixes DeepSeek's own post-processing makes, plus leftover tags."""
    text = strip_eos(text)
    text = _LEFTOVER_TAG_RE.sub("", text)
    text = _CENTER_RE.sub("", text)
    text = text.replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN_RE.sub("\n\n", text).strip()


def save_figure(page_image: Image.Image, box: Box, folder: Path, name: str) -> str:
    """Crop a figure (box in 0-999 page coordinates) and save it as ``folder/name``."""
    w, h = page_image.size
    x1, y1, x2, y2 = box
    crop = page_image.crop((x1 * w // COORD_MAX, y1 * h // COORD_MAX, -(-x2 * w // COORD_MAX), -(-y2 * h // COORD_MAX)))
    if crop.mode not in ("L", "RGB"):
        crop = crop.convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    crop.save(folder / name, "JPEG", quality=FIGURE_JPEG_QUALITY)
    return name


# --- repetition ------------------------------------------------------------------------
def detect_repetition(text: str) -> str | None:
    """Why the end of ``text`` looks like a decoding loop, or None.

    Two views of the tail, either enough: a sequence repeated back to back (the
    olmOCR check), or a tail that compresses like a cycle of a few lines with small
    variations, which exact-repeat checks miss. Closed HTML tables are left out of
    the second view: a sparse or numeric table compresses as well as a loop, but a
    loop is cut off by the token limit and never closes its table.
    """
    return _periodic_tail(text[-TAIL_CHARS:]) or _compressible_tail(_CLOSED_TABLE_RE.sub("\n", text)[-TAIL_CHARS:])


def _periodic_tail(tail: str) -> str | None:
    for period in range(1, min(MAX_PERIOD, len(tail) // MIN_PERIODIC_REPEATS) + 1):
        unit = tail[-period:]
        if not unit.strip():
            continue
        repeats = 1
        while tail.endswith(unit * (repeats + 1)):
            repeats += 1
        if repeats >= MIN_PERIODIC_REPEATS and repeats * period >= MIN_PERIODIC_CHARS:
            return f"ends in {repeats} repeats of a {period}-character sequence"
    return None


def _compressible_tail(tail: str) -> str | None:
    if len(tail) < MIN_COMPRESSIBLE_CHARS:
        return None
    ratio = _compression_ratio(tail)
    if ratio >= MIN_LOOP_COMPRESSION:
        return f"the last {len(tail)} characters compress {ratio:.0f}x, like a loop"
    return None


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data, 9)))


__all__ = [
    "Block",
    "CleanPage",
    "Figure",
    "clean",
    "detect_repetition",
    "parse_blocks",
    "parse_boxes",
    "tidy",
    "strip_eos",
]
