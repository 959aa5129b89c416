"""Sections and definitions: which section a page falls in, and which search hits define the query.

A page's section is the last contents entry (see :mod:`server.contents`) that starts on or before it:
``§2.3.3 Summary`` (``§2.3 Defining Induction → §2.3.1 The Domino Analogy`` where several start on it).
Among the first :data:`PROMOTE_WITHIN` hits of a search, within one match tier, a page with a heading that
names the query comes first (the heading made mostly of the query first); when definitions are asked for,
so does a page whose heading says it defines the query's head noun ("Defining Induction") or that has a
definition-like sentence about it ("... is called a vector", "we define X", "Definition 2.1"). The order
is otherwise the search's own.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.contents import Contents, ContentsEntry
from server.search import STOPWORDS
from server.search.normalize import terms

PROMOTE_WITHIN = 50  # hits re-ordered; fixed, so every page of results sees the same order
HEADING, DEFINITION = "heading", "definition"
STRONG, WEAK = 2.0, 1.0  # definition_score of a definition sentence, and of a sentence that only mentions one
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n\s*\n")
_STRONG_CUE = re.compile(
    r"\b(?:called|termed|named|known as|defined as|said to be|define|denote[sd]?|refer to)\b(?=(?P<after>.{0,80}))",
    re.IGNORECASE | re.DOTALL,
)
_WEAK_CUE = re.compile(r"\b(?:definition|defined|defines|defining|we call|is the name)\b", re.IGNORECASE)
_FORWARD = re.compile(r"\b(?:to|will|would|can|could)(?:\s+\w+){0,2}\s*$", re.IGNORECASE)  # "will (later) define"
_CLAUSE_END = re.compile(r"[,;:(]")
NUMBER_ONLY_WORDS = 6  # "Definition 2.1 (Group)." is that short
CUE_REACH = 3  # the defined words start within this many content words after the cue ("is called the “sum …”")
_HEADING_CUE = re.compile(r"\bdefin(?:ing|ition|itions|ed|e)\b|\bwhat is\b", re.IGNORECASE)
DEFINING_HEADING = 4.0  # above any heading that only names the query (at most 2) plus a weak sentence (1)
_NUMBERED_DEFINITION = re.compile(r"^\W*definition\s+\d", re.IGNORECASE)


@dataclass(frozen=True)
class SectionIndex:
    """A book's contents, asked which entry a page falls in."""

    entries: tuple[ContentsEntry, ...]

    def section_of(self, page: int) -> str | None:
        """The last entry starting on or before the page; where several start on it, the first → the last."""
        current = None
        for entry in self.entries:  # in page order; the deepest of several on one page comes last
            if entry.page > page:
                break
            current = entry
        if current is None:
            return None
        here = [entry for entry in self.entries if entry.page == page]
        if len(here) > 1:
            return f"{section_name(here[0])} → {section_name(here[-1])}"
        return section_name(current)

    def headings_on(self, page: int) -> list[str]:
        return [entry.title for entry in self.entries if entry.page == page]


def section_name(entry: ContentsEntry) -> str:
    return "§" + entry.title.strip().rstrip(".").strip()


class SectionCache:
    """Each book's :class:`SectionIndex`, rebuilt when its manifest changes (contents read every page)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: dict[Path, tuple[int, SectionIndex]] = {}

    def get(self, manifest: Path, build: Callable[[], Contents]) -> SectionIndex:
        try:
            stamp = manifest.stat().st_mtime_ns
        except OSError:
            stamp = -1
        with self._lock:
            found = self._cached.get(manifest)
        if found and found[0] == stamp:
            return found[1]
        entries = sorted(build().entries, key=lambda e: (e.page, e.level))
        index = SectionIndex(tuple(entries))
        with self._lock:
            self._cached[manifest] = (stamp, index)
        return index


def query_words(query: str) -> list[str]:
    """The query's content words, normalised as the index has them (stopwords dropped unless that is all)."""
    words = terms(query.replace('"', " "))
    content = [w for w in words if w not in STOPWORDS]
    return content or words


def heading_score(headings: list[str], words: list[str]) -> float:
    """0 unless a heading holds every query word; then 1 plus the share of the heading the query is."""
    best = 0.0
    for heading in headings:
        have = [_stem(t) for t in terms(heading) if t not in STOPWORDS and not t.isdigit()]
        if have and all(_stem(w) in have for w in words):
            best = max(best, 1.0 + len(words) / len(have))
    return best


def defining_heading_score(headings: list[str], words: list[str]) -> float:
    """DEFINING_HEADING for a heading that says it defines the query's head noun ("2.3 Defining Induction" for
    "mathematical induction"): the strongest sign of where a term is defined; else 0."""
    head = _stem(words[-1]) if words else ""
    for heading in headings:
        if _HEADING_CUE.search(heading) and head in {_stem(t) for t in terms(heading)}:
            return DEFINING_HEADING
    return 0.0


def definition_score(markdown: str, words: list[str]) -> float:
    """2: a sentence names the query right after a definition cue ("is called", "we define", "Definition
    2.1"); 1: a sentence holds the query and a weaker cue ("definition of"); else 0."""
    best = 0.0
    numbered = False  # "Definition 2.1." split off as a sentence of its own heads the next one
    for sentence in _SENTENCE_END.split(markdown):
        numbered = numbered or bool(_NUMBERED_DEFINITION.match(sentence))
        if not _holds(terms(sentence), words):
            numbered = numbered and len(sentence.split()) <= NUMBER_ONLY_WORDS
            continue
        if numbered or any(_defines(sentence, cue, words) for cue in _STRONG_CUE.finditer(sentence)):
            return STRONG
        numbered = False
        if _WEAK_CUE.search(sentence):
            best = WEAK
    return best


def _defines(sentence: str, cue: re.Match[str], words: list[str]) -> bool:
    """The cue names the words in its own clause, and is not a promise ("we will define ... later")."""
    if _FORWARD.search(sentence[: cue.start()][-40:]):
        return False
    clause = _CLAUSE_END.split(cue.group("after"), maxsplit=1)[0]
    return _holds(terms(clause), words, CUE_REACH)


def page_headings(markdown: str) -> list[str]:
    """The page's own markdown headings (# lines)."""
    return [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]


def _holds(sentence_terms: list[str], words: list[str], within: int | None = None) -> bool:
    """The words stand in the sentence in order, next to each other (stopwords between them allowed),
    starting within the first ``within`` content words when that is given."""
    stems = [_stem(t) for t in sentence_terms if t not in STOPWORDS]
    wanted = [_stem(w) for w in words]
    starts = range(len(stems) - len(wanted) + 1)
    return any(stems[i : i + len(wanted)] == wanted for i in starts if within is None or i < within)


def _stem(word: str) -> str:
    """Singular and plural alike (analogy/analogies, function/functions), nothing more."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word
