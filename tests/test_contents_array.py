"""A page whose /Contents names an array object (``/Contents 459 0 R`` -> ``[29 0 R]``, as bws_book_ch2.pdf has)
is a sound page, not a truncated file."""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf

from ocr_backend.sources import open_source


def test_contents_held_in_an_indirect_array_is_not_damage(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Mathematical induction, and so on.")
    streams = [int(ref) for ref in re.findall(r"(\d+) 0 R", doc.xref_get_key(page.xref, "Contents")[1])]
    array = doc.get_new_xref()
    doc.update_object(array, "[" + " ".join(f"{ref} 0 R" for ref in streams) + "]")
    doc.xref_set_key(page.xref, "Contents", f"{array} 0 R")
    path = tmp_path / "array.pdf"
    doc.save(path)
    with open_source(path) as source:
        assert source.info.page_count == 1
