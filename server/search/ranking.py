"""Running a query's tier ladder: each tier's pages in BM25 order, re-ranked in fixed blocks by
relevance over the query's groups (a group's spellings counted as one term) and proximity."""

from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from server.search.query import ParsedQuery, QueryGroup
from server.search.store import unpack
from server.search.tiers import TierPlan
from server.search.vocabulary import TermStats

POSITIONS_KEPT = 64  # per group and page, for the proximity measures
RERANK_BLOCK = 100  # BM25 order is re-ranked by proximity in fixed blocks, so paging is stable ...
RERANK_FIRST = 200  # ... the first one larger, for queries of several terms (the block a page must reach)
BM25_K1, BM25_B = 1.2, 0.5  # b below the usual 0.75: a page is a fixed unit, and long ones are not padded
PROXIMITY_WEIGHT = 0.5  # weight of "all terms inside a short window"
ORDER_WEIGHT = 0.5  # weight of "consecutive terms adjacent, in the typed order"
SEQUENCE_WEIGHT = 3.0  # weight of "the typed words, stopwords too, run on the page as typed" (squared share)


def rank_query(
    conn: sqlite3.Connection,
    parsed: ParsedQuery,
    stats: TermStats,
    where: str,
    params: list[Any],
    offset: int,
    limit: int,
    fill: int | None = None,
) -> tuple[int, list[tuple[float, int]]]:
    """Walk the query's tier ladder (see :mod:`server.search`) until ``offset + limit`` pages are ranked,
    or, with ``fill``, until a lower tier would start after ``fill`` pages are ranked.

    Returns the number of pages the whole ladder matches (the same at any offset, so paging ends)
    and (score, rowid) of the hits ranked offset..offset+limit (fewer where ``fill`` stopped it).
    """
    needed = offset + limit
    tier_ranked = 4  # the (whole) tier of the last step ranked
    ranked: list[tuple[float, int]] = []  # (score, rowid) for the hits of this page of results
    seen = 0  # pages of the steps walked so far (steps exclude earlier ones' pages, so they add up)
    counted = True  # every step was ranked to its end: ``seen`` is the total
    earlier: list[str] = []
    tiers: list[str] = []
    # Every step is taken, for the total, but a step is only ranked while hits are still needed; ranking
    # happens as each step is yielded, before the next tier widens the groups' spellings.
    for step in TierPlan(parsed, stats).steps(lambda: True):
        if step.tier_match not in tiers:
            tiers.append(step.tier_match)
        if seen >= needed or (fill is not None and seen >= fill and int(step.band) < tier_ranked):
            counted = False
            continue
        tier_ranked = int(step.band)
        match = step.match if not earlier else f"({step.match}) NOT ({' OR '.join(f'({m})' for m in earlier)})"
        found = _rank_tier(conn, match, where, params, parsed, stats, step.band, max(0, offset - seen), needed - seen)
        ranked.extend(found.hits)
        seen = needed if found.size is None else seen + found.size
        counted = counted and found.size is not None
        earlier.append(step.match)
    if not tiers:
        return 0, []
    if counted:
        return seen, ranked[:limit]
    union = tiers[0] if len(tiers) == 1 else " OR ".join(f"({m})" for m in tiers)
    return _count_matches(conn, union, where, params), ranked[:limit]


def _rank_tier(
    conn: sqlite3.Connection,
    match: str,
    where: str,
    params: list[Any],
    parsed: ParsedQuery,
    stats: TermStats,
    band: float,
    start: int,
    stop: int,
) -> _TierRows:
    """The tier's size (None when it runs on past ``stop``: not counted) and its hits ranked start..stop
    (BM25 re-ranked by proximity in fixed blocks)."""
    hits: list[tuple[float, int]] = []
    size: int | None = None
    first = RERANK_FIRST if len(parsed.groups) > 1 else RERANK_BLOCK
    if stop > start:
        for block in range(_block_of(start, first), _block_of(stop - 1, first) + 1):
            lo, hi = _block_bounds(block, first)
            rows = conn.execute(
                f"SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ?{where} ORDER BY rank LIMIT ? OFFSET ?",
                [match, *params, hi - lo, lo],
            ).fetchall()
            if len(rows) < hi - lo:  # the tier ends in this block (or, when it is empty, before it)
                size = lo + len(rows) if rows or lo == 0 else _count_matches(conn, match, where, params)
            reranked = _rerank(conn, rows, parsed, band, stats)
            hits.extend(reranked[max(start - lo, 0) : max(0, min(stop - lo, len(reranked)))])
            if size is not None:
                break
    else:  # nothing wanted from it: only its size
        size = _count_matches(conn, match, where, params)
    return _TierRows(size, hits)


