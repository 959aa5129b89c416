"""Rebuild a page from positioned text lines: reading order, paragraphs, headings, furniture.

Both the text-layer engine (PyMuPDF lines) and the local OCR engine (PP-OCR
boxes) produce unordered positioned lines; this module turns them into markdown.

The steps, in order:

1. *Furniture*: the first/last rows of the page that look like running heads or
   page numbers are set aside (``PageLayout.furniture``), never put in the body.
2. *Reading order*: blocks first. The body is cut into blocks at column gutters, found
   as a vertical strip of white that stays free over a run of horizontal bands and has
   real text lines on both sides (so centred display maths or an indented equation
   never makes a column); a block across the page (a title, a lead paragraph) is cut
   off above or below the columns. Blocks are read top to bottom, columns left to
   right, recursively. A few rows over the gutter that the columns flow around (a
   pull quote) and a block inside a column that interrupts its text mid-sentence (a
   caption under its figure, a pull quote in larger type) are blocks of their own:
   the text runs on across them, and they follow the paragraph they interrupt.
3. *Paragraphs*: inside a block, fragments are grouped into visual rows; a new
   paragraph starts at an indent, a large vertical gap, a centred (display) row,
   or a heading (a row in a clearly larger size, or a short standalone caps/bold
   row). Hyphenated line ends are joined when a word was split.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TextLine:
    """One line of text with its box in page coordinates (any unit, y grows downwards)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    size: float = 0.0  # font size when known (text layer); 0 means use the box height
    bold: bool = False
    score: float = 1.0  # recogniser confidence when known

    @property
    def height(self) -> float:
        return self.size or (self.y1 - self.y0)

    @property
    def box_height(self) -> float:
        return self.y1 - self.y0

    @property
    def x_center(self) -> float:
        return (self.x0 + self.x1) / 2


@dataclass
class PageLayout:
    markdown: str
    furniture: list[str] = field(default_factory=list)  # running heads, page numbers (page order)
    columns: int = 1  # most columns found side by side anywhere on the page


# --- tunables (in units of the page's typical line-box height unless noted) -------------
SHRINK = 0.25  # boxes are trimmed by this share of their height before bands are chained
MIN_GUTTER = 0.3  # narrowest white strip that can separate two columns (OCR boxes are padded)
MIN_CUT = 0.25  # share of MIN_GUTTER that must stay white straight down the whole run
MAX_COLUMN_GAP = 2.0  # a column region ends at a vertical gap wider than this
COLUMN_LINE_CHARS = 12  # a column must hold text lines of at least this many characters ...
COLUMN_MIN_LINES = 3  # ... and at least this many of them on each side of the gutter
MAX_INSET_ROWS = 4  # an inset over the gutter (a pull quote) or a caption is at most this many rows ...
INSET_MARGIN = 1.5  # ... an inset keeps this far from both outer edges of the columns
FLOAT_APART = 0.4  # a block inside a column (caption, pull quote) has this much white above and below ...
FIGURE_GAP = 3.0  # ... and a caption this much on one side, where its figure is
HEADING_RATIO = 1.25  # a row this much larger than body text is a heading
SOFT_HEADING_RATIO = 1.12  # ... and so is a short standalone row this much larger
WIDE_TYPE_RATIO = 1.25  # ... or one whose letters are this much wider
TITLE_RATIO = 1.6  # ... and this much larger a top-level heading
HEADING_MAX_WORDS = 16
SOFT_HEADING_MAX_WORDS = 8
MAX_HEADING_ROWS = 3
FURNITURE_MAX_WORDS = 10
FIGURE_BLOB_HEIGHT = 3.0  # a box this many lines tall holding one or two characters is part of a drawing
TOP_ZONE = 0.2  # share of the page height searched for running heads
BOTTOM_ZONE = 0.12  # share of the page height searched for footers without a number

_FOLIO = re.compile(r"^(?:page\s+)?[(\[\-–—·•]*\s*(?:\d{1,4}|[ivxlcdm]{1,8})\s*[)\]\-–—·•.]*$", re.IGNORECASE)
_MATH_CHARS = re.compile(r"[=+±√∑∏∫<>≤≥^∞]")
_SENTENCE_END = re.compile(r"[.!?:;”\"')\]]$")
_HYPHENS = ("-", "\u2010", "\u00ad")
_FUNCTION_WORDS = frozenset("a an and as at by for from in into is of on or that the to which with".split())

