"""Printed page labels: read the numbers printed on pages and make them consistent across a book.

A book's printed numbers differ from its page indexes by the front matter, blank leaves,
plates, and by restarts (roman front matter, then arabic from 1; a part numbered afresh).
Within a run of numbering, ``value = index + offset`` holds for every page, printed or not.

Detection works on what OCR produced for each page: the furniture lines (running heads and
folios the layout kept out of the body) and, in case the layout missed them, the first and
last lines of the body. Every number that could be a folio becomes a weighted
:class:`Candidate`. :func:`fit_labels` then picks the runs that explain the most candidates
(a Viterbi pass over ``(style, offset)`` states, where changing run costs more than one
page's evidence), so one misread number cannot break a run, and pages without a visible
number get the label their run implies.

Everything here is a pure function of strings, so it is tested without OCR.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy (~45 ms to import) loads only where labels are fitted, never on a search
    import numpy as np

ARABIC = "arabic"
ROMAN_LOWER = "roman"
ROMAN_UPPER = "ROMAN"

SOURCE_PDF = "pdf"  # the PDF declares its own page labels
SOURCE_PRINTED = "printed"  # read on the page and consistent with its run
SOURCE_INFERRED = "inferred"  # the page shows no (readable) number; its run implies the label

# Leaving a run costs more than one page's evidence (a misread is an island: it would pay
# twice) but less than two clearly printed folios (a short roman preface still counts).
SWITCH_COST = 1.8
MAX_STATES = 400  # candidate runs kept (by evidence) so huge noisy books stay fast
MAX_ARABIC = 9999
MAX_ROMAN = 100  # front and back matter rarely run past c; also keeps "d"/"m" out

_ROMAN_RE = re.compile(r"^m{0,3}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")
_ROMAN_VALUES = {"m": 1000, "d": 500, "c": 100, "l": 50, "x": 10, "v": 5, "i": 1}
# Decoration around a folio: "— 37 —", "- 37 -", "[37]", "| 37", "· 37 ·", "Page 37", "p. 37".
_DECORATION = "—–-‒―_|•·*~[](){}<>«»\"'`“”‘’:"
_PAGE_WORD_RE = re.compile(r"^(?:page|pg\.?|p\.)\s*", re.IGNORECASE)
# A number after these words is a chapter/figure/... number, not a folio.
_NOT_FOLIO_BEFORE = {
    "chapter",
    "chap",
    "part",
    "book",
    "section",
    "sect",
    "sec",
    "vol",
    "volume",
    "lecture",
    "lesson",
    "unit",
    "fig",
    "figure",
    "table",
    "plate",
    "exercise",
    "exercises",
    "problem",
    "theorem",
    "lemma",
    "example",
    "definition",
    "equation",
    "eq",
    "no",
    "§",
    "appendix",
    "step",
    "case",
    "article",
    "art",
}
_DIGIT_LOOKALIKES = str.maketrans({"O": "0", "o": "0", "l": "1", "I": "1", "|": "1"})
_MARKDOWN_PREFIX_RE = re.compile(r"^\s*(?:#{1,6}\s+|[*_>]+\s*)")
_LEADER_RE = re.compile(r"(?:\.\s?){3,}|…|_{3,}")
_LONG_LINE = 90  # beyond this a line is body text, not a running head


@dataclass(frozen=True)
class Candidate:
    """A number on a page that may be its folio."""

    value: int
    style: str  # ARABIC | ROMAN_LOWER | ROMAN_UPPER
    weight: float  # how much it looks like a folio (where it sits, what surrounds it)
    text: str = ""  # the line it was read from


@dataclass(frozen=True)
class PageLabel:
    label: str
    source: str  # SOURCE_PDF | SOURCE_PRINTED | SOURCE_INFERRED


# --- numerals ---------------------------------------------------------------------------
def parse_roman(token: str) -> int | None:
    """Value of a strict roman numeral (``"xiv"`` -> 14), or None."""
    low = token.lower()
    if not low or not _ROMAN_RE.match(low):
        return None
    total = 0
    for ch, nxt in zip(low, low[1:] + " "):
        value = _ROMAN_VALUES[ch]
        total += -value if nxt != " " and _ROMAN_VALUES[nxt] > value else value
    return total


def to_roman(value: int) -> str:
    """Lower-case roman numeral of ``value`` (1-3999)."""
    out = []
    for number, numeral in (
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ):
        count, value = divmod(value, number)
        out.append(numeral * count)
    return "".join(out)


def format_label(value: int, style: str) -> str:
    if style == ROMAN_LOWER:
        return to_roman(value)
    if style == ROMAN_UPPER:
        return to_roman(value).upper()
    return str(value)


def parse_label(label: str) -> tuple[int, str] | None:
    """``"37"`` -> (37, arabic), ``"xii"`` -> (12, roman), ``"XII"`` -> (12, ROMAN); else None."""
    text = label.strip()
    if text.isdigit():
        return int(text), ARABIC
    value = parse_roman(text)
    if value is None or not (text.islower() or text.isupper()):
        return None
    return value, ROMAN_LOWER if text.islower() else ROMAN_UPPER


def parse_folio(token: str) -> tuple[int, str] | None:
    """Read one token as a folio: arabic (OCR look-alikes fixed) or a roman numeral."""
    token = token.strip(_DECORATION + " .,;")
    if not token:
        return None
    if any(ch.isdigit() for ch in token):
        fixed = token.translate(_DIGIT_LOOKALIKES)
        if fixed.isdigit() and not fixed.startswith("0") and int(fixed) <= MAX_ARABIC:
            return int(fixed), ARABIC
        return None
    parsed = parse_label(token)
    if parsed is None or parsed[1] == ARABIC or parsed[0] > MAX_ROMAN:
        return None
    return parsed


# --- candidates from a page -------------------------------------------------------------
def _clean_line(line: str) -> str:
    line = unicodedata.normalize("NFKC", line)
    line = _MARKDOWN_PREFIX_RE.sub("", line).replace("**", "").replace("__", "")
    return " ".join(line.split())


def line_candidates(line: str, weight: float) -> list[Candidate]:
    """Folio candidates in one line: the whole line, or a number at either end beside a title.

    ``weight`` is for a line that is nothing but a number; a number beside a running title
    counts a little less, and one at the end of a long line (body text) much less.
    """
    text = _clean_line(line)
    if _LEADER_RE.search(text):
        return []  # "Index . . . . 212": a contents line, its number is another page's
    bare = _PAGE_WORD_RE.sub("", text.strip(_DECORATION + " "))
    whole = parse_folio(bare) if " " not in bare.strip() else None
    if whole is not None:
        return [_candidate(whole, weight, text)]
    words = [w for w in text.split() if w.strip(_DECORATION)]
    if len(words) < 2:
        return []
    scale = 0.85 if len(text) <= _LONG_LINE else 0.5
    found = []
    first, last = words[0], words[-1]
    if not first.endswith(".") and (parsed := parse_folio(first)):
        found.append(_candidate(parsed, weight * scale, text))
    if (
        (parsed := parse_folio(last))
        and words[-2].lower().strip(".,:;") not in _NOT_FOLIO_BEFORE
        and not last.endswith(".")
    ):
        found.append(_candidate(parsed, weight * scale, text))
    return found


def _candidate(parsed: tuple[int, str], weight: float, text: str) -> Candidate:
    value, style = parsed
    if style != ARABIC and value in (1, 5, 10, 50, 100):
        weight *= 0.6  # a lone "i", "v", "x", "l", "c" is as often noise or a letter
    return Candidate(value, style, round(weight, 3), text)


def body_lines(markdown: str) -> list[str]:
    """Non-empty lines of a page body, markdown structure lines (tables, rules, images) left out."""
    lines = []
    for raw in markdown.splitlines():
        line = raw.strip()
        if not line or line.startswith(("|", "![", "<!--", "$$", "```")) or set(line) <= set("-*_= "):
            continue
        lines.append(line)
    return lines


def page_candidates(furniture: Sequence[str], markdown: str) -> list[Candidate]:
    """Every folio candidate of a page, strongest per (value, style)."""
    found: list[Candidate] = []
    for line in furniture:
        found += line_candidates(line, 1.0)
    lines = body_lines(markdown)
    # The layout may have left the running head / folio in the body: look at its edges.
    edges = (
        [(lines[:1], 0.8), (lines[1:2], 0.5), (lines[-1:], 0.8), (lines[-2:-1], 0.5)]
        if len(lines) > 2
        else [(lines, 0.8)]
    )
    for chosen, weight in edges:
        for line in chosen:
            found += line_candidates(line, weight)
    best: dict[tuple[int, str], Candidate] = {}
    for cand in found:
        key = (cand.value, cand.style)
        if key not in best or cand.weight > best[key].weight:
            best[key] = cand
    return list(best.values())


# --- fitting runs -----------------------------------------------------------------------
def fit_labels(candidates: Sequence[Sequence[Candidate]]) -> list[PageLabel | None]:
    """Give every page (index i = position + 1) the label of the run it most plausibly belongs to.

    States are runs ``(style, offset)`` with ``value = index + offset``, plus "no label".
    A page scores its best matching candidate's weight in a run, leaving a run costs
    :data:`SWITCH_COST`, and a run is impossible where its value would drop below 1.
    """
    count = len(candidates)
    states = _run_states(candidates)
    if count == 0 or not states:
        return [None] * count
    emission = _emissions(candidates, states)
    path = _reach_back(_viterbi(emission), emission)
    labels: list[PageLabel | None] = []
    for position, state in enumerate(path):
        if state == len(states):
            labels.append(None)
            continue
        style, offset = states[state]
        value = position + 1 + offset
        read = any(c.style == style and c.value == value for c in candidates[position])
        labels.append(PageLabel(format_label(value, style), SOURCE_PRINTED if read else SOURCE_INFERRED))
    return labels


def _run_states(candidates: Sequence[Sequence[Candidate]]) -> list[tuple[str, int]]:
    support: dict[tuple[str, int], float] = {}
    for position, page in enumerate(candidates):
        for cand in page:
            key = (cand.style, cand.value - (position + 1))
            support[key] = support.get(key, 0.0) + cand.weight
    ranked = sorted(support, key=lambda key: (-support[key], key))
    return ranked[:MAX_STATES]


def _emissions(candidates: Sequence[Sequence[Candidate]], states: list[tuple[str, int]]) -> np.ndarray:
    """Score of each state (rows; the last row is "no label") on each page (columns)."""
    import numpy as np

    count = len(candidates)
    index = np.arange(1, count + 1)
    emission = np.zeros((len(states) + 1, count))
    for row, (_, offset) in enumerate(states):
        emission[row] = np.where(index + offset >= 1, 0.0, -np.inf)
    row_of = {state: row for row, state in enumerate(states)}
    for position, page in enumerate(candidates):
        for cand in page:
            row = row_of.get((cand.style, cand.value - (position + 1)))
            if row is not None:
                emission[row, position] = max(emission[row, position], cand.weight)
    return emission


def _reach_back(path: list[int], emission: np.ndarray) -> list[int]:
    """Unlabelled pages just before a run take that run's labels while they stay >= 1: an
    opening page (chapter, part, title) usually shows no number but is counted."""
    import numpy as np

    none = emission.shape[0] - 1
    for position in range(len(path) - 2, -1, -1):
        if (
            path[position] == none
            and path[position + 1] != none
            and np.isfinite(emission[path[position + 1], position])
        ):
            path[position] = path[position + 1]
    return path


def _viterbi(emission: np.ndarray) -> list[int]:
    """Best state path. Leaving a run costs :data:`SWITCH_COST`; starting one from "no label"
    is free, so a run needs more evidence than a switch costs only where it gives way to
    another. Ties keep the current state, so a later run reaches back to its start."""
    import numpy as np

    states, count = emission.shape
    none = states - 1
    score = emission[:, 0].copy()
    came_from = np.zeros((states, count), dtype=np.int64)
    rows = np.arange(states)
    for column in range(1, count):
        best = int(np.argmax(score[:none]))
        options = np.stack([score, np.full(states, score[best] - SWITCH_COST), np.full(states, score[none])])
        origins = np.stack([rows, np.full(states, best), np.full(states, none)])
        choice = np.argmax(options, axis=0)  # the first of equal options: stay, then the best run
        came_from[:, column] = origins[choice, rows]
        score = options[choice, rows] + emission[:, column]
    path = [int(np.argmax(score))]
    for column in range(count - 1, 0, -1):
        path.append(int(came_from[path[-1], column]))
    return path[::-1]


# --- the whole book ---------------------------------------------------------------------
def detect_labels(pages: Sequence[tuple[Sequence[str], str]]) -> list[PageLabel | None]:
    """Labels for a book from each page's ``(furniture lines, body markdown)``."""
    return fit_labels([page_candidates(furniture, markdown) for furniture, markdown in pages])


