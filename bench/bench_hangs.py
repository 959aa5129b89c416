"""Hangs, counted: many fresh processes, each with a hard deadline, on a machine kept busy.

Usage: .venv/bin/python bench/bench_hangs.py [--data ../shared/testdata] [--mode cli|serve|demo] [--runs 200]
       [--backend openvino|onnxruntime] [--timeout 90] [--load 1]

- ``cli``: ``bookocr --corpus FRESH ocr two.pdf --engine local`` (``two.pdf`` = pages 1-2 of
  ``whitehead_scan10.pdf``), a fresh process and corpus each run.
- ``serve``: a fresh ``bookocr serve`` over stdio per run, driven by the MCP SDK's client: ``ocr_book`` on
  the same 2-page scan, then ``book_status`` polled until the book is complete.
- ``demo``: ``./dev demo`` in a fresh ``git clone`` of this project (the first run sets up its venv; later
  runs remove ``corpus/`` and ``sample/`` first, so each one OCRs again).

Each run is its own process group, killed at ``--timeout``: that is a hang. A run that exits with an
error, or whose book is not complete with every page ``ok``, is counted apart. ``--load N`` keeps N busy
loops running throughout (the races this looks for show under load). Prints the CPU first. Skips
(exit 0) when the data is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_report import describe

ROOT = Path(__file__).resolve().parents[1]
SCAN = "gitenberg_whitehead_41568/derived/whitehead_scan10.pdf"
BOOKOCR = Path(sys.executable).absolute().parent / "bookocr"


def two_page_scan(data: Path, out: Path) -> Path:
    import pymupdf

    with pymupdf.open(data / SCAN) as src, pymupdf.open() as doc:
        doc.insert_pdf(src, from_page=0, to_page=1)
        doc.save(out)
    return out


def run_bounded(
    command: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[str, float]:
    """'ok', 'error: ...' or 'hang', and the seconds it ran; the whole process group goes at the deadline."""
    start = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "hang", time.monotonic() - start
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of a finished run may linger
        except ProcessLookupError:
            pass
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        return f"error: exit {proc.returncode}: {output.strip().splitlines()[-1:]}", elapsed
    return "ok", elapsed


def book_complete(corpus: Path, book: str, pages: int) -> str | None:
    """None when the book is there with every page ok; else what is wrong (silent loss counts as an error)."""
    try:
        manifest = json.loads((corpus / book / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return f"no manifest: {exc}"
    statuses = [(meta or {}).get("status") for meta in manifest["pages"]]
    if statuses != ["ok"] * pages:
        return f"page statuses {statuses}"
    if not all((corpus / book / "pages" / f"page_{n:04d}.mmd").stat().st_size for n in range(1, pages + 1)):
        return "an empty page file"
    return None


def one_cli_run(pdf: Path, work: Path, timeout: float, env: dict[str, str]) -> tuple[str, float]:
    corpus = work / "corpus"
    outcome, seconds = run_bounded(
        [str(BOOKOCR), "--corpus", str(corpus), "ocr", str(pdf), "--engine", "local"], timeout, env
    )
    if outcome == "ok" and (problem := book_complete(corpus, pdf.stem, 2)):
        outcome = f"error: {problem}"
    return outcome, seconds


def one_serve_run(pdf: Path, work: Path, timeout: float, env: dict[str, str]) -> tuple[str, float]:
    corpus = work / "corpus"
    command = [sys.executable, __file__, "--serve-session", str(pdf), str(corpus)]
    outcome, seconds = run_bounded(command, timeout, env)
    if outcome == "ok" and (problem := book_complete(corpus, pdf.stem, 2)):
        outcome = f"error: {problem}"
    return outcome, seconds


async def serve_session(pdf: Path, corpus: Path) -> None:
    """One MCP client session: ocr_book, then book_status until complete (the caller holds the deadline)."""
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=str(BOOKOCR), args=["--corpus", str(corpus), "serve", "--allow", str(pdf.parent)]
    )
    async with Client(stdio_client(params, errlog=sys.stderr)) as client:
        await client.call_tool("ocr_book", {"path": str(pdf), "engine": "local"})
        while True:
            status = (await client.call_tool("book_status", {"book": pdf.stem})).structured_content or {}
            if status.get("state") in ("complete", "complete-with-failures", "error"):
                if status.get("state") != "complete":
                    raise SystemExit(f"book ended {status.get('state')}: {status.get('message')}")
                return
            await asyncio.sleep(0.2)


def one_demo_run(clone: Path, timeout: float, env: dict[str, str]) -> tuple[str, float]:
    subprocess.run(["rm", "-rf", str(clone / "corpus" / "statistics-sample"), str(clone / "sample")], check=True)
    outcome, seconds = run_bounded([str(clone / "dev"), "demo"], timeout, env, cwd=clone)
    if outcome == "ok" and (problem := book_complete(clone / "corpus", "statistics-sample", 4)):
        outcome = f"error: {problem}"
    return outcome, seconds


def start_load(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "testdata")
    parser.add_argument("--mode", choices=("cli", "serve", "demo"), default="cli")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--backend", choices=("openvino", "onnxruntime"), default=None, help="the local engine's backend"
    )
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="a run still going after this many seconds is a hang"
    )
    parser.add_argument("--load", type=int, default=1, help="busy loops kept running meanwhile")
    parser.add_argument("--serve-session", nargs=2, metavar=("PDF", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_session:
        asyncio.run(serve_session(Path(args.serve_session[0]), Path(args.serve_session[1])))
        return 0
    if not (args.data / SCAN).is_file():
        print(f"skip: {args.data / SCAN} not found (pass --data)")
        return 0
    env = dict(os.environ)
    if args.backend:
        env["BOOKOCR_LOCAL_BACKEND"] = args.backend
    print(describe())
    print(
        f"mode {args.mode}, {args.runs} runs, backend {args.backend or 'default'}, timeout {args.timeout:.0f} s, "
        f"{args.load} busy loop(s)",
        flush=True,
    )
    outcomes: list[tuple[str, float]] = []
    load = start_load(args.load)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hangs-") as tmp:
            tmp_path = Path(tmp)
            pdf = two_page_scan(args.data, tmp_path / "two.pdf")
            clone = tmp_path / "clone"
            if args.mode == "demo":
                subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            for i in range(args.runs):
                work = tmp_path / f"run{i}"
                work.mkdir()
                if args.mode == "cli":
                    outcome = one_cli_run(pdf, work, args.timeout, env)
                elif args.mode == "serve":
                    outcome = one_serve_run(pdf, work, args.timeout, env)
                else:
                    outcome = one_demo_run(clone, args.timeout, env)
                outcomes.append(outcome)
                if outcome[0] != "ok":
                    print(f"run {i + 1}: {outcome[0]} after {outcome[1]:.1f} s", flush=True)
                if (i + 1) % 25 == 0:
                    print(f"... {i + 1} runs", flush=True)
    finally:
        for proc in load:
            proc.kill()
    hangs = sum(1 for outcome, _ in outcomes if outcome == "hang")
    errors = sum(1 for outcome, _ in outcomes if outcome.startswith("error"))
    times = [seconds for outcome, seconds in outcomes if outcome == "ok"]
    median = statistics.median(times) if times else float("nan")
    print(
        f"hangs {hangs}/{len(outcomes)}, errors {errors}/{len(outcomes)}, run time median {median:.2f} s "
        f"(min {min(times, default=float('nan')):.2f}, max {max(times, default=float('nan')):.2f})"
    )
    return 1 if hangs or errors else 0


if __name__ == "__main__":
    sys.exit(main())
