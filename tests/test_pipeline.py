"""The book pipeline end to end: inputs, corpus layout, resume, idempotence, failures."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from ocr_backend.engines import OcrEngine, PageInput, PageResult
from ocr_backend.engines.text_layer import TextLayerEngine
from ocr_backend.errors import BookConflictError, BookLockedError, PageRangeError, UnknownBookError
from server import runner
from server.corpus import Corpus
from server.runner import RunOptions, ocr_book, parse_pages
from tests.conftest import numbered_text_pdf


class CountingEngine(TextLayerEngine):
    """The real text-layer engine, counting the pages it is asked to do."""

    name = ""  # not registered

    def __init__(self, fail_pages: Iterable[int] = ()) -> None:
        self.calls: list[int] = []
        self.fail_pages = set(fail_pages)

    def recognize(self, page: PageInput) -> PageResult:
        self.calls.append(page.number)
        if page.number in self.fail_pages:
            raise RuntimeError("simulated engine crash")
        return super().recognize(page)


class ImageSizeEngine(OcrEngine):
    """Reports the size of the image it got: lets tests check page order without OCR."""

    name = ""

    def version(self) -> str:
        return "test"

    def recognize(self, page: PageInput) -> PageResult:
        assert page.image is not None
        return PageResult(page.number, f"native {page.render['native_size']}", "ok", "size", "test")


def test_text_pdf_lands_in_corpus_layout(corpus: Corpus, text_pdf: Path) -> None:
    state = ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"))
    assert (state.book, state.done, state.failed) == ("born-digital", 5, 0)
    book = corpus.book("born-digital")
    manifest = json.loads((book.dir / "manifest.json").read_text())
    assert manifest["source"]["name"] == "Born Digital.pdf"
    assert len(manifest["source"]["sha256"]) == 64
    assert manifest["page_count"] == 5
    for n, meta in enumerate(manifest["pages"], start=1):
        assert meta["status"] == "ok" and meta["engine"] == "text-layer" and meta["engine_version"]
        assert set(meta["seconds"]) == {"render", "ocr"}
        assert f"page number {n} " in (book.dir / "pages" / f"page_{n:04d}.mmd").read_text()
    document = (book.dir / "document.mmd").read_text()
    markers = [int(m) for m in re.findall(r"<!-- page (\d+)", document)]
    assert markers == [1, 2, 3, 4, 5]
    assert document.index("page number 3 ") > document.index("<!-- page 3")


def test_finished_book_rerun_calls_no_engine(corpus: Corpus, text_pdf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"))
    before = (corpus.root / "born-digital" / "manifest.json").read_bytes()

    def no_engine(*args: object, **kwargs: object) -> OcrEngine:
        raise AssertionError("a finished book must not create an engine")

    monkeypatch.setattr(runner, "create_engine", no_engine)
    engine = CountingEngine()
    state = ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"), engine=engine)
    assert engine.calls == [] and state.done == 0 and state.skipped == 5
    state = ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"))  # and without an injected engine
    assert state.done == 0
    assert (corpus.root / "born-digital" / "manifest.json").read_bytes() == before


def test_failed_page_is_recorded_in_place_and_redone_later(corpus: Corpus, text_pdf: Path) -> None:
    state = ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"), engine=CountingEngine(fail_pages={3}))
    assert state.failed == 1
    book = corpus.book("born-digital")
    assert [m.status for m in book.pages] == ["ok", "ok", "failed", "ok", "ok"]
    assert "simulated engine crash" in book.pages[2].reason
    assert not book.page_path(3).exists()
    document = (book.dir / "document.mmd").read_text()
    assert "<!-- page 3 -->" in document and "page 3 failed" in document
    assert document.index("page number 4 ") > document.index("<!-- page 4")  # nothing shifted
    assert book.state() == "complete-with-failures"

    retry = CountingEngine()
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"), engine=retry)
    assert retry.calls == [3]
    book = corpus.book("born-digital")
    assert book.pages[2].status == "ok" and book.pages[2].attempts == 2
    assert book.state() == "complete"


def test_page_selection_and_later_completion(corpus: Corpus, text_pdf: Path) -> None:
    engine = CountingEngine()
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer", pages="2-3,5"), engine=engine)
    assert sorted(engine.calls) == [2, 3, 5]
    assert corpus.book("born-digital").state() == "incomplete"
    engine = CountingEngine()
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"), engine=engine)
    assert sorted(engine.calls) == [1, 4]


def test_redo_reruns_done_pages_with_another_engine(corpus: Corpus, text_pdf: Path) -> None:
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"))
    engine = CountingEngine()
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer", pages="2,4", redo=True), engine=engine)
    assert sorted(engine.calls) == [2, 4]
    assert [m.attempts for m in corpus.book("born-digital").pages] == [1, 2, 1, 2, 1]


@pytest.mark.parametrize(
    "spec, expected",
    [(None, [1, 2, 3, 4, 5, 6]), ("1-3,5", [1, 2, 3, 5]), (" 2 , 2-3 ", [2, 3]), ("6", [6])],
)
def test_parse_pages(spec: str | None, expected: list[int]) -> None:
    assert parse_pages(spec, 6) == expected


@pytest.mark.parametrize("spec", ["0", "7", "3-2", "a-b", "1-", "5-9"])
def test_parse_pages_rejects_bad_ranges(spec: str) -> None:
    with pytest.raises(PageRangeError):
        parse_pages(spec, 6)


def test_same_id_different_content_is_refused_unless_replaced(corpus: Corpus, tmp_path: Path, text_pdf: Path) -> None:
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer", book="mybook"))
    other = numbered_text_pdf(tmp_path / "other.pdf", 3)
    with pytest.raises(BookConflictError, match="--replace"):
        ocr_book(corpus, other, RunOptions(engine="text-layer", book="mybook"))
    assert corpus.book("mybook").page_count == 5
    ocr_book(corpus, other, RunOptions(engine="text-layer", book="mybook", replace=True))
    book = corpus.book("mybook")
    assert book.page_count == 3 and not book.page_path(4).exists()


def test_second_run_on_a_locked_book_stops_with_a_message(corpus: Corpus, text_pdf: Path) -> None:
    with corpus.lock("born-digital"):
        with pytest.raises(BookLockedError, match="another run"):
            ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"))
    assert ocr_book(corpus, text_pdf, RunOptions(engine="text-layer")).done == 5


def test_unknown_book_lists_the_books(corpus: Corpus, text_pdf: Path) -> None:
    ocr_book(corpus, text_pdf, RunOptions(engine="text-layer"))
    with pytest.raises(UnknownBookError, match="born-digital"):
        corpus.book("nope")
    with pytest.raises(PageRangeError, match="1-5"):
        corpus.book("born-digital").read_page(6)


def _page_image(path: Path, size: tuple[int, int], text: str) -> None:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).text((20, 20), text, fill=0)
    image.save(path)


def test_folder_of_images_is_read_in_natural_order(corpus: Corpus, tmp_path: Path) -> None:
    folder = tmp_path / "Scans"
    folder.mkdir()
    for n in (1, 2, 10):
        _page_image(folder / f"page{n}.png", (300 + n, 400), f"page {n}")
    (folder / "notes.txt").write_text("not a page")
    ocr_book(corpus, folder, RunOptions(), engine=ImageSizeEngine())
    book = corpus.book("scans")
    assert book.page_count == 3
    assert [book.read_page(n).markdown.strip() for n in (1, 2, 3)] == [
        "native [301, 400]",
        "native [302, 400]",
        "native [310, 400]",
    ]


def test_multipage_tiff_gives_one_page_per_frame(corpus: Corpus, tmp_path: Path) -> None:
    frames = [Image.new("L", (200 + i, 300), 255) for i in range(3)]
    path = tmp_path / "book.tiff"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    ocr_book(corpus, path, RunOptions(), engine=ImageSizeEngine())
    book = corpus.book("book")
    assert [book.read_page(n).markdown.strip() for n in (1, 2, 3)] == [
        "native [200, 300]",
        "native [201, 300]",
        "native [202, 300]",
    ]
    render = book.pages[0].render
    assert render["width"] > render["height"] * 0.5
    assert max(render["width"], render["height"]) == 1600


class SlowCancelEngine(TextLayerEngine):
    name = ""

    def __init__(self, cancel_after: int, event: object) -> None:
        self.cancel_after = cancel_after
        self.event = event
        self.seen = 0

    def recognize_many(self, pages: Iterable[PageInput]) -> Iterator[PageResult]:
        for page in pages:
            self.seen += 1
            if self.seen == self.cancel_after:
                self.event.set()  # type: ignore[attr-defined]
            yield self.safe_recognize(page)


def test_cancel_stops_early_and_keeps_what_was_done(corpus: Corpus, tmp_path: Path) -> None:
    import threading

    pdf = numbered_text_pdf(tmp_path / "long.pdf", 40)
    cancel = threading.Event()
    state = ocr_book(corpus, pdf, RunOptions(engine="text-layer"), engine=SlowCancelEngine(3, cancel), cancel=cancel)
    assert state.state == "cancelled" and state.done < 40
    book = corpus.book("long")
    done = [i + 1 for i, m in enumerate(book.pages) if m]
    assert done == list(range(1, state.done + 1))
    rest = CountingEngine()
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"), engine=rest)
    assert sorted(rest.calls) == list(range(state.done + 1, 41))


class UnavailableEngine(OcrEngine):
    """An engine whose account or deployment is missing: it fails as it comes up."""

    name = "test-unavailable"

    def __init__(self, **_: object) -> None:
        from ocr_backend.errors import EngineError

        raise EngineError("no account configured; run the set-up first")

    def version(self) -> str:  # pragma: no cover
        return "never"

    def recognize(self, page: PageInput) -> PageResult:  # pragma: no cover
        raise AssertionError


def test_engine_that_cannot_start_leaves_no_trace(corpus: Corpus, text_pdf: Path) -> None:
    from ocr_backend.errors import EngineError
    from tests.conftest import tree_snapshot

    with pytest.raises(EngineError, match="run the set-up"):
        ocr_book(corpus, text_pdf, RunOptions(engine="test-unavailable"))
    assert corpus.book_ids() == []
    assert [k for k in tree_snapshot(corpus.root) if not k.startswith(".locks/")] == []
