"""Issue 16 item 6: a corpus on a read-only mount serves every read; writes fail with one line.

Tests run as root, where chmod does not stop writes, so the corpus is bind-mounted read-only; where
``mount`` is not allowed (not root), ``chmod -R a-w`` makes it read-only instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from server import cli
from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server
from server.safety import InputPolicy
from tests.conftest import numbered_text_pdf, tree_snapshot


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_read_only(folder: Path, view: Path) -> bool:
    """Show ``folder`` read-only at ``view``; returns whether a mount was made (to undo)."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        view.symlink_to(folder)
        return False
    view.mkdir()
    for args in (["mount", "--bind", str(folder), str(view)], ["mount", "-o", "remount,ro,bind", str(view)]):
        if subprocess.run(args, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(view)], capture_output=True)
            pytest.skip("cannot make a read-only mount here (needs root and mount)")
    return True


@pytest.fixture
def shelf(tmp_path: Path) -> Iterator[tuple[Corpus, Path]]:
    """A one-book corpus made by `bookocr ocr` in a process of its own (so the index is closed, as on a
    backup), seen through a read-only view; and the book's source."""
    pdf = numbered_text_pdf(tmp_path / "Ro Book.pdf", 3)
    made = tmp_path / "made"
    command = [sys.executable, "-m", "server.cli", "--corpus", str(made), "ocr", str(pdf), "--engine", "text-layer"]
    subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).parent.parent)
    view = tmp_path / "ro"
    mounted = make_read_only(made, view)
    try:
        yield Corpus(view), pdf
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(view)], check=True)  # open index connections keep it busy
        else:
            subprocess.run(["chmod", "-R", "u+w", str(made)], check=True)


def bookocr(corpus: Corpus, *args: str) -> int:
    return cli.main(["--corpus", str(corpus.root), *args])


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["status", "ro-book"],
        ["get", "ro-book", "2"],
        ["contents", "ro-book"],
        ["search", "word2x7"],
        ["search", "page number", "--book", "ro-book"],
    ],
)
def test_every_read_works(shelf: tuple[Corpus, Path], capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    corpus, _ = shelf
    before = tree_snapshot(corpus.root)
    assert bookocr(corpus, *args) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "ro-book" in out or "page number 2" in out, out
    assert err == ""
    assert tree_snapshot(corpus.root) == before


def test_search_finds_the_page(shelf: tuple[Corpus, Path], capsys: pytest.CaptureFixture[str]) -> None:
    corpus, _ = shelf
    assert bookocr(corpus, "--json", "search", "word2x7") == 0
    assert '"page": 2' in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [["ocr", "SOURCE"], ["ocr", "SOURCE", "--redo"], ["reindex"], ["reindex", "ro-book"], ["reclean", "ro-book"]],
)
def test_writes_fail_with_one_line(
    shelf: tuple[Corpus, Path], capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    corpus, pdf = shelf
    assert bookocr(corpus, *(str(pdf) if a == "SOURCE" else a for a in args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "read-only" in err, err


@pytest.mark.anyio
async def test_mcp_serves_a_read_only_corpus(shelf: tuple[Corpus, Path]) -> None:
    corpus, pdf = shelf
    calls = {
        "list_books": {},
        "book_status": {"book": "ro-book"},
        "get_page": {"book": "ro-book", "page": 1},
        "get_contents": {"book": "ro-book"},
        "search_book": {"query": "word1x3"},
        "get_page_image": {"book": "ro-book", "page": 1},
    }
    async with Client(create_server(Library(corpus), InputPolicy(roots=[pdf.parent]))) as client:
        for tool, args in calls.items():
            result = await client.call_tool(tool, args)
            assert not result.is_error, (tool, result.content)
        refused = await client.call_tool("ocr_book", {"path": str(pdf), "book": "another"})
    assert refused.is_error and "read-only" in refused.content[0].text