RowKind = Literal["text", "heading", "display"]


@dataclass
class _Row:
    """Fragments that share one visual line, left to right."""

    parts: list[TextLine]

    @property
    def x0(self) -> float:
        return min(p.x0 for p in self.parts)

    @property
    def x1(self) -> float:
        return max(p.x1 for p in self.parts)

    @property
    def y0(self) -> float:
        return min(p.y0 for p in self.parts)

    @property
    def y1(self) -> float:
        return max(p.y1 for p in self.parts)

    @property
    def main(self) -> TextLine:
        return max(self.parts, key=lambda p: len(p.text))

    @property
    def text(self) -> str:
        return " ".join(p.text for p in sorted(self.parts, key=lambda p: p.x0))

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class _Paragraph:
    kind: RowKind
    rows: list[_Row]
    level: int = 0  # heading level
    after: list[_Paragraph] = field(
        default_factory=list
    )  # blocks it flows around (pull quote, caption), shown after it

    def text(self) -> str:
        if self.kind == "display":
            return "\n".join(row.text for row in self.rows)
        return join_lines(row.text for row in self.rows)


@dataclass(frozen=True)
class _Metrics:
    unit: float  # typical line-box height: the yardstick for gaps and indents
    size: float  # typical text size (font size when known, else box height)
    char_width: float  # typical width of one character: grows with the type size too


def build_markdown(lines: list[TextLine], width: float, height: float) -> PageLayout:
    """Rebuild one page: furniture apart, columns in reading order, paragraphs and headings."""
    lines = [ln for ln in (_clean(ln) for ln in lines) if ln is not None]
    if not lines:
        return PageLayout(markdown="")
    metrics = _measure(lines)
    lines = [ln for ln in lines if not _figure_blob(ln, metrics)]
    furniture_rows, body = _split_furniture(lines, height, metrics)
    regions, columns = _reading_regions(body, metrics)
    paragraphs: list[_Paragraph] = []
    for region in regions:
        _append_region(paragraphs, _region_paragraphs(region, metrics))
    return PageLayout(
        markdown=_render(paragraphs),
        furniture=[row.text for row in furniture_rows],
        columns=columns,
    )


def join_lines(lines: Iterable[str]) -> str:
    """Join the lines of one paragraph, mending words hyphenated across line ends."""
    out = ""
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        if not out:
            out = text
        elif _split_word(out, text):
            out = out[:-1] + text
        else:
            out += " " + text
    return out


def _split_word(before: str, after: str) -> bool:
    """A line ending "math-" followed by "ematics": one word broken by the typesetter."""
    return len(before) > 1 and before.endswith(_HYPHENS) and before[-2].isalpha() and after[:1].islower()


# --- preparation ----------------------------------------------------------------------
def _clean(line: TextLine) -> TextLine | None:
    text = " ".join(line.text.split())
    if not text or line.x1 <= line.x0 or line.y1 <= line.y0:
        return None
    if len(text) >= 4 and not any(ch.isalnum() for ch in text):
        return None  # dot leaders and rules ("........", "_____") are not content
    if text != line.text:
        line = TextLine(text, line.x0, line.y0, line.x1, line.y1, line.size, line.bold, line.score)
    return line


def _figure_blob(line: TextLine, m: _Metrics) -> bool:
    """One or two characters read off a box several lines tall: a drawing, not text (an "E" off a
    diagram once hid a running head below it by joining its row)."""
    return len(line.text.replace(" ", "")) <= 2 and line.box_height > FIGURE_BLOB_HEIGHT * m.unit


def _measure(lines: Sequence[TextLine]) -> _Metrics:
    texty = [ln for ln in lines if len(ln.text) >= 10] or list(lines)
    return _Metrics(
        unit=statistics.median(ln.box_height for ln in texty),
        size=statistics.median(ln.height for ln in texty),
        char_width=statistics.median(_char_width(ln) for ln in texty),
    )


def _char_width(line: TextLine) -> float:
    return (line.x1 - line.x0) / max(1, len(line.text))


