"""Issue 16 item 4: a damaged manifest affects only its own book, and `bookocr ocr --repair` rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from server import cli
from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server
from server.runner import RunOptions, ocr_book
from server.safety import InputPolicy
from tests.conftest import numbered_text_pdf


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_book(corpus: Corpus, folder: Path, name: str, pages: int = 3) -> Path:
    pdf = numbered_text_pdf(folder / f"{name}.pdf", pages)
    ocr_book(corpus, pdf, RunOptions(engine="text-layer"))
    return pdf


def truncate(manifest: Path) -> None:
    text = manifest.read_text()
    manifest.write_text(text[: len(text) * 2 // 3])


def drop_pages(manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    del data["pages"]
    manifest.write_text(json.dumps(data))


def bookocr(corpus: Corpus, *args: str) -> int:
    return cli.main(["--corpus", str(corpus.root), *args])


@pytest.fixture
def shelf(tmp_path: Path, corpus: Corpus) -> dict[str, Path]:
    """Three books: one sound, one with a truncated manifest, one whose manifest lost its pages."""
    sources = {name: make_book(corpus, tmp_path, name) for name in ("sound", "cut", "keyless")}
    truncate(corpus.root / "cut" / "manifest.json")
    drop_pages(corpus.root / "keyless" / "manifest.json")
    return sources


def test_list_shows_a_damaged_book_and_the_rest(
    shelf: dict[str, Path], corpus: Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bookocr(corpus, "list") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "complete" in lines["sound"]
    for book in ("cut", "keyless"):
        assert "damaged" in lines[book] and f"--repair {book}" in lines[book]


@pytest.mark.anyio
async def test_mcp_list_books_shows_a_damaged_book(shelf: dict[str, Path], corpus: Corpus, tmp_path: Path) -> None:
    async with Client(create_server(Library(corpus), InputPolicy(roots=[tmp_path]))) as client:
        result = await client.call_tool("list_books", {})
    assert not result.is_error
    states = {b["book"]: b["state"] for b in result.structured_content["books"]}
    assert states == {"sound": "complete", "cut": "damaged", "keyless": "damaged"}


@pytest.mark.parametrize("book", ["cut", "keyless"])
@pytest.mark.parametrize("command", [["status", "{book}"], ["get", "{book}", "1"], ["ocr", "{source}"]])
def test_reading_a_damaged_book_is_one_clear_error(
    shelf: dict[str, Path], corpus: Corpus, capsys: pytest.CaptureFixture[str], book: str, command: list[str]
) -> None:
    assert bookocr(corpus, *(a.format(book=book, source=shelf[book]) for a in command)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "damaged" in err and f"--repair {book}" in err


def test_reindex_reports_a_damaged_book(
    shelf: dict[str, Path], corpus: Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bookocr(corpus, "reindex") == 3
    out = capsys.readouterr().out
    assert "not indexed: book 'cut' is damaged" in out and "not indexed: book 'keyless' is damaged" in out


@pytest.mark.parametrize("target", ["id", "source"])
def test_repair_rebuilds_from_page_files_and_a_run_resumes(shelf: dict[str, Path], corpus: Corpus, target: str) -> None:
    (corpus.root / "cut" / "pages" / "page_0002.mmd").unlink()
    args = ["cut"] if target == "id" else [str(shelf["cut"]), "--book", "cut"]
    assert bookocr(corpus, "ocr", "--repair", *args) == 0
    book = corpus.book("cut")
    assert [book.page(n).status for n in (1, 2, 3)] == ["ok", "pending", "ok"]
    assert book.page(1).engine == "unknown (repaired)"
    assert "page number 1 " in book.read_page(1).markdown
    assert bookocr(corpus, "ocr", str(shelf["cut"])) == 0
    assert Library(corpus).status("cut").state == "complete"
    assert "page number 2 " in corpus.book("cut").read_page(2).markdown


def test_repair_keeps_what_a_keyless_manifest_still_says(shelf: dict[str, Path], corpus: Corpus) -> None:
    assert bookocr(corpus, "ocr", "--repair", "keyless") == 0
    assert Library(corpus).status("keyless").state == "complete"


@pytest.mark.parametrize("flag", ["--replace", "--redo"])
def test_replace_and_redo_work_on_a_damaged_book(shelf: dict[str, Path], corpus: Corpus, flag: str) -> None:
    assert bookocr(corpus, "ocr", str(shelf["cut"]), "--engine", "text-layer", flag) == 0
    status = Library(corpus).status("cut")
    assert status.state == "complete" and status.engines_used == ["text-layer"]
