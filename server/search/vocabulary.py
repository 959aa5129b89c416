"""Page counts of indexed terms, and their near spellings (for the corrected and fuzzy tiers)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA

from server.search.query import STOPWORDS

MAX_EXPANSIONS = 8  # near spellings kept per query term


def max_edits(term: str) -> int:
    """Edit distance allowed when matching a term to near spellings (none for numbers and short terms)."""
    if len(term) < 4 or term.isdigit() or term in STOPWORDS:
        return 0
    return 1 if len(term) < 8 else 2


def _char_bit(char: str) -> int:
    if "a" <= char <= "z":
        return 1 << (ord(char) - 97)
    if "0" <= char <= "9":
        return 1 << 26
    return 1 << (27 + ord(char) % 5)


def _char_mask(term: str) -> int:
    mask = 0
    for char in set(term):
        mask |= _char_bit(char)
    return mask


class Vocabulary:
    """Every indexed term with its page count, kept in memory per process and index file.

    Near spellings are found with rapidfuzz (OSA edit distance) among terms of a close length
    whose letter sets differ little: d edits change at most 2d bits of a term's letter mask,
    a filter numpy applies to a whole length bucket at once.
    """

    def __init__(self, epoch: str, generation: int, doc_freq: dict[str, int], pages: int) -> None:
        self.epoch = epoch
        self.generation = generation
        self.doc_freq = doc_freq
        self.pages = pages
        self._buckets: dict[int, tuple[list[str], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._add_terms(list(doc_freq))

    def __len__(self) -> int:
        return sum(len(names) for names, _ in self._buckets.values())

    def add_pages(self, page_terms: Iterable[Iterable[str]], generation: int, pages: int) -> None:
        with self._lock:
            if generation <= self.generation:  # another thread brought it up to date meanwhile
                return
            self.pages = pages
            new: list[str] = []
            for found in page_terms:
                for term in set(found):
                    count = self.doc_freq.get(term, 0)
                    if count == 0:
                        new.append(term)
                    self.doc_freq[term] = count + 1
            self._add_terms(new)
            self.generation = max(self.generation, generation)

    def _add_terms(self, new: list[str]) -> None:
        by_length: dict[int, list[str]] = {}
        for term in new:
            by_length.setdefault(len(term), []).append(term)
        buckets = dict(self._buckets)  # copy on write: a concurrent reader keeps the buckets it took
        for length, names in by_length.items():
            masks = np.fromiter((_char_mask(t) for t in names), dtype=np.uint32, count=len(names))
            old_names, old_masks = buckets.get(length, ([], np.zeros(0, dtype=np.uint32)))
            buckets[length] = (old_names + names, np.concatenate([old_masks, masks]))
        self._buckets = buckets

    def near(
        self, term: str, keep: Callable[[str], bool] | None = None, limit: int | None = MAX_EXPANSIONS
    ) -> list[str]:
        """Indexed terms within :func:`max_edits` of ``term`` that ``keep`` accepts, closest and most common first."""
        edits = max_edits(term)
        if edits == 0:
            return []
        mask, buckets = _char_mask(term), self._buckets
        candidates: list[str] = []
        for length in range(len(term) - edits, len(term) + edits + 1):
            names, masks = buckets.get(length, ([], None))
            if names:
                count = min(len(names), len(masks))
                candidates.extend(names[i] for i in np.flatnonzero(_popcount(masks[:count] ^ mask) <= 2 * edits))
        found = process.extract(term, candidates, scorer=OSA.distance, score_cutoff=edits, limit=None)
        ranked = sorted((dist, -self.doc_freq.get(name, 0), name) for name, dist, _ in found if name != term)
        return [name for _, count, name in ranked if count < 0 and (keep is None or keep(name))][:limit]


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(values)
    return _BYTE_BITS[values.view(np.uint8)].reshape(-1, 4).sum(axis=1)


class TermStats:
    """Page counts of terms for one search: from the vocabulary when this process holds it, else
    looked up term by term, so that a query the exact tier answers never waits for the whole of it."""

    def __init__(
        self, conn: sqlite3.Connection, vocabulary: Callable[[bool], Vocabulary | None], page_count: Callable[[], int]
    ) -> None:
        """``vocabulary(load)``: the index's vocabulary, None unless held or ``load``; ``page_count()``: its pages."""
        self._conn = conn
        self._vocabulary = vocabulary
        self._vocab = vocabulary(False)
        self._counts: dict[str, int] = {}
        self.pages = self._vocab.pages if self._vocab else page_count()

    def doc_freq(self, term: str) -> int:
        if self._vocab is not None:
            return self._vocab.doc_freq.get(term, 0)
        if term not in self._counts:
            row = self._conn.execute("SELECT doc FROM temp.vocab WHERE term = ?", (term,)).fetchone()
            self._counts[term] = int(row[0]) if row else 0
        return self._counts[term]

    def __contains__(self, term: str) -> bool:
        return self.doc_freq(term) > 0

    def near(
        self, term: str, keep: Callable[[str], bool] | None = None, limit: int | None = MAX_EXPANSIONS
    ) -> list[str]:
        if self._vocab is None:
            self._vocab = self._vocabulary(True)
        assert self._vocab is not None
        return self._vocab.near(term, keep, limit)
