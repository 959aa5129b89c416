"""A real `bookocr serve` subprocess driven by the SDK's stdio client, as Claude Desktop runs it.

Everything the server writes to stdout is teed to a file: every line must be a protocol message.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from server.sample_book import SAMPLE_PAGES, make_sample_book
from tests.conftest import numbered_text_pdf

pytestmark = pytest.mark.anyio

BOOKOCR = Path(sys.executable).absolute().parent / "bookocr"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def test_stdio_server_end_to_end(tmp_path: Path) -> None:
    books, corpus = tmp_path / "books", tmp_path / "corpus"
    books.mkdir()
    scan = make_sample_book(books / "conjugate-scan.pdf", SAMPLE_PAGES[1:2])
    text = numbered_text_pdf(books / "notes.pdf", 3)
    outside = numbered_text_pdf(tmp_path / "private.pdf", 1)
    (books / "sneaky.pdf").symlink_to(outside)
    (books / "readme.txt").write_text("hello\n")
    stdout_log, stderr_log = tmp_path / "stdout.log", tmp_path / "stderr.log"

    command = f"{shlex.quote(str(BOOKOCR))} --corpus {shlex.quote(str(corpus))} serve --allow {shlex.quote(str(books))}"
    params = StdioServerParameters(command="/bin/sh", args=["-c", f"{command} | tee {shlex.quote(str(stdout_log))}"])
    with stderr_log.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            assert {"ocr_book", "list_books", "book_status", "get_page", "search_book", "get_page_image"} <= tools

            progress: list[float] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(done)

            started = time.monotonic()
            first = await c.call_tool("ocr_book", {"path": str(scan)}, progress_callback=on_progress)
            assert not first.is_error, text_of(first)
            assert time.monotonic() - started < 5.0
            assert progress, "a progress notification should arrive while ocr_book waits"

            notes = await c.call_tool("ocr_book", {"path": str(text), "engine": "text-layer"})
            assert notes.structured_content["state"] in ("queued", "complete"), text_of(notes)

            deadline = time.monotonic() + 90
            while True:
                status = (await c.call_tool("book_status", {"book": "conjugate-scan"})).structured_content
                if status["state"] not in ("queued", "running"):
                    break
                assert time.monotonic() < deadline, status
                await anyio.sleep(0.3)
            assert status["state"] == "complete" and status["done"] == 1, status

            page = await c.call_tool("get_page", {"book": "conjugate-scan", "page": 1})
            assert "conjugate" in text_of(page).lower()
            assert page.structured_content["next_page"] is None
            hits = (await c.call_tool("search_book", {"query": "conjugate prior"})).structured_content["hits"]
            assert hits and (hits[0]["book"], hits[0]["page"]) == ("conjugate-scan", 1)

            async def error(tool: str, args: dict) -> str:
                result = await c.call_tool(tool, args)
                assert result.is_error, f"{tool}({args}) should fail"
                return text_of(result)

            assert "books: conjugate-scan" in await error("get_page", {"book": "nope", "page": 1})
            assert "pages 1-1" in await error("get_page", {"book": "conjugate-scan", "page": 0})
            assert "pages 1-1" in await error("get_page", {"book": "conjugate-scan", "page": 2})
            assert "invalid book id" in await error("get_page", {"book": "../corpus", "page": 1})
            assert "--allow" in await error("ocr_book", {"path": str(outside)})
            assert "links to" in await error("ocr_book", {"path": str(books / "sneaky.pdf")})
            assert "neither a PDF nor an image" in await error("ocr_book", {"path": str(books / "readme.txt")})

    lines = [line for line in stdout_log.read_text().splitlines() if line.strip()]
    assert lines, "the server's stdout was not captured"
    for line in lines:
        assert json.loads(line).get("jsonrpc") == "2.0", f"non-protocol output on stdout: {line[:200]}"
    assert sorted(p.name for p in corpus.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "conjugate-scan",
        "notes",
    ]
