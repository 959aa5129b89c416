"""Books' page labels and done pages as their manifests say, cheap enough to ask on every search."""

from __future__ import annotations

import json
import os
from typing import Any

from server.corpus import DONE_STATUSES


class Manifests:
    """The manifests of one library's books, each parsed once and kept until its file changes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._cache: dict[str, tuple[tuple[int, int], dict[int, str | None], set[int]]] = {}

    def read(self, book: str) -> tuple[dict[int, str | None], set[int]] | None:
        """A book's page labels and done pages from its manifest, cached until the file changes."""
        path = os.path.join(self.root, book, "manifest.json")
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(book)
        if cached and cached[0] == key:
            return cached[1], cached[2]
        try:
            with open(path, encoding="utf-8") as fh:
                pages = json.load(fh)["pages"]
        except (OSError, ValueError, KeyError):
            return None
        labels = {n: meta.get("label") for n, meta in enumerate(pages, 1) if meta and meta.get("label")}
        done = set(done_pages(pages))
        self._cache[book] = (key, labels, done)
        return labels, done

    def label(self, book: str, page: int, indexed: str | None) -> str | None:
        found = self.read(book)
        if found is None:
            return indexed
        return found[0].get(page, indexed)


def done_pages(pages: list[dict[str, Any] | None]) -> list[int]:
    """Numbers of the pages a manifest lists as done."""
    return [n for n, meta in enumerate(pages, 1) if meta and meta.get("status") in DONE_STATUSES]
