"""Load test for the MCP server: bursts of concurrent get_page / search_book calls while an OCR job runs.

    .venv/bin/python bench/bench_mcp_load.py                      # a real `bookocr serve` over stdio
    .venv/bin/python bench/bench_mcp_load.py --transport memory   # the SDK's in-memory client

It builds a born-digital book (read with the text-layer engine, instant) and a scanned one, starts
the scanned book's OCR (engine auto: PP-OCR on the CPU) in the background, then fires ``--rounds``
bursts of ``--calls`` calls at once, half get_page and half search_book on the first book, and
reports latency percentiles per tool, errors, and how far the OCR job got meanwhile.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import pymupdf
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpu_report import describe  # noqa: E402

from server.corpus import Corpus  # noqa: E402
from server.library import Library  # noqa: E402
from server.mcp_server import create_server  # noqa: E402
from server.safety import InputPolicy  # noqa: E402
from server.sample_book import SAMPLE_PAGES, make_sample_book  # noqa: E402

WORDS = (
    "prior posterior likelihood variance sample estimate interval bayes normal gamma beta model data "
    "parameter mean median mode density probability random variable conjugate credible predictive "
    "distribution inference hypothesis test regression matrix vector theorem proof lemma"
).split()


def text_book(path: Path, pages: int, rng: random.Random) -> Path:
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=432, height=648)
        body = f"Section {n}. " + " ".join(rng.choice(WORDS) for _ in range(150)) + f" marker{n}."
        page.insert_textbox(pymupdf.Rect(54, 60, 378, 600), body, fontsize=10)
    doc.save(path)
    doc.close()
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def wait_state(c: Client, book: str, done: tuple[str, ...], timeout: float) -> dict[str, Any]:
    return await wait_until(c, book, lambda s: s["state"] in done, timeout)


async def wait_until(c: Client, book: str, ready: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = (await c.call_tool("book_status", {"book": book})).structured_content
        if ready(status) or time.monotonic() > deadline:
            return status
        await anyio.sleep(0.2)


async def sequential(c: Client, pages: int, rng: random.Random, n: int = 20) -> dict[str, float]:
    """Median latency of one call at a time, with no OCR running: the cost of a call itself."""
    timings: dict[str, list[float]] = {"get_page": [], "search_book": []}
    for _ in range(n):
        for tool, args in (
            ("get_page", {"book": "reference", "page": rng.randint(1, pages)}),
            ("search_book", {"query": " ".join(rng.sample(WORDS, 2))}),
        ):
            t0 = time.perf_counter()
            await c.call_tool(tool, args)
            timings[tool].append((time.perf_counter() - t0) * 1000)
    return {tool: round(statistics.median(v), 1) for tool, v in timings.items()}


async def burst(
    c: Client, calls: int, pages: int, rng: random.Random, latencies: dict[str, list[float]], errors: list[str]
) -> None:
    async def one(i: int) -> None:
        if i % 2:
            first = rng.randint(1, pages)
            args: dict[str, Any] = {"book": "reference", "page": first}
            if i % 4 == 1:
                args["to_page"] = min(pages, first + 2)
            tool, check = "get_page", f"Section {first}."
        else:
            n = rng.randint(1, pages)
            args = {"query": f"marker{n}" if i % 4 == 0 else " ".join(rng.sample(WORDS, 2)), "limit": 10}
            tool, check = "search_book", ""
        started = time.perf_counter()
        try:
            result = await c.call_tool(tool, args)
        except Exception as exc:  # transport failures count as errors too
            errors.append(f"{tool} {args}: {type(exc).__name__}: {exc}")
            return
        latencies[tool].append((time.perf_counter() - started) * 1000)
        text = "\n".join(b.text for b in result.content if b.type == "text")
        if result.is_error or (check and check not in text):
            errors.append(f"{tool} {args}: {text[:200]}")
        elif tool == "search_book" and args["query"].startswith("marker"):
            hits = result.structured_content["hits"]
            if not hits or hits[0]["page"] != int(args["query"][6:]):
                errors.append(f"search_book {args}: wrong top hit {hits[:1]}")

    async with anyio.create_task_group() as tg:
        for i in range(calls):
            tg.start_soon(one, i)


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(7)
    books, corpus = work / "books", work / "corpus"
    books.mkdir(parents=True)
    reference = text_book(books / "reference.pdf", args.text_pages, rng)
    scan = make_sample_book(
        books / "scan.pdf", (SAMPLE_PAGES * (args.scan_pages // len(SAMPLE_PAGES) + 1))[: args.scan_pages]
    )

    if args.transport == "stdio":
        bookocr = Path(sys.executable).absolute().parent / "bookocr"
        target: Any = StdioServerParameters(
            command=str(bookocr), args=["--corpus", str(corpus), "serve", "--allow", str(books)]
        )
    else:
        target = create_server(Library(Corpus(corpus)), InputPolicy(roots=[books]))

    latencies: dict[str, list[float]] = {"get_page": [], "search_book": []}
    errors: list[str] = []
    rounds: list[dict[str, Any]] = []
    async with Client(target) as c:
        await c.call_tool("ocr_book", {"path": str(reference), "engine": "text-layer"})
        ref = await wait_state(c, "reference", ("complete",), 120)
        assert ref["state"] == "complete", ref
        baseline = await sequential(c, args.text_pages, rng)
        idle = {"state": "not started", "done": 0, "failed": 0, "pages": 0}
        started = idle if args.no_ocr else (await c.call_tool("ocr_book", {"path": str(scan)})).structured_content
        if not args.no_ocr:
            # load only once pages are being recognised, not while the engine loads its models
            await wait_until(c, "scan", lambda s: s["done"] >= 1 or s["state"] not in ("queued", "running"), 300)
        for _ in range(args.rounds):
            before = idle if args.no_ocr else (await c.call_tool("book_status", {"book": "scan"})).structured_content
            t0 = time.perf_counter()
            await burst(c, args.calls, args.text_pages, rng, latencies, errors)
            after = idle if args.no_ocr else (await c.call_tool("book_status", {"book": "scan"})).structured_content
            rounds.append(
                {
                    "wall_ms": round((time.perf_counter() - t0) * 1000, 1),
                    "scan_state_before": before["state"],
                    "scan_state_after": after["state"],
                    "scan_done": after["done"],
                }
            )
            await anyio.sleep(args.pause)
        final = (
            idle if args.no_ocr else await wait_state(c, "scan", ("complete", "complete-with-failures", "error"), 600)
        )

    return {
        "transport": args.transport,
        "calls_per_burst": args.calls,
        "bursts": args.rounds,
        "reference_pages": args.text_pages,
        "scan_pages": args.scan_pages,
        "sequential_ms_no_ocr": baseline,
        "scan_state_when_load_started": started["state"],
        "bursts_while_ocr_running": sum(
            r["scan_state_before"] == "running" and r["scan_state_after"] == "running" for r in rounds
        ),
        "rounds": rounds,
        "latency_ms": {
            tool: {
                "n": len(v),
                "p50": round(statistics.median(v), 1),
                "p95": round(percentile(v, 0.95), 1),
                "max": round(max(v), 1),
            }
            for tool, v in latencies.items()
            if v
        },
        "errors": len(errors),
        "error_samples": errors[:5],
        "scan_final": {k: final[k] for k in ("state", "done", "failed", "pages")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("stdio", "memory"), default="stdio")
    parser.add_argument(
        "--calls", type=int, default=50, help="calls in flight at once per burst (half get_page, half search_book)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="bursts")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument("--text-pages", type=int, default=300)
    parser.add_argument("--scan-pages", type=int, default=8)
    parser.add_argument(
        "--no-ocr", action="store_true", help="the same bursts with no OCR job running (for comparison)"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory(prefix="bookocr-mcp-load-") as tmp:
        report = anyio.run(run, args, Path(tmp))
    text = json.dumps(report, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
