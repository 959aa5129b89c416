"""A PDF page's own text, as positioned lines, and whether it can be trusted."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ocr_backend.layout import TextLine

if TYPE_CHECKING:  # pymupdf loads where a page is read (see ocr_backend.render)
    import pymupdf

_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
# Marks of a bad OCR layer: punctuation inside a word ("tbg.tr"), letters glued to digits
# ("dans.3"), stray symbols ("&»“«■'").
_PUNCT_INSIDE_WORD = re.compile(r"[^\W\d_][^\w\s'’\-–—][^\W\d_]")
_LETTER_DIGIT = re.compile(r"[^\W\d_]\d|\d[^\W\d_]")
_ODD_SYMBOL = re.compile(r"[■□�»«<>|\\{}~^¬©®]")
_SYMBOLS_ONLY = re.compile(r"^[^\w]{2,}$")
_COMMON_SYMBOL_RUNS = {"--", "—", "–", "...", "**", "***", "“", "”"}
HIDDEN_LAYER_MAX_JUNK = 0.01
_VOWELS = set("aeiouyäöüéèàáíóúâêîôû")


@dataclass
class TextLayer:
    """Lines of a PDF page's text layer in page points, plus facts for the trust check."""

    width: float
    height: float
    lines: list[TextLine] = field(default_factory=list)
    invisible_chars: int = 0  # text drawn with render mode 3 (a hidden OCR layer)
    image_coverage: float = 0.0  # share of the page area covered by images

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def extract_text_layer(page: pymupdf.Page) -> TextLayer:
    """Read the page's text lines with their boxes (in unrotated page space)."""
    import pymupdf

    rect = page.rect
    layer = TextLayer(width=rect.width, height=rect.height)
    flags = pymupdf.TEXT_PRESERVE_WHITESPACE | pymupdf.TEXT_MEDIABOX_CLIP
    data = page.get_text("dict", flags=flags)
    for block in data.get("blocks", []):
        if block.get("type") != 0:
            continue
        for line in block.get("lines", []):
            spans = [s for s in line.get("spans", []) if s.get("text", "").strip()]
            if not spans:
                continue
            text = "".join(s["text"] for s in line["spans"]).strip()
            size = max(s.get("size", 0.0) for s in spans)
            bold = all(s.get("flags", 0) & 16 for s in spans)
            x0, y0, x1, y1 = line["bbox"]
            layer.lines.append(TextLine(text=text, x0=x0, y0=y0, x1=x1, y1=y1, size=size, bold=bold))
    layer.invisible_chars = _count_invisible_chars(page)
    layer.image_coverage = _image_coverage(page)
    return layer


def _count_invisible_chars(page: pymupdf.Page) -> int:
    count = 0
    try:
        traces = page.get_texttrace()
    except Exception:
        return 0
    for span in traces:
        if span.get("type") == 3 or span.get("opacity", 1.0) == 0:
            count += len(span.get("chars", ()))
    return count


def _image_coverage(page: pymupdf.Page) -> float:
    import pymupdf

    area = abs(page.rect) or 1.0
    covered = 0.0
    for info in page.get_image_info():
        covered += abs(pymupdf.Rect(info["bbox"]) & page.rect)
    return min(1.0, covered / area)


@dataclass
class TrustVerdict:
    trusted: bool
    reason: str


def judge_text_layer(layer: TextLayer | None) -> TrustVerdict:
    """Decide whether a page's text layer is good enough to use instead of OCR.

    A scan with a hidden OCR layer is trusted only if that layer reads like real
    words; born-digital text is trusted when there is enough of it.
    """
    if layer is None:
        return TrustVerdict(False, "no text layer (image source)")
    text = layer.text
    stripped = re.sub(r"\s+", "", text)
    if len(stripped) < 40:
        if layer.image_coverage < 0.5 and not stripped:
            return TrustVerdict(True, "blank page with no scan image")
        return TrustVerdict(False, f"too little text in the text layer ({len(stripped)} chars)")
    if "\ufffd" in text and text.count("\ufffd") > 0.02 * len(stripped):
        return TrustVerdict(False, "text layer has undecodable glyphs")
    quality = word_quality(text)
    hidden = layer.invisible_chars >= 0.5 * len(stripped) or layer.image_coverage > 0.8
    threshold = 0.80 if hidden else 0.6
    if quality < threshold:
        kind = "hidden OCR layer" if hidden else "text layer"
        return TrustVerdict(False, f"{kind} looks like garbage (word quality {quality:.2f} < {threshold})")
    if hidden:
        # Someone else's OCR under a scan: trusted only when nearly spotless, since ours is ~2% CER.
        junk = junk_token_rate(text)
        if junk >= HIDDEN_LAYER_MAX_JUNK:
            return TrustVerdict(False, f"hidden OCR layer has OCR junk ({junk:.1%} of tokens); OCR the scan instead")
    kind = "hidden OCR layer" if hidden else "born-digital text layer"
    return TrustVerdict(True, f"{kind} reads as real words (word quality {quality:.2f})")


def word_quality(text: str) -> float:
    """Share of alphabetic tokens that look like words (has a vowel, sane letters)."""
    tokens = _WORD.findall(text)
    if not tokens:
        return 0.0
    good = 0
    for token in tokens:
        low = token.lower()
        has_vowel = any(ch in _VOWELS for ch in low) or not low.isascii()
        mixed_case = not (token.islower() or token.isupper() or token.istitle())
        if has_vowel and not mixed_case and not _has_long_consonant_run(low):
            good += 1
    return good / len(tokens)


def _has_long_consonant_run(word: str) -> bool:
    run = 0
    for ch in word:
        if ch.isascii() and ch.isalpha() and ch not in _VOWELS:
            run += 1
            if run >= 5:
                return True
        else:
            run = 0
    return False


def junk_token_rate(text: str) -> float:
    """Share of whitespace-separated tokens that look like OCR debris."""
    tokens = text.split()
    if not tokens:
        return 0.0
    junk = sum(1 for token in tokens if _is_junk(token))
    return junk / len(tokens)


def _is_junk(token: str) -> bool:
    if _ODD_SYMBOL.search(token) or _PUNCT_INSIDE_WORD.search(token):
        return True
    if _LETTER_DIGIT.search(token.strip(".,;:")):
        return True
    return bool(_SYMBOLS_ONLY.match(token)) and token not in _COMMON_SYMBOL_RUNS
