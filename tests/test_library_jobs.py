"""Library jobs: many books in one run (CLI and MCP), resumable, with bad files and busy books reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client

from server.corpus import Corpus
from server.library import Library
from server.mcp_server import create_server
from server.runner import RunOptions, is_library_folder, shelf_entries
from server.safety import InputPolicy
from tests.conftest import numbered_text_pdf

BOOK_PAGES = {"alpha": 300, "beta": 300, "gamma": 300}


def _cli(corpus: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", "--corpus", str(corpus), *args]


def _shelf(folder: Path, pages: dict[str, int] = BOOK_PAGES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in pages.items():
        numbered_text_pdf(folder / f"{name}.pdf", count)
    return folder


def _done_pages(corpus: Path) -> int:
    done = 0
    for manifest in corpus.glob("*/manifest.json"):
        try:
            done += sum(1 for meta in json.loads(manifest.read_text())["pages"] if meta)
        except (OSError, ValueError):
            continue
    return done


def _tree(corpus: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(corpus)): p.read_bytes()
        for p in sorted(corpus.glob("*/pages/*")) + sorted(corpus.glob("*/document.mmd"))
    }


# --- ids ------------------------------------------------------------------------------------------
def test_colliding_names_get_predictable_ids(tmp_path: Path) -> None:
    for rel in ("a.pdf", "sub/a.pdf", "sub/deeper/A.PDF", "a-2.pdf", ".hidden/x.pdf", "z/b.pdf"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"%PDF-1.4")
    entries = shelf_entries([tmp_path])
    ids = {str(e.path.relative_to(tmp_path)): (e.book, e.renamed_from) for e in entries}
    assert ids == {
        "a-2.pdf": ("a-2", None),  # a file's own name wins over a renamed duplicate
        "a.pdf": ("a", None),
        "sub/a.pdf": ("a-3", "a"),
        "sub/deeper/A.PDF": ("a-4", "a"),
        "z/b.pdf": ("b", None),
    }
    assert shelf_entries([tmp_path]) == entries  # the same files, the same ids
    assert shelf_entries([tmp_path / "sub/a.pdf", tmp_path / "a.pdf"]) == shelf_entries(
        [tmp_path / "a.pdf", tmp_path / "sub/a.pdf"]
    )


def test_a_folder_of_pdfs_is_a_library_and_a_folder_of_images_is_a_book(tmp_path: Path) -> None:
    pdfs, images = tmp_path / "pdfs", tmp_path / "images"
    (pdfs / "sub").mkdir(parents=True)
    (pdfs / "sub" / "x.pdf").write_bytes(b"%PDF-1.4")
    images.mkdir()
    (images / "page1.png").write_bytes(b"png")
    (images / "notes.pdf").write_bytes(b"%PDF-1.4")
    assert is_library_folder(pdfs) and not is_library_folder(images) and not is_library_folder(pdfs / "sub/x.pdf")


def test_collisions_are_reported_by_the_cli(tmp_path: Path) -> None:
    books = tmp_path / "books"
    (books / "sub").mkdir(parents=True)
    numbered_text_pdf(books / "a.pdf", 2, words=5)
    numbered_text_pdf(books / "sub" / "a.pdf", 3, words=5)
    corpus = tmp_path / "corpus"
    for _ in range(2):
        result = subprocess.run(
            _cli(corpus, "ocr", "--library", str(books), "--engine", "text-layer"), capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "renamed" in result.stdout and "a-2" in result.stdout
    assert json.loads((corpus / "a-2" / "manifest.json").read_text())["page_count"] == 3


# --- the CLI job --------------------------------------------------------------------------------
def test_sigkill_then_resume_redoes_only_what_is_not_done(tmp_path: Path) -> None:
    books = _shelf(tmp_path / "books")
    total = sum(BOOK_PAGES.values())
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(_cli(clean, "ocr", "--library", str(books), "--engine", "text-layer"), check=True)

    proc = subprocess.Popen(
        _cli(killed, "ocr", "--library", str(books), "--engine", "text-layer"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, done_at_kill = time.monotonic() + 60, 0
    while time.monotonic() < deadline and proc.poll() is None:
        done_at_kill = _done_pages(killed)
        if BOOK_PAGES["alpha"] < done_at_kill < total - 50:  # in the second or third book
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed; make the books longer"

    result = subprocess.run(
        _cli(killed, "--json", "ocr", "--library", str(books), "--engine", "text-layer"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["books"] == 3 and summary["books_complete"] == 3 and summary["pages"] == total
    assert summary["pages_already_done"] >= done_at_kill
    assert summary["pages_done_this_run"] + summary["pages_already_done"] == total  # nothing done twice
    assert _tree(killed) == _tree(clean)
    for book, count in BOOK_PAGES.items():
        manifest = json.loads((killed / book / "manifest.json").read_text())
        assert [m["status"] for m in manifest["pages"]] == ["ok"] * count


def test_a_corrupt_pdf_is_reported_and_the_rest_complete(tmp_path: Path) -> None:
    books = _shelf(tmp_path / "books", {"one": 3, "two": 4})
    (books / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog")  # truncated
    (books / "empty.pdf").write_bytes(b"")
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        _cli(corpus, "--json", "ocr", str(books / "one.pdf"), str(books / "broken.pdf"), str(books),
             "--engine", "text-layer"),
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    summary = json.loads(result.stdout)
    states = {b["book"]: b["state"] for b in summary["books_detail"]}
    assert states == {"broken": "unreadable", "empty": "unreadable", "one": "complete", "two": "complete"}
    assert all(b["error"] for b in summary["books_detail"] if b["state"] == "unreadable")
    assert summary["pages_done_this_run"] == 7 and summary["books_not_read"] == 2
    assert sorted(p.name for p in corpus.iterdir() if not p.name.startswith(".")) == ["index.sqlite", "one", "two"]

    text = subprocess.run(
        _cli(corpus, "ocr", str(books), "--engine", "text-layer"), capture_output=True, text=True
    ).stdout
    assert "broken" in text and "unreadable" in text and "7 already done" in text


# --- overlapping jobs -----------------------------------------------------------------------------
def test_a_book_held_by_another_run_is_skipped_and_reported(tmp_path: Path) -> None:
    books = _shelf(tmp_path / "books", {"one": 3, "two": 3, "three": 3})
    corpus = Corpus(tmp_path / "corpus")
    library = Library(corpus)
    with corpus.lock("two"):
        summary = library.ocr_many([books], RunOptions(engine="text-layer"))
    states = {b.book: b.state for b in summary.books}
    assert states == {"one": "complete", "three": "complete", "two": "locked"}
    assert summary.exit_code == 2 and "two" in next(b.error for b in summary.books if b.book == "two")
    again = library.ocr_many([books], RunOptions(engine="text-layer"))
    assert {b.state for b in again.books} == {"complete"} and again.exit_code == 0
    assert sum(b.done for b in again.books) == 3  # only the book that was held


def test_two_overlapping_jobs_do_not_corrupt_each_other(tmp_path: Path) -> None:
    books = _shelf(tmp_path / "books", {"a": 200, "b": 400, "c": 200})
    corpus, clean = tmp_path / "corpus", tmp_path / "clean"
    subprocess.run(_cli(clean, "ocr", "--library", str(books), "--engine", "text-layer"), check=True)
    first = [str(books / "a.pdf"), str(books / "b.pdf")]
    second = [str(books / "b.pdf"), str(books / "c.pdf")]
    procs = [
        subprocess.Popen(
            _cli(corpus, "--json", "ocr", *paths, "--engine", "text-layer", *wait),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for paths, wait in ((first, []), (second, ["--wait"]))
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    summaries = [json.loads(out) for out, _ in outputs]
    # the job that waits does everything; the other may find "b" held and skip it, saying so (exit 2)
    assert procs[1].returncode == 0 and procs[0].returncode in (0, 2), outputs
    skipped = [b for b in summaries[0]["books_detail"] if b["state"] != "complete"]
    assert procs[0].returncode == 0 or [(b["book"], b["state"]) for b in skipped] == [("b", "locked")]
    done_b = sum(b["done"] for s in summaries for b in s["books_detail"] if b["book"] == "b")
    assert done_b == 400  # each page of the shared book done once, by whichever job held it
    assert _tree(corpus) == _tree(clean)


# --- MCP ----------------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mcp_library_job_runs_in_the_background(tmp_path: Path, anyio_backend: str) -> None:
    books = _shelf(tmp_path / "books", {"one": 3, "two": 5})
    (books / "sub").mkdir()
    numbered_text_pdf(books / "sub" / "one.pdf", 2)
    (books / "bad.pdf").write_bytes(b"not a pdf at all")
    corpus = Corpus(tmp_path / "corpus")
    async with Client(create_server(Library(corpus), InputPolicy(roots=[books]), wait_s=10)) as c:
        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        result = await c.call_tool(
            "ocr_book", {"path": str(books), "engine": "text-layer"}, progress_callback=on_progress
        )
        assert not result.is_error
        answer = result.structured_content
        text = "\n".join(block.text for block in result.content if block.type == "text")
        assert answer["library"]["books"] == 4 and answer["library"]["renamed"] == {"one-2": "one"}
        assert answer["library"]["states"] == {"complete": 3, "unreadable": 1}, text
        assert "bad" in answer["error"] and answer["done"] == 10 and len(text) < 800
        assert progress and progress[-1] == 10

        listing = (await c.call_tool("list_books", {})).structured_content
        assert listing["total"] == 3 and listing["states"] == {"complete": 3}
        status = (await c.call_tool("book_status", {"book": "one-2"})).structured_content
        assert status["state"] == "complete" and status["source_path"].endswith("sub/one.pdf")

        listed = await c.call_tool(
            "ocr_book", {"paths": [str(books / "two.pdf"), str(tmp_path / "outside.pdf")], "engine": "text-layer"}
        )
        assert not listed.is_error and listed.structured_content["library"]["states"]["complete"] == 1
        assert "outside" in listed.structured_content["error"]

        both = await c.call_tool("ocr_book", {"path": str(books), "paths": [str(books)]})
        assert both.is_error


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mcp_estimate_adds_up_a_job_and_runs_nothing(tmp_path: Path, anyio_backend: str) -> None:
    books = _shelf(tmp_path / "books", {"one": 3, "two": 40})
    (books / "broken.pdf").write_bytes(b"%PDF-1.7 broken")
    corpus = Corpus(tmp_path / "corpus")
    async with Client(create_server(Library(corpus), InputPolicy(roots=[books]), wait_s=10)) as c:
        job = await c.call_tool("estimate_ocr", {"path": str(books), "engine": "deepseek"})
        answer = job.structured_content
        assert (
            not job.is_error
            and (answer["books"], answer["pages"]) == (2, 43)
            and list(answer["unreadable"]) == ["broken"]
        )
        cost = answer["estimate"]
        assert cost["pages"] == 43 and cost["containers"] == 2 and cost["total_usd"] > 0  # 43 pages: 2 containers
        assert "default deployment" in cost["basis"]

        one = await c.call_tool("estimate_ocr", {"path": str(books / "two.pdf"), "engine": "deepseek", "pages": "1-10"})
        assert not one.is_error and one.structured_content["pages"] == 10
        local = await c.call_tool("estimate_ocr", {"paths": [str(books / "one.pdf")], "engine": "local"})
        assert local.structured_content["estimate"] is None and "at no cost" in local.content[0].text

        outside = numbered_text_pdf(tmp_path / "outside.pdf", 2)
        refused = await c.call_tool("estimate_ocr", {"path": str(outside), "engine": "deepseek"})
        assert refused.is_error and "outside.pdf" in refused.content[0].text
        nothing = await c.call_tool("estimate_ocr", {"engine": "deepseek"})
        assert nothing.is_error and "say what to read" in nothing.content[0].text
        assert not corpus.root.exists() or not any(corpus.root.glob("*/manifest.json"))  # nothing ran

        # pages already done are not counted again: two of "two" here, then the whole of "one"
        Library(corpus).ocr(books / "two.pdf", RunOptions(engine="text-layer", pages="1-2"))
        part = (
            await c.call_tool("estimate_ocr", {"path": str(books / "two.pdf"), "engine": "deepseek"})
        ).structured_content
        assert part["pages"] == 38 and part["estimate"]["pages"] == 38
        assert not (await c.call_tool("ocr_book", {"path": str(books / "one.pdf"), "engine": "text-layer"})).is_error
        rest = (await c.call_tool("estimate_ocr", {"path": str(books), "engine": "deepseek"})).structured_content
        assert (rest["books"], rest["pages"]) == (2, 38)


def test_one_engine_serves_every_book_of_a_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ocr_backend.engines.text_layer import TextLayerEngine

    made: list[CountingEngine] = []

    class CountingEngine(TextLayerEngine):
        name = ""  # not registered
        starts = closes = 0

        def start(self) -> None:
            self.starts += 1

        def close(self) -> None:
            self.closes += 1

    def create(name: str, **options: object) -> CountingEngine:
        made.append(CountingEngine())
        return made[-1]

    monkeypatch.setattr("server.library.create_engine", create)
    books = _shelf(tmp_path / "books", {"one": 2, "two": 3, "three": 4})
    summary = Library(Corpus(tmp_path / "corpus")).ocr_many([books], RunOptions(engine="text-layer"))
    assert summary.exit_code == 0 and sum(b.done for b in summary.books) == 9
    assert [(e.starts, e.closes) for e in made] == [(1, 1)]


def test_estimate_adds_up_the_job_and_names_unreadable_files(tmp_path: Path) -> None:
    books = _shelf(tmp_path / "books", {"one": 3, "two": 4})
    (books / "broken.pdf").write_bytes(b"%PDF-1.7 broken")
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        _cli(corpus, "--json", "ocr", str(books), "--engine", "text-layer", "--estimate"),
        capture_output=True,
        text=True,
    )
    data = json.loads(result.stdout)
    assert (
        result.returncode == 2 and data["books"] == 2 and data["pages"] == 7 and list(data["unreadable"]) == ["broken"]
    )
    assert not corpus.exists() or not any(corpus.glob("*/manifest.json"))


def test_the_bar_shows_the_book_running_and_the_whole_job() -> None:
    from server.progress import progress_line
    from server.runner import Progress, ShelfBook, ShelfProgress

    shelf = ShelfProgress([ShelfBook("a", "a.pdf", "complete", run_pages=10, done=10), ShelfBook("bb", "bb.pdf")])
    shelf.books[1].state, shelf.books[1].run_pages, shelf.books[1].done = "running", 20, 5
    shelf.current = Progress(book="bb", total=20, done=5)
    line = progress_line(shelf, width=10)
    assert line.startswith("[1/2 books] bb [##--------] 5/20 | all 15/30 pages"), line


def test_with_books_running_at_once_the_bar_follows_the_first_and_counts_them() -> None:
    from server.progress import progress_line
    from server.runner import Progress, ShelfBook, ShelfProgress

    shelf = ShelfProgress([ShelfBook(name, f"{name}.pdf", "running", run_pages=10) for name in ("a", "b", "c")])
    first, second = Progress(book="a", total=10, done=2), Progress(book="b", total=10, done=7)
    shelf.running.update(a=first, b=second)
    shelf.current = second  # the book that reported last
    assert progress_line(shelf, width=10).startswith("[0/3 books, 2 running] a [##--------] 2/10 |")
    shelf.book_ended("a")
    assert progress_line(shelf, width=10).startswith("[0/3 books] b [#######---] 7/10 |")


def test_queued_books_hold_no_open_file_and_run_in_turn(tmp_path: Path) -> None:
    """An MCP library job queues each book behind the running one: the queued books' PDFs are closed while
    they wait (1,000 queued books must not need 1,000 open files), then opened and checked again in turn."""
    import os
    import threading

    from server.jobs import JobManager
    from server.runner import run_plan

    corpus = Corpus(tmp_path / "corpus")
    pdfs = [numbered_text_pdf(tmp_path / f"book{i}.pdf", 3) for i in range(6)]
    first_may_go = threading.Event()

    def run(corpus: Corpus, plan, **kwargs):  # noqa: ANN001, ANN003 - run_plan's own arguments
        if plan.book == "book0":
            first_may_go.wait(30)
        return run_plan(corpus, plan, **kwargs)

    def open_pdfs() -> set[str]:
        names = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(tmp_path)) and target.endswith(".pdf"):
                names.add(Path(target).stem)
        return names

    jobs = JobManager(corpus, run=run)
    books = [jobs.start(pdf, RunOptions(engine="text-layer")) for pdf in pdfs]
    try:
        deadline = time.monotonic() + 10
        while open_pdfs() - {"book0"} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_pdfs() <= {"book0"}, "only the running book's file is open"
        assert [jobs.job(b).state for b in books] == ["running"] + ["queued"] * 5
    finally:
        first_may_go.set()
    for book in books:
        jobs.job(book).thread.join(30)
    assert [jobs.job(b).state for b in books] == ["complete"] * 6
    for book in books:
        assert [corpus.book(book).page(n).status for n in (1, 2, 3)] == ["ok"] * 3
    assert open_pdfs() == set()
