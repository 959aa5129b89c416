"""One engine module, with its own options, used from both shells: the CLI and the MCP server."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client

from server import cli
from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server
from server.safety import InputPolicy
from tests.conftest import numbered_text_pdf
from tests.toy_engine import ToyEngine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_cli_takes_the_engines_own_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = numbered_text_pdf(tmp_path / "toy.pdf", 3)
    corpus = tmp_path / "corpus"
    assert (
        cli.main(
            [
                "--corpus",
                str(corpus),
                "ocr",
                str(pdf),
                "--engine",
                "toy",
                "--prefix",
                "leaf",
                "--shout",
                "--repeat",
                "2",
            ]
        )
        == 0
    )
    assert (corpus / "toy" / "pages" / "page_0002.mmd").read_text() == "LEAF 2 LEAF 2\n"
    capsys.readouterr()

    assert cli.main(["--corpus", str(corpus), "--json", "engines"]) == 0
    toy = next(e for e in json.loads(capsys.readouterr().out) if e["name"] == ToyEngine.name)
    assert [o["name"] for o in toy["options"]] == ["prefix", "shout", "repeat"]

    assert (
        cli.main(
            ["--corpus", str(corpus), "ocr", str(pdf), "--engine", "text-layer", "--prefix", "x", "--book", "other"]
        )
        == 2
    )
    assert "engine 'text-layer' has no option 'prefix'" in capsys.readouterr().err
    assert (
        cli.main(["--corpus", str(corpus), "ocr", str(pdf), "--engine", "toy", "--repeat", "0", "--book", "other"]) == 2
    )
    assert "option repeat must be a whole number >= 1" in capsys.readouterr().err
    assert not (corpus / "other").exists()


async def test_mcp_takes_the_engines_own_options(tmp_path: Path) -> None:
    pdf = numbered_text_pdf(tmp_path / "toy.pdf", 2)
    library = Library(Corpus(tmp_path / "corpus"))
    async with Client(create_server(library, InputPolicy(roots=[tmp_path]), wait_s=5)) as client:
        refused = await client.call_tool("ocr_book", {"path": str(pdf), "engine": "toy", "options": {"volume": 11}})
        assert refused.is_error and "has no option 'volume'" in refused.content[0].text
        done = await client.call_tool(
            "ocr_book", {"path": str(pdf), "engine": "toy", "options": {"prefix": "folio", "shout": "true"}}
        )
        assert not done.is_error
        for _ in range(100):
            if (await client.call_tool("book_status", {"book": "toy"})).structured_content["state"] == "complete":
                break
            await anyio.sleep(0.05)
        page = await client.call_tool("get_page", {"book": "toy", "page": 2})
        assert "FOLIO 2" in page.content[0].text
