"""Issue 16: nothing lost silently (truncated PDFs, damaged page files), full disks, hostile numbers and names."""

from __future__ import annotations

import errno
import json
import os
import zlib
from pathlib import Path

import anyio
import pymupdf
import pytest
from mcp import Client
from PIL import Image

from ocr_backend.errors import BookOcrError, InputError
from server import cli
from server import corpus as corpus_module
from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server
from server.runner import RunOptions, ocr_book
from server.safety import InputPolicy
from server.search import SearchIndex, search_library
from tests.conftest import numbered_text_pdf, tree_snapshot


def _text_pdf_bytes(pages: int = 3) -> bytes:
    """A born-digital PDF laid out as many writers save them: objects renumbered, streams compressed."""
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page()
        text = " ".join(f"Page {n} sentence {i} about propositional functions and their values." for i in range(25))
        page.insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=10)
    return doc.tobytes(garbage=4, deflate=True)


def _page_texts(corpus: Corpus, book: str) -> list[str]:
    stored = corpus.book(book)
    return [stored.read_page(n).markdown for n in range(1, stored.page_count + 1)]


# --- item 2: truncated PDFs ---------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.6, 0.99])
def test_a_truncated_pdf_is_refused_or_read_whole(share: float, corpus: Corpus, tmp_path: Path) -> None:
    data = _text_pdf_bytes()
    whole = tmp_path / "whole.pdf"
    whole.write_bytes(data)
    ocr_book(corpus, whole, RunOptions(engine="text-layer", book="whole"))
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: int(len(data) * share)])
    try:
        ocr_book(corpus, cut, RunOptions(engine="text-layer", book="cut"))
    except InputError as exc:
        assert "truncated or corrupt" in str(exc)
        assert corpus.book_ids() == ["whole"]
        return
    book = corpus.book("cut")
    for number, text in enumerate(_page_texts(corpus, "cut"), start=1):
        record = book.page(number)
        assert record.status == "failed" or text == _page_texts(corpus, "whole")[number - 1], number


