"""Issue 16 item 3: a file is checked once it is open, so a link swapped in after the check cannot reach
outside the folders the MCP server may read (page images, OCR of folder books, single images, PDFs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from ocr_backend.engines import PageInput, PageResult
from ocr_backend.engines.base import OcrEngine
from ocr_backend.errors import PathNotAllowedError
from ocr_backend.sources import open_source
from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server
from server.runner import RunOptions, ocr_book, plan_run, run_plan
from server.safety import InputPolicy
from tests.conftest import numbered_text_pdf

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ShapeEngine(OcrEngine):
    """Writes the shape of the image it was given: the pages are tall, the outside image is wide."""

    name = ""  # not registered

    def version(self) -> str:
        return "shape-1"

    def recognize(self, page: PageInput) -> PageResult:
        if page.error:
            return PageResult(page.number, "", "failed", "shape", self.version(), reason=page.error)
        assert page.image is not None
        return PageResult(
            page.number, "tall" if page.image.height > page.image.width else "wide", "ok", "shape", self.version()
        )


def page_folder(root: Path, pages: int = 2) -> Path:
    folder = root / "scans"
    folder.mkdir(parents=True)
    for n in range(1, pages + 1):
        Image.new("L", (200, 300), 255).save(folder / f"p{n}.png")
    return folder


def outside_image(root: Path) -> Path:
    secret = root / "secret.png"
    Image.new("L", (640, 480), 0).save(secret)
    return secret


def swap_for_link(page: Path, target: Path) -> None:
    page.unlink()
    page.symlink_to(target)


async def test_page_image_refuses_a_page_swapped_for_a_link_outside(tmp_path: Path) -> None:
    books = tmp_path / "books"
    folder = page_folder(books)
    corpus = Corpus(tmp_path / "corpus")
    policy = InputPolicy(roots=[books])
    ocr_book(corpus, folder, RunOptions(book="scans"), engine=ShapeEngine())
    async with Client(create_server(Library(corpus), policy)) as client:
        assert not (await client.call_tool("get_page_image", {"book": "scans", "page": 2})).is_error
        swap_for_link(folder / "p2.png", outside_image(tmp_path))
        result = await client.call_tool("get_page_image", {"book": "scans", "page": 2})
    assert result.is_error and "outside the folders" in result.content[0].text


def test_a_page_swapped_for_a_link_during_a_run_fails_and_is_not_read(tmp_path: Path) -> None:
    books = tmp_path / "books"
    folder = page_folder(books)
    corpus = Corpus(tmp_path / "corpus")
    plan = plan_run(corpus, folder, RunOptions(open_check=InputPolicy(roots=[books]).check_opened))
    swap_for_link(folder / "p2.png", outside_image(tmp_path))  # after the check, before the page is read
    run_plan(corpus, plan, engine=ShapeEngine())
    book = corpus.book("scans")
    assert book.read_page(1).markdown.strip() == "tall"
    failed = book.page(2)
    assert failed.status == "failed" and "outside the folders" in failed.reason
    assert "wide" not in (book.dir / "document.mmd").read_text()


@pytest.mark.parametrize("kind", ["pdf", "image"])
def test_a_single_file_source_that_links_outside_is_refused_once_open(tmp_path: Path, kind: str) -> None:
    books = tmp_path / "books"
    books.mkdir()
    target = numbered_text_pdf(tmp_path / "secret.pdf", 1) if kind == "pdf" else outside_image(tmp_path)
    link = books / f"book.{kind if kind == 'pdf' else 'png'}"
    link.symlink_to(target)
    with pytest.raises(PathNotAllowedError, match="outside the folders"):
        open_source(link, InputPolicy(roots=[books]).check_opened)