def book_labels(declared: Sequence[str] | None, pages: Sequence[tuple[Sequence[str], str]]) -> list[PageLabel | None]:
    """The PDF's own labels where it declares them; detected labels for the other pages."""
    declared = list(declared or [])[: len(pages)]
    if len(declared) == len(pages) and all(declared):
        return [PageLabel(label, SOURCE_PDF) for label in declared]
    detected = detect_labels(pages)
    return [
        PageLabel(declared[i], SOURCE_PDF) if i < len(declared) and declared[i] else found
        for i, found in enumerate(detected)
    ]


def label_key(label: str) -> str:
    """How a label typed by a person is compared: trimmed, "p." dropped, case kept for roman."""
    return _PAGE_WORD_RE.sub("", unicodedata.normalize("NFKC", str(label)).strip()).strip()


def label_runs(labels: Sequence[str | None]) -> list[tuple[str, str, int, int]]:
    """Compress per-page labels into runs ``(first label, last label, first page, last page)``."""
    runs: list[tuple[str, str, int, int]] = []
    previous: tuple[int, str] | None = None
    for number, label in enumerate(labels, start=1):
        parsed = parse_label(label) if label else None
        follows = parsed is not None and previous is not None and parsed == (previous[0] + 1, previous[1])
        if follows and runs and runs[-1][3] == number - 1:
            first, _, start, _ = runs[-1]
            runs[-1] = (first, str(label), start, number)
        elif label:
            runs.append((str(label), str(label), number, number))
        previous = parsed
    return runs


def pages_with_label(labels: Sequence[str | None], wanted: str) -> list[int]:
    """Pages (1-based) whose label is ``wanted``: exact match first, then ignoring case and
    leading zeros ("XII" finds "xii", "037" finds "37") when nothing matches exactly."""
    key = label_key(wanted)
    exact = [n for n, label in enumerate(labels, start=1) if label is not None and label == key]
    if exact or not key:
        return exact
    parsed = parse_label(key.lower()) if not key.isdigit() else (int(key), ARABIC)
    loose = []
    for number, label in enumerate(labels, start=1):
        if label is None:
            continue
        if label.lower() == key.lower():
            loose.append(number)
        elif (
            parsed is not None
            and (mine := parse_label(label.lower())) is not None
            and mine[0] == parsed[0]
            and (mine[1] == ARABIC) == (parsed[1] == ARABIC)
        ):
            loose.append(number)
    return loose