def _count_matches(conn: sqlite3.Connection, match: str, where: str, params: list[Any]) -> int:
    return int(conn.execute(f"SELECT count(*) FROM fts WHERE fts MATCH ?{where}", [match, *params]).fetchone()[0])


def _rerank(
    conn: sqlite3.Connection, rows: list[tuple[int, float]], parsed: ParsedQuery, band: float, stats: TermStats
) -> list[tuple[float, int]]:
    """Order one block: FTS5's BM25 for one exact term or phrase; else BM25 over the query's groups
    (a group's spellings count as one term, so a rare misspelling weighs no more than the word)
    times the proximity factor."""
    if not rows:
        return []
    if len(parsed.groups) == 1 and band >= 3:
        scored = [(-bm25, rowid) for rowid, bm25 in rows]
    else:
        marks = ",".join("?" * len(rows))
        pages = {
            rowid: unpack(norm)
            for rowid, norm in conn.execute(f"SELECT id, norm FROM pages WHERE id IN ({marks})", [r for r, _ in rows])
        }
        average = sum(text.count(" ") + 1 for text in pages.values()) / max(1, len(pages))
        weights = group_idf(parsed.groups, stats)
        options = sequence_options(parsed)
        matcher = PageMatcher(parsed.groups)
        scored = [
            (page_relevance(pages.get(rowid, ""), matcher, options, weights, average), rowid) for rowid, _ in rows
        ]
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [(band + 0.5 * relevance / (1.0 + relevance), rowid) for relevance, rowid in scored]


def _block_of(position: int, first: int) -> int:
    return 0 if position < first else 1 + (position - first) // RERANK_BLOCK


def _block_bounds(block: int, first: int) -> tuple[int, int]:
    if block == 0:
        return 0, first
    lo = first + (block - 1) * RERANK_BLOCK
    return lo, lo + RERANK_BLOCK


@dataclass
class _TierRows:
    size: int | None  # None: more pages than were wanted
    hits: list[tuple[float, int]]


class PageMatcher:
    """Where a query's groups stand in a page's normalised text: one regex pass, no Python loop per token."""

    def __init__(self, groups: list[QueryGroup]) -> None:
        self.groups = groups
        wanted = sorted({t for g in groups for v in g.variants for t in v}, key=len, reverse=True)
        self.pattern = re.compile(r"(?<![^ ])(?:" + "|".join(map(re.escape, wanted)) + r")(?![^ ])") if wanted else None

    def positions(self, norm: str, tokens: list[str]) -> list[list[int]]:
        """Token positions of each group (a phrase group: where a spelling of it starts), at most POSITIONS_KEPT."""
        where: dict[str, list[int]] = {}
        if self.pattern is not None:
            index = at = 0
            for match in self.pattern.finditer(norm):
                index += norm.count(" ", at, match.start())
                at = match.start()
                where.setdefault(match.group(), []).append(index)
        found_all = []
        for group in self.groups:
            found: set[int] = set()
            for variant in group.variants:
                for start in where.get(variant[0], ()):
                    if len(variant) == 1 or tokens[start : start + len(variant)] == list(variant):
                        found.add(start)
            found_all.append(sorted(found)[:POSITIONS_KEPT])
        return found_all


