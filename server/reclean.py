"""Re-run DeepSeek output cleaning over a stored book, from the raw pages, without a GPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocr_backend.deepseek.clean import clean
from ocr_backend.deepseek.constants import ENGINES as DEEPSEEK_ENGINES
from ocr_backend.errors import BookOcrError
from ocr_backend.render import DEFAULT_LONG_SIDE, RenderSettings
from ocr_backend.sources import Source, open_source
from server.corpus import Book, Corpus


@dataclass
class RecleanReport:
    book: str
    pages: int = 0  # DeepSeek pages cleaned again
    changed: int = 0
    figures: int = 0  # figure crops written
    missing_raw: list[int] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)  # pages whose raw output now looks like a loop

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def reclean_book(corpus: Corpus, book_id: str, figures: bool = False, wait: bool = False) -> RecleanReport:
    """Clean every DeepSeek page of a book again from its ``.raw.mmd``.

    Only pages DeepSeek produced (status ok) are touched: a fallback page's raw file
    holds the failed DeepSeek attempt, not the page's text. With ``figures`` the
    source is rendered again to crop the figures, which needs the source file.
    """
    with corpus.lock(book_id, wait=wait):
        book = corpus.book_for_writing(book_id)
        report = RecleanReport(book=book_id)
        source = _open_source(book) if figures else None
        try:
            for number in range(1, book.page_count + 1):
                _reclean_page(book, number, source, report)
        finally:
            if source is not None:
                source.close()
        if report.pages:
            book.flush()
            book.write_document()
        return report


def _reclean_page(book: Book, number: int, source: Source | None, report: RecleanReport) -> None:
    record = book.pages[number - 1]
    if record is None or record.status != "ok" or record.engine not in DEEPSEEK_ENGINES:
        return
    raw_path = book.raw_path(number)
    if not raw_path.exists():
        report.missing_raw.append(number)
        return
    raw = raw_path.read_text(encoding="utf-8")
    image = None
    if source is not None:
        render = record.render
        long_side = max(int(render.get("width", 0)), int(render.get("height", 0))) or DEFAULT_LONG_SIDE
        image, _ = source.render(number, RenderSettings(long_side=long_side))
    page = clean(raw, image, book.page_path(number).parent if image is not None else None, f"page_{number:04d}")
    kept = [f for f in record.flags if f not in ("empty", "repetition")]
    extra = {"figures": len(page.figures), "malformed_boxes": page.malformed_boxes}
    report.changed += book.replace_text(number, page.markdown, kept + page.flags, extra)
    report.pages += 1
    report.figures += sum(1 for f in page.figures if f.file)
    if page.repetition:
        report.flagged.append(number)


def _open_source(book: Book) -> Source:
    """The book's source file, checked to be the same file the pages came from."""
    source = open_source(book.source_path)
    if source.info.sha256 != book.source_sha256:
        source.close()
        raise BookOcrError(
            f"{book.source_path} is no longer the file book {book.id!r} was made from; figures cannot be "
            "cropped from it"
        )
    return source


__all__ = ["RecleanReport", "reclean_book"]
