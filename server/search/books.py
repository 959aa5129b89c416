"""What the index keeps about each book between processes: its printed page labels and its contents.

A search names its hits' printed labels and sections, and promotes pages whose contents heading names
the query (:mod:`server.sections`); reading that from the books themselves means parsing each hit's
manifest and, for a book without a PDF outline, every page of it: seconds for a fresh ``bookocr search``
whose 50 ranked hits lie in 50 books. So the labels and contents are stored in the index, beside the
manifest version (see :func:`~server.search.store.manifest_stamp`) they were read from, and read
again only when the manifest has changed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocr_backend.errors import BookOcrError
from server.search.store import manifest_stamp, pack, unpack

if TYPE_CHECKING:
    from server.contents import Contents
    from server.corpus import Book, Corpus
    from server.sections import SectionCache, SectionIndex


@dataclass(frozen=True)
class BookFacts:
    stamp: str
    labels: tuple[str | None, ...]  # per page, from 1
    contents: Contents

    def label(self, page: int) -> str | None:
        return self.labels[page - 1] if 1 <= page <= len(self.labels) else None


def read_facts(book: Book, stamp: str) -> BookFacts:
    """The book's labels and contents (reads every page of a book without an outline)."""
    from server.contents import book_contents

    return BookFacts(stamp, tuple(book.labels()), book_contents(book))


def store_facts(conn: sqlite3.Connection, num: int, facts: BookFacts) -> None:
    contents = facts.contents
    data = {
        "labels": facts.labels,
        "source": contents.source,
        "pages": contents.pages,
        "entries": [[e.level, e.title, e.page, e.printed, e.key] for e in contents.entries],
    }
    conn.execute(
        "INSERT OR REPLACE INTO book_facts(num, stamp, facts) VALUES(?, ?, ?)",
        (num, facts.stamp, pack(json.dumps(data, ensure_ascii=False))),
    )


def _parse_facts(book_id: str, stamp: str, blob: bytes) -> BookFacts:
    from server.contents import Contents, ContentsEntry

    data = json.loads(unpack(blob))
    entries = [ContentsEntry(level, title, page, printed, key) for level, title, page, printed, key in data["entries"]]
    return BookFacts(stamp, tuple(data["labels"]), Contents(book_id, data["source"], data["pages"], entries))


def facts_of(
    conn: sqlite3.Connection, corpus: Corpus, books: Iterable[str], held: dict[str, BookFacts]
) -> tuple[dict[str, BookFacts], list[tuple[int, BookFacts]]]:
    """Facts of the books that can be read now (a book gone or damaged is left out): from ``held`` (this
    process's, brought up to date here), else the index, else the book itself; and those read from their
    books, with the book's number, for the caller to store."""
    stamps = {b: manifest_stamp(corpus.root, b) for b in dict.fromkeys(books)}
    found = {b: f for b, f in ((b, held.get(b)) for b in stamps) if f is not None and f.stamp == stamps[b]}
    wanted = [b for b, stamp in stamps.items() if stamp is not None and b not in found]
    fresh: list[tuple[int, BookFacts]] = []
    if not wanted:
        return found, fresh
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(
        f"SELECT b.book, b.num, f.stamp, f.facts FROM books b LEFT JOIN book_facts f ON f.num = b.num "
        f"WHERE b.book IN ({marks})",
        wanted,
    ).fetchall()
    numbers = {book: num for book, num, _, _ in rows}
    stored = {book: (stamp, blob) for book, _, stamp, blob in rows if stamp is not None}
    for book_id in wanted:
        stamp = stamps[book_id]
        assert stamp is not None
        if book_id in stored and stored[book_id][0] == stamp:
            found[book_id] = _parse_facts(book_id, stamp, stored[book_id][1])
            continue
        try:
            found[book_id] = read_facts(corpus.book(book_id), stamp)
        except BookOcrError:
            continue
        if book_id in numbers:
            fresh.append((numbers[book_id], found[book_id]))
    held.update(found)
    return found, fresh


def book_sections(corpus: Corpus, book_id: str, cache: SectionCache) -> SectionIndex | None:
    """The book's sections from its stored facts (held in ``cache`` per manifest version); None when the
    book cannot be read now."""
    from server.search.index import SearchIndex

    facts = SearchIndex(corpus).book_facts([book_id]).get(book_id)
    if facts is None:
        return None
    return cache.get(corpus.root / book_id / "manifest.json", lambda: facts.contents)
