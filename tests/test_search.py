"""search_library: matching, ranking, results, filters and odd queries (books written straight into a corpus)."""

from __future__ import annotations

import hashlib

import pytest

from ocr_backend.engines.base import PageResult
from ocr_backend.errors import PageRangeError, UnknownBookError
from ocr_backend.sources import SourceInfo
from server.corpus import Book, Corpus
from server.search import SearchIndex, SearchResponse, parse_query, search_library

FILLER = (
    "Notes on the chapter follow. The reader may skip the proofs on a first reading and return to them later, "
    "once the examples have made the ideas familiar."
)

STATS_PAGES = [
    "# Priors\n\n" + FILLER + " The conjugate prior for the exponential rate is the Gamma distribution.",
    "# Posterior\n\nWith a Gamma prior and exponential data the posterior is\n\n"
    r"\[ p(\lambda \mid y) = \operatorname {Gamma}(\lambda |\alpha +n,\beta +\sum_{i} y_{i}) \]"
    "\n\n" + FILLER,
    "# Normal model\n\n"
    + FILLER
    + r" The density is \( \frac{1}{\sqrt{2\pi}\sigma} e^{-\frac{(x-\mu)^{2}}{2\sigma^{2}}} \).",
    "# Exercises\n\n" + FILLER + " Compute the posterior distribution of the rate and compare it with the prior.",
    "# Remarks\n\n"
    + FILLER
    + " A distribution is called a prior when it is chosen before the data; the posterior comes after.",
]


def make_book(corpus: Corpus, book_id: str, pages: list[str], labels: list[str] | None = None) -> Book:
    """A finished book written through the corpus API, as a run leaves it (no PDF needed)."""
    digest = hashlib.sha256(book_id.encode()).hexdigest()
    info = SourceInfo(
        path=f"/tmp/{book_id}.pdf", name=f"{book_id}.pdf", kind="pdf", sha256=digest, bytes=1, page_count=len(pages)
    )
    with corpus.lock(book_id):
        book = corpus.prepare_book(book_id, info, "text-layer")
        for number, markdown in enumerate(pages, start=1):
            book.record(
                PageResult(number=number, markdown=markdown, status="ok", engine="text-layer", engine_version="test")
            )
        if labels:
            book.set_labels([(label, "test") for label in labels])
        book.flush()
    SearchIndex(corpus).sync_book(book_id)  # a run indexes its pages as they land
    return book


@pytest.fixture
def library(corpus: Corpus) -> Corpus:
    make_book(corpus, "stats", STATS_PAGES, labels=["11", "12", "13", "14", "15"])
    make_book(corpus, "other", ["Nothing about statistics here, only gardening and the rate of growth of roses."] * 3)
    return corpus


def pages_of(response: SearchResponse) -> list[tuple[str, int]]:
    return [(hit.book, hit.page) for hit in response.hits]


def test_plain_words_find_the_page_with_label_and_marked_snippet(library: Corpus) -> None:
    result = search_library(library, "where is the conjugate prior for the exponential rate?")
    top = result.hits[0]
    assert (top.book, top.page, top.label) == ("stats", 1, "11")
    assert "**conjugate prior**" in top.snippet and "**exponential rate**" in top.snippet
    assert result.total >= 1 and result.elapsed_ms > 0


def test_formula_typed_as_plain_text_finds_the_latex_page(library: Corpus) -> None:
    result = search_library(library, "Gamma(lambda | alpha+n, beta+sum y_i)")
    assert pages_of(result)[0] == ("stats", 2)
    snippet = result.hits[0].snippet
    assert r"\operatorname {Gamma}(\lambda |\alpha +n,\beta +\sum_{i} y_{i" in snippet  # quoted as the page has it
    assert r"p(**\lambda \mid y) = " in snippet and r"y_{i**})" in snippet  # one marked run over the formula


def test_greek_typed_as_unicode_finds_latex(library: Corpus) -> None:
    assert pages_of(search_library(library, "1/(sqrt(2π) σ)"))[0] == ("stats", 3)


def test_quoted_phrase_needs_the_words_together(library: Corpus) -> None:
    assert pages_of(search_library(library, '"posterior distribution"')) == [("stats", 4)]
    loose = pages_of(search_library(library, "posterior distribution"))
    assert loose[0] == ("stats", 4) and ("stats", 5) in loose  # both words, apart: found, ranked lower


def test_terms_close_together_rank_first(corpus: Corpus) -> None:
    near = "alpha words " * 30 + "the gamma prior here " + "omega words " * 30
    far = "gamma " + "alpha words " * 30 + "omega words " * 30 + " prior"
    make_book(corpus, "prox", [far, near])
    assert pages_of(search_library(corpus, "gamma prior"))[0] == ("prox", 2)


def test_typos_and_ocr_errors_are_tolerated(library: Corpus) -> None:
    assert pages_of(search_library(library, "conjugte prior exponental rate"))[0] == ("stats", 1)
    make_book(library, "scan", ["The posteri0r distributi0n of the rate after the data."])
    assert ("scan", 1) in pages_of(search_library(library, "posterior distribution"))


def test_fuzzy_matches_never_drown_an_exact_hit(corpus: Corpus) -> None:
    make_book(corpus, "clean", [FILLER * 3 + f" one distribution, once, on page {n}." for n in range(1, 7)])
    make_book(corpus, "scan", ["distributon " * 30 + "of the rate"])  # an OCR error, again and again: BM25 loves it
    result = search_library(corpus, "distribution")
    assert [h.book for h in result.hits] == ["clean"] * 6 + ["scan"] and result.total == 7
    assert result.hits[-1].score < min(hit.score for hit in result.hits[:-1])
    assert [h.book for h in search_library(corpus, "distribution", limit=6).hits] == ["clean"] * 6
    assert search_library(corpus, "distributon").hits[0].book == "scan"  # spelled as the scan has it: exact


