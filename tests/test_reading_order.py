"""Reading order on a magazine-style page, through the real local engine: a title and a lead paragraph
across the page, two columns under them, a pull quote over the gutter and a captioned figure in the
right column (see ``server.sample_book.typeset_magazine_pdf``)."""

from __future__ import annotations

import re

import pymupdf
import pytest
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from ocr_backend.engines.base import PageInput
from ocr_backend.engines.local import LocalEngine
from server.sample_book import (
    MAGAZINE_CAPTION,
    MAGAZINE_LEAD,
    MAGAZINE_PARAGRAPHS,
    MAGAZINE_PULL_QUOTE,
    MAGAZINE_TITLE,
    rasterise_pdf,
    typeset_magazine_pdf,
)


def plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.replace("#", " ")).lower().split())


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("magazine")
    scan = rasterise_pdf(typeset_magazine_pdf(work / "magazine.pdf"), work / "scan.pdf", dpi=150)
    image = pymupdf.open(scan)[0].get_pixmap(dpi=150, colorspace=pymupdf.csGRAY).pil_image()
    engine = LocalEngine(workers=1)
    try:
        result = engine.recognize(PageInput(number=1, image=image))
    finally:
        engine.close()
    assert result.status == "ok" and result.furniture == ["12"]
    return result.markdown


def where(needle: str, text: str) -> int:
    """Where a phrase starts in the text, forgiving a few OCR slips."""
    found = fuzz.partial_ratio_alignment(plain(needle), text, score_cutoff=90)
    assert found is not None, (needle, text)
    return found.dest_start


def paragraph_with(needle: str, paragraphs: list[str]) -> int:
    scores = [fuzz.partial_ratio(plain(needle), plain(p)) for p in paragraphs]
    assert max(scores) >= 90, (needle, paragraphs)
    return scores.index(max(scores))


def test_lead_then_left_column_then_right_column(page: str) -> None:
    text = plain(page)
    anchors = [MAGAZINE_TITLE, MAGAZINE_LEAD[:40], *(p[:40] for p in MAGAZINE_PARAGRAPHS)]
    marks = [where(a, text) for a in anchors]
    assert marks == sorted(marks), page


def test_pull_quote_and_caption_are_blocks_of_their_own_outside_the_sentences_they_interrupt(page: str) -> None:
    paragraphs = page.split("\n\n")
    for block in (MAGAZINE_PULL_QUOTE, MAGAZINE_CAPTION):
        assert fuzz.ratio(plain(block), plain(paragraphs[paragraph_with(block, paragraphs)])) >= 90, page
    # the quote cuts the left column mid-sentence, the figure the right one: each sentence stays whole
    for before, after in (
        ("but a few of", "them do, and those few"),
        ("hardly changed", "since it was first"),
        ("riverbank, compare the", "result with last year"),
    ):
        assert paragraph_with(before, paragraphs) == paragraph_with(after, paragraphs), page


def test_the_whole_page_reads_in_order(page: str) -> None:
    """Character error rate against the page's text in reading order: the quote after the paragraph
    it interrupts, the caption after the last one (its figure interrupts that one)."""
    body = [*MAGAZINE_PARAGRAPHS[:2], MAGAZINE_PULL_QUOTE, *MAGAZINE_PARAGRAPHS[2:], MAGAZINE_CAPTION]
    expected = plain(" ".join([MAGAZINE_TITLE, MAGAZINE_LEAD, *body]))
    assert Levenshtein.normalized_distance(plain(page), expected) < 0.03, page
