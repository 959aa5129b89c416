"""What a search returns (the shape both the CLI and the MCP server hand on)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class SearchHit:
    book: str
    page: int
    label: str | None
    score: float
    snippet: str  # matched words marked with **…**
    section: str | None = None  # the contents entry the page falls in: "§2.3.3 Summary"
    defines: str | None = None  # "heading" (a heading names the query) | "definition" (a sentence defines it)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResponse:
    query: str
    total: int
    offset: int
    limit: int
    elapsed_ms: float
    hits: list[SearchHit]

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "elapsed_ms": self.elapsed_ms,
            "hits": [hit.as_dict() for hit in self.hits],
        }