def test_filters_by_book_and_page_range(library: Corpus) -> None:
    assert {hit.book for hit in search_library(library, "rate", books=["other"]).hits} == {"other"}
    assert {hit.book for hit in search_library(library, "rate", books=["other", "stats"]).hits} == {"other", "stats"}
    ranged = search_library(library, "prior", books=["stats"], pages=(3, 5))
    assert ranged.hits and all(3 <= hit.page <= 5 for hit in ranged.hits)
    assert all(2 <= hit.page <= 3 for hit in search_library(library, "the", pages=(2, 3), limit=50).hits)
    with pytest.raises(PageRangeError):
        search_library(library, "prior", pages=(5, 2))


def test_unknown_book_raises_and_lists_the_books(library: Corpus) -> None:
    with pytest.raises(UnknownBookError, match="other, stats"):
        search_library(library, "prior", books=["stats", "nope"])


def test_paging_walks_the_same_order(library: Corpus) -> None:
    everything = search_library(library, "the", limit=50)
    assert everything.total == 8 == len(everything.hits)
    walked = [hit for offset in range(0, 8, 3) for hit in search_library(library, "the", limit=3, offset=offset).hits]
    assert pages_of(everything) == [(h.book, h.page) for h in walked]
    scores = [hit.score for hit in everything.hits]
    assert scores == sorted(scores, reverse=True)
    assert search_library(library, "the", offset=100).hits == []


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '""',
        '"""',
        "*",
        "**",
        "NEAR",
        "NEAR(",
        "NEAR(a b, 2)",
        ":",
        "body:prior",
        "^",
        "-",
        "AND",
        "OR NOT",
        "(",
        ")",
        "{}",
        "\\",
        "$$",
        "\\frac{",
        '"unclosed phrase',
        "'",
        "+",
        "*prefix",
        "\x00",
        "   ",
        "",
        "!@#$%^&*()",
        "\\(\\)",
    ],
)
def test_punctuation_and_fts5_syntax_never_raise(library: Corpus, query: str) -> None:
    result = search_library(library, query)
    assert result.total >= 0 and result.query == query


def test_fts5_operator_words_are_searched_as_words(corpus: Corpus) -> None:
    make_book(corpus, "ops", ["Stay near the fire.", "Nothing here."])
    assert pages_of(search_library(corpus, "NEAR")) == [("ops", 1)]
    assert search_library(corpus, "near*").hits[0].page == 1


def test_results_serialise(library: Corpus) -> None:
    data = search_library(library, "conjugate prior", limit=1).as_dict()
    assert set(data) == {"query", "total", "offset", "limit", "elapsed_ms", "hits"}
    assert set(data["hits"][0]) == {"book", "page", "label", "section", "defines", "score", "snippet"}


def test_labels_follow_the_manifest_when_set_later(library: Corpus) -> None:
    assert search_library(library, "gardening", books=["other"]).hits[0].label is None
    with library.lock("other"):
        book = library.book_for_writing("other")
        book.set_labels([("i", "test"), ("ii", "test"), ("iii", "test")])
        book.flush()
    assert search_library(library, "gardening", books=["other"], pages=(2, 2)).hits[0].label == "ii"


def test_bad_paging_is_refused(library: Corpus) -> None:
    from ocr_backend.errors import BookOcrError

    for kwargs in ({"limit": 0}, {"limit": 10_000}, {"offset": -1}):
        with pytest.raises(BookOcrError):
            search_library(library, "prior", **kwargs)


def test_stopwords_are_dropped_outside_quotes_only() -> None:
    assert [g.terms for g in parse_query("what is the prior")] == [("prior",)]
    assert [g.terms for g in parse_query('"the prior" of')] == [("the", "prior")]
    assert [g.terms for g in parse_query("the of")] == [("the",), ("of",)]


def test_add_page_replaces_the_old_text(corpus: Corpus) -> None:
    index = SearchIndex(corpus)
    index.add_page("loose", 1, "first words about cats")
    index.add_page("loose", 1, "second words about dogs", label="7")
    assert search_library(corpus, "cats").total == 0
    hit = search_library(corpus, "dogs").hits[0]
    assert (hit.book, hit.page, hit.label) == ("loose", 1, "7")
    index.remove_page("loose", 1)
    assert search_library(corpus, "dogs").total == 0


def test_a_typed_phrase_with_a_typo_finds_its_page_before_scattered_words(corpus: Corpus) -> None:
    scattered = ("theory " * 3 + FILLER + " groups " * 3 + FILLER + " concerned " * 3 + "symmetry ") * 2
    make_book(
        corpus, "mixed", [scattered] * 4 + [FILLER + " The theory of groups is concerned with symmetry. " + FILLER]
    )
    assert pages_of(search_library(corpus, "theory of gruops is concerned with"))[0] == ("mixed", 5)


def test_quoted_phrases_are_not_widened_to_ocr_variants(corpus: Corpus) -> None:
    make_book(corpus, "quotes", ["the posterior distribution here", "the posteri0r distribution there"])
    assert pages_of(search_library(corpus, '"posterior distribution"')) == [("quotes", 1)]
    assert pages_of(search_library(corpus, "posterior distribution")) == [("quotes", 1), ("quotes", 2)]
