"""A book's table of contents: the PDF's own outline when it has one, else the headings OCR found.

Headings are read from the stored page bodies: markdown headings, chapter lines
("CHAPTER II", "Chapter 2 Mathematical Induction"), numbered sections ("2.7 Chapter
Exercises") and the usual back-matter titles ("INDEX"). A running head that leaked into a
body repeats a heading on later pages, so each chapter or section number is kept once, at
its first page, and numbered sections must rise through the book.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from server.labels import body_lines, line_candidates, parse_roman

if TYPE_CHECKING:
    from server.corpus import Book

SOURCE_OUTLINE = "outline"  # the PDF's bookmarks
SOURCE_HEADINGS = "headings"  # found in the OCR'd text

SHORT_HEADING = 100  # a paragraph longer than this is body text that may start with a heading
MAX_TITLE_WORDS = 12

_MD_HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*$")
_CHAPTER_RE = re.compile(
    r"^(?P<kind>chapter|part|book|lecture|appendix)\s+(?P<num>\d{1,3}|[ivxlc]{1,7}|[a-z]|one|two|three|four|five|six|seven|eight|nine|ten)\b[.:]?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
# OCR drops the space after a capitalised keyword: "CHAPTERII"
_CHAPTER_GLUED_RE = re.compile(
    r"^(?P<kind>CHAPTER|PART|BOOK|LECTURE|APPENDIX)(?P<num>\d{1,3}|[IVXLC]{1,7})\b[.:]?\s*(?P<rest>.*)$"
)
# "2.7 Title", "2.7. Title", "2.7Title" (OCR drops the space), "2.7.1 Title"
_SECTION_RE = re.compile(r"^(?P<num>\d{1,2}(?:\.\d{1,2}){1,3})\.?\s*(?P<rest>[A-Z(“\"'].*)$")
_INNER_SECTION_RE = re.compile(r"(?<=\s)\d{1,2}(?:\.\d{1,2}){1,3}\.?\s*(?=[A-Z])")
GENERIC_KEY = "heading:"  # key prefix of a heading with no number or known name
_BACK_MATTER = {
    "contents",
    "preface",
    "foreword",
    "introduction",
    "prologue",
    "epilogue",
    "acknowledgements",
    "acknowledgments",
    "notes",
    "bibliography",
    "references",
    "index",
    "glossary",
    "appendix",
    "afterword",
}
_WORD_NUMBERS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_SMALL_WORDS = {
    "a",
    "an",
    "and",
    "as",
    "at",
    "by",
    "for",
    "from",
    "in",
    "into",
    "of",
    "on",
    "or",
    "the",
    "to",
    "with",
    "&",
    "vs",
    "via",
}


@dataclass(frozen=True)
class ContentsEntry:
    level: int
    title: str
    page: int  # the PDF page, 1-based
    printed: str | None = None  # the page's printed label
    key: str = ""  # "chapter 2", "2.7", "index": what identifies the entry across pages

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("key")
        return data


# --- headings in one page ---------------------------------------------------------------
def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("**", "").replace("__", "")
    return " ".join(text.strip().strip("*_").split())


def _short_title(words: list[str]) -> str:
    """The heading's own words at the start of a paragraph the layout merged with body text.

    Takes Title Case words (and small joining words); the last capitalised word is dropped
    when a lower-case word follows, since that is the first word of the body's sentence.
    """
    taken: list[str] = []
    for word in words[:MAX_TITLE_WORDS]:
        if word[:1].isupper() or word[:1].isdigit() or word.lower() in _SMALL_WORDS or word[:1] in "(“\"'&":
            taken.append(word)
            continue
        if taken and len(taken) > 1 and taken[-1][:1].isupper():
            taken.pop()
        break
    while taken and taken[-1].lower() in _SMALL_WORDS:
        taken.pop()
    return " ".join(taken)


def _title_from(rest: str, whole_is_short: bool) -> str:
    rest = rest.strip(" .:—–-")
    return rest if whole_is_short else _short_title(rest.split())


def _title_after(text: str) -> str:
    """A chapter's title from the paragraph after "CHAPTER II": all of it when it is short,
    else its leading capitals ("THE ABSTRACT NATURE OF MATHEMATICS The study of ...")."""
    if match := _MD_HEADING_RE.match(text):
        text = _clean(match.group(2))
    if _looks_like_title(text):
        return text
    caps = []
    for word in text.split()[:MAX_TITLE_WORDS]:
        letters = [ch for ch in word if ch.isalpha()]
        if not letters or not all(ch.isupper() for ch in letters):
            break
        caps.append(word)
    return " ".join(caps) if sum(len(w) for w in caps) >= 4 else ""


def _chapter_number(text: str) -> int | None:
    low = text.lower()
    if low.isdigit():
        return int(low)
    if low in _WORD_NUMBERS:
        return _WORD_NUMBERS[low]
    if len(low) == 1 and low.isalpha() and low not in "ivxlc":
        return ord(low) - ord("a") + 1  # "Appendix B"
    return parse_roman(low)


def page_headings(markdown: str, furniture: Sequence[str] = ()) -> list[tuple[int, str, str]]:
    """Headings of one page as ``(level, title, key)``, in reading order.

    ``furniture`` is searched too, for chapter and back-matter titles only: a chapter
    opening's "CHAPTER II" sits where running heads do and the layout may set it aside.
    Lines carrying a page number are running heads and never count.
    """
    head = [(line, True) for line in (_clean(f) for f in furniture) if line and not line_candidates(line, 1.0)]
    body = [(line, False) for line in (_clean(b) for b in body_lines(markdown)) if line]
    paragraphs = head + body
    found: list[tuple[int, str, str]] = []
    skip_next = False
    for index, (para, in_furniture) in enumerate(paragraphs):
        if skip_next:
            skip_next = False
            continue
        following = paragraphs[index + 1][0] if index + 1 < len(paragraphs) else ""
        headings, used_following = _headings(para, following, in_furniture)
        found += headings
        skip_next = used_following
    return found


def _headings(para: str, following: str, in_furniture: bool) -> tuple[list[tuple[int, str, str]], bool]:
    """Headings a paragraph starts with, and whether the next paragraph was taken as a title."""
    level = 0
    if match := _MD_HEADING_RE.match(para):
        level, para = len(match.group(1)), _clean(match.group(2))
    short = len(para) <= SHORT_HEADING
    if chapter := _chapter(para, following, short or bool(level)):
        return [chapter[0]], chapter[1]
    word = para.lower().strip(" .:")
    if word in _BACK_MATTER and (short or level):
        return [(1, para.strip(" .:"), word)], False
    if in_furniture:
        return [], False
    if sections := _sections(para, short or bool(level)):
        return sections, False
    if level:
        return [(level, para, GENERIC_KEY + para.lower())], False
    return [], False


def _chapter(para: str, following: str, standalone: bool) -> tuple[tuple[int, str, str], bool] | None:
    match = _CHAPTER_RE.match(para) or _CHAPTER_GLUED_RE.match(para)
    if not match or not (standalone or match.group("kind").isupper()):
        return None
    number = _chapter_number(match.group("num"))
    if number is None or match.group("rest")[:1].islower():
        return None  # "Chapter 3 showed that ...": a sentence, not a heading
    label = f"{match.group('kind')} {match.group('num')}"
    title = _title_from(match.group("rest"), len(para) <= SHORT_HEADING)
    used_following = False
    if not title and (title := _title_after(following)):
        used_following = True
    return (1, f"{label}: {title}" if title else label, f"{match.group('kind').lower()} {number}"), used_following


def _sections(para: str, standalone: bool) -> list[tuple[int, str, str]]:
    """Numbered section headings at the start of a paragraph; the layout sometimes runs two
    together ("2.2 Examples and Discussion 2.2.1 Turning Cubes ...") and then the body."""
    match = _SECTION_RE.match(para)
    if not match:
        return []
    number, rest = match.group("num"), match.group("rest")
    title = _title_from(rest, standalone and len(para) <= SHORT_HEADING)
    if not title or not (standalone or _is_title_case(title)):
        return []
    inner = _INNER_SECTION_RE.search(rest)
    if inner and inner.start() < len(title):
        title = _title_from(rest[: inner.start()], True)
        nested = _sections(rest[inner.start() :].strip(), standalone)
        return ([(number.count(".") + 1, f"{number} {title}", number)] if title else []) + nested
    return [(number.count(".") + 1, f"{number} {title}", number)]


def _looks_like_title(text: str) -> bool:
    return 0 < len(text) <= 80 and not text.endswith((".", ",", ";")) and text[:1].isupper()


def _is_title_case(text: str) -> bool:
    words = [w for w in text.split() if w.lower() not in _SMALL_WORDS]
    return bool(words) and all(w[:1].isupper() or not w[:1].isalpha() for w in words)


# --- the whole book ---------------------------------------------------------------------
def contents_from_outline(outline: Sequence[Sequence[Any]], labels: Sequence[str | None]) -> list[ContentsEntry]:
    entries = []
    for level, title, page in outline:
        if isinstance(page, int) and 1 <= page <= len(labels):
            entries.append(ContentsEntry(int(level), str(title).strip(), page, labels[page - 1]))
    return entries


def contents_from_headings(
    pages: Sequence[tuple[str, Sequence[str]]], labels: Sequence[str | None]
) -> list[ContentsEntry]:
    """Contents from each page's ``(body markdown, furniture lines)``: every chapter, numbered
    section and back-matter heading once, at its first page. Unnumbered headings count only
    in a book that has neither chapters nor numbered sections (else they are captions,
    "Proof", "Example" and the like)."""
    entries: list[ContentsEntry] = []
    for number, (markdown, furniture) in enumerate(pages, start=1):
        label = labels[number - 1] if number - 1 < len(labels) else None
        entries += [
            ContentsEntry(level, title, number, label, key) for level, title, key in page_headings(markdown, furniture)
        ]
    structured = any(not e.key.startswith(GENERIC_KEY) and e.key not in _BACK_MATTER for e in entries)
    if structured:
        entries = [e for e in entries if not e.key.startswith(GENERIC_KEY)]
    else:
        entries = [e for e in entries if not e.key.startswith(GENERIC_KEY) or e.level <= 2]
    entries = _first_of_each(entries)
    entries = _rising_sections(entries)
    return _normalise_levels(entries)


def _first_of_each(entries: list[ContentsEntry]) -> list[ContentsEntry]:
    seen: set[str] = set()
    kept = []
    for entry in entries:
        if entry.key not in seen:
            seen.add(entry.key)
            kept.append(entry)
    return kept


def _section_tuple(key: str) -> tuple[int, ...] | None:
    parts = key.split(".")
    return tuple(int(p) for p in parts) if len(parts) > 1 and all(p.isdigit() for p in parts) else None


def _rising_sections(entries: list[ContentsEntry]) -> list[ContentsEntry]:
    """Keep the longest rising sequence of numbered sections: a stray "3.2" in a caption or a
    cross-reference breaks the order and is dropped; chapters and other headings stay."""
    numbered = [(i, t) for i, e in enumerate(entries) if (t := _section_tuple(e.key)) is not None]
    if not numbered:
        return entries
    best_len = [1] * len(numbered)
    back = [-1] * len(numbered)
    for j in range(len(numbered)):
        for i in range(j):
            if numbered[i][1] < numbered[j][1] and best_len[i] + 1 > best_len[j]:
                best_len[j], back[j] = best_len[i] + 1, i
    end = max(range(len(numbered)), key=lambda j: best_len[j])
    keep: set[int] = set()
    while end != -1:
        keep.add(numbered[end][0])
        end = back[end]
    dropped = {i for i, _ in numbered} - keep
    return [e for i, e in enumerate(entries) if i not in dropped]


def _normalise_levels(entries: list[ContentsEntry]) -> list[ContentsEntry]:
    if not entries:
        return entries
    shift = min(e.level for e in entries) - 1
    return [ContentsEntry(e.level - shift, e.title, e.page, e.printed, e.key) for e in entries] if shift else entries


@dataclass
class Contents:
    """A book's table of contents: from the PDF's outline, else from the headings found in the text."""

    book: str
    source: str  # outline | headings
    pages: int
    entries: list[ContentsEntry]

    def as_dict(self) -> dict[str, Any]:
        return {
            "book": self.book,
            "source": self.source,
            "pages": self.pages,
            "entries": [e.as_dict() for e in self.entries],
        }


def book_contents(book: Book) -> Contents:
    """The contents of a stored book."""
    labels = book.labels()
    outline = book.outline
    if outline:
        entries, source = contents_from_outline(outline, labels), SOURCE_OUTLINE
    else:
        pages = [(book.read_page(n).markdown, book.page(n).furniture) for n in range(1, book.page_count + 1)]
        entries, source = contents_from_headings(pages, labels), SOURCE_HEADINGS
    return Contents(book.id, source, book.page_count, entries)
