"""Benchmark issue 15: bytes an agent receives in a fixed MCP session.

The session, through the MCP client over the server object (in-process, the bytes as they would cross
the wire): ``tools/list``; ``book_status`` of ``bws-ch2``; ``list_books`` of a 100-book shelf (every book);
``search_book("domino analogy")`` in that book; and a 2-page read by printed page (126-127). The shelf is
``bws_book_ch2`` and Whitehead OCR'd from their text layers plus 98 copies of ``bws-ch2`` under other ids.
Each response's size is its JSON-RPC result (text content and ``structuredContent``) as UTF-8 bytes.

    .venv/bin/python bench/bench_mcp_session.py
    PYTHONPATH=/tmp/defs-before .venv/bin/python bench/bench_mcp_session.py   # an older checkout

Skips (exit 0) when ../shared/testdata is absent.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_report import describe  # noqa: E402
from search_probes import PROBE_PDFS  # noqa: E402

from server.corpus import Corpus  # noqa: E402
from server.library import Library  # noqa: E402
from server.mcp_server import create_server  # noqa: E402
from server.runner import RunOptions  # noqa: E402

SHELF = 100
BOOK = "bws-ch2"


def build_shelf(root: Path) -> Library:
    library = Library(Corpus(root))
    for book_id, pdf in PROBE_PDFS.items():
        library.ocr(pdf, RunOptions(book=book_id, engine="text-layer"))
    for n in range(SHELF - len(PROBE_PDFS)):
        copy = root / f"copy-{n:03d}"
        shutil.copytree(root / BOOK, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["book"] = copy.name
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return library


def size(result: Any) -> int:
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


async def session(library: Library) -> dict[str, int]:
    from mcp import Client

    sizes: dict[str, int] = {}
    async with Client(create_server(library)) as client:
        tools = await client.list_tools()
        sizes["tools/list"] = size(tools)
        schemas = {tool.name: tool.input_schema.get("properties", {}) for tool in tools.tools}
        listing = {"limit": SHELF} if "limit" in schemas["list_books"] else {}
        read = {"printed": "126"} | ({"to_printed": "127"} if "to_printed" in schemas["get_page"] else {"to_page": 27})
        calls = [
            ("book_status", {"book": BOOK}),
            ("list_books", listing),
            ("search_book", {"query": "domino analogy", "book": BOOK}),
            ("get_page", {"book": BOOK, **read}),
        ]
        for name, args in calls:
            result = await client.call_tool(name, args)
            assert not result.is_error, (name, result.content)
            sizes[name] = size(result)
    return sizes


def main() -> int:
    print(describe())
    if not all(pdf.is_file() for pdf in PROBE_PDFS.values()):
        print("skipped: the probe PDFs under ../shared/testdata are not here")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        sizes = anyio.run(session, build_shelf(Path(scratch) / "corpus"))
    for name, count in sizes.items():
        print(f"{name:12s} {count:8,d} bytes")
    print(
        f"{'session':12s} {sum(v for k, v in sizes.items() if k != 'tools/list'):8,d} bytes (calls, without tools/list)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
