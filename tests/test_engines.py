"""Engine choice (auto), text-layer trust, and page rendering sizes."""

from __future__ import annotations

import io
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from ocr_backend.engines import create_engine, engine_classes
from ocr_backend.engines.auto import AutoEngine
from ocr_backend.engines.base import OcrEngine, PageInput, PageResult
from ocr_backend.errors import EngineError
from ocr_backend.pdf_text import extract_text_layer, judge_text_layer
from ocr_backend.render import RenderSettings, render_pdf_page
from ocr_backend.sources import open_source
from server.corpus import Corpus
from server.runner import RunOptions, ocr_book

CLEAN_TEXT = (
    "The posterior distribution combines the prior with the likelihood of the observed data. "
    "When the prior is conjugate, the posterior belongs to the same family and can be written down directly."
)
JUNK_TEXT = CLEAN_TEXT + " t>. dans.3 &»“«■' tbg.tr i’gv.m " + CLEAN_TEXT  # real words with OCR debris


class StubOcr(OcrEngine):
    """Stands in for the OCR models so these tests check the choice, not the recognition."""

    name = ""

    def version(self) -> str:
        return "stub"

    def recognize(self, page: PageInput) -> PageResult:
        assert page.image is not None, "auto must render pages it sends to OCR"
        return PageResult(page.number, "ocr text", "ok", "local", "stub")


def scan_with_hidden_layer(path: Path, hidden_text: str | None) -> Path:
    """An image-only page, optionally with an invisible OCR text layer on top (like scanners make)."""
    image = Image.new("L", (850, 1100), 255)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_image(page.rect, stream=buffer.getvalue())
    if hidden_text:
        page.insert_textbox(pymupdf.Rect(40, 40, 570, 750), hidden_text, fontsize=10, render_mode=3)
    doc.save(path)
    return path


def test_registry_lists_the_engines() -> None:
    assert {"auto", "local", "text-layer"} <= set(engine_classes())
    with pytest.raises(EngineError, match="choose one of"):
        create_engine("nope")


@pytest.mark.parametrize(
    "hidden, trusted_engine",
    [(CLEAN_TEXT, "text-layer"), (JUNK_TEXT, "local"), (None, "local")],
)
def test_auto_uses_text_layer_only_when_trustworthy(
    corpus: Corpus, tmp_path: Path, hidden: str | None, trusted_engine: str
) -> None:
    pdf = scan_with_hidden_layer(tmp_path / "scan.pdf", hidden)
    ocr_book(corpus, pdf, RunOptions(engine="auto"), engine=AutoEngine(ocr=StubOcr()))
    record = corpus.book("scan").pages[0]
    assert record.engine == trusted_engine
    assert record.reason  # why this engine was chosen is recorded
    assert (record.render != {}) == (trusted_engine == "local")  # text-layer pages are never rendered


def test_trust_verdicts_explain_themselves(tmp_path: Path) -> None:
    with pymupdf.open(scan_with_hidden_layer(tmp_path / "a.pdf", JUNK_TEXT)) as doc:
        verdict = judge_text_layer(extract_text_layer(doc[0]))
    assert not verdict.trusted and "junk" in verdict.reason
    assert not judge_text_layer(None).trusted


@pytest.mark.parametrize("size_pt", [(324, 468), (612, 792), (842, 1191)])
def test_rendering_targets_the_long_side_not_a_zoom(size_pt: tuple[int, int]) -> None:
    doc = pymupdf.open()
    page = doc.new_page(width=size_pt[0], height=size_pt[1])
    page.insert_text((30, 60), "Hello", fontsize=20)
    image, meta = render_pdf_page(page, RenderSettings(long_side=1600))
    assert max(image.size) == 1600 and meta["source"] == "rendered"
    assert abs(image.width / image.height - size_pt[0] / size_pt[1]) < 0.01


def test_full_page_scan_uses_native_pixels(tmp_path: Path) -> None:
    pdf = scan_with_hidden_layer(tmp_path / "scan.pdf", None)
    with open_source(pdf) as source:
        image, meta = source.render(1, RenderSettings(long_side=1600))
    assert meta["source"] == "native" and meta["native_size"] == [850, 1100]
    assert max(image.size) == 1600


def test_auto_streams_a_mixed_book_through_both_engines(corpus: Corpus, tmp_path: Path) -> None:
    """Text pages and scanned pages interleaved: every page lands once, in place, with its engine and reason."""
    scan = scan_with_hidden_layer(tmp_path / "scan.pdf", None)
    mixed = pymupdf.open()
    for n in range(6):
        if n % 3 == 1:
            mixed.insert_pdf(pymupdf.open(scan))
        else:
            page = mixed.new_page(width=612, height=792)
            page.insert_textbox(pymupdf.Rect(40, 40, 570, 750), f"Page {n + 1}. " + CLEAN_TEXT, fontsize=11)
    mixed.save(tmp_path / "mixed.pdf")
    state = ocr_book(corpus, tmp_path / "mixed.pdf", RunOptions(engine="auto"), engine=AutoEngine(ocr=StubOcr()))
    assert state.done == 6 and state.failed == 0
    pages = corpus.book("mixed").pages
    assert [m.engine for m in pages] == ["text-layer", "local", "text-layer", "text-layer", "local", "text-layer"]
    assert all(m.reason for m in pages)
    assert "Page 4." in corpus.book("mixed").read_page(4).markdown