def _group_rows(lines: Sequence[TextLine]) -> list[_Row]:
    """Group fragments into visual rows, top to bottom.

    A fragment joins the row of the last few whose widest fragment it shares a row with
    (see :func:`_same_row`), so one tall formula never swallows the lines around it.
    """
    rows: list[_Row] = []
    for line in sorted(lines, key=lambda ln: (ln.y0 + ln.y1) / 2):
        target = None
        for row in reversed(rows[-3:]):
            if _same_row(max(row.parts, key=lambda p: p.x1 - p.x0), line):
                target = row
                break
        if target is None:
            rows.append(_Row([line]))
        else:
            target.parts.append(line)
    rows.sort(key=lambda r: r.y0)
    return rows


def _same_row(core: TextLine, line: TextLine) -> bool:
    """Each box's middle lies inside the other, or they overlap by most of the smaller height."""
    mid_core, mid_line = (core.y0 + core.y1) / 2, (line.y0 + line.y1) / 2
    if core.y0 <= mid_line <= core.y1 and line.y0 <= mid_core <= line.y1:
        return True
    overlap = min(core.y1, line.y1) - max(core.y0, line.y0)
    return overlap >= 0.7 * min(core.box_height, line.box_height)


# --- furniture ------------------------------------------------------------------------
def _split_furniture(lines: list[TextLine], page_height: float, m: _Metrics) -> tuple[list[_Row], list[TextLine]]:
    """Set aside running heads and page numbers at the top and bottom of the page."""
    rows = _group_rows(lines)
    top = _top_furniture(rows, page_height, m)
    rest = rows[len(top) :]
    bottom = _bottom_furniture(rest, page_height, m)
    kept = {id(p) for row in top + bottom for p in row.parts}
    return top + bottom, [ln for ln in lines if id(ln) not in kept]


def _top_furniture(rows: list[_Row], page_height: float, m: _Metrics) -> list[_Row]:
    """The head row (running head and/or page number), and any margin line above a page number."""
    for i, row in enumerate(rows[:2]):
        if row.y0 > TOP_ZONE * page_height or i + 1 >= len(rows):
            break
        if rows[i + 1].y0 - row.y1 < 0.5 * m.unit:
            continue
        if _is_folio_row(row) or (i == 0 and _is_head_row(row, m)):
            return rows[: i + 1]
    return []


def _bottom_furniture(rows: list[_Row], page_height: float, m: _Metrics) -> list[_Row]:
    found: list[_Row] = []
    for i in range(len(rows) - 1, max(len(rows) - 3, 0), -1):
        row, above = rows[i], rows[i - 1]
        gap_above = row.y0 - above.y1
        folio = _is_folio_row(row) and gap_above >= 0.5 * m.unit
        footer = (
            row.y0 >= (1 - BOTTOM_ZONE) * page_height
            and row.words <= 6
            and gap_above >= 1.2 * m.unit
            and _size(row) <= 1.1 * m.size
        )
        if not (folio or footer):
            break
        found.insert(0, row)
    return found


def _is_folio_row(row: _Row) -> bool:
    """A page number alone, or beside a short running head ("2 NATURE OF MATHEMATICS")."""
    if row.words > FURNITURE_MAX_WORDS:
        return False
    if any(_FOLIO.match(p.text) for p in row.parts):
        return True
    tokens = row.text.split()
    return any(token.isdigit() and len(token) <= 4 for token in (tokens[0], tokens[-1]))


def _is_head_row(row: _Row, m: _Metrics) -> bool:
    """A short running head: small or mostly capitals, never larger than the text."""
    text = row.text
    letters = [ch for ch in text if ch.isalpha()]
    if not letters or row.words > FURNITURE_MAX_WORDS or _size(row) > 1.15 * m.size or text.endswith((".", ",")):
        return False
    upper = sum(ch.isupper() for ch in letters) / len(letters)
    return upper >= 0.7 or _size(row) <= 0.92 * m.size


def _size(row: _Row) -> float:
    return row.main.height


# --- reading order ----------------------------------------------------------------------
@dataclass
class _Region:
    """A block read as one flow (a column, or a block across the page), with the blocks set apart
    from it (a pull quote, a caption), each shown after the paragraph it interrupts."""

    lines: list[TextLine]
    floats: list[list[TextLine]] = field(default_factory=list)
    bridges: list[tuple[float, float]] = field(
        default_factory=list
    )  # y-ranges its text runs on across (an inset beside it)