def test_a_page_mupdf_reports_damaged_fails_with_the_reason(corpus: Corpus, tmp_path: Path) -> None:
    """An intact file whose page 2 content stream is cut short: only that page fails, and says why."""
    path = numbered_text_pdf(tmp_path / "book.pdf", 3)
    with pymupdf.open(path) as doc:
        xref = doc[1].get_contents()[0]
        packed = zlib.compress(doc.xref_stream(xref))
        doc.update_stream(xref, packed[: len(packed) // 2], compress=False)
        doc.xref_set_key(xref, "Filter", "/FlateDecode")
        doc.save(tmp_path / "damaged.pdf")
    ocr_book(corpus, tmp_path / "damaged.pdf", RunOptions(engine="text-layer"))
    book = corpus.book("damaged")
    assert [book.page(n).status for n in (1, 2, 3)] == ["ok", "failed", "ok"]
    assert "damaged" in book.page(2).reason and "flate" in book.page(2).reason


# --- item 5: damaged page files -----------------------------------------------------------------------
@pytest.fixture
def finished(corpus: Corpus, tmp_path: Path) -> tuple[Corpus, Path]:
    pdf = numbered_text_pdf(tmp_path / "book.pdf", 4)
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    return corpus, pdf


def _damage(book_dir: Path, how: str) -> None:
    page = book_dir / "pages" / "page_0003.mmd"
    if how == "deleted":
        page.unlink()
    elif how == "truncated":
        page.write_bytes(page.read_bytes()[:20])
    elif how == "invalid utf-8":
        page.write_bytes(b"\xff\xfe" + page.read_bytes()[2:])
    else:  # same length, other bytes
        data = bytearray(page.read_bytes())
        data[5] = ord("#") if data[5] != ord("#") else ord("*")
        page.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["deleted", "truncated", "invalid utf-8", "changed"])
def test_a_damaged_page_file_is_reported_shown_and_redone(
    how: str, finished: tuple[Corpus, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    corpus, pdf = finished
    manifest = json.loads((corpus.root / "book" / "manifest.json").read_text())
    assert all(p["size"] > 0 and len(p["sha256"]) == 64 for p in manifest["pages"])
    _damage(corpus.root / "book", how)
    library = Library(corpus)

    status = library.status("book")
    assert status.damaged_pages == [3] and status.state == "incomplete"
    assert "damaged" in status.message
    page = library.read_pages("book", 3).first
    assert page.status == "damaged" and "damaged" in page.body and "blank" not in page.body

    assert cli.main(["--corpus", str(corpus.root), "get", "book", "3"]) == 0
    assert "(damaged)" in capsys.readouterr().out
    assert cli.main(["--corpus", str(corpus.root), "reindex"]) == 0  # skips the page, with a warning
    assert "page 3 of book book is not searchable" in caplog.text
    assert ("book", 3) not in [(h.book, h.page) for h in search_library(corpus, "word3x5", limit=50).hits]

    progress = ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    assert progress.total == 1
    assert library.status("book").damaged_pages == []
    assert "This is page number 3" in library.read_pages("book", 3).first.markdown


def test_old_manifests_without_hashes_still_work(finished: tuple[Corpus, Path]) -> None:
    corpus, pdf = finished
    path = corpus.root / "book" / "manifest.json"
    manifest = json.loads(path.read_text())
    for page in manifest["pages"]:
        del page["size"], page["sha256"]
    path.write_text(json.dumps(manifest))
    library = Library(corpus)
    assert library.status("book").state == "complete" and library.status("book").damaged_pages == []
    assert "page number 2" in library.read_pages("book", 2).first.markdown
    (corpus.root / "book" / "pages" / "page_0002.mmd").unlink()  # a missing file is still found
    assert library.status("book").damaged_pages == [2]
    assert ocr_book(corpus, pdf, RunOptions(engine="text-layer")).total == 1


# --- item 7: --long-side ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["0", "-5", "100000"])
def test_long_side_out_of_range_is_refused(
    size: str, finished: tuple[Corpus, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, _ = finished
    pdf = numbered_text_pdf(tmp_path / "other.pdf", 1)
    before = tree_snapshot(corpus.root)
    assert cli.main(["--corpus", str(corpus.root), "ocr", str(pdf), f"--long-side={size}"]) == 2
    assert "long side" in capsys.readouterr().err
    assert tree_snapshot(corpus.root) == before


# --- item 8: a full disk ------------------------------------------------------------------------------
def test_a_full_disk_ends_with_one_line_and_the_corpus_intact(
    finished: tuple[Corpus, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, pdf = finished
    before = tree_snapshot(corpus.root / "book")
    real_fsync = os.fsync
    writes = {"n": 0}

    def fsync(fd: int) -> None:  # the third corpus file written finds the disk full
        writes["n"] += 1
        if writes["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(corpus_module.os, "fsync", fsync)
    # the same file: a redo writes every page again
    assert cli.main(["--corpus", str(corpus.root), "ocr", str(pdf), "--redo"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "disk is full" in err
    assert [line for line in err.splitlines() if line.startswith("bookocr: error")] == [err.splitlines()[-1]]
    monkeypatch.setattr(corpus_module.os, "fsync", real_fsync)
    assert not [p for p in (corpus.root / "book").rglob("*.tmp")]
    assert json.loads((corpus.root / "book" / "manifest.json").read_text())["page_count"] == 4
    assert tree_snapshot(corpus.root / "book").keys() == before.keys()
    assert Library(corpus).status("book").damaged_pages == []


def test_a_failed_index_commit_keeps_its_real_error(corpus: Corpus) -> None:
    index = SearchIndex(corpus)
    index.add_page("book", 1, "some text", None)
    conn = index._conn()

    def commit_fails(conn_: object) -> int:
        conn.execute("ROLLBACK")  # what SQLite does when COMMIT hits a full disk
        raise OSError(errno.ENOSPC, "database or disk is full")

    with pytest.raises(OSError, match="disk is full"):
        index._write(commit_fails)


# --- item 9: small ones -------------------------------------------------------------------------------
def test_a_book_id_ending_in_a_newline_is_refused(corpus: Corpus, tmp_path: Path) -> None:
    pdf = numbered_text_pdf(tmp_path / "ok.pdf", 1)
    with pytest.raises(BookOcrError, match="invalid book id"):
        ocr_book(corpus, pdf, RunOptions(book="abc\n"))
    assert not corpus.root.exists() or not any(corpus.root.iterdir())
    assert not corpus.has_book("abc\n")


def test_a_symlink_loop_in_an_image_folder_is_named(corpus: Corpus, tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.new("L", (300, 400), 255).save(folder / "p1.png")
    (folder / "p2.png").symlink_to(folder / "p3.png")
    (folder / "p3.png").symlink_to(folder / "p2.png")
    with pytest.raises(InputError, match=r"p[23]\.png: a symbolic link that loops"):
        ocr_book(corpus, folder, RunOptions(engine="text-layer"))


@pytest.mark.parametrize(
    ("content", "kind"),
    [("png", "a PNG image"), (b"<!DOCTYPE html><html><body>Not found</body></html>", "an HTML page")],
)
def test_a_file_named_pdf_that_is_not_one_is_refused(
    content: str | bytes, kind: str, corpus: Corpus, tmp_path: Path
) -> None:
    path = tmp_path / "book.pdf"
    if content == "png":
        Image.new("L", (300, 400), 255).save(path, format="PNG")
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(InputError, match=f"named .pdf but it is not a PDF \\(it starts like {kind}"):
        ocr_book(corpus, path, RunOptions(engine="text-layer"))
    assert not corpus.root.exists() or corpus.book_ids() == []


def test_mcp_get_page_refuses_true_as_a_page(finished: tuple[Corpus, Path], tmp_path: Path) -> None:
    corpus, _ = finished

    async def call() -> tuple[bool, str, bool]:
        server = create_server(Library(corpus), InputPolicy(roots=[tmp_path]))
        async with Client(server) as client:
            bad = await client.call_tool("get_page", {"book": "book", "page": True})
            good = await client.call_tool("get_page", {"book": "book", "page": 1})
        text = "\n".join(block.text for block in bad.content if block.type == "text")
        return bad.is_error, text, good.is_error

    refused, message, good_failed = anyio.run(call)
    assert refused and "page number 1" not in message and not good_failed
