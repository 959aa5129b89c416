"""The ``local`` engine end to end on generated scans: real PP-OCR models, so only a few pages."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest
from PIL import Image
from rapidfuzz.distance import Levenshtein

from ocr_backend.engines.base import PageInput
from ocr_backend.engines.local import LocalEngine
from ocr_backend.errors import EngineError
from server.corpus import Corpus
from server.runner import RunOptions, ocr_book
from server.sample_book import SAMPLE_PAGES, rasterise_pdf, typeset_pdf

LEFT = (
    "The left column opens the article. Prior beliefs are written down before any data arrive, "
    "and they are updated by the likelihood of what is observed. The left column ends here."
)
RIGHT = (
    "The right column follows on. Posterior summaries such as means and intervals are read "
    "from the updated distribution, which the reader reports. The right column ends here."
)


def two_column_pdf(path: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    style = "font-size:12px;text-align:justify"
    page.insert_htmlbox(pymupdf.Rect(60, 80, 296, 700), f"<p style='{style}'>{LEFT}</p>")
    page.insert_htmlbox(pymupdf.Rect(316, 80, 552, 700), f"<p style='{style}'>{RIGHT}</p>")
    doc.save(path)
    doc.close()
    return path


@pytest.fixture(scope="module")
def ocr_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two scanned pages, a book page with head and folio and a two-column page, OCRed once."""
    work = tmp_path_factory.mktemp("local")
    book_page = typeset_pdf(work / "book.pdf", [SAMPLE_PAGES[1]])
    columns = two_column_pdf(work / "columns.pdf")
    merged = pymupdf.open(book_page)
    merged.insert_pdf(pymupdf.open(columns))
    merged.save(work / "typeset.pdf")
    scan = rasterise_pdf(work / "typeset.pdf", work / "scan.pdf", dpi=150)
    corpus = Corpus(work / "corpus")
    state = ocr_book(corpus, scan, RunOptions(book="scan", engine="local"))
    book = corpus.book("scan")
    return {"state": state, "pages": [book.read_page(n).markdown for n in (1, 2)], "meta": book.pages}


def plain(text: str) -> str:
    return " ".join(text.replace("#", " ").split())


def test_book_page_body_heading_and_furniture(ocr_run: dict) -> None:
    assert ocr_run["state"].failed == 0
    body, meta = ocr_run["pages"][0], ocr_run["meta"][0]
    assert body.startswith("## 1.1 Conjugate priors\n\n")
    assert meta.furniture == ["BAYESIAN INFERENCE", "2"]
    assert "BAYESIAN" not in body
    expected = plain(
        "1.1 Conjugate priors A prior is conjugate to a likelihood when the posterior belongs to the same family as the prior."
    )
    assert Levenshtein.normalized_distance(plain(body)[: len(expected)], expected) < 0.03


def test_two_column_scan_comes_out_column_by_column(ocr_run: dict) -> None:
    text = plain(ocr_run["pages"][1])
    marks = [
        text.find(s)
        for s in ("The left column opens", "The left column ends", "The right column follows", "The right column ends")
    ]
    assert -1 not in marks, text
    assert marks == sorted(marks), text
    assert "columns-2" in ocr_run["meta"][1].flags


def test_no_log_flood_and_blank_page_is_empty(capfd: pytest.CaptureFixture[str]) -> None:
    engine = LocalEngine(workers=1)
    result = engine.recognize(PageInput(number=1, image=Image.new("L", (600, 800), 255)))
    engine.close()
    assert result.status == "ok" and result.markdown == "" and result.flags == ["empty"]
    assert "[INFO]" not in capfd.readouterr().err


def test_workers_share_the_cores_and_backend_is_checked() -> None:
    engine = LocalEngine(workers=2, threads=1, backend="onnxruntime")
    assert (engine.workers, engine.threads) == (2, 1)
    assert engine.version().startswith("rapidocr-") and "openvino" not in engine.version()
    assert LocalEngine(workers=1, threads=3).threads == 3
    with pytest.raises(EngineError, match="unknown backend"):
        LocalEngine(backend="cuda")


def test_onnxruntime_backend_reads_a_page_too(tmp_path: Path) -> None:
    """The fallback where OpenVINO has no wheel: the same pipeline with the model's full head."""
    scan = rasterise_pdf(typeset_pdf(tmp_path / "book.pdf", [SAMPLE_PAGES[1]]), tmp_path / "scan.pdf", dpi=150)
    image = pymupdf.open(scan)[0].get_pixmap(dpi=150, colorspace=pymupdf.csGRAY).pil_image()
    engine = LocalEngine(workers=1, backend="onnxruntime")
    result = engine.recognize(PageInput(number=1, image=image))
    engine.close()
    assert result.status == "ok" and result.furniture == ["BAYESIAN INFERENCE", "2"]
    assert "A prior is conjugate to a likelihood" in plain(result.markdown)
