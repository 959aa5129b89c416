"""Printed page labels: reading folios, fitting numbering runs, and using labels everywhere."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pymupdf
import pytest

from ocr_backend.errors import UnknownLabelError
from server.cli import main
from server.corpus import Corpus
from server.labels import (
    SOURCE_INFERRED,
    SOURCE_PDF,
    SOURCE_PRINTED,
    book_labels,
    detect_labels,
    label_runs,
    line_candidates,
    page_candidates,
    pages_with_label,
    parse_roman,
    to_roman,
)
from server.runner import RunOptions, ocr_book
from server.sample_book import SamplePage, typeset_pdf

BODY = "It was a bright cold day in April, and the clocks were striking thirteen.\n\nWinston Smith slipped quickly through the doors."


def furniture_pages(folios: Sequence[str | None], head: str = "A RUNNING TITLE") -> list[tuple[list[str], str]]:
    """Pages as the layout hands them over: the folio and running head as furniture lines."""
    return [([head, folio] if folio else [], BODY) for folio in folios]


def labels_of(pages: list[tuple[list[str], str]]) -> list[str | None]:
    return [found.label if found else None for found in detect_labels(pages)]


def sources_of(pages: list[tuple[list[str], str]]) -> list[str | None]:
    return [found.source if found else None for found in detect_labels(pages)]


# --- numerals and single lines ------------------------------------------------------------
def test_roman_numerals_round_trip() -> None:
    for value in range(1, 400):
        assert parse_roman(to_roman(value)) == value
        assert parse_roman(to_roman(value).upper()) == value
    assert parse_roman("iiii") is None and parse_roman("mathematics") is None and parse_roman("") is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("37", [(37, "arabic")]),
        ("— 37 —", [(37, "arabic")]),
        ("- 112 -", [(112, "arabic")]),
        ("[xii]", [(12, "roman")]),
        ("Page 9", [(9, "arabic")]),
        ("XIV", [(14, "ROMAN")]),
        ("1O3", [(103, "arabic")]),  # OCR read a zero as the letter O
        ("102 CHAPTER 2. MATHEMATICAL INDUCTION", [(102, "arabic")]),
        ("2.1. INTRODUCTION 103", [(103, "arabic")]),
        ("NATURE OF MATHEMATICS 2", [(2, "arabic")]),
        ("CHAPTER 2", []),  # a chapter number, not a folio
        ("Figure 12", []),
        ("2.1. INTRODUCTION", []),
        ("1. The first item of a list", []),
        ("MATHEMATICS", []),
    ],
)
def test_line_candidates(line: str, expected: list[tuple[int, str]]) -> None:
    assert [(c.value, c.style) for c in line_candidates(line, 1.0)] == expected


def test_candidates_come_from_furniture_and_the_body_edges() -> None:
    # The layout missed the running head: it is the body's first line.
    found = page_candidates([], "104 CHAPTER 2. MATHEMATICAL INDUCTION\n\nBody text of the page.\n\nMore body.")
    assert [(c.value, c.style) for c in found] == [(104, "arabic")]
    # A folio alone on the last line.
    found = page_candidates([], "Body text.\n\nMore body text here.\n\n— 7 —")
    assert [(c.value, c.style) for c in found] == [(7, "arabic")]
    # A furniture folio outweighs the same number in the body.
    assert page_candidates(["9"], "9\n\ntext")[0].weight == 1.0


# --- fitting runs -----------------------------------------------------------------------
def test_roman_front_matter_then_arabic_body() -> None:
    # title leaf and its verso unnumbered, preface v-viii, a blank, then chapter 1 (no folio on its opening page)
    folios = [None, None, None, None, "v", "vi", "vii", "viii", None, None, "2", "3", "4", "5", "6"]
    assert labels_of(furniture_pages(folios)) == [
        "i",
        "ii",
        "iii",
        "iv",
        "v",
        "vi",
        "vii",
        "viii",
        "ix",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]
    sources = sources_of(furniture_pages(folios))
    assert sources[4] == SOURCE_PRINTED and sources[9] == SOURCE_INFERRED and sources[0] == SOURCE_INFERRED


def test_a_misread_number_inside_a_run_is_corrected() -> None:
    folios = ["101", "102", "103", "163", "105", "106", "107"]  # OCR read 104 as 163
    pages = furniture_pages(folios)
    assert labels_of(pages) == ["101", "102", "103", "104", "105", "106", "107"]
    assert sources_of(pages)[3] == SOURCE_INFERRED


def test_a_plate_without_a_number_gets_the_label_its_neighbours_imply() -> None:
    folios = ["12", "13", None, None, "16", "17"]  # a plate and its blank verso
    pages = furniture_pages(folios)
    assert labels_of(pages) == ["12", "13", "14", "15", "16", "17"]
    assert sources_of(pages) == [
        SOURCE_PRINTED,
        SOURCE_PRINTED,
        SOURCE_INFERRED,
        SOURCE_INFERRED,
        SOURCE_PRINTED,
        SOURCE_PRINTED,
    ]


def test_two_numbering_runs_part_two_restarts_at_one() -> None:
    # Part I ends at 5; the part-two title page is unnumbered and counts as its page 1.
    folios = ["1", "2", "3", "4", "5", None, "2", "3", "4", "5"]
    assert labels_of(furniture_pages(folios)) == ["1", "2", "3", "4", "5", "1", "2", "3", "4", "5"]


def test_back_matter_in_upper_case_roman_after_arabic() -> None:
    folios = ["1", "2", "3", "4", None, "II", "III", "IV", "V"]
    assert labels_of(furniture_pages(folios)) == ["1", "2", "3", "4", "I", "II", "III", "IV", "V"]


def test_pages_with_no_readable_numbers_get_no_label() -> None:
    pages = [
        ([], "The year 1911 saw this book printed.\n\nIt has 3 parts and 12 chapters."),
        ([], "Nothing here."),
        ([], "In 1066 and 1492 things happened."),
    ]
    assert labels_of(pages) == [None, None, None]
    assert labels_of([]) == []


def test_one_stray_number_before_a_run_labels_nothing() -> None:
    # A title page whose last line is the year, its blank verso, then the body from 1.
    pages = furniture_pages([None, None, "1", "2", "3", "4"])
    pages[0] = ([], "AN INTRODUCTION TO MATHEMATICS\n\nLONDON\n\n1911")
    assert labels_of(pages) == [None, None, "1", "2", "3", "4"]


def test_unnumbered_opening_pages_before_page_one_stay_unlabelled() -> None:
    folios = [None, None, None, "2", "3", "4", "5"]  # half-title, title, verso, then 1 (chapter opening) from page 3
    assert labels_of(furniture_pages(folios)) == [None, None, "1", "2", "3", "4", "5"]


def test_folios_left_in_the_body_by_the_layout_are_read() -> None:
    pages = [([], f"{n} CHAPTER 4. SERIES\n\nThe body of the page.\n\nAnd its last paragraph.") for n in range(50, 56)]
    pages[2] = ([], "The body of a chapter opening.\n\nEnds here.\n\n52")
    assert labels_of(pages) == [str(n) for n in range(50, 56)]


def test_declared_pdf_labels_win_and_fill_only_empty_ones() -> None:
    pages = furniture_pages(["9", "10", "11"])
    assert [(f.label, f.source) for f in book_labels(["i", "ii", "1"], pages) if f] == [
        ("i", SOURCE_PDF),
        ("ii", SOURCE_PDF),
        ("1", SOURCE_PDF),
    ]
    mixed = book_labels(["A", "", "C"], pages)
    assert [(f.label, f.source) for f in mixed if f] == [("A", SOURCE_PDF), ("10", SOURCE_PRINTED), ("C", SOURCE_PDF)]


def test_runs_and_lookup() -> None:
    labels = [None, "i", "ii", "1", "2", "3", "1", "2", "II"]
    assert label_runs(labels) == [("i", "ii", 2, 3), ("1", "3", 4, 6), ("1", "2", 7, 8), ("II", "II", 9, 9)]
    assert pages_with_label(labels, "ii") == [3]
    assert pages_with_label(labels, "II") == [9]
    assert pages_with_label(labels, "Ii") == [3, 9]  # no exact match: case ignored
    assert pages_with_label(labels, "p. 3") == [6]
    assert pages_with_label(labels, "1") == [4, 7]


# --- through the pipeline ---------------------------------------------------------------
def numbered_book(path: Path, folios: Sequence[str | None], declared: list[dict] | None = None) -> Path:
    pages = [
        SamplePage(
            paragraphs=[f"Paragraph on leaf {i}: the quick brown fox jumps over the lazy dog."],
            running_head="A SMALL TREATISE" if folio else "",
            folio=folio or "",
        )
        for i, folio in enumerate(folios, start=1)
    ]
    typeset_pdf(path, pages)
    if declared:
        with pymupdf.open(path) as doc:
            doc.set_page_labels(declared)
            doc.saveIncr()
    return path


def test_born_digital_book_without_declared_labels_gets_detected_ones(corpus: Corpus, tmp_path: Path) -> None:
    pdf = numbered_book(tmp_path / "treatise.pdf", [None, "ii", "iii", None, "2", "3", None, "5"])
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    book = corpus.book("treatise")
    assert book.labels() == ["i", "ii", "iii", "1", "2", "3", "4", "5"]
    assert [m.label_source for m in book.pages] == [
        "inferred",
        "printed",
        "printed",
        "inferred",
        "printed",
        "printed",
        "inferred",
        "printed",
    ]
    assert book.find_printed("4") == 7 and book.find_printed("iii") == 3 and book.find_printed("III") == 3
    document = (book.dir / "document.mmd").read_text()
    assert '<!-- page 7 printed="4" -->' in document
    for number in range(1, 9):  # the running head and folio are metadata, not body text
        body = book.read_page(number).markdown
        assert "SMALL TREATISE" not in body or not book.pages[number - 1].furniture


def test_labels_declared_by_the_pdf_are_used(corpus: Corpus, tmp_path: Path) -> None:
    declared = [{"startpage": 0, "style": "r", "firstpagenum": 1}, {"startpage": 2, "style": "D", "firstpagenum": 1}]
    pdf = numbered_book(
        tmp_path / "declared.pdf", [None, None, "9", "9", "9"], declared
    )  # printed folios are wrong on purpose
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    book = corpus.book("declared")
    assert book.labels() == ["i", "ii", "1", "2", "3"]
    assert {m.label_source for m in book.pages} == {SOURCE_PDF}
    assert book.label_runs() == [{"printed": "i-ii", "pages": "1-2"}, {"printed": "1-3", "pages": "3-5"}]


def test_find_printed_says_what_to_do(corpus: Corpus, tmp_path: Path) -> None:
    pdf = numbered_book(tmp_path / "restart.pdf", ["1", "2", "3", "4", "1", "2", "3"])
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    book = corpus.book("restart")
    assert book.labels() == ["1", "2", "3", "4", "1", "2", "3"]
    with pytest.raises(UnknownLabelError, match=r"more than once .*PDF pages 2, 6"):
        book.find_printed("2")
    with pytest.raises(UnknownLabelError, match=r"printed 1-4 on PDF pages 1-4; printed 1-3 on PDF pages 5-7"):
        book.find_printed("xx")
    assert book.find_printed("4") == 4


def test_labels_survive_a_resumed_run_and_are_recomputed(corpus: Corpus, tmp_path: Path) -> None:
    pdf = numbered_book(tmp_path / "later.pdf", ["7", "8", "9", "10"])
    ocr_book(corpus, pdf, RunOptions(engine="text-layer", pages="1-2"))
    assert corpus.book("later").labels() == ["7", "8", None, None]
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    assert corpus.book("later").labels() == ["7", "8", "9", "10"]
    manifest = json.loads((corpus.root / "later" / "manifest.json").read_text())
    manifest["pages"][0].pop("label")  # an older book without labels: a no-op run adds them
    (corpus.root / "later" / "manifest.json").write_text(json.dumps(manifest))
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    assert corpus.book("later").labels()[0] == "7"


def test_cli_get_by_printed_label(corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = numbered_book(tmp_path / "cli.pdf", [None, "ii", "iii", "2", "3", "4"])
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    assert main(["--corpus", str(corpus.root), "--json", "get", "cli", "--printed", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["page"], data["label"], data["label_source"]) == (5, "3", "printed")
    assert "leaf 5" in data["markdown"]
    assert main(["--corpus", str(corpus.root), "get", "cli", "--printed", "iii", "--to-printed", "2"]) == 0
    out = capsys.readouterr().out
    assert '<!-- page 3 printed="iii" (ok) -->' in out and '<!-- page 4 printed="2" (ok) -->' in out
    assert main(["--corpus", str(corpus.root), "get", "cli", "--printed", "99"]) == 2
    assert "no page of book 'cli' is printed '99'" in capsys.readouterr().err
    assert main(["--corpus", str(corpus.root), "get", "cli"]) == 2
    assert "or the number printed on the page" in capsys.readouterr().err
