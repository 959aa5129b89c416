"""The CLI mirrors the API: JSON for scripts, one-line errors with a non-zero exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ocr_list_status_get_as_json(tmp_path: Path, text_pdf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = str(tmp_path / "lib")
    code, out, _ = run(capsys, "--corpus", corpus, "ocr", str(text_pdf), "--engine", "text-layer", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["book"] == "born-digital" and summary["state"] == "complete" and summary["done"] == 5

    code, out, _ = run(capsys, "--corpus", corpus, "--json", "list")
    assert [b["book"] for b in json.loads(out)["books"]] == ["born-digital"]

    code, out, _ = run(capsys, "--corpus", corpus, "status", "born-digital", "--json")
    status = json.loads(out)
    assert status["ok"] == 5 and status["failed_pages"] == [] and status["engines_used"] == ["text-layer"]

    code, out, _ = run(capsys, "--corpus", corpus, "get", "born-digital", "2", "--to", "3", "--json")
    pages = json.loads(out)
    assert [p["page"] for p in pages] == [2, 3] and "page number 3 " in pages[1]["markdown"]

    code, out, _ = run(capsys, "--corpus", corpus, "get", "born-digital", "4")
    assert code == 0 and "page number 4 " in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["get", "nope", "1"], "no book 'nope'"),
        (["get", "born-digital", "9"], "pages 1-5"),
        (["get", "born-digital", "0"], "pages 1-5"),
        (["status", "../etc"], "invalid book id"),
        (["ocr", "/no/such/file.pdf"], "no such file"),
        (["ocr", "PDF", "--pages", "7-9"], "outside 1-5"),
        (["ocr", "PDF", "--engine", "magic"], "unknown engine 'magic'"),
    ],
)
def test_errors_are_one_line_and_nonzero(
    argv: list[str], message: str, tmp_path: Path, text_pdf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = str(tmp_path / "lib")
    assert run(capsys, "--corpus", corpus, "ocr", str(text_pdf), "--engine", "text-layer")[0] == 0
    argv = [str(text_pdf) if a == "PDF" else a for a in argv]
    code, out, err = run(capsys, "--corpus", corpus, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bookocr: error: ") and message in lines[0]


def test_corpus_from_environment(
    tmp_path: Path, text_pdf: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKOCR_CORPUS", str(tmp_path / "envlib"))
    assert run(capsys, "ocr", str(text_pdf), "--engine", "text-layer")[0] == 0
    assert (tmp_path / "envlib" / "born-digital" / "document.mmd").is_file()


def test_the_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`./dev demo` is the README's first command: it must follow every option `ocr` grows."""
    corpus = tmp_path / "corpus"
    assert main(["--corpus", str(corpus), "demo", "--out", str(tmp_path / "sample.pdf")]) == 0
    out = capsys.readouterr().out
    assert "state: complete" in out and [out.count(f"<!-- page {n} ") for n in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert "posterior" in out
