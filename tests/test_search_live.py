"""The index lives beside running OCR jobs: pages land while readers search; it can be lost or broken and rebuilt."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from ocr_backend.engines.base import PageResult
from server.cli import main
from server.corpus import Book, Corpus
from server.runner import RunOptions, ocr_book
from server.search import SearchIndex, search_library
from tests.conftest import numbered_text_pdf
from tests.test_search import make_book


def test_a_book_is_searchable_while_its_ocr_runs(corpus: Corpus, tmp_path: Path) -> None:
    pdf = numbered_text_pdf(tmp_path / "live.pdf", 6, words=20)
    seen: list[tuple[int, list[int]]] = []

    def search_as_pages_land(book: Book, result: PageResult) -> None:
        found = search_library(corpus, f"word{result.number}x3").hits
        seen.append((result.number, [hit.page for hit in found]))

    ocr_book(corpus, pdf, RunOptions(book="live", engine="text-layer"), listeners=[search_as_pages_land])
    assert seen == [(n, [n]) for n in range(1, 7)]  # the index listener runs first: each page is found as it lands
    assert search_library(corpus, "word6x19").hits[0].page == 6  # and no reindex is needed after the run


def test_a_rerun_that_replaces_a_book_drops_its_old_pages(corpus: Corpus, tmp_path: Path) -> None:
    ocr_book(corpus, numbered_text_pdf(tmp_path / "a.pdf", 5, words=5), RunOptions(book="swap", engine="text-layer"))
    assert search_library(corpus, "word5x1").total == 1
    ocr_book(
        corpus,
        numbered_text_pdf(tmp_path / "b.pdf", 2, words=7),
        RunOptions(book="swap", engine="text-layer", replace=True),
    )
    found = search_library(corpus, "word5x1").hits  # near spellings (word1x1, word2x1) of the new pages may match
    assert [hit.page for hit in found if hit.page > 2 or "word5" in hit.snippet] == []
    assert search_library(corpus, "word2x6").total == 1


def test_concurrent_readers_while_a_writer_adds_pages(corpus: Corpus) -> None:
    index = SearchIndex(corpus)
    errors: list[BaseException] = []
    totals: dict[int, list[int]] = {}
    done = threading.Event()

    def writer() -> None:
        try:
            for n in range(1, 121):
                index.add_page("growing", n, f"page {n} talks about the shared topic zebra and item{n}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader(key: int) -> None:
        try:
            while not done.is_set():
                totals.setdefault(key, []).append(search_library(corpus, "zebra topic", limit=5).total)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert all(seq == sorted(seq) for seq in totals.values())  # each reader sees the book only grow
    assert search_library(corpus, "zebra").total == 120
    assert search_library(corpus, "item117").hits[0].page == 117


def test_reindex_from_files_after_the_index_is_deleted(corpus: Corpus) -> None:
    make_book(corpus, "kept", ["alpha page about lions", "beta page about tigers", "gamma page about bears"])
    index = SearchIndex(corpus)
    for path in corpus.root.glob("index.sqlite*"):
        path.unlink()
    assert index.reindex() == 3
    assert search_library(corpus, "tigers").hits[0].page == 2
    assert index.reindex("kept") == 3


def test_search_rebuilds_a_missing_index_by_itself(corpus: Corpus) -> None:
    make_book(corpus, "kept", ["alpha page about lions", "beta page about tigers"])
    for path in corpus.root.glob("index.sqlite*"):
        path.unlink()
    assert search_library(corpus, "lions").hits[0].page == 1


def test_a_garbage_index_file_is_moved_aside_and_rebuilt(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    make_book(corpus, "kept", ["alpha page about lions", "beta page about tigers"])
    index = SearchIndex(corpus)
    for path in corpus.root.glob("index.sqlite*"):
        path.unlink()
    (corpus.root / "index.sqlite").write_bytes(b"this is not a database at all" * 100)
    index._shared.ready_inode = None  # as a fresh process would find it
    assert search_library(corpus, "tigers").hits[0].page == 2
    assert (
        "not a usable bookocr search index" in caplog.text and "rebuilt it from the .mmd files (2 pages)" in caplog.text
    )
    assert len(list(corpus.root.glob("index.sqlite.bad-*"))) == 1


def test_an_index_corrupted_under_a_running_server_is_rebuilt(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    make_book(corpus, "kept", ["alpha page about lions", "beta page about tigers"])
    assert search_library(corpus, "lions").total == 1
    path = corpus.root / "index.sqlite"
    SearchIndex(corpus)._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as fh:  # same file, same inode: the open connections must notice
        fh.write(b"\0garbage!" * 2000)
    assert search_library(corpus, "tigers").hits[0].page == 2
    assert "rebuilt it" in caplog.text


def test_a_foreign_sqlite_file_is_not_used(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    make_book(corpus, "kept", ["alpha page about lions"])
    for path in corpus.root.glob("index.sqlite*"):
        path.unlink()
    foreign = sqlite3.connect(corpus.root / "index.sqlite")
    foreign.execute("CREATE TABLE recipes(name TEXT)")
    foreign.commit()
    foreign.close()
    SearchIndex(corpus)._shared.ready_inode = None
    assert search_library(corpus, "lions").total == 1
    assert "no such table: meta" in caplog.text
    moved = list(corpus.root.glob("index.sqlite.bad-*"))
    assert len(moved) == 1 and sqlite3.connect(moved[0]).execute("SELECT count(*) FROM recipes").fetchone() == (0,)


def test_a_book_made_before_indexing_is_picked_up(corpus: Corpus, tmp_path: Path) -> None:
    ocr_book(
        corpus,
        numbered_text_pdf(tmp_path / "old.pdf", 3, words=4),
        RunOptions(book="old", engine="text-layer", search_index=False),
    )
    assert search_library(corpus, "word2x1").hits[0].book == "old"  # the first search of a process syncs it


def test_cli_search_and_reindex(corpus: Corpus, capsys: pytest.CaptureFixture[str]) -> None:
    make_book(corpus, "cli", ["The conjugate prior for the rate.", "Another page about the rate."])
    assert main(["--corpus", str(corpus.root), "search", "conjugate", "prior", "--json", "--limit", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 1 and data["hits"][0]["page"] == 1 and data["elapsed_ms"] > 0
    assert main(["--corpus", str(corpus.root), "search", "rate", "--offset", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('2 page(s) match "rate" (showing 2-2;') and "  2. cli page" in out
    assert main(["--corpus", str(corpus.root), "--json", "reindex"]) == 0
    assert json.loads(capsys.readouterr().out)["pages"] == 2
    assert main(["--corpus", str(corpus.root), "search", "x", "--book", "nope"]) == 2
    assert "books: cli" in capsys.readouterr().err


def test_an_index_made_by_an_older_normalisation_is_rebuilt(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    make_book(corpus, "kept", ["alpha page about lions"])
    index = SearchIndex(corpus)
    index._conn().execute("UPDATE meta SET value='0' WHERE key='normalizer'")
    index._shared.ready_inode = None  # as the next process to open it would
    assert search_library(corpus, "lions").total == 1
    assert "another text normalisation" in caplog.text
    assert index._conn().execute("SELECT value FROM meta WHERE key='normalizer'").fetchone()[0] != "0"


def test_a_full_reindex_drops_books_that_are_gone(corpus: Corpus) -> None:
    make_book(corpus, "kept", ["alpha page about lions"])
    make_book(corpus, "gone", ["beta page about lions"])
    SearchIndex(corpus).add_page("loose", 1, "lions without a manifest")
    assert search_library(corpus, "lions").total == 3
    for path in sorted((corpus.root / "gone").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (corpus.root / "gone").rmdir()
    assert SearchIndex(corpus).reindex() == 1
    assert [hit.book for hit in search_library(corpus, "lions").hits] == ["kept"]
    assert SearchIndex(corpus).book_ids() == ["kept"]


def test_the_page_count_follows_every_write(corpus: Corpus) -> None:
    make_book(corpus, "kept", ["one", "two", "three"])
    index = SearchIndex(corpus)
    index.add_page("loose", 1, "four")
    index.add_page("loose", 1, "four again")
    index.remove_page("kept", 2)
    actual = index._conn().execute("SELECT count(*) FROM pages").fetchone()[0]
    assert index.page_count() == actual == 3
    assert index.reindex() == 3 and index.page_count() == 3
