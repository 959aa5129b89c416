"""The ``local`` engine of two checkouts side by side: the same rasterised book, whole CLI, interleaved rounds.

Usage: .venv/bin/python bench/bench_local_ab.py --before /tmp/before [--data ../shared/testdata] [--pages 60] [--rounds 3]

``--before`` is another checkout of bookocr (``git worktree add /tmp/before <commit>``); both run with this
venv, the code chosen by PYTHONPATH. Each round runs A then B (then B then A, alternating) on a fresh corpus:
pages/s (wall), CPU seconds of the whole process tree, and its peak memory (the sum of every process's
RSS, sampled every 50 ms: worker processes count). Medians; the CPU is printed first. Skips without data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymupdf
from bench_local_ocr import BOOK, BOOK_FIRST_PAGE, bookocr_command
from cpu_report import add_isa_argument, cap_isa, describe

from server.sample_book import rasterise_pdf

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(statm.split()[1]) * PAGE_SIZE
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_once(code: Path, scan: Path, work: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak tree RSS of one `bookocr ocr --engine local` with ``code`` first on the path."""
    corpus = work / f"corpus-{time.monotonic_ns()}"
    env = dict(os.environ, PYTHONPATH=str(code))
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*bookocr_command(), "--corpus", str(corpus), "ocr", str(scan), "--engine", "local", "--book", "ab"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"{code}: bookocr failed ({proc.returncode}): {proc.stderr.read().decode()[-1500:]}")  # type: ignore[union-attr]
    shutil.rmtree(corpus, ignore_errors=True)
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument(
        "--after", type=Path, default=Path(__file__).resolve().parents[1], help="default: this checkout"
    )
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    add_isa_argument(parser)
    args = parser.parse_args()
    cap_isa(args.isa)
    pdf = args.data / BOOK
    if not pdf.is_file():
        print(f"skip: {pdf} not found (pass --data)")
        return 0
    print(describe())
    results: dict[str, list[tuple[float, float, int]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        part = work / "part.pdf"
        with pymupdf.open(pdf) as doc, pymupdf.open() as out:
            out.insert_pdf(doc, from_page=BOOK_FIRST_PAGE - 1, to_page=BOOK_FIRST_PAGE + args.pages - 2)
            out.save(part)
        scan = rasterise_pdf(part, work / "scan.pdf", dpi=200)
        run_once(args.after, scan, work)  # warm the file cache for both
        for i in range(args.rounds):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            for name in order:
                results[name].append(run_once(getattr(args, name), scan, work))
                wall, cpu, peak = results[name][-1]
                print(
                    f"round {i + 1} {name}: {args.pages / wall:.3f} pages/s, {cpu:.1f} CPU s, peak {peak / 2**20:.0f} MiB",
                    flush=True,
                )
    for name, runs in results.items():
        walls, cpus, peaks = zip(*runs)
        print(
            f"{name}: {args.pages / statistics.median(walls):.3f} pages/s, {statistics.median(cpus):.1f} CPU s, "
            f"peak {statistics.median(peaks) / 2**20:.0f} MiB (medians of {len(runs)})"
        )
    ratio = statistics.median(w for w, _, _ in results["before"]) / statistics.median(w for w, _, _ in results["after"])
    print(f"after / before speed: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
