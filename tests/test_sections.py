"""Sections and definitions (issue 15): the section a page falls in, heading hits first, defined=True."""

from __future__ import annotations

import pytest

from server.contents import ContentsEntry
from server.corpus import Corpus
from server.library import Library
from server.sections import (
    STRONG,
    WEAK,
    SectionIndex,
    defining_heading_score,
    definition_score,
    heading_score,
    query_words,
)
from tests.test_search import FILLER, make_book

BOOK = [
    "# 1 Numbers\n\n" + FILLER + " A vector turns up here in passing, and a vector again, vector after vector.",
    "## 1.1 Magnitudes\n\n" + FILLER + " A quantity with a magnitude and a direction is called a vector.",
    "## 1.2 Vectors\n\n" + FILLER + " Here we add them head to tail.",
    "## 1.3 Summary\n\n" + FILLER + " We will define the vector product later; the vector sum was above.",
]


@pytest.fixture
def shelf(corpus: Corpus) -> Library:
    make_book(corpus, "geo", BOOK, labels=["11", "12", "13", "14"])
    return Library(corpus)


def test_section_of_a_page_is_the_last_entry_starting_on_or_before_it() -> None:
    index = SectionIndex(
        (
            ContentsEntry(1, "Chapter 2: Induction", 1),
            ContentsEntry(2, "2.1 Intro", 1),
            ContentsEntry(2, "2.2 More.", 5),
        )
    )
    assert index.section_of(1) == "§Chapter 2: Induction → §2.1 Intro"  # both start on page 1
    assert index.section_of(4) == "§2.1 Intro"
    assert index.section_of(9) == "§2.2 More"
    assert SectionIndex(()).section_of(3) is None


@pytest.mark.parametrize(
    ("sentence", "term", "score"),
    [
        ("A quantity with a direction is called a vector.", "vector", STRONG),
        ("Ratios of this sort are called by the Greeks incommensurable.", "incommensurable", STRONG),
        ("Definition 2.1. A group is a set with an operation.", "group", STRONG),
        ("We define the rank of a matrix as the number of its pivots.", "rank", STRONG),
        ("Later we will define induction rigorously.", "induction", 0.0),  # a promise, not a definition
        ("Series with a sum to infinity are called convergent.", "sum to infinity", 0.0),  # it defines convergent
        ("Recall the definition of a vector from the last chapter.", "vector", WEAK),
        ("Vectors are added head to tail.", "vector", 0.0),
    ],
)
def test_definition_sentences(sentence: str, term: str, score: float) -> None:
    assert definition_score(sentence, query_words(term)) == score


def test_heading_names_the_query_plural_or_not_and_the_tighter_heading_wins() -> None:
    words = query_words("the domino analogy")
    assert heading_score(["2.3.1 The Domino Analogies"], words) > heading_score(
        ["Domino analogy and more words"], words
    )
    assert heading_score(["2.3.2 Other Analogies"], words) == 0


def test_hits_carry_their_section_and_a_heading_page_comes_first(shelf: Library) -> None:
    hits = shelf.search("vectors").hits
    assert (hits[0].page, hits[0].defines, hits[0].section) == (3, "heading", "§1.2 Vectors")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)  # still falling


def test_defined_puts_the_defining_page_first(shelf: Library) -> None:
    assert shelf.search("vector").hits[0].page != 2  # the page that says it most often wins a plain search ...
    top = shelf.search("vector", defined=True).hits[0]
    assert (top.page, top.defines, top.label, top.section) == (2, "definition", "12", "§1.1 Magnitudes")


def test_total_and_paging_do_not_change_with_promotion(shelf: Library) -> None:
    everything = shelf.search("vector", defined=True, limit=50)
    walked = [h for offset in range(0, 4) for h in shelf.search("vector", defined=True, limit=1, offset=offset).hits]
    assert [h.page for h in walked] == [h.page for h in everything.hits]
    assert {shelf.search("vector", limit=n, offset=o).total for n, o in [(1, 0), (2, 2), (50, 0)]} == {4}


def test_pages_read_know_their_section(shelf: Library) -> None:
    pages = shelf.read_pages("geo", printed="12", to_printed="13").pages
    assert [(p.page, p.section) for p in pages] == [(2, "§1.1 Magnitudes"), (3, "§1.2 Vectors")]


def test_a_heading_that_defines_the_head_noun() -> None:
    words = query_words("mathematical induction")
    assert defining_heading_score(["2.3 Defining Induction"], words) > heading_score(["Mathematical Induction"], words)
    assert defining_heading_score(["2.3 Using Induction"], words) == 0
