"""Rebuild a damaged book's manifest from what is left: its page files, its source, and whatever of the
old manifest can still be read. Pages with a page file are kept; the rest become pending, so the next
``bookocr ocr`` resumes the book as if it had been interrupted."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ocr_backend.engines.base import PageResult
from ocr_backend.errors import BookConflictError, BookOcrError
from ocr_backend.sources import OpenCheck, open_source
from server.corpus import MANIFEST_FORMAT, Book, Corpus, PageRecord, check_book_id, slugify

REPAIRED_ENGINE = "unknown (repaired)"
DEEPSEEK_ENGINE = "deepseek"
_FIELD_RE = r'"{}"\s*:\s*"((?:[^"\\]|\\.)*)"'


def repair_target(corpus: Corpus, target: str | Path, book: str | None) -> tuple[str, Path]:
    """The book id and source file of ``bookocr ocr --repair TARGET``: TARGET is the source file, or the
    book id (the source is then found in what is left of its manifest)."""
    given = Path(target).expanduser()
    if given.exists() and (book or not (corpus.root / str(target) / "manifest.json").exists()):
        return check_book_id(book) if book else slugify(given.resolve().name), given
    book_id = check_book_id(book or str(target))
    if not (corpus.root / book_id).is_dir():
        raise BookOcrError(f"no book {book_id!r} in {corpus.root} to repair; give its id or its source file")
    source = old_field(corpus.root / book_id / "manifest.json", "path")
    if source is None or not Path(source).exists():
        raise BookOcrError(
            f"the source of book {book_id!r} cannot be found ({source or 'the manifest does not name it'}); "
            f"give it: `bookocr ocr --repair SOURCE --book {book_id}`"
        )
    return book_id, Path(source)


def old_field(manifest: Path, name: str) -> str | None:
    """A string field of the old manifest, read even from a truncated file (the first one: the source's)."""
    try:
        text = manifest.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(_FIELD_RE.format(name), text)
    return json.loads(f'"{found.group(1)}"') if found else None


def old_pages(manifest: Path, page_count: int) -> list[PageRecord | None]:
    """The page records of the old manifest when it still parses and has them, else none."""
    try:
        pages = json.loads(manifest.read_text(encoding="utf-8")).get("pages")
        records = [PageRecord.from_dict(p) if isinstance(p, dict) else None for p in pages]
    except (OSError, ValueError, AttributeError, TypeError):
        return [None] * page_count
    return records if len(records) == page_count else [None] * page_count


def rebuild_manifest(corpus: Corpus, book_id: str, source_path: Path, check: OpenCheck | None = None) -> Book:
    """Write a new manifest for ``book_id`` from its page files and source; the caller holds the book's lock."""
    manifest = corpus.root / book_id / "manifest.json"
    with open_source(source_path, check) as source:
        info = source.info
    old_sha = old_field(manifest, "sha256")
    if old_sha is not None and old_sha != info.sha256:
        raise BookConflictError(
            f"book {book_id!r} was made from another file than {info.name} (sha256 {old_sha[:12]}, not "
            f"{info.sha256[:12]}); give its own source to --repair, or start afresh with --replace"
        )
    now = time.time()
    fresh = {"format": MANIFEST_FORMAT, "book": book_id, "source": info.as_dict(), "page_count": info.page_count}
    book = Book(corpus, book_id, {**fresh, "engine": None, "created": now, "updated": now, "pages": []})
    book.pages = old_pages(manifest, info.page_count)
    for number in range(1, info.page_count + 1):
        _repair_page(book, number)
    book.changed()
    book.flush()
    return book


def _repair_page(book: Book, number: int) -> None:
    """Trust what the old manifest says of the page, unless its file is not the one written (then it is
    redone); without an old record, a readable page file makes it ok (written again through
    :meth:`Book.record`, so the record matches the file), and no page file leaves it pending."""
    old = book.pages[number - 1]
    if old is not None:
        if old.done and book.page_damage(number):
            book.pages[number - 1] = None
        return
    try:
        text = book.page_path(number).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    # a raw DeepSeek output beside the page says which engine made it (and keeps it re-cleanable)
    engine = DEEPSEEK_ENGINE if book.raw_path(number).exists() else REPAIRED_ENGINE
    reason = "rebuilt by --repair from the page file"
    book.record(PageResult(number, text.rstrip(), "ok", engine, "", reason=reason, extra={"repaired": True}))
