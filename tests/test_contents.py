"""Contents: the PDF outline when there is one, else the headings OCR found; CLI and MCP access."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pymupdf
import pytest
from mcp import Client

from server.cli import main
from server.contents import ContentsEntry, book_contents, contents_from_headings, contents_from_outline, page_headings
from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server
from server.runner import RunOptions, ocr_book
from server.safety import InputPolicy
from server.sample_book import SamplePage, typeset_pdf


def titles(entries: list[ContentsEntry]) -> list[tuple[int, str, int]]:
    return [(e.level, e.title, e.page) for e in entries]


# --- headings on one page -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("markdown", "furniture", "expected"),
    [
        (
            "## Chapter 2\n\n# Mathematical Induction\n\nThis chapter marks our first step.",
            [],
            [(1, "Chapter 2: Mathematical Induction", "chapter 2")],
        ),
        (
            "### CHAPTERII\n\nVARIABLES\n\nMathematics as a science commenced ...",
            [],
            [(1, "CHAPTER II: VARIABLES", "chapter 2")],
        ),
        (
            "### VARIABLES\n\nMathematics as a science commenced when first someone proved things.",
            ["CHAPTER II"],
            [(1, "CHAPTER II: VARIABLES", "chapter 2")],
        ),
        (
            "CHAPTER I\n\nTHE ABSTRACT NATURE OF MATHEMATICS The study of mathematics is apt to commence in disappointment.",
            [],
            [(1, "CHAPTER I: THE ABSTRACT NATURE OF MATHEMATICS", "chapter 1")],
        ),
        ("## 2.7 Chapter Exercises\n\nHere are some problems.", [], [(2, "2.7 Chapter Exercises", "2.7")]),
        (
            "2.1Introduction This chapter marks our first big step toward proofs and learning to construct our own.",
            [],
            [(2, "2.1 Introduction", "2.1")],
        ),
        (
            "2.2 Examples and Discussion 2.2.1 Turning Cubes Into Bigger Cubes To motivate the overall method, we look.",
            [],
            [(2, "2.2 Examples and Discussion", "2.2"), (3, "2.2.1 Turning Cubes Into Bigger Cubes", "2.2.1")],
        ),
        ("INDEX\n\nAbel, 127\n\nBall, W. W. R., 43", [], [(1, "INDEX", "index")]),
        ("Abel, 127", ["INDEX 213"], []),  # a running head with its folio is not a heading
        ("In chapter 2 we saw that 3.5 Million people counted.\n\n2.5 is the answer to the sum.", [], []),
        ("Chapter 3 showed, at some length, why the method works for every case we could think of and more.", [], []),
    ],
)
def test_page_headings(markdown: str, furniture: list[str], expected: list[tuple[int, str, str]]) -> None:
    assert page_headings(markdown, furniture) == expected


# --- the whole book ---------------------------------------------------------------------------
def test_each_heading_once_at_its_first_page_and_sections_must_rise() -> None:
    pages = [
        ("## Chapter 2\n\n# Induction\n\n## 2.1 Introduction\n\nText.", []),
        ("2.1. INTRODUCTION\n\nMore text.", []),  # running head left in the body: repeats 2.1
        ("## 2.2 Examples\n\nSee 4.1 Below for more.", []),  # "4.1 Below" is a cross-reference, out of order
        ("### Proof\n\nText.\n\n## 2.3 Defining Induction\n\nText.", []),  # an unnumbered heading in a numbered book
        ("CHAPTER 2. INDUCTION\n\n## 2.4 Applications\n\nText.", []),
    ]
    entries = contents_from_headings(pages, ["101", "102", "103", "104", "105"])
    assert titles(entries) == [
        (1, "Chapter 2: Induction", 1),
        (2, "2.1 Introduction", 1),
        (2, "2.2 Examples", 3),
        (2, "2.3 Defining Induction", 4),
        (2, "2.4 Applications", 5),
    ]
    assert [e.printed for e in entries] == ["101", "101", "103", "104", "105"]


def test_unnumbered_headings_make_the_contents_of_a_book_without_numbers() -> None:
    pages = [
        ("# A Study in Scarlet\n\nText.", []),
        ("## The Science of Deduction\n\nText.\n\n### a caption\n\nText.", []),
    ]
    assert titles(contents_from_headings(pages, [None, None])) == [
        (1, "A Study in Scarlet", 1),
        (2, "The Science of Deduction", 2),
    ]


def test_outline_entries_carry_printed_labels() -> None:
    entries = contents_from_outline(
        [[1, "Preface", 2], [1, "Chapter 1", 4], [2, "1.1 Start", 5], [1, "Broken", -1]], [None, "ii", "iii", "1", "2"]
    )
    assert [(e.title, e.page, e.printed) for e in entries] == [
        ("Preface", 2, "ii"),
        ("Chapter 1", 4, "1"),
        ("1.1 Start", 5, "2"),
    ]


# --- through the pipeline, the CLI and MCP ----------------------------------------------------
def chapter_book(path: Path, outline: list[list] | None = None) -> Path:
    pages = [
        SamplePage(heading="Preface", paragraphs=["Why this book was written, and for whom it is meant."], folio="vi"),
        SamplePage(paragraphs=["Thanks to everyone who read the drafts and found the mistakes."], folio="vii"),
        SamplePage(
            heading="Chapter 1. Priors",
            paragraphs=["Beliefs before the data arrive are summarised by a prior."],
            folio="1",
        ),
        SamplePage(
            heading="1.1 Conjugate priors",
            paragraphs=["A prior is conjugate when the posterior stays in its family."],
            running_head="PRIORS",
            folio="2",
        ),
        SamplePage(
            paragraphs=["The posterior mean is a weighted compromise between prior and data."],
            running_head="PRIORS",
            folio="3",
        ),
        SamplePage(
            heading="1.2 The normal model",
            paragraphs=["With a normal prior the posterior precision adds up."],
            running_head="PRIORS",
            folio="4",
        ),
    ]
    typeset_pdf(path, pages)
    if outline:
        with pymupdf.open(path) as doc:
            doc.set_toc(outline)
            doc.saveIncr()
    return path


def test_contents_from_headings_when_the_pdf_has_no_outline(
    corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ocr_book(corpus, chapter_book(tmp_path / "priors.pdf"), RunOptions(engine="text-layer"))
    contents = book_contents(corpus.book("priors"))
    assert contents.source == "headings"
    assert [(e.title, e.page, e.printed) for e in contents.entries] == [
        ("Preface", 1, "vi"),
        ("Chapter 1: Priors", 3, "1"),
        ("1.1 Conjugate priors", 4, "2"),
        ("1.2 The normal model", 6, "4"),
    ]
    assert main(["--corpus", str(corpus.root), "contents", "priors"]) == 0
    out = capsys.readouterr().out
    assert "1.2 The normal model  ... page 6 (printed 4)" in out and "headings found in the text" in out


def test_contents_from_the_pdf_outline(corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outline = [[1, "Preface", 1], [1, "1 Priors", 3], [2, "1.1 Conjugate priors", 4], [2, "1.2 The normal model", 6]]
    ocr_book(corpus, chapter_book(tmp_path / "outlined.pdf", outline), RunOptions(engine="text-layer"))
    assert main(["--corpus", str(corpus.root), "--json", "contents", "outlined"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "outline"
    assert data["entries"] == [
        {"level": 1, "title": "Preface", "page": 1, "printed": "vi"},
        {"level": 1, "title": "1 Priors", "page": 3, "printed": "1"},
        {"level": 2, "title": "1.1 Conjugate priors", "page": 4, "printed": "2"},
        {"level": 2, "title": "1.2 The normal model", "page": 6, "printed": "4"},
    ]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def mcp_client(corpus: Corpus, tmp_path: Path) -> AsyncIterator[Client]:
    ocr_book(corpus, chapter_book(tmp_path / "priors.pdf"), RunOptions(engine="text-layer"))
    async with Client(create_server(Library(corpus), InputPolicy(roots=[tmp_path]))) as client:
        yield client


@pytest.mark.anyio
async def test_mcp_contents_and_printed_pages(mcp_client: Client) -> None:
    result = await mcp_client.call_tool("get_contents", {"book": "priors"})
    assert not result.is_error
    entries = result.structured_content["entries"]
    assert {"level": 2, "title": "1.2 The normal model", "page": 6, "printed": "4"} in entries
    assert '1.2 The normal model: page 6 (printed "4")' in result.content[0].text

    page = await mcp_client.call_tool("get_page", {"book": "priors", "printed": "3"})
    assert not page.is_error and page.structured_content["page"] == 5 and page.structured_content["label"] == "3"
    roman = await mcp_client.call_tool("get_page", {"book": "priors", "printed": "vi"})
    assert roman.structured_content["page"] == 1

    missing = await mcp_client.call_tool("get_page", {"book": "priors", "printed": "42"})
    assert (
        missing.is_error
        and "printed vi-vii on PDF pages 1-2" in missing.content[0].text
        and "PDF page number 1-6" in missing.content[0].text
    )
    neither = await mcp_client.call_tool("get_page", {"book": "priors"})
    assert neither.is_error and "number printed on the page" in neither.content[0].text
    unknown = await mcp_client.call_tool("get_contents", {"book": "nope"})
    assert (
        unknown.is_error and "no book 'nope'" in unknown.content[0].text and "books: priors" in unknown.content[0].text
    )
