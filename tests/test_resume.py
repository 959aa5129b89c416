"""A run killed with SIGKILL mid-book resumes to exactly what an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import numbered_text_pdf

PAGES = 1000


def _cli(corpus: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", "--corpus", str(corpus), *args]


def _done_pages(manifest: Path) -> int:
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return 0
    return sum(1 for meta in data["pages"] if meta)


def _kill_mid_run(corpus: Path, pdf: Path) -> int:
    manifest = corpus / "book" / "manifest.json"
    proc = subprocess.Popen(
        _cli(corpus, "ocr", str(pdf), "--book", "book", "--engine", "text-layer"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        done = _done_pages(manifest)
        if 0 < done < PAGES:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return done
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the run ended (exit {proc.returncode}) before it could be killed; make the book longer")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    pdf = numbered_text_pdf(tmp_path / "long.pdf", PAGES)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(
        _cli(clean, "ocr", str(pdf), "--book", "book", "--engine", "text-layer"), check=True, capture_output=True
    )

    done_at_kill = _kill_mid_run(killed, pdf)
    assert 0 < done_at_kill < PAGES
    result = subprocess.run(
        _cli(killed, "--json", "ocr", str(pdf), "--book", "book", "--engine", "text-layer"),
        check=True,
        capture_output=True,
        text=True,
    )
    summary = json.loads(result.stdout)
    assert summary["state"] == "complete" and summary["done"] == PAGES
    assert summary["run"]["skipped"] >= done_at_kill  # only the missing pages were redone

    clean_pages = sorted((clean / "book" / "pages").iterdir())
    killed_pages = sorted((killed / "book" / "pages").iterdir())
    assert (
        [p.name for p in killed_pages]
        == [p.name for p in clean_pages]
        == [f"page_{n:04d}.mmd" for n in range(1, PAGES + 1)]
    )
    for a, b in zip(clean_pages, killed_pages):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert (clean / "book" / "document.mmd").read_bytes() == (killed / "book" / "document.mmd").read_bytes()
    manifest = json.loads((killed / "book" / "manifest.json").read_text())
    assert [m["status"] for m in manifest["pages"]] == ["ok"] * PAGES