@dataclass
class _Run:
    """Consecutive bands split by one white gutter at x in [lo, hi]; ``insets`` are (first, last)
    bands of blocks over the gutter that the columns flow around (a pull quote)."""

    start: int
    end: int
    lo: float
    hi: float
    insets: list[tuple[int, int]] = field(default_factory=list)

    def bands(self) -> list[int]:
        inset = {j for first, last in self.insets for j in range(first, last + 1)}
        return [j for j in range(self.start, self.end + 1) if j not in inset]


def _reading_regions(lines: list[TextLine], m: _Metrics) -> tuple[list[_Region], int]:
    """Cut the body into blocks in reading order; also report the most columns side by side.

    The best column run is found first; what lies above it, its left column, its right column and
    what lies below it are cut the same way in turn, and read in that order.
    """
    if len(lines) < 2 * COLUMN_MIN_LINES:
        return ([_Region(lines)] if lines else []), 1
    bands = _bands(lines)
    run = _best_gutter(bands, m)
    if run is None:
        return [_Region(lines)], 1
    cut = (run.lo + run.hi) / 2
    middle = [ln for j in run.bands() for ln in bands[j]]
    left = [ln for ln in middle if ln.x_center < cut]
    right = [ln for ln in middle if ln.x_center >= cut]
    before = [ln for band in bands[: run.start] for ln in band]
    after = [ln for band in bands[run.end + 1 :] for ln in band]
    parts = [_reading_regions(part, m) for part in (before, left, right, after)]
    for first, last in run.insets:  # both columns go on below an inset; it is shown with the left one
        inset = [ln for band in bands[first : last + 1] for ln in band]
        top, bottom = min(ln.y0 for ln in inset), max(ln.y1 for ln in inset)
        _host(parts[1][0], top).floats.append(inset)
        for region in parts[1][0] + parts[2][0]:
            region.bridges.append((top, bottom))
    regions = [region for sub, _ in parts for region in sub]
    columns = max(parts[0][1], parts[1][1] + parts[2][1], parts[3][1])
    return regions, columns


def _host(regions: list[_Region], top: float) -> _Region:
    """The region whose text runs just above ``top``."""
    above = [r for r in regions if any(ln.y1 <= top for ln in r.lines)]
    return max(above, key=lambda r: max(ln.y1 for ln in r.lines if ln.y1 <= top)) if above else regions[0]


def _bands(lines: Sequence[TextLine]) -> list[list[TextLine]]:
    """Horizontal bands: lines chained by vertical overlap (boxes trimmed so near-touching lines stay apart)."""
    bands: list[list[TextLine]] = []
    bottom = float("-inf")
    for line in sorted(lines, key=lambda ln: ln.y0):
        trim = SHRINK * line.box_height
        if not bands or line.y0 + trim > bottom:
            bands.append([])
        bands[-1].append(line)
        bottom = max(bottom, line.y1 - trim) if len(bands[-1]) > 1 else line.y1 - trim
    return bands


