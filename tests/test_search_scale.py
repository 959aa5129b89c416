"""What keeps search fast in a library of 1,000 books: near spellings read from the index (never the whole
vocabulary), books checked against their manifests by a stat, and an index of an older format rebuilt."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from rapidfuzz.distance import OSA

from server.corpus import Corpus
from server.search import SearchIndex, search_library
from server.search import store as search_store
from server.search.normalize import normalize
from server.search.query import read_query
from server.search.vocabulary import TermStats, max_edits
from tests.test_search import make_book

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _misspell(word: str, rng: random.Random, edits: int) -> str:
    for _ in range(edits):
        i = rng.randrange(len(word))
        kind = rng.randrange(4)
        if kind == 0:
            word = word[:i] + word[i + 1 :]
        elif kind == 1:
            word = word[:i] + rng.choice(LETTERS + "0é") + word[i:]
        elif kind == 2 and i + 1 < len(word):
            word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        else:
            word = word[:i] + rng.choice(LETTERS + "0é") + word[i + 1 :]
    return word


def test_near_spellings_from_the_index_are_exactly_those_within_the_edit_distance(corpus: Corpus) -> None:
    rng = random.Random(3)
    stems = ["posterior", "likelihood", "gamma", "theorem", "variance", "integral", "bayes", "sample", "prior"]
    words = stems + [_misspell(rng.choice(stems), rng, rng.randint(1, 3)) for _ in range(600)]
    pages = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(60)]
    SearchIndex(corpus).add_pages(("many", n, text, None) for n, text in enumerate(pages, start=1))
    vocabulary = Counter(t for text in pages for t in set(normalize(text).split()))
    stats = TermStats(SearchIndex(corpus)._conn(), lambda: len(pages))
    queries = stems + [_misspell(s, rng, 1) for s in stems] + [_misspell(s, rng, 2) for s in stems] + ["pstreior"]
    for query in queries:
        edits = max_edits(query)
        within = [(OSA.distance(query, t), -doc, t) for t, doc in vocabulary.items() if t != query]
        expected = [t for dist, _, t in sorted(within) if dist <= edits] if edits else []
        assert stats.near(query, limit=None) == expected, query
    assert any(len(stats.near(q, limit=None)) > 3 for q in queries)  # the check is not vacuous


def test_page_counts_of_terms_follow_adds_replacements_and_deletes(corpus: Corpus) -> None:
    index = SearchIndex(corpus)
    index.add_pages([("b", n, f"alpha beta beta page{n}", None) for n in range(1, 6)])
    index.add_page("b", 2, "alpha gamma")  # replaced
    index.remove_page("b", 3)
    index.add_pages([("c", 1, "beta delta", None)])
    conn = index._conn()
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.truth USING fts5vocab(main, fts, 'row')")
    truth = dict(conn.execute("SELECT term, doc FROM temp.truth").fetchall())  # FTS5's own count
    assert truth == {"alpha": 4, "beta": 4, "gamma": 1, "delta": 1, "page1": 1, "page4": 1, "page5": 1}
    stats = TermStats(conn, index.page_count)
    assert {t: stats.doc_freq(t) for t in [*truth, "page2", "page3"]} == {**truth, "page2": 0, "page3": 0}
    index.reindex()
    assert TermStats(index._conn(), index.page_count).doc_freq("beta") == 0  # no book files: an empty index


def test_terms_of_pages_no_longer_indexed_are_not_offered(corpus: Corpus) -> None:
    index = SearchIndex(corpus)
    index.add_pages([("b", 1, "the posterior density", None), ("b", 2, "a posteriro slip", None)])
    stats = TermStats(index._conn(), index.page_count)
    assert stats.near("posterior") == ["posteriro"]
    index.remove_page("b", 2)
    assert TermStats(index._conn(), index.page_count).near("posterior") == []


def test_a_search_reads_no_manifest_of_an_unchanged_book(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(4):
        make_book(corpus, f"book{n}", [f"page one of book {n} about zebras", "page two"])
    assert search_library(corpus, "zebras").total == 4  # the first search records each manifest's version
    read: list[str] = []
    real = Corpus._read_manifest

    def counting(self: Corpus, book_id: str, path: Path) -> dict:
        read.append(book_id)
        return real(self, book_id, path)

    monkeypatch.setattr(Corpus, "_read_manifest", counting)
    search_store.SHARED.clear()  # a fresh process: the books are checked again, their labels looked up
    fresh = Corpus(corpus.root)
    assert sorted(hit.book for hit in search_library(fresh, "zebras").hits) == [f"book{n}" for n in range(4)]
    assert read == []  # by a stat per book, and from the index
    manifest = corpus.root / "book2" / "manifest.json"  # a book changed behind the index's back: found by its stamp
    data = json.loads(manifest.read_text())
    data["pages"][1]["status"] = "failed"
    manifest.write_text(json.dumps(data))
    search_store.SHARED.clear()
    search_library(fresh, "nothing-matches-this")
    assert read == ["book2"]
    assert search_library(fresh, '"page two"').total == 3  # its page 2 left the index


def test_an_index_of_the_older_format_is_rebuilt_from_the_page_files(corpus: Corpus) -> None:
    make_book(corpus, "old", ["the exponential model with a gamma prior", "nothing else"])
    path = corpus.root / search_store.INDEX_FILE
    search_store.remove_index(path)
    conn = sqlite3.connect(path)  # what bookocr-search/1 made: no terms table, a gen column, no stamps
    conn.executescript(
        """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE books(num INTEGER PRIMARY KEY, book TEXT NOT NULL UNIQUE);
        CREATE TABLE pages(id INTEGER PRIMARY KEY, label TEXT, gen INTEGER NOT NULL, text BLOB NOT NULL,
            norm BLOB NOT NULL);
        CREATE VIRTUAL TABLE fts USING fts5(body, content='', detail=full);
        INSERT INTO meta VALUES('format', 'bookocr-search/1'), ('normalizer', '2'), ('pages', '0');
        """
    )
    conn.commit()
    conn.close()
    assert search_store.check_index_file(path) == search_store.OUTDATED
    found = search_library(corpus, "gamma prior")
    assert [(hit.book, hit.page) for hit in found.hits] == [("old", 1)]
    assert search_store.check_index_file(path) is None
    assert "older bookocr" in (SearchIndex(corpus).notice or "")
    assert not list(corpus.root.glob("index.sqlite.bad-*"))  # derived data of an old format is not kept aside
    assert search_library(corpus, "gama").hits[0].page == 1  # near spellings come from the rebuilt terms table


def test_snippets_are_made_only_for_the_hits_handed_on(corpus: Corpus) -> None:
    from server.library import Library

    for n in range(3):
        make_book(corpus, f"book{n}", [f"the posterior density of book {n}"] * 20)
    ranked = search_library(corpus, "posterior", limit=50, snippets=False)
    assert ranked.total == 60 and [hit.snippet for hit in ranked.hits] == [""] * 50
    ranked.make_snippets(ranked.hits[:2])
    assert [hit.snippet.count("**posterior**") for hit in ranked.hits[:3]] == [1, 1, 0]
    shown = Library(corpus).search("posteriro", limit=5)  # ranks 50 for promotion, hands on 5
    assert len(shown.hits) == 5 and all("**posterior**" in hit.snippet for hit in shown.hits)
    assert all("text" not in hit.as_dict() for hit in shown.hits)


def test_library_search_ranks_no_lower_tier_than_it_shows_and_shows_the_same(corpus: Corpus) -> None:
    from server.library import Library
    from server.sections import query_words

    pages = [f"the posterior density, page {n}" for n in range(6)] + ["# Posterior density\n\nas a heading"]
    pages += [f"the posteriro densty misread, page {n}" for n in range(2)] + ["only the density here"] * 5
    make_book(corpus, "tiers", pages)
    query = "posterior density"
    every = search_library(corpus, query, limit=50, snippets=False)
    assert {int(hit.score) for hit in every.hits} == {3, 1, 0}  # exact, near spellings, all but one
    filled = search_library(corpus, query, limit=50, snippets=False, fill=5)
    assert filled.total == every.total and {int(hit.score) for hit in filled.hits} == {3}
    library = Library(corpus)
    for offset, limit in [(0, 5), (0, 10), (5, 5), (10, 10), (0, 50), (45, 10)]:
        reference = library._promote(
            search_library(corpus, query, limit=50, snippets=False).hits, query_words(query), False
        )
        shown = library.search(query, offset=offset, limit=limit)
        expected = [(h.book, h.page, h.score, h.defines) for h in reference[offset : offset + limit]]
        assert [(h.book, h.page, h.score, h.defines) for h in shown.hits] == expected, (offset, limit)
        assert shown.total == every.total


def test_a_formula_of_common_letters_requires_two_distinct_terms_and_finds_its_page(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a large library every letter of ``(X^T X)^-1 X^T y`` is common. The match must then rest on two
    different terms: ``t`` twice asks no more than ``t`` once, and matched (and had FTS5 rank) every page
    holding a ``t``."""
    from server.search import tiers

    monkeypatch.setattr(tiers, "COMMON_MIN_PAGES", 10)
    rng = random.Random(5)
    filler = ["x", "y", "1", "the", "model", "fit", "data", "error", "value"]
    pages = [" ".join(rng.choice(filler) for _ in range(60)) + (" t" if n % 3 == 0 else "") for n in range(80)]
    pages[41] = "The least squares estimate is \\( \\hat{\\beta}=\\left(X^{T} X\\right)^{-1} X^{T} y \\) here."
    SearchIndex(corpus).add_pages(("ls", n, text, None) for n, text in enumerate(pages, start=1))
    stats = TermStats(SearchIndex(corpus)._conn(), lambda: len(pages))
    plan = tiers.TierPlan(read_query("(X^T X)^-1 X^T y"), stats)
    assert all(group.common for group in plan.groups)  # the path under test
    first = next(plan.steps(lambda: True))
    required = re.findall(r'"([^"]+)"', first.match)
    assert first.match.startswith("NEAR(") and "t" in required and len(set(required)) == 2, first.match
    found = search_library(corpus, "(X^T X)^-1 X^T y", limit=5)
    assert (found.hits[0].book, found.hits[0].page) == ("ls", 42)


def test_a_word_typed_twice_asks_no_more_than_typed_once(corpus: Corpus) -> None:
    index = SearchIndex(corpus)
    index.add_pages([("b", 1, "the posterior gamma density", None), ("b", 2, "a posterior mean", None)])
    once = search_library(corpus, "qwxz posterior", limit=5)
    assert once.total == 2  # qwxz is on no page: the all-but-one tier leaves it out
    for typed in ("qwxz qwxz posterior", "posterior qwxz gamma qwxz"):
        twice = search_library(corpus, typed, limit=5)
        assert twice.total >= 1 and {(h.book, h.page) for h in twice.hits} <= {("b", 1), ("b", 2)}, typed
    assert [(h.book, h.page) for h in search_library(corpus, "qwxz qwxz posterior", limit=5).hits] == [
        (h.book, h.page) for h in once.hits
    ]
