"""Rebuild a page from positioned text lines: reading order, paragraphs, headings, furniture.

Both the text-layer engine (PyMuPDF lines) and the local OCR engine (RapidOCR
boxes) produce unordered positioned lines; this module turns them into markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class PageLayout:
    markdown: str
    furniture: list[str] = field(default_factory=list)  # running heads, page numbers


def build_markdown(lines: list[TextLine], width: float, height: float) -> PageLayout:
    """Order lines top to bottom and join them into paragraphs (first version)."""
    ordered = sorted(lines, key=lambda ln: (round(ln.y0), ln.x0))
    paragraphs: list[list[str]] = []
    last_bottom: float | None = None
    for line in ordered:
        gap = (line.y0 - last_bottom) if last_bottom is not None else 0.0
        if not paragraphs or gap > 0.8 * line.height:
            paragraphs.append([])
        paragraphs[-1].append(line.text)
        last_bottom = line.y1
    return PageLayout(markdown="\n\n".join(_join_lines(p) for p in paragraphs).strip())


def _join_lines(lines: list[str]) -> str:
    out = ""
    for text in lines:
        text = text.strip()
        if not out:
            out = text
        elif out.endswith("-") and len(out) > 1 and out[-2].isalpha() and text[:1].islower():
            out = out[:-1] + text
        else:
            out += " " + text
    return out
