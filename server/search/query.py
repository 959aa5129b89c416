"""Reading a query: its terms and "quoted phrases", each a group every hit must contain."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.search.normalize import terms

MAX_QUERY_TERMS = 32
MAX_SEQUENCE = 64

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how if in into is it its itself just me more most my no nor not now of off on once only or
    other our ours out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours
    """.split()
)


@dataclass
class QueryGroup:
    """One unit every hit must contain: a term, or a quoted phrase (several terms)."""

    terms: tuple[str, ...]
    position: int  # where its first term stands among the query's terms (stopwords counted)
    variants: list[tuple[str, ...]] = field(default_factory=list)  # accepted spellings, exact first
    common: bool = False  # on so many pages that matching it costs much and tells little (x, 1, i)
    pages: int = 0  # pages holding its term (0 for phrases)

    def expression(self) -> str:
        return " OR ".join(f'"{" ".join(v)}"' for v in self.variants)


@dataclass
class ParsedQuery:
    groups: list[QueryGroup]
    sequence: list[str]  # every term in the typed order, stopwords included (rewarded when a page has them so)
    quoted_only: bool  # only "phrases": the user asked for these words exactly


def read_query(query: str) -> ParsedQuery:
    """Terms and "quoted phrases" of a query; stopwords dropped outside quotes when other terms remain."""
    pieces = query.split('"')
    if len(pieces) % 2 == 0:  # an unclosed quote quotes nothing
        pieces = [" ".join(pieces)]
    groups: list[QueryGroup] = []
    quoted: list[bool] = []
    sequence: list[str] = []
    for index, piece in enumerate(pieces):
        found = terms(piece)
        if index % 2 == 1 and found:
            groups.append(QueryGroup(tuple(found), len(sequence)))
            quoted.append(True)
        else:
            groups.extend(QueryGroup((term,), len(sequence) + i) for i, term in enumerate(found))
            quoted.extend([False] * len(found))
        sequence.extend(found)
    kept = [(g, q) for g, q in zip(groups, quoted) if q or g.terms[0] not in STOPWORDS] or list(zip(groups, quoted))
    kept = kept[:MAX_QUERY_TERMS]
    for group, _ in kept:
        group.variants = [group.terms]
    return ParsedQuery([g for g, _ in kept], sequence[:MAX_SEQUENCE], bool(kept) and all(q for _, q in kept))


def parse_query(query: str) -> list[QueryGroup]:
    return read_query(query).groups
