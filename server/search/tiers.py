"""The ladder of match tiers for a query: FTS5 expressions, strictest first (see :mod:`server.search`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from server.search.query import ParsedQuery, QueryGroup
from server.search.vocabulary import MAX_EXPANSIONS, TermStats

MAX_PHRASE_VARIANTS = 16
OCR_VARIANT_RARITY = 2  # an indexed term also matches near spellings on at most 1/2 as many pages ...
TYPO_RARITY = 10  # ... or on at least 10 times as many
MISREADING_SHARE = 100  # a mistyped term's near spellings on under 1/100 as many pages as the best are dropped
PHRASE_LIKE_TERMS = 4  # a query of this many terms (stopwords too) is a typed phrase or formula ...
NEAR_SLACK = 4  # ... whose terms "stand together" within its length plus this many tokens
COMMON_SHARE = 0.2  # a single term on more than this share of pages is not required by the match ...
COMMON_MIN_PAGES = 2000  # ... in libraries this large (smaller ones are cheap to match exactly)


@dataclass
class Step:
    band: float  # the score floor of its hits: the tier, + 0.5 where the terms stand together
    match: str  # its FTS5 expression (earlier steps' pages are excluded when it runs)
    tier_match: str  # the whole tier's expression (for the total when the ladder stops inside a tier)


class TierPlan:
    """The query's match tiers, strictest first, each a superset of the one before."""

    def __init__(self, parsed: ParsedQuery, stats: TermStats) -> None:
        self.groups = groups = parsed.groups
        self.quoted_only = parsed.quoted_only
        self.stats = stats
        self._near: dict[str, list[str]] = {}
        self.phrase_like = len(parsed.sequence) >= PHRASE_LIKE_TERMS and not parsed.quoted_only
        for group in groups:
            group.pages = stats.doc_freq(group.terms[0]) if len(group.terms) == 1 else 0
            group.common = stats.pages >= COMMON_MIN_PAGES and group.pages > COMMON_SHARE * stats.pages
        self.sequence_length = len(parsed.sequence)

    def steps(self, wanted: Callable[[], bool]) -> Iterator[Step]:
        """The ladder of match steps, strictest first; ``wanted()`` says whether more hits are still needed.

        A typed phrase or formula splits each tier in two: first the pages where its terms stand
        together (FTS5 NEAR), then the rest, so that proximity decides which pages are ranked at all.
        """
        for tier, expression in self._tiers(wanted):
            near = self._near_expression(tier) if self.phrase_like and tier != 1 else ""
            if near:
                # NEAR over each group's first spelling implies the tier's expression: where that is the
                # only spelling, the NEAR alone matches the same pages in the same BM25 order, and FTS5
                # reads each common term's doclist once instead of twice.
                only = all(len(g.variants) == 1 for g in _matched(self.groups))
                yield Step(tier + 0.5, near if only else f"({expression}) AND ({near})", expression)
                if not wanted():
                    return
            yield Step(float(tier), expression, expression)

    def _tiers(self, wanted: Callable[[], bool]) -> Iterator[tuple[int, str]]:
        groups, stats = self.groups, self.stats
        unknown = {t for g in groups for t in g.terms if t not in stats}
        previous = ""
        if not unknown:
            previous = _and(groups)
            yield 3, previous
        if unknown and wanted():
            self._expand(lambda t: t in unknown)
            expression = _and(groups)
            if expression and expression != previous:
                previous = expression
                yield 2, expression
        if wanted() and not self.quoted_only:  # quotes ask for the words as typed: no OCR variants of them
            self._expand(lambda t: True)
            expression = _and(groups)
            if expression and expression != previous:
                previous = expression
                yield 1, expression
        if wanted():
            expression = _all_but_one(groups)
            if expression and expression != previous:
                yield 0, expression

    def _near_expression(self, tier: int) -> str:
        """NEAR over each group's first spelling (all groups, or each all-but-one set for the partial tier)."""
        required = _matched(self.groups)
        sets = [required] if tier > 0 else _all_but(required)
        options = []
        for chosen in sets:
            if len(chosen) >= 2 and all(g.variants for g in chosen):
                phrases = " ".join(f'"{" ".join(g.variants[0])}"' for g in chosen)
                options.append(f"NEAR({phrases}, {self.sequence_length - len(chosen) + NEAR_SLACK})")
        return " OR ".join(options)

    def _expand(self, expand: Callable[[str], bool]) -> None:
        for group in self.groups:
            options = [self._spellings(term, expand(term)) for term in group.terms]
            while _product_size(options) > MAX_PHRASE_VARIANTS:
                max(options, key=len).pop()
            group.variants = list(itertools.product(*options))

    def _spellings(self, term: str, expand: bool) -> list[str]:
        """The term itself when indexed, then (when expanding) its near spellings, best first.

        An indexed term is only widened to spellings far rarer or far more common than itself: one of
        the two then looks like a misreading of the other, while two spellings about as common are two
        words (word4 and word5).
        """
        if term not in self.stats:
            if expand and term not in self._near:
                self._near[term] = self._likely_meant(term)
            return self._near.get(term, []) if expand else []
        if not expand:
            return [term]
        if term not in self._near:
            self._near[term] = self.stats.near(term, keep=self._unlike_in_frequency(term))
        return [term] + self._near[term]

    def _likely_meant(self, term: str) -> list[str]:
        """Near spellings of a term the index lacks, without the misreadings of them: a typed word's
        neighbours include many one-page OCR errors, which would outrank the word itself."""
        found = self.stats.near(term, limit=None)
        top = max((self.stats.doc_freq(name) for name in found), default=0)
        return [name for name in found if self.stats.doc_freq(name) * MISREADING_SHARE >= top][:MAX_EXPANSIONS]

    def _unlike_in_frequency(self, term: str) -> Callable[[str], bool]:
        """Accept a near spelling of an indexed term when one of the two is far rarer than the other."""
        doc_freq = self.stats.doc_freq
        own = doc_freq(term)
        return lambda other: doc_freq(other) * OCR_VARIANT_RARITY <= own or own * TYPO_RARITY <= doc_freq(other)


