"""The server driven by an outside client: the official TypeScript MCP SDK over stdio (``tests/js/drive_server.mjs``).

Installs ``@modelcontextprotocol/sdk`` with npm into a temporary folder; skipped, with the reason, when npm or
the registry is not there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.corpus import Corpus
from server.mcp_server import package_version
from tests.conftest import numbered_text_pdf
from tests.test_search import make_book
from tests.test_sections import BOOK

DRIVER = Path(__file__).parent / "js" / "drive_server.mjs"
INSTALL_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def sdk_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("npm or node is not installed: cannot try the TypeScript MCP SDK")
    folder = tmp_path_factory.mktemp("ts-sdk")
    try:
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "@modelcontextprotocol/sdk"],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm could not install @modelcontextprotocol/sdk (no registry?): {exc}")
    shutil.copy(DRIVER, folder / DRIVER.name)
    return folder


def test_every_tool_through_the_typescript_sdk(sdk_folder: Path, corpus: Corpus, tmp_path: Path) -> None:
    make_book(corpus, "geo", BOOK, labels=["11", "12", "13", "14"])
    books = tmp_path / "books"
    books.mkdir()
    pdf = numbered_text_pdf(books / "notes.pdf", 3)
    unread = numbered_text_pdf(books / "unread.pdf", 5)
    calls = {
        "estimate_ocr": {"paths": [str(unread)], "engine": "deepseek"},
        "ocr_book": {"path": str(pdf), "engine": "text-layer"},
        "list_books": {"limit": 10},
        "book_status": {"book": "geo"},
        "get_page": {"book": "geo", "printed": "12", "to_printed": "13"},
        "get_contents": {"book": "geo"},
        "search_book": {"query": "vector", "defined": True},
        "get_page_image": {"book": "notes", "page": 1},
    }
    command = [sys.executable, "-m", "server.cli", "--corpus", str(corpus.root), "serve", "--allow", str(books)]
    plan = {"command": command[0], "args": command[1:], "calls": calls}
    done = subprocess.run(
        ["node", DRIVER.name, json.dumps(plan)],
        cwd=sdk_folder,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["server"]["version"] == package_version()
    assert set(report["tools"]) == set(calls), "a tool without a call here, or a call for a tool that is gone"
    for name, entry in report["calls"].items():
        assert not entry["isError"], f"{name}: {entry['text']}"
        assert entry["schemaErrors"] in ([], None), f"{name}: structuredContent fails outputSchema: {entry}"
    checked = {name for name, entry in report["calls"].items() if entry["schemaErrors"] == []}
    assert {"ocr_book", "list_books", "book_status", "get_page", "search_book"} <= checked
    assert "§1.1 Magnitudes [definition]" in report["calls"]["search_book"]["text"]
    assert report["calls"]["ocr_book"]["hasStructured"]
    assert report["calls"]["estimate_ocr"]["text"].startswith("1 book(s), 5 page(s)\n5 page(s) on 1 x A100")
