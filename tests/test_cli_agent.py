"""CLI rough edges of issue 15: status for people, search --defined with sections, list naming its folder,
mcp-config warning about missing --allow folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.corpus import Corpus
from tests.test_cli import run
from tests.test_search import make_book
from tests.test_sections import BOOK


def test_status_reads_as_text(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    make_book(corpus, "geo", BOOK)
    code, out, _ = run(capsys, "--corpus", str(corpus.root), "status", "geo")
    assert code == 0
    assert re.search(r"^updated: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", out, re.M), out
    assert "engines_used: text-layer" in out and "[" not in out


def test_search_defined_shows_sections(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    make_book(corpus, "geo", BOOK, labels=["11", "12", "13", "14"])
    code, out, _ = run(capsys, "--corpus", str(corpus.root), "search", "vector", "--defined", "--limit", "1")
    assert code == 0 and 'geo page 2 printed="12" §1.1 Magnitudes [definition]' in out
    code, out, _ = run(capsys, "--corpus", str(corpus.root), "search", '"a direction"')
    assert 'match "a direction" (' in out  # the phrase's own quotes, not doubled


def test_empty_list_names_the_corpus_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--corpus", str(tmp_path / "shelf"), "list")
    assert code == 0 and str((tmp_path / "shelf").resolve()) in out


def test_mcp_config_warns_about_a_missing_allow_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--corpus", str(tmp_path), "mcp-config", "--allow", str(tmp_path / "nope"))
    assert code == 0 and "no such folder" in err and str(tmp_path / "nope") in err
    _, _, err = run(capsys, "--corpus", str(tmp_path), "mcp-config", "--allow", str(tmp_path))
    assert "no such folder" not in err
