"""What a search returns (the shape both the CLI and the MCP server hand on)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from server.search.query import QueryGroup
from server.search.snippets import make_snippet


@dataclass
class SearchHit:
    book: str
    page: int
    label: str | None
    score: float
    snippet: str  # matched words marked with **…** ('' until made, for a search asked for none)
    section: str | None = None  # the contents entry the page falls in: "§2.3.3 Summary"
    defines: str | None = None  # "heading" (a heading names the query) | "definition" (a sentence defines it)
    text: str = field(default="", repr=False, compare=False)  # the page as indexed (for promotion; not handed on)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("text")
        return data


@dataclass
class SearchResponse:
    query: str
    total: int
    offset: int
    limit: int
    elapsed_ms: float
    hits: list[SearchHit]
    groups: list[QueryGroup] = field(default_factory=list, repr=False, compare=False)  # as matched, for snippets

    def make_snippets(self, hits: list[SearchHit]) -> None:
        """Snippets for hits of a search made without them (the hits a caller keeps of many ranked)."""
        for hit in hits:
            if not hit.snippet:
                hit.snippet = make_snippet(hit.text, self.groups)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "elapsed_ms": self.elapsed_ms,
            "hits": [hit.as_dict() for hit in self.hits],
        }
