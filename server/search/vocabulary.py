"""Page counts of indexed terms, and their near spellings (for the corrected and fuzzy tiers).

Near spellings are read from the index's ``terms`` table with a few range reads, so a search never
loads the whole vocabulary (half a million terms and more in a library of 1,000 books). A term within
``d`` edits of the query term ``q`` (``q`` split into halves ``A + B``) either starts with ``A`` or ends
with ``B`` (the edits all fell in the other half), or, where edits fell in both halves, starts with a
spelling one edit from ``A`` or ends with one one edit from ``B``; a single edit across the middle is a
swap of the two middle letters. Those prefix and suffix ranges, among terms of a near length, give
the candidates; rapidfuzz's OSA distance then keeps exactly the terms within ``d`` edits.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable

from server.search.query import STOPWORDS

MAX_EXPANSIONS = 8  # near spellings kept per query term
LAST_CHAR = "\U0010ffff"  # prefix + this is past every string that starts with prefix


def max_edits(term: str) -> int:
    """Edit distance allowed when matching a term to near spellings (none for numbers and short terms)."""
    if len(term) < 4 or term.isdigit() or term in STOPWORDS:
        return 0
    return 1 if len(term) < 8 else 2


def one_edit(word: str, alphabet: str) -> set[str]:
    """Every spelling one OSA edit from ``word`` (a letter dropped, added, replaced, or two swapped)."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    found = {a + b[1:] for a, b in splits if b}
    found |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    found |= {a + c + b[1:] for a, b in splits if b for c in alphabet}
    found |= {a + c + b for a, b in splits for c in alphabet}
    return found


def affix_ranges(term: str, edits: int, alphabet: str) -> tuple[set[str], set[str]]:
    """Prefixes and (reversed) suffixes: every term within ``edits`` of ``term`` starts or ends with one of them."""
    half = len(term) // 2
    head, tail = term[:half], term[half:]
    prefixes, suffixes = {head}, {tail[::-1]}
    if edits >= 2:
        prefixes |= one_edit(head, alphabet)
        suffixes |= {s[::-1] for s in one_edit(tail, alphabet)}
    else:
        prefixes.add(term[: half - 1] + term[half] + term[half - 1])
    return prefixes, suffixes


def count_terms(conn: sqlite3.Connection, pages: Counter[str], change: int) -> None:
    """Add (``change`` 1) or take away (-1) pages that have these terms (``pages``: term -> pages) in ``terms``,
    and the terms' letters to the index's alphabet."""
    if change < 0:
        conn.executemany(
            "UPDATE terms SET doc = doc - ? WHERE len = ? AND term = ?", ((n, len(t), t) for t, n in pages.items())
        )
        return
    conn.executemany(
        "INSERT INTO terms(len, term, rev, doc) VALUES(?, ?, ?, ?) "
        "ON CONFLICT(len, term) DO UPDATE SET doc = doc + excluded.doc",
        ((len(t), t, t[::-1], n) for t, n in pages.items()),
    )
    letters = set("".join(pages))
    row = conn.execute("SELECT value FROM meta WHERE key = 'alphabet'").fetchone()
    known = set(row[0]) if row else set()
    if not letters <= known:
        conn.execute("INSERT OR REPLACE INTO meta VALUES('alphabet', ?)", ("".join(sorted(known | letters)),))


def near_terms(conn: sqlite3.Connection, term: str, edits: int) -> list[str]:
    """Indexed terms (and some no longer on any page) within ``edits`` OSA edits of ``term``, itself excluded."""
    from rapidfuzz import process
    from rapidfuzz.distance import OSA

    row = conn.execute("SELECT value FROM meta WHERE key = 'alphabet'").fetchone()
    prefixes, suffixes = affix_ranges(term, edits, row[0] if row else "")
    candidates: set[str] = set()
    for length in range(max(1, len(term) - edits), len(term) + edits + 1):
        for column, starts in (("term", prefixes), ("rev", suffixes)):
            if not starts:
                continue
            values = ",".join("(?, ?)" for _ in starts)
            candidates.update(
                name
                for (name,) in conn.execute(
                    f"WITH p(lo, hi) AS (VALUES {values}) SELECT t.term FROM p JOIN terms t "
                    f"ON t.len = ? AND t.{column} >= p.lo AND t.{column} < p.hi",
                    [*(x for s in sorted(starts) for x in (s, s + LAST_CHAR)), length],
                )
            )
    candidates.discard(term)
    found = process.extract(term, list(candidates), scorer=OSA.distance, score_cutoff=edits, limit=None)
    return [name for name, _, _ in found]


class TermStats:
    """Page counts of terms for one search, looked up term by term (and remembered), and their near spellings."""

    def __init__(self, conn: sqlite3.Connection, page_count: Callable[[], int]) -> None:
        """``page_count()``: the pages in the index."""
        self._conn = conn
        self._counts: dict[str, int] = {}
        self.pages = page_count()

    def doc_freq(self, term: str) -> int:
        if term not in self._counts:
            row = self._conn.execute("SELECT doc FROM terms WHERE len = ? AND term = ?", (len(term), term)).fetchone()
            self._counts[term] = int(row[0]) if row else 0
        return self._counts[term]

    def __contains__(self, term: str) -> bool:
        return self.doc_freq(term) > 0

    def near(
        self, term: str, keep: Callable[[str], bool] | None = None, limit: int | None = MAX_EXPANSIONS
    ) -> list[str]:
        """Indexed terms within :func:`max_edits` of ``term`` that ``keep`` accepts, closest and most common first."""
        from rapidfuzz.distance import OSA

        edits = max_edits(term)
        if edits == 0:
            return []
        found = [(OSA.distance(term, name), -self.doc_freq(name), name) for name in near_terms(self._conn, term, edits)]
        return [name for _, count, name in sorted(found) if count < 0 and (keep is None or keep(name))][:limit]