def _product_size(options: list[list[str]]) -> int:
    size = 1
    for option in options:
        size *= len(option)
    return size


def _matched(groups: list[QueryGroup]) -> list[QueryGroup]:
    """The groups the FTS5 expression requires: common single terms are left to the re-rank, as long
    as two distinct terms (or all there are) remain; then the rarest common ones are kept, each term
    once: ``t`` twice in ``X^T X ... X^T y`` would require no more than ``t`` alone, and match (and
    have FTS5 rank) every page holding a ``t``. A rare term typed twice stays twice: NEAR then wants
    both copies close ("larger and larger")."""
    rare = [g for g in groups if not g.common]
    wanted = min(2, len({g.terms for g in groups}))
    terms = {g.terms for g in rare}
    if len(terms) >= wanted:
        return rare
    kept = {id(g) for g in rare}
    for group in sorted((g for g in groups if g.common), key=lambda g: g.pages):
        if len(terms) >= wanted:
            break
        if group.terms not in terms:
            terms.add(group.terms)
            kept.add(id(group))
    return [g for g in groups if id(g) in kept]


def _all_but(required: list[QueryGroup]) -> list[list[QueryGroup]]:
    """``required`` less one term each time, every copy of it: an unknown word typed twice is left out whole."""
    return [[g for g in required if g.terms != skip] for skip in dict.fromkeys(g.terms for g in required)]


def _and(groups: list[QueryGroup]) -> str:
    required = _matched(groups)
    if any(not g.variants for g in required):
        return ""
    return " AND ".join(f"({g.expression()})" for g in required)


def _all_but_one(groups: list[QueryGroup]) -> str:
    required = _matched(groups)
    options = [f"({expression})" for expression in map(_and, _all_but(required)) if expression]
    return " OR ".join(options) if len({g.terms for g in required}) >= 2 else ""