def _free_gaps(
    band: Sequence[TextLine], x0: float, x1: float
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """White x-intervals of a band within [x0, x1]: (all of them, only those with text on both sides)."""
    spans = sorted((ln.x0, ln.x1) for ln in band)
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    interior = [(merged[i][1], merged[i + 1][0]) for i in range(len(merged) - 1)]
    edges = [(x0, merged[0][0]), (merged[-1][1], x1)]
    return [g for g in interior + edges if g[1] > g[0]], interior


def _best_gutter(bands: list[list[TextLine]], m: _Metrics) -> _Run | None:
    """The best column gutter, or None.

    A gutter is an x-interval of white that is interior to at least one band and stays
    white (at least MIN_GUTTER wide) over a run of consecutive bands, with real text
    columns on both sides. The run holding the most lines wins.
    """
    x0 = min(ln.x0 for band in bands for ln in band)
    x1 = max(ln.x1 for band in bands for ln in band)
    gaps = [_free_gaps(band, x0, x1) for band in bands]
    min_width = MIN_GUTTER * m.unit
    best: tuple[int, float, _Run] | None = None  # (lines, width, run)
    for i, (_, interior) in enumerate(gaps):
        for seed in interior:
            if seed[1] - seed[0] < min_width:
                continue
            run = _extend_run(bands, gaps, i, seed, m)
            middle = [ln for j in run.bands() for ln in bands[j]]
            cut = (run.lo + run.hi) / 2
            left = [ln for ln in middle if ln.x_center < cut]
            right = [ln for ln in middle if ln.x_center >= cut]
            if not (_is_text_column(left) and _is_text_column(right)):
                continue
            if best is None or (len(middle), run.hi - run.lo) > best[:2]:
                best = (len(middle), run.hi - run.lo, run)
    return None if best is None else best[2]


Gaps = list[tuple[list[tuple[float, float]], list[tuple[float, float]]]]


def _extend_run(bands: list[list[TextLine]], gaps: Gaps, i: int, seed: tuple[float, float], m: _Metrics) -> _Run:
    """Grow a run of bands up and down from band ``i`` while the white strip stays wide enough;
    downwards, also past an inset block over the gutter after which the same columns go on."""
    run = _Run(i, i, *seed)
    j = i - 1
    while j >= 0 and (strip := _strip(bands, gaps, j, j + 1, run, m)):
        run.lo, run.hi, run.start = *strip, j
        j -= 1
    j = i + 1
    while j < len(bands):
        strip = _strip(bands, gaps, j, j - 1, run, m)
        if strip is None:
            resume = _past_inset(bands, gaps, j, run, m)
            if resume is None:
                break
            run.insets.append((j, resume - 1))
            j = resume
            strip = _strip(bands, gaps, j, None, run, m)
            assert strip is not None  # _past_inset only resumes where the strip goes on
        run.lo, run.hi, run.end = *strip, j
        j += 1
    return run


def _strip(
    bands: list[list[TextLine]], gaps: Gaps, j: int, previous: int | None, run: _Run, m: _Metrics
) -> tuple[float, float] | None:
    """The strip of white the run keeps if band ``j`` joins it after band ``previous`` (None: no gap check), or None."""
    min_width = MIN_GUTTER * m.unit
    if previous is not None:
        upper, lower = (bands[previous], bands[j]) if previous < j else (bands[j], bands[previous])
        if min(ln.y0 for ln in lower) - max(ln.y1 for ln in upper) > MAX_COLUMN_GAP * m.unit:
            return None  # a wide white gap ends the columns (a title or a new article follows)
    # the band's own white must be wide, but the strip shared by all bands need only
    # leave room for a straight cut: narrow gutters drift by a few pixels down a page
    white = max(gaps[j][0], key=lambda g: min(run.hi, g[1]) - max(run.lo, g[0]), default=None)
    if (
        white is None
        or white[1] - white[0] < min_width
        or min(run.hi, white[1]) - max(run.lo, white[0]) < MIN_CUT * min_width
    ):
        return None
    return max(run.lo, white[0]), min(run.hi, white[1])


def _past_inset(bands: list[list[TextLine]], gaps: Gaps, j: int, run: _Run, m: _Metrics) -> int | None:
    """Where the columns resume below an inset that starts at band ``j``, or None.

    An inset is a few rows over the gutter (a pull quote) that keep clear of both outer edges of
    the columns, with the columns going on below it, and the text shows that they flow around it:
    the right column above it stops mid-sentence, or the left column stops mid-sentence and goes
    on in lower case below it. A block across the columns after which a new section begins (a
    heading, a full-width paragraph) ends the run instead.
    """
    if _strip(bands, gaps, j, None, run, m) is not None:
        return None  # only a wide white gap: no inset, the columns end
    for k in range(j + 1, min(j + MAX_INSET_ROWS, len(bands) - 3) + 1):
        if _strip(bands, gaps, k, None, run, m) is None:
            continue
        if _strip(bands, gaps, k + 1, k, run, m) is None or _strip(bands, gaps, k + 2, k + 1, run, m) is None:
            return None  # the columns below must go on for a few rows at least
        above = [ln for band in bands[run.start : j] for ln in band]
        inset = [ln for band in bands[j:k] for ln in band]
        below = [ln for band in bands[k : k + 3] for ln in band]
        flows = _is_inset(above, inset, below, m) and _flows_around(above, below, (run.lo + run.hi) / 2)
        return k if flows else None
    return None


def _is_inset(above: list[TextLine], inset: list[TextLine], below: list[TextLine], m: _Metrics) -> bool:
    """Clear of both outer edges of the columns around it, and not far from them."""
    left_edge = min(ln.x0 for ln in above + below)
    right_edge = max(ln.x1 for ln in above + below)
    clear = (
        min(ln.x0 for ln in inset) - left_edge > INSET_MARGIN * m.unit
        and right_edge - max(ln.x1 for ln in inset) > INSET_MARGIN * m.unit
    )
    return clear and min(ln.y0 for ln in below) - max(ln.y1 for ln in above) <= 3 * MAX_INSET_ROWS * m.unit


def _flows_around(above: list[TextLine], below: list[TextLine], cut: float) -> bool:
    """The columns above stop mid-sentence where their text goes on below: the right one, or the left one
    (its text going on in lower case below)."""
    left_above = _edge_row([ln for ln in above if ln.x_center < cut], last=True)
    right_above = _edge_row([ln for ln in above if ln.x_center >= cut], last=True)
    left_below = _edge_row([ln for ln in below if ln.x_center < cut], last=False)
    if left_above is None or right_above is None or left_below is None:
        return False
    return _ends_open(right_above.text) or (_ends_open(left_above.text) and left_below.text[:1].islower())


def _edge_row(lines: list[TextLine], last: bool) -> _Row | None:
    """The last (or first) visual row of some lines."""
    rows = _group_rows(lines)
    return (rows[-1] if last else rows[0]) if rows else None


def _ends_open(text: str) -> bool:
    """A line that stops mid-sentence: the text goes on elsewhere."""
    return text.endswith(_HYPHENS) or not _SENTENCE_END.search(text)


def _is_text_column(lines: Sequence[TextLine]) -> bool:
    return sum(len(ln.text.replace(" ", "")) >= COLUMN_LINE_CHARS for ln in lines) >= COLUMN_MIN_LINES


# --- blocks set apart from the flow -------------------------------------------------------
def _region_paragraphs(region: _Region, m: _Metrics) -> list[_Paragraph]:
    """The region's paragraphs, each block set apart from its flow shown after the paragraph it interrupts."""
    rows = _group_rows(region.lines)
    floats = [_group_rows(block) for block in region.floats]
    rows, islands = _split_floats(rows, m)
    floats = sorted(floats + islands, key=lambda block: block[0].y0)
    # the text runs on across a float: the white it leaves is no paragraph break
    spans = region.bridges + [(block[0].y0, block[-1].y1) for block in floats]
    bridged = {
        i
        for i in range(1, len(rows))
        for top, bottom in spans
        if _middle(rows[i - 1]) < (top + bottom) / 2 < _middle(rows[i])
    }
    paragraphs = _paragraphs(rows, m, bridged)
    for block in floats:
        float_paragraph = _Paragraph("text", block)
        host = [p for p in paragraphs if p.rows[0].y0 < block[0].y0]
        if host:
            host[-1].after.append(float_paragraph)
        else:
            paragraphs.insert(0, float_paragraph)
    return paragraphs


def _middle(row: _Row) -> float:
    return (row.y0 + row.y1) / 2


def _split_floats(rows: list[_Row], m: _Metrics) -> tuple[list[_Row], list[list[_Row]]]:
    """Take out of a column the blocks that interrupt its text: a caption, a pull quote.

    A block of a few rows set apart by white from the text above and below, where that text
    runs on across it mid-sentence, set in larger type (a pull quote) or beside a tall white
    space (the figure a caption belongs to). Display maths sits mid-sentence too, and stays.
    """
    groups: list[list[_Row]] = []
    for row in rows:
        if groups and row.y0 - groups[-1][-1].y1 < FLOAT_APART * m.unit:
            groups[-1].append(row)
        else:
            groups.append([row])
    body: list[_Row] = []
    floats: list[list[_Row]] = []
    for k, group in enumerate(groups):
        below = groups[k + 1][0] if k + 1 < len(groups) else None
        if body and below is not None and _is_float(body[-1], group, below, m):
            floats.append(group)
        else:
            body.extend(group)
    return body, floats


def _is_float(above: _Row, block: list[_Row], below: _Row, m: _Metrics) -> bool:
    if len(block) > MAX_INSET_ROWS or not (_ends_open(above.text) and below.text[:1].islower()):
        return False
    if not all(_prose(row.text) for row in block):
        return False  # maths, or labels read off a drawing
    larger = statistics.median(_size(row) for row in block) >= SOFT_HEADING_RATIO * m.size
    wider = statistics.median(_char_width(row.main) for row in block) >= WIDE_TYPE_RATIO * m.char_width
    beside_figure = max(block[0].y0 - above.y1, below.y0 - block[-1].y1) >= FIGURE_GAP * m.unit
    return larger or wider or beside_figure


def _prose(text: str) -> bool:
    """Words, not maths: a few words of letters, few other signs."""
    chars = text.replace(" ", "")
    words = sum(sum(ch.isalpha() for ch in word) >= 2 for word in text.split())
    return words >= 3 and sum(ch.isalpha() for ch in chars) >= 0.7 * len(chars) and not _MATH_CHARS.search(text)


# --- paragraphs -----------------------------------------------------------------------
def _paragraphs(rows: list[_Row], m: _Metrics, bridged: set[int] | None = None) -> list[_Paragraph]:
    """Rows into paragraphs; ``bridged``: indices of rows whose text runs on from the row before across a float."""
    if not rows:
        return []
    left = _percentile([r.x0 for r in rows], 0.2)
    right = _percentile([r.x1 for r in rows], 0.8)
    width = max(right - left, m.unit)
    pitch = statistics.median([b.y0 - a.y0 for a, b in zip(rows, rows[1:])] or [m.unit * 1.2])
    pitch = max(pitch, m.unit)
    passage = _large_type_passages(rows, m)
    kinds: list[tuple[RowKind, int]] = []
    for i, row in enumerate(rows):
        prev, nxt = (rows[i - 1] if i else None), (rows[i + 1] if i + 1 < len(rows) else None)
        kind = _classify(row, prev, nxt, m, left, right, width, may_head=i not in passage)
        if kind[0] != "heading" and prev is not None and kinds[-1][0] == "heading" and row.y0 - prev.y1 < 0.8 * m.unit:
            carried = _heading_level(row, prev, None, m, continuing=True)
            kind = ("heading", carried) if carried == kinds[-1][1] else kind  # a heading's second row
        kinds.append(kind)
    paragraphs: list[_Paragraph] = []
    for i, (row, (kind, level)) in enumerate(zip(rows, kinds)):
        last = paragraphs[-1] if paragraphs else None
        if last is not None and _continues(
            last, kind, level, row, rows[i - 1], m, left, right, pitch, i in (bridged or ())
        ):
            last.rows.append(row)
        else:
            paragraphs.append(_Paragraph(kind, [row], level))
    return paragraphs


def _large_type_passages(rows: list[_Row], m: _Metrics) -> set[int]:
    """Rows in a run of more than MAX_HEADING_ROWS close-set rows of one larger size.

    A passage in large type (an abstract), not headings.
    """
    passage: set[int] = set()
    i = 0
    while i < len(rows):
        j = i
        while (
            j < len(rows)
            and _size(rows[j]) >= SOFT_HEADING_RATIO * m.size
            and (
                j == i
                or (rows[j].y0 - rows[j - 1].y1 < 0.8 * m.unit and abs(_size(rows[j]) / _size(rows[i]) - 1) < 0.15)
            )
        ):
            j += 1
        if j - i > MAX_HEADING_ROWS:
            passage.update(range(i, j))
        i = max(j, i + 1)
    return passage


def _classify(
    row: _Row,
    prev: _Row | None,
    nxt: _Row | None,
    m: _Metrics,
    left: float,
    right: float,
    width: float,
    may_head: bool = True,
) -> tuple[RowKind, int]:
    level = _heading_level(row, prev, nxt, m) if may_head else 0
    if level:
        return "heading", level
    margin_left, margin_right = row.x0 - left, right - row.x1
    centred = min(margin_left, margin_right) >= 2 * m.unit and abs(margin_left - margin_right) <= max(
        2 * m.unit, 0.1 * width
    )
    return ("display", 0) if centred else ("text", 0)


def _heading_level(row: _Row, prev: _Row | None, nxt: _Row | None, m: _Metrics, continuing: bool = False) -> int:
    """1 or 2 for a row set larger than the text, 3 for a short standalone caps/bold row, else 0."""
    text = row.text
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) < 2 or row.words > HEADING_MAX_WORDS or _MATH_CHARS.search(text) or text.endswith((*_HYPHENS, ",")):
        return 0
    if letters[0].islower() and not continuing:
        return 0
    ratio = _size(row) / m.size if m.size else 1.0
    if ratio >= TITLE_RATIO:
        return 1
    if text.split()[-1].lower() in _FUNCTION_WORDS:
        return 0  # a line cut off mid-phrase ("... deliberations on the"): running text in larger type
    if ratio >= HEADING_RATIO and not text.endswith(".") and (row.words >= 2 or len(letters) >= 6):
        return 2  # short words get relatively tall OCR boxes: "Thus" alone is no heading
    standalone = prev is None or bool(_SENTENCE_END.search(prev.text)) or row.y0 - prev.y1 >= 0.8 * m.unit
    if not standalone or row.words > 12 or text.endswith("."):
        return 0
    apart_below = nxt is None or nxt.y0 - row.y1 >= 0.5 * m.unit
    # OCR boxes grow much less than the type does, but the letters grow wider as much
    wide = ratio >= 1.0 and _char_width(row.main) >= WIDE_TYPE_RATIO * m.char_width
    if (ratio >= SOFT_HEADING_RATIO or wide) and apart_below and not continuing and _title_like(text):
        return 2
    caps = len(letters) >= 4 and all(ch.isupper() for ch in letters)
    bold = all(p.bold for p in row.parts)
    return 3 if (caps or bold) and ratio >= 0.85 else 0


