"""The MCP server through the SDK's in-memory client: tools, background OCR, progress, errors, safety."""

from __future__ import annotations

import base64
import functools
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pymupdf
import pytest
from mcp import Client
from mcp.types import CallToolResult
from PIL import Image

from ocr_backend.engines import PageInput, PageResult
from ocr_backend.engines.text_layer import TextLayerEngine
from server import cli
from server.corpus import Corpus
from server.jobs import JobManager
from server.library import Library
from server.mcp_server import MAX_RANGE_CHARS, create_server
from server.runner import ocr_book, run_plan
from server.safety import InputPolicy, default_roots
from server.sample_book import SAMPLE_PAGES, make_sample_book
from tests.conftest import numbered_text_pdf

pytestmark = pytest.mark.anyio

READ_TOOLS = {"list_books", "book_status", "get_page", "search_book", "get_page_image", "get_contents"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Shelf:
    books: Path  # the one folder the server may read
    corpus: Corpus
    policy: InputPolicy


@pytest.fixture
def library(tmp_path: Path) -> Shelf:
    books = tmp_path / "books"
    books.mkdir()
    return Shelf(books, Corpus(tmp_path / "corpus"), InputPolicy(roots=[books]))


@pytest.fixture
async def client(library: Shelf) -> AsyncIterator[Client]:
    async with Client(create_server(Library(library.corpus), library.policy)) as c:
        yield c


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def call_ok(c: Client, tool: str, **args: object) -> CallToolResult:
    result = await c.call_tool(tool, args)
    assert not result.is_error, text_of(result)
    return result


async def call_error(c: Client, tool: str, **args: object) -> str:
    result = await c.call_tool(tool, args)
    assert result.is_error, f"{tool}({args}) should have failed: {text_of(result)}"
    return text_of(result)


async def wait_until_done(c: Client, book: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = (await call_ok(c, "book_status", book=book)).structured_content
        if status["state"] not in ("queued", "running"):
            return status
        assert time.monotonic() < deadline, f"{book} did not finish: {status}"
        await anyio.sleep(0.2)


class SlowTextEngine(TextLayerEngine):
    """The text-layer engine at a scan-like pace: makes a 'long book' in a test."""

    name = ""  # not registered

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[int] = []

    def recognize(self, page: PageInput) -> PageResult:
        self.calls.append(page.number)
        time.sleep(self.seconds)
        return super().recognize(page)


# --- tools --------------------------------------------------------------------------------
async def test_tools_resources_and_truthful_annotations(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert READ_TOOLS | {"ocr_book"} <= set(tools)
    for name in set(tools) - {"ocr_book"}:
        a = tools[name].annotations
        assert a.read_only_hint and a.idempotent_hint and not a.open_world_hint, name
    ocr = tools["ocr_book"].annotations
    assert not ocr.read_only_hint and not ocr.destructive_hint and ocr.idempotent_hint
    assert "page" in tools["get_page"].output_schema["properties"]
    assert "hits" in tools["search_book"].output_schema["properties"]
    for tool in tools.values():
        assert len(tool.description) > 80, f"{tool.name} needs a description an LLM can act on"
    templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert templates == {"book://{book}/page/{n}", "book://{book}/document"}


async def test_text_book_round_trip(client: Client, library: Shelf) -> None:
    pdf = numbered_text_pdf(library.books / "Stats Notes.pdf", 5)
    status = (await call_ok(client, "ocr_book", path=str(pdf), engine="text-layer")).structured_content
    assert status["book"] == "stats-notes" and status["state"] == "complete" and status["done"] == 5
    assert "get_page" in status["message"]

    page = await call_ok(client, "get_page", book="stats-notes", page=2)
    assert "This is page number 2 of the test book" in text_of(page)
    assert not text_of(page).startswith('"'), "markdown must come as plain text, not a JSON string"
    meta = page.structured_content
    assert (meta["page"], meta["previous_page"], meta["next_page"], meta["status"]) == (2, 1, 3, "ok")
    assert meta["engine"] == "text-layer" and meta["page_count"] == 5

    last = (await call_ok(client, "get_page", book="stats-notes", page=5)).structured_content
    assert last["next_page"] is None

    whole = await call_ok(client, "get_page", book="stats-notes", page=2, to_page=4)
    text = text_of(whole)
    assert [f"page number {n} " in text for n in (1, 2, 3, 4, 5)] == [False, True, True, True, False]
    assert "<!-- page 3 -->" in text and whole.structured_content["to_page"] == 4

    found = (await call_ok(client, "search_book", query="word4x7", book="stats-notes")).structured_content
    assert found["hits"][0]["page"] == 4 and found["hits"][0]["book"] == "stats-notes"

    listed = (await call_ok(client, "list_books")).structured_content
    assert [b["book"] for b in listed["books"]] == ["stats-notes"]
    assert listed["books"][0]["source"] == "Stats Notes.pdf"

    resource = await client.read_resource("book://stats-notes/page/3")
    assert "page number 3 of the test book" in resource.contents[0].text
    document = (await client.read_resource("book://stats-notes/document")).contents[0].text
    assert document.index("<!-- page 1 -->") < document.index("<!-- page 5 -->")

    image = await call_ok(client, "get_page_image", book="stats-notes", page=1)
    picture = Image.open(io.BytesIO(base64.b64decode(image.content[0].data)))
    assert image.content[0].mime_type == "image/jpeg" and max(picture.size) == 1280


async def test_scanned_book_runs_in_background(client: Client, library: Shelf) -> None:
    scan = make_sample_book(library.books / "bayes-scan.pdf", SAMPLE_PAGES[:1])  # one page: local OCR is slow here
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    started = time.monotonic()
    first = await client.call_tool("ocr_book", {"path": str(scan)}, progress_callback=on_progress)
    assert not first.is_error, text_of(first)
    assert time.monotonic() - started < 5.0
    assert first.structured_content["engine"] == "auto" and first.structured_content["pages"] == 1
    assert progress and progress[0][1] == 1

    status = await wait_until_done(client, "bayes-scan")
    assert status["state"] == "complete" and status["done"] == 1, status
    page = await call_ok(client, "get_page", book="bayes-scan", page=1)
    assert "posterior distribution" in text_of(page).lower()
    hits = (await call_ok(client, "search_book", query="marginal likelihood")).structured_content["hits"]
    assert hits and (hits[0]["book"], hits[0]["page"]) == ("bayes-scan", 1)

    again = time.monotonic()
    repeat = (await call_ok(client, "ocr_book", path=str(scan))).structured_content
    assert repeat["state"] == "complete" and time.monotonic() - again < 1.0


async def test_long_book_never_blocks_and_serves_readers_meanwhile(library: Shelf) -> None:
    """A book too long for one call: ocr_book returns while it runs, reports progress, and the
    server answers 50 concurrent reads (of another book) without an error while the job runs."""
    slow_run = functools.partial(run_plan, engine=SlowTextEngine(0.05))
    server = create_server(
        Library(library.corpus, JobManager(library.corpus, run=slow_run)), library.policy, wait_s=0.6
    )
    long_pdf = numbered_text_pdf(library.books / "long.pdf", 40)
    other = numbered_text_pdf(library.books / "other.pdf", 10)
    async with Client(server) as c:
        await call_ok(c, "ocr_book", path=str(other))
        assert (await wait_until_done(c, "other"))["state"] == "complete"

        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        started = time.monotonic()
        result = await c.call_tool("ocr_book", {"path": str(long_pdf)}, progress_callback=on_progress)
        status = result.structured_content
        assert time.monotonic() - started < 2.0
        assert status["state"] == "running" and 0 < status["done"] < 40, status
        assert len(progress) >= 2 and progress == sorted(set(progress)), "progress values must increase"
        assert "book_status" in status["message"]

        again = (await call_ok(c, "ocr_book", path=str(long_pdf))).structured_content
        assert again["state"] == "running", "a second call reports on the running job"
        pending = await call_ok(c, "get_page", book="long", page=40)
        assert pending.structured_content["status"] == "pending" and "not reached" in text_of(pending)

        assert await _concurrent_reads(c, calls=50) == []
        assert (await call_ok(c, "book_status", book="long")).structured_content["state"] in ("running", "complete")

        status = await wait_until_done(c, "long")
        assert status["state"] == "complete" and status["done"] == 40


async def _concurrent_reads(c: Client, calls: int) -> list[str]:
    errors: list[str] = []

    async def one(i: int) -> None:
        page = 1 + i % 10
        if i % 2:
            result = await c.call_tool("get_page", {"book": "other", "page": page})
            ok = f"page number {page} " in text_of(result)
        else:
            result = await c.call_tool("search_book", {"query": f"word{page}x3", "book": "other"})
            ok = not result.is_error and result.structured_content["hits"][0]["page"] == page
        if result.is_error or not ok:
            errors.append(text_of(result))

    async with anyio.create_task_group() as tg:
        for i in range(calls):
            tg.start_soon(one, i)
    return errors


async def test_a_run_stopped_with_the_server_resumes_where_it_stopped(library: Shelf) -> None:
    engine = SlowTextEngine(0.05)
    pdf = numbered_text_pdf(library.books / "resumable.pdf", 20)

    def server() -> object:
        jobs = JobManager(library.corpus, run=functools.partial(run_plan, engine=engine))
        return create_server(Library(library.corpus, jobs), library.policy, wait_s=0.3)

    async with Client(server()) as c:
        first = (await call_ok(c, "ocr_book", path=str(pdf))).structured_content
        assert first["state"] == "running"
    # the server stopped: its job stopped after the page in hand, keeping what was done
    stopped = Library(library.corpus).status("resumable")
    assert 0 < stopped.done < 20 and stopped.state == "incomplete"
    async with Client(server()) as c:
        status = (await call_ok(c, "book_status", book="resumable")).structured_content
        assert status["state"] == "incomplete" and "resume" in status["message"]
        await call_ok(c, "ocr_book", path=str(pdf))
        assert (await wait_until_done(c, "resumable"))["done"] == 20
    assert sorted(engine.calls) == list(range(1, 21)), "no page was done twice"


async def test_page_image_of_a_source_outside_the_roots(client: Client, library: Shelf, tmp_path: Path) -> None:
    elsewhere = numbered_text_pdf(tmp_path / "elsewhere.pdf", 2)
    ocr_book(library.corpus, elsewhere)  # made with the CLI, from a folder the server may not read
    assert (await call_ok(client, "get_page", book="elsewhere", page=1)).structured_content["status"] == "ok"
    message = await call_error(client, "get_page_image", book="elsewhere", page=1)
    assert "outside the folders" in message and "get_page" in message


async def test_range_is_capped_and_says_where_to_continue(client: Client, library: Shelf) -> None:
    pdf = dense_pdf(library.books / "dense.pdf", 12)  # about 7k characters a page
    await call_ok(client, "ocr_book", path=str(pdf), engine="text-layer")
    assert "pages 1-12" in await call_error(
        client, "get_page", book="dense", page=2, to_page=50
    )  # past the end: the range
    result = await call_ok(client, "get_page", book="dense", page=2, to_page=12)
    meta = result.structured_content
    assert meta["truncated"] and meta["continue_from"] == meta["to_page"] + 1
    assert len(text_of(result)) < MAX_RANGE_CHARS + 2000
    assert f'get_page(book="dense", page={meta["continue_from"]}, to_page=12)' in text_of(result)
    rest = (await call_ok(client, "get_page", book="dense", page=meta["continue_from"], to_page=12)).structured_content
    assert rest["to_page"] <= 12


def dense_pdf(path: Path, pages: int) -> Path:
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=432, height=648)
        page.insert_textbox(pymupdf.Rect(20, 20, 412, 628), " ".join(f"p{n}w{i}" for i in range(900)), fontsize=5)
    doc.save(path)
    return path


# --- errors and safety ----------------------------------------------------------------------
async def test_errors_tell_the_model_what_to_do(client: Client, library: Shelf, tmp_path: Path) -> None:
    pdf = numbered_text_pdf(library.books / "known.pdf", 3)
    await call_ok(client, "ocr_book", path=str(pdf), engine="text-layer")

    assert "books: known" in await call_error(client, "get_page", book="nope", page=1)
    assert "books: known" in await call_error(client, "book_status", book="nope")
    assert "pages 1-3" in await call_error(client, "get_page", book="known", page=0)
    assert "pages 1-3" in await call_error(client, "get_page", book="known", page=4)
    assert "pages 1-3" in await call_error(client, "get_page_image", book="known", page=9)
    assert "before it starts" in await call_error(client, "get_page", book="known", page=3, to_page=2)
    for bad in ("../known", "../../etc/passwd", "known/../x", "Known"):
        assert "invalid book id" in await call_error(client, "get_page", book=bad, page=1)
    assert "invalid book id" in await call_error(client, "ocr_book", path=str(pdf), book="../escape")
    assert not (tmp_path / "escape").exists()
    assert "query" in await call_error(client, "search_book", query="  ")
    assert "limit" in await call_error(client, "search_book", query="x", limit=500)

    outside = numbered_text_pdf(tmp_path / "outside.pdf", 1)
    message = await call_error(client, "ocr_book", path=str(outside))
    assert "outside the folders this server may read" in message and "--allow" in message
    (library.books / "link.pdf").symlink_to(outside)
    assert "links to" in await call_error(client, "ocr_book", path=str(library.books / "link.pdf"))
    assert "outside" in await call_error(client, "ocr_book", path=str(library.books / ".." / "outside.pdf"))
    pages = library.books / "pages"
    pages.mkdir()
    Image.new("L", (400, 600), 255).save(tmp_path / "secret.png")
    (pages / "p1.png").symlink_to(tmp_path / "secret.png")
    assert "links to" in await call_error(client, "ocr_book", path=str(pages))

    (library.books / "notes.txt").write_text("not a book\n")
    assert "neither a PDF nor an image" in await call_error(client, "ocr_book", path=str(library.books / "notes.txt"))
    (library.books / "fake.pdf").write_bytes(b"%PDF-1.7 truncated")
    assert "not a readable PDF" in await call_error(client, "ocr_book", path=str(library.books / "fake.pdf"))
    assert "no such file" in await call_error(client, "ocr_book", path=str(library.books / "missing.pdf"))
    assert "unknown engine" in await call_error(client, "ocr_book", path=str(pdf), engine="magic")
    assert "outside 1-3" in await call_error(client, "ocr_book", path=str(pdf), pages="2-9")
    other = numbered_text_pdf(library.books / "other.pdf", 2)
    assert "give another book id" in await call_error(client, "ocr_book", path=str(other), book="known")

    library.policy.max_bytes = 1 << 20
    (library.books / "huge.pdf").write_bytes(b"%PDF-1.7\n" + bytes(2 << 20))
    assert "limit of 1 MB" in await call_error(client, "ocr_book", path=str(library.books / "huge.pdf"))
    assert sorted(library.corpus.book_ids()) == ["known"], "failed calls must leave nothing behind"


async def test_book_locked_by_another_process_is_reported(client: Client, library: Shelf) -> None:
    pdf = numbered_text_pdf(library.books / "shared.pdf", 3)
    await call_ok(client, "ocr_book", path=str(pdf), engine="text-layer", pages="1")
    with library.corpus.lock("shared"):  # what a `bookocr ocr` in another process holds
        status = (await call_ok(client, "ocr_book", path=str(pdf), engine="text-layer")).structured_content
        assert status["state"] == "running-elsewhere" and "another bookocr process" in status["message"]
        assert (await call_ok(client, "get_page", book="shared", page=1)).structured_content["status"] == "ok"
    status = (await call_ok(client, "ocr_book", path=str(pdf), engine="text-layer")).structured_content
    assert status["state"] == "complete" and status["done"] == 3


async def test_resources_refuse_bad_names(client: Client, library: Shelf) -> None:
    pdf = numbered_text_pdf(library.books / "r.pdf", 2)
    await call_ok(client, "ocr_book", path=str(pdf), engine="text-layer")
    for uri in ("book://r/page/0", "book://r/page/3", "book://r/page/x", "book://nope/document", "book://R/document"):
        with pytest.raises(Exception) as err:
            await client.read_resource(uri)
        assert "pages 1-2" in str(err.value) or "book" in str(err.value), uri


def test_default_roots_never_allow_the_filesystem_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir("/")
    assert Path("/") not in default_roots()
    monkeypatch.chdir(tmp_path)
    assert tmp_path.resolve() in [p.resolve() for p in default_roots()]
    policy = InputPolicy.from_options([str(tmp_path)])
    assert policy.roots == [tmp_path.resolve()], "--allow replaces the defaults"


def test_mcp_config_prints_a_ready_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--corpus", str(tmp_path / "lib"), "mcp-config", "--allow", str(tmp_path)]) == 0
    config = json.loads(capsys.readouterr().out)
    entry = config["mcpServers"]["bookocr"]
    assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
    args = entry["args"]
    assert args[args.index("--corpus") + 1] == str((tmp_path / "lib").resolve())
    assert "serve" in args and args[args.index("--allow") + 1] == str(tmp_path.resolve())
