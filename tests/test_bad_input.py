"""Every kind of bad input gets a specific error and leaves the corpus exactly as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from ocr_backend.errors import InputError
from server.corpus import Corpus
from server.runner import RunOptions, ocr_book
from tests.conftest import numbered_text_pdf, tree_snapshot


@pytest.fixture
def populated(corpus: Corpus, tmp_path: Path) -> Corpus:
    """A corpus that already holds one book, so 'unchanged' means something."""
    ocr_book(corpus, numbered_text_pdf(tmp_path / "existing.pdf", 2), RunOptions(engine="text-layer"))
    return corpus


def _encrypted(tmp: Path) -> Path:
    src = numbered_text_pdf(tmp / "plain.pdf", 2)
    with pymupdf.open(src) as doc:
        doc.save(tmp / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    return tmp / "locked.pdf"


def _truncated(tmp: Path) -> Path:
    data = numbered_text_pdf(tmp / "whole.pdf", 3).read_bytes()
    path = tmp / "truncated.pdf"
    path.write_bytes(data[: len(data) // 2])
    return path


def _zero_pages(tmp: Path) -> Path:
    path = tmp / "zero.pdf"
    path.write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    return path


def _garbage_pdf(tmp: Path) -> Path:
    path = tmp / "garbage.pdf"
    path.write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    return path


def _not_a_book(tmp: Path) -> Path:
    path = tmp / "notes.docx"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a page" * 10)
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.pdf"
    path.write_bytes(b"")
    return path


def _huge_page(tmp: Path) -> Path:
    doc = pymupdf.open()
    doc.new_page(width=20000, height=20000)
    doc.save(tmp / "huge.pdf")
    return tmp / "huge.pdf"


def _tiny_page(tmp: Path) -> Path:
    doc = pymupdf.open()
    doc.new_page(width=5, height=5)
    doc.save(tmp / "tiny.pdf")
    return tmp / "tiny.pdf"


def _bomb(tmp: Path) -> Path:
    path = tmp / "bomb.png"
    Image.new("1", (16000, 16000), 1).save(path)  # 256 MP, a few KB on disk
    return path


def _missing(tmp: Path) -> Path:
    return tmp / "does-not-exist.pdf"


def _empty_folder(tmp: Path) -> Path:
    folder = tmp / "nothing-here"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images")
    return folder


CASES = {
    "encrypted": (_encrypted, "password-protected"),
    "truncated": (_truncated, "truncated or corrupt"),
    "zero pages": (_zero_pages, "no pages"),
    "garbage with a PDF header": (_garbage_pdf, "PDF"),
    "neither PDF nor image": (_not_a_book, "neither a PDF nor an image"),
    "empty file": (_empty, "empty"),
    "absurd page size": (_huge_page, "outside the sane range"),
    "tiny page size": (_tiny_page, "outside the sane range"),
    "decompression bomb": (_bomb, "too large"),
    "missing": (_missing, "no such file"),
    "folder without images": (_empty_folder, "no page images"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_and_corpus_untouched(case: str, populated: Corpus, tmp_path: Path) -> None:
    make, message = CASES[case]
    source = make(tmp_path)
    before = tree_snapshot(populated.root)
    with pytest.raises(InputError, match=message):
        ocr_book(populated, source, RunOptions(engine="auto"))
    assert tree_snapshot(populated.root) == before
    assert populated.book_ids() == ["existing"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(populated: Corpus, tmp_path: Path) -> None:
    path = numbered_text_pdf(tmp_path / "secret.pdf", 1)
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        ocr_book(populated, path)


def test_unreadable_directory_entry_as_file(populated: Corpus, tmp_path: Path) -> None:
    """A path that exists but cannot be read as a file (a FIFO, say) fails fast with a message."""
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    before = tree_snapshot(populated.root)
    with pytest.raises(InputError, match="not a regular file"):
        ocr_book(populated, fifo)
    assert tree_snapshot(populated.root) == before


def test_bad_book_id_is_refused(populated: Corpus, tmp_path: Path) -> None:
    pdf = numbered_text_pdf(tmp_path / "ok.pdf", 1)
    before = tree_snapshot(populated.root)
    for bad in ("../escape", "a/b", ".hidden", "UPPER", "x" * 101):
        with pytest.raises(Exception, match="invalid book id"):
            ocr_book(populated, pdf, RunOptions(book=bad))
    assert tree_snapshot(populated.root) == before
