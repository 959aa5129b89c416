"""Issue 16, item 1: paging through a search that crosses several match tiers ends, each hit once."""

from __future__ import annotations

from server.corpus import Corpus
from server.mcp_server import search_result
from server.search import search_library
from tests.test_search import FILLER, make_book


def test_following_next_offset_returns_each_hit_once_and_ends(corpus: Corpus) -> None:
    make_book(corpus, "exact", [f"{FILLER} A propositional function, case {n}." for n in range(65)])  # tier 3
    make_book(corpus, "fuzzy", [f"{FILLER} A propositi0nal function, scan {n}." for n in range(30)])  # tier 1
    make_book(corpus, "partial", [f"{FILLER} A function only, item {n}." for n in range(150)])  # tier 0
    expected = 65 + 30 + 150
    seen: list[tuple[str, int]] = []
    totals: set[int] = set()
    offset: int | None = 0
    for _ in range(200):  # a bound, so a loop that never ends fails instead of hanging
        if offset is None:
            break
        page = search_result(search_library(corpus, "propositional function", limit=7, offset=offset))
        data = page.structured_content
        assert data is not None
        totals.add(data["total"])
        seen.extend((hit["book"], hit["page"]) for hit in data["hits"])
        offset = data["next_offset"]
    assert offset is None, "paging never ended"
    assert totals == {expected}
    assert len(seen) == len(set(seen)) == expected
    assert [book for book, _ in seen[:65]] == ["exact"] * 65  # tiers still rank strictest first


def test_total_is_the_same_at_any_offset_and_limit(corpus: Corpus) -> None:
    make_book(corpus, "exact", [f"{FILLER} A propositional function, case {n}." for n in range(65)])
    make_book(corpus, "partial", [f"{FILLER} A function only, item {n}." for n in range(10)])
    for offset, limit in [(0, 1), (0, 100), (64, 2), (200, 2), (74, 5), (75, 5)]:
        result = search_library(corpus, "propositional function", limit=limit, offset=offset)
        assert result.total == 75, (offset, limit)
        assert len(result.hits) == max(0, min(limit, 75 - offset)), (offset, limit)