def _title_like(text: str) -> bool:
    """A few real words: what a heading in only slightly larger type must at least be."""
    return 2 <= len(text.split()) <= SOFT_HEADING_MAX_WORDS and sum(ch.isalpha() for ch in text) >= 6


def _continues(
    last: _Paragraph,
    kind: RowKind,
    level: int,
    row: _Row,
    prev: _Row,
    m: _Metrics,
    left: float,
    right: float,
    pitch: float,
    bridged: bool = False,
) -> bool:
    """Whether ``row`` carries on the paragraph that ``prev`` belongs to.

    ``bridged``: the two rows are apart only because a float sat between them; the white is no break.
    """
    if kind != last.kind:
        return False
    if kind == "heading":
        return level == last.level and row.y0 - prev.y1 < 0.8 * m.unit
    if kind == "display":
        return row.y0 - prev.y1 < 0.8 * m.unit
    if row.y0 - prev.y0 > 1.6 * pitch and not bridged:
        return False
    indent = row.x0 - left
    if m.unit * 0.6 <= indent <= 0.3 * (right - left) and abs(row.x0 - prev.x0) > 0.4 * m.unit:
        return False  # a first-line indent
    short_prev = right - prev.x1 > 3 * m.unit
    if short_prev and _SENTENCE_END.search(prev.text) and row.text[:1].isupper():
        return False  # block paragraphs with no indent: a short line ended the last one
    return True


def _append_region(paragraphs: list[_Paragraph], new: list[_Paragraph]) -> None:
    """Add a region's paragraphs, carrying on a paragraph broken by a column or region end."""
    if paragraphs and new and paragraphs[-1].kind == new[0].kind == "text":
        tail, head = paragraphs[-1].text(), new[0].rows[0].text
        if _ends_open(tail) and head[:1].islower():
            paragraphs[-1].rows.extend(new[0].rows)
            paragraphs[-1].after.extend(new[0].after)
            new = new[1:]
    paragraphs.extend(new)


def _render(paragraphs: list[_Paragraph]) -> str:
    blocks = []
    for para in (p for top in paragraphs for p in (top, *top.after)):
        text = para.text()
        if para.kind == "heading":
            text = "#" * para.level + " " + text
        elif text.startswith("#"):
            text = "\\" + text  # OCR text that merely starts with '#' is not a heading
        blocks.append(text)
    return "\n\n".join(b for b in blocks if b.strip())


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
