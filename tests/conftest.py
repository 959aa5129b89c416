"""Shared fixtures: every test makes its own books (nothing is read from ../shared)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pymupdf
import pytest

from server.corpus import Corpus
from server.sample_book import SamplePage, make_sample_book, typeset_pdf


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's recorded deployment (~/.config/bookocr)."""
    monkeypatch.setenv("BOOKOCR_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return Corpus(tmp_path / "corpus")


def numbered_text_pdf(path: Path, pages: int, words: int = 60) -> Path:
    """A born-digital PDF whose page N says which page it is (fast to make, any size)."""
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=432, height=648)
        body = f"This is page number {n} of the test book. " + " ".join(f"word{n}x{i}" for i in range(words))
        page.insert_textbox(pymupdf.Rect(54, 60, 378, 600), body, fontsize=11)
    doc.save(path)
    doc.close()
    return path


@pytest.fixture
def text_pdf(tmp_path: Path) -> Path:
    return numbered_text_pdf(tmp_path / "Born Digital.pdf", 5)


@pytest.fixture(scope="session")
def scanned_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_book(tmp_path_factory.mktemp("scan") / "sample-scan.pdf")


@pytest.fixture
def two_page_typeset(tmp_path: Path) -> Path:
    pages = [
        SamplePage(heading="Alpha", paragraphs=["The first page talks about priors."]),
        SamplePage(heading="Beta", paragraphs=["The second page talks about posteriors."]),
    ]
    return typeset_pdf(tmp_path / "two.pdf", pages)


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under root with a hash of its bytes, to prove a failed run changed nothing."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
