"""What an agent gets from the MCP server (issue 15): compact text, full records in structuredContent, ranges by
printed page, sections and definitions in search, clean argument errors, the version, a resource per book."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from mcp import Client

from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server, package_version
from tests.test_mcp import call_error, call_ok, text_of
from tests.test_search import FILLER, make_book
from tests.test_sections import BOOK

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(corpus: Corpus) -> AsyncIterator[Client]:
    make_book(corpus, "geo", BOOK, labels=["11", "12", "13", "14"])
    make_book(corpus, "proofs", [FILLER + ' The "proof by induction" has two steps; by then induction is clear.'])
    async with Client(create_server(Library(corpus))) as c:
        yield c


async def test_status_and_list_are_a_line_or_two_with_the_record_structured(client: Client) -> None:
    status = await call_ok(client, "book_status", book="geo")
    assert len(text_of(status).splitlines()) <= 2 and text_of(status).startswith("geo: complete")
    assert status.structured_content["done"] == 4 and "engines_used" in status.structured_content

    listed = await call_ok(client, "list_books", limit=1)
    assert len(text_of(listed).splitlines()) <= 2 and "2 complete" in text_of(listed)
    data = listed.structured_content
    assert (data["total"], data["next_offset"], [b["book"] for b in data["books"]]) == (2, 1, ["geo"])
    rest = (await call_ok(client, "list_books", limit=1, offset=1)).structured_content
    assert [b["book"] for b in rest["books"]] == ["proofs"] and rest["next_offset"] is None
    assert "limit must be" in await call_error(client, "list_books", limit=0)


async def test_a_range_by_printed_page_and_a_range_past_the_end(client: Client) -> None:
    read = await call_ok(client, "get_page", book="geo", printed="12", to_printed="13")
    meta = read.structured_content
    assert (meta["page"], meta["to_page"], meta["section"]) == (2, 3, "§1.1 Magnitudes")
    assert "§1.1 Magnitudes" in text_of(read).splitlines()[0]
    past = await call_error(client, "get_page", book="geo", page=2, to_page=40)
    assert "1-4" in past or "1 to 4" in past or "4 pages" in past
    assert "not both" in await call_error(client, "get_page", book="geo", page=1, to_page=2, to_printed="12")


async def test_search_shows_sections_definitions_and_phrases(client: Client) -> None:
    found = await call_ok(client, "search_book", query="vector", book="geo", defined=True)
    top = found.structured_content["hits"][0]
    assert (top["page"], top["defines"], top["section"]) == (2, "definition", "§1.1 Magnitudes")
    assert "§1.1 Magnitudes [definition]" in text_of(found)

    phrase = await call_ok(client, "search_book", query='"proof by induction"')
    assert text_of(phrase).startswith('1 page(s) match "proof by induction";')  # the query's own quotes, once
    assert "**proof by induction**" in phrase.structured_content["hits"][0]["snippet"]


async def test_argument_errors_are_one_plain_line(client: Client) -> None:
    message = await call_error(client, "get_page", book="geo", page="two")
    assert "page" in message and "http" not in message and "pydantic" not in message
    assert len(message.splitlines()) == 1


async def test_version_resources_and_a_lean_tools_list(client: Client) -> None:
    assert client.server_info.version == package_version() != ""
    resources = {r.uri: r for r in (await client.list_resources()).resources}
    assert {"book://geo/document", "book://proofs/document"} <= {str(uri) for uri in resources}
    tools = (await client.list_tools()).tools
    listing = json.dumps([t.model_dump(by_alias=True, exclude_none=True) for t in tools])
    # ~1,500 characters a tool: what an agent's context pays for the eight tools, every session
    assert '"title": "Book"' not in listing and len(listing) < 8 * 1_600
    schema = next(t for t in tools if t.name == "get_page").input_schema["properties"]
    assert {"page", "printed", "to_page", "to_printed"} <= set(schema)