def sequence_options(parsed: ParsedQuery) -> list[set[str]]:
    """For each typed term, the spellings a page may have there (its group's variants, or itself)."""
    options = [{term} for term in parsed.sequence]
    for group in parsed.groups:
        for k, term in enumerate(group.terms):
            if group.position + k < len(options):
                options[group.position + k] = {variant[k] for variant in group.variants} | {term}
    return options


def group_idf(groups: list[QueryGroup], stats: TermStats) -> list[float]:
    """BM25 idf of each group, counting all its spellings as one term."""
    pages = max(stats.pages, 1)
    weights = []
    for group in groups:
        if len(group.terms) == 1:
            found = min(pages, sum(stats.doc_freq(v[0]) for v in group.variants))
        else:
            found = max((min(stats.doc_freq(t) for t in v) for v in group.variants), default=0)
        weights.append(math.log(1 + (pages - found + 0.5) / (found + 0.5)))
    return weights


def page_relevance(
    norm: str, matcher: PageMatcher, sequence: list[set[str]], weights: list[float], average_length: float
) -> float:
    """BM25 over the query's groups, times :func:`proximity_factor`."""
    tokens = norm.split(" ") if norm else []
    groups = matcher.groups
    positions = matcher.positions(norm, tokens)
    length_norm = BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / max(average_length, 1.0))
    score = sum(w * len(p) * (BM25_K1 + 1) / (len(p) + length_norm) for w, p in zip(weights, positions) if p)
    return score * proximity_factor(tokens, groups, sequence, positions)


def proximity_factor(
    tokens: list[str], groups: list[QueryGroup], sequence: list[set[str]], positions: list[list[int]]
) -> float:
    """1 and up: more when the terms sit close, in the typed order, and (stopwords too) run as typed."""
    present = [i for i, p in enumerate(positions) if p]
    if len(present) < 2:
        return 1.0
    span_wanted = groups[-1].position + len(groups[-1].terms) - groups[0].position
    window = _smallest_window([(p, i) for i in present for p in positions[i]], len(present))
    closeness = min(1.0, span_wanted / window) * len(present) / len(groups)
    in_order = 0
    for i in range(len(groups) - 1):
        gap = groups[i + 1].position - groups[i].position
        after = set(positions[i + 1])
        if any(p + gap in after or p + gap + 1 in after for p in positions[i]):
            in_order += 1
    factor = 1.0 + PROXIMITY_WEIGHT * closeness + ORDER_WEIGHT * in_order / (len(groups) - 1)
    if sequence and len(sequence) > len(groups):
        anchors = [(p, groups[i].position) for i in present for p in positions[i][:20]]
        factor += SEQUENCE_WEIGHT * (_longest_typed_run(tokens, sequence, anchors) / len(sequence)) ** 2
    return factor


def _longest_typed_run(tokens: list[str], sequence: list[set[str]], anchors: list[tuple[int, int]]) -> int:
    """The longest stretch of the page that reads as a stretch of the typed query, grown from matched terms."""
    best = 0
    for page_at, query_at in anchors:
        left = 0
        while (
            page_at - left > 0 and query_at - left > 0 and tokens[page_at - left - 1] in sequence[query_at - left - 1]
        ):
            left += 1
        right = 0
        while (
            page_at + right + 1 < len(tokens)
            and query_at + right + 1 < len(sequence)
            and tokens[page_at + right + 1] in sequence[query_at + right + 1]
        ):
            right += 1
        best = max(best, left + right + 1)
    return best


def _smallest_window(marks: list[tuple[int, int]], kinds: int) -> int:
    """Length of the shortest run of positions holding every kind at least once."""
    marks.sort()
    counts: dict[int, int] = {}
    best = marks[-1][0] - marks[0][0] + 1
    left = 0
    for pos, kind in marks:
        counts[kind] = counts.get(kind, 0) + 1
        while len(counts) == kinds:
            best = min(best, pos - marks[left][0] + 1)
            left_kind = marks[left][1]
            counts[left_kind] -= 1
            if counts[left_kind] == 0:
                del counts[left_kind]
            left += 1
    return best
