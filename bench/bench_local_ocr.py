"""The ``local`` engine against Tesseract 5, side by side in one run: accuracy, reading order, speed.

Usage: .venv/bin/python bench/bench_local_ocr.py [--data ../shared/testdata] [--rounds 3] [--long-side 1600] [--book-pages 60]
           [--book-rounds 2] [--book-only] [--isa avx2|avx512]

``--isa avx2`` runs OpenVINO as on an AVX2-only CPU (f32), here and in the ``bookocr`` processes it
starts (see ``cpu_report.py``), and Tesseract through its ``dotproduct`` setting.

1. Accuracy: ``bookocr ocr --engine local`` on ``whitehead_scan10.pdf`` (10 image-only pages) and
   Tesseract on the very same page images, each page's character error rate against the source
   PDF's text layer (``.gt.jsonl``). Both texts are normalised the same way: NFKC, hyphenated line
   ends joined, whitespace collapsed. The reference includes the running head and page number, so
   the local engine is scored on furniture + body (its running-head row comes first, as in the
   reference); Tesseract's output contains them anyway. Pages are prose or math per SOURCES.md.
2. Reading order: ``multi_column_miss.pdf`` rasterised into an image-only scan, then the
   olmOCR-Bench ``order`` rules for it (``dataset.jsonl``), scored with olmOCR's text normalisation.
3. Speed: end-to-end pages/s of the CLI (a fresh process and corpus each round: start-up, render,
   OCR, layout, writing) against Tesseract on the same pages (render + OCR, both cores used), as
   the median of interleaved rounds. Ten pages mostly measure start-up (about 1 s of model loading
   and first inferences before the first page), so:
4. A longer book: ``--book-pages`` (default 60) pages of Whitehead's born-digital PDF rasterised into
   an image-only scan, both engines end to end (Tesseract as 2 processes x 1 thread), with each
   engine's median CER against the source pages' own text.

The local engine runs on OpenVINO when the ``openvino`` package is installed, else on onnxruntime;
the header line says which. Skips (exit 0) when the data is absent; the Tesseract columns are skipped with a message when the
``tesseract`` command is not installed (Debian: ``apt-get install tesseract-ocr``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymupdf
from cpu_report import ISA_CAPS, add_isa_argument, cap_isa, describe, isa_cap
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from ocr_backend.engines.local import DET_LONG_SIDE, LocalEngine
from ocr_backend.render import DEFAULT_LONG_SIDE, RenderSettings
from ocr_backend.sources import open_source
from server.sample_book import rasterise_pdf

SCAN = "gitenberg_whitehead_41568/derived/whitehead_scan10.pdf"
SCAN_GT = "gitenberg_whitehead_41568/derived/whitehead_scan10.gt.jsonl"
MULTI_COLUMN = "olmocr_bench_sample/pdfs/multi_column_miss.pdf"
RULES = "olmocr_bench_sample/dataset.jsonl"
BOOK = "gitenberg_whitehead_41568/41568-pdf.pdf"
BOOK_FIRST_PAGE = 21  # past the front matter
MATH_SOURCE_PAGES = {176, 80, 158, 178, 72, 164, 173, 120, 86, 174, 49}  # SOURCES.md
TESSERACT_SETTINGS = [  # (parallel processes, OMP threads each): both use both cores
    (2, 1),
    (1, 2),
]


# --- text and scoring -------------------------------------------------------------------
def normalise(text: str) -> str:
    """NFKC, hyphenated line ends joined, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"(\w)[-\u00ad][ \t]*\n\s*(?=\w)", r"\1", text)
    return " ".join(text.split())


def cer(hypothesis: str, reference: str) -> float:
    ref = normalise(reference)
    return Levenshtein.distance(normalise(hypothesis), ref) / max(1, len(ref))


_FANCY = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "‚": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "–": "-",
        "—": "-",
        "‑": "-",
        "‒": "-",
        "−": "-",
        "µ": "μ",
    }
)


def bench_normalise(text: str) -> str:
    """olmOCR-Bench's text normalisation: markdown emphasis dropped, whitespace collapsed, NFC, plain quotes and dashes."""
    text = re.sub(r"<br/?>", " ", text)
    text = re.sub(r"</?[bi]>", "", text)
    text = re.sub(r"(\*\*|__)(.*?)\1", r"\2", text)
    text = re.sub(r"(\*|_)(.*?)\1", r"\2", text)
    text = unicodedata.normalize("NFC", " ".join(text.split()))
    return text.translate(_FANCY)


def match_starts(pattern: str, text: str, max_dist: int) -> list[int]:
    """Where in ``text`` a substring within ``max_dist`` edits of ``pattern`` can start.

    Semi-global edit distance run on both strings reversed, so that each column where the
    distance is small marks a start position of a match in the original text.
    """
    pat, txt = pattern[::-1], text[::-1]
    m = len(pat)
    index = np.arange(m + 1)
    column = index.copy()  # distances for the empty prefix of the (reversed) text
    codes = np.frombuffer(pat.encode("utf-32-le"), dtype=np.uint32)
    starts = []
    for j, ch in enumerate(txt, start=1):
        cost = (codes != ord(ch)).astype(np.int64)
        best = np.empty(m + 1, dtype=np.int64)
        best[0] = 0
        best[1:] = np.minimum(column[:-1] + cost, column[1:] + 1)
        column = np.minimum.accumulate(best - index) + index  # insertions along the pattern
        if column[m] <= max_dist:
            starts.append(len(text) - j)
    return starts


@dataclass
class RuleResult:
    rule_id: str
    kind: str
    passed: bool
    detail: str = ""


def check_rule(rule: dict, markdown: str) -> RuleResult:
    text = bench_normalise(markdown)
    diffs = int(rule.get("max_diffs", 0))
    if rule["type"] == "order":
        before = match_starts(bench_normalise(rule["before"]), text, diffs)
        after = match_starts(bench_normalise(rule["after"]), text, diffs)
        if not before or not after:
            missing = "before" if not before else "after"
            return RuleResult(rule["id"], "order", False, f"'{missing}' text not found")
        return RuleResult(
            rule["id"], "order", min(before) < max(after), "" if min(before) < max(after) else "out of order"
        )
    query = bench_normalise(rule["text"])
    if not rule.get("case_sensitive", True):
        query, text = query.lower(), text.lower()
    found = len(text) >= len(query) - diffs and fuzz.partial_ratio(query, text) / 100 >= 1 - diffs / max(1, len(query))
    passed = found if rule["type"] == "present" else not found
    return RuleResult(rule["id"], rule["type"], passed)


# --- running the engines ------------------------------------------------------------------
def bookocr_command() -> list[str]:
    script = Path(sys.executable).with_name("bookocr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


@dataclass
class LocalRun:
    pages: dict[int, str]  # page number -> furniture + body, for scoring
    markdown: dict[int, str]
    wall_s: float
    runner_pages_per_s: float


def run_local(pdf: Path, work: Path, long_side: int) -> LocalRun:
    corpus = work / f"corpus-{time.monotonic_ns()}"
    cmd = [
        *bookocr_command(),
        "--json",
        "--corpus",
        str(corpus),
        "ocr",
        str(pdf),
        "--engine",
        "local",
        "--book",
        "bench",
        "--long-side",
        str(long_side),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"bookocr failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    manifest = json.loads((corpus / "bench" / "manifest.json").read_text())
    pages, markdown = {}, {}
    for number, meta in enumerate(manifest["pages"], start=1):
        body = (corpus / "bench" / "pages" / f"page_{number:04d}.mmd").read_text()
        markdown[number] = body
        pages[number] = "\n".join([*meta.get("furniture", []), body])
    shutil.rmtree(corpus, ignore_errors=True)
    return LocalRun(pages, markdown, wall, float(summary["run"]["pages_per_s"]))


def render_pages(pdf: Path, out: Path, long_side: int) -> list[tuple[Path, float]]:
    """The same page images the runner hands the local engine, as PNG files, with their dpi."""
    out.mkdir(parents=True, exist_ok=True)
    images = []
    with open_source(pdf) as source:
        for number in range(1, source.info.page_count + 1):
            image, meta = source.render(number, RenderSettings(long_side=long_side))
            path = out / f"page_{number:04d}.png"
            image.save(path, compress_level=1)
            images.append((path, float(meta.get("dpi", 300))))
    return images


def tesseract_version() -> str | None:
    exe = shutil.which("tesseract")
    if not exe:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def tesseract_isa() -> list[str]:
    """Under ``--isa avx2`` Tesseract is held to AVX2 as well (its own setting; it also has AVX-512 kernels)."""
    return ["-c", "dotproduct=avx2"] if isa_cap() == ISA_CAPS["avx2"] else []


def run_tesseract(images: list[tuple[Path, float]], processes: int, threads: int) -> tuple[list[str], float]:
    env = {**os.environ, "OMP_THREAD_LIMIT": str(threads)}

    def one(item: tuple[Path, float]) -> str:
        path, dpi = item
        cmd = ["tesseract", str(path), "stdout", "-l", "eng", "--psm", "3", "--dpi", str(round(dpi)), *tesseract_isa()]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout

    start = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        texts = list(pool.map(one, images))
    return texts, time.perf_counter() - start


def tesseract_end_to_end(
    pdf: Path, work: Path, long_side: int, processes: int, threads: int
) -> tuple[list[str], float]:
    """Render the pages (as the runner does) and OCR them; returns the texts and total seconds."""
    folder = work / f"tess-{time.monotonic_ns()}"
    start = time.perf_counter()
    images = render_pages(pdf, folder, long_side)
    texts, _ = run_tesseract(images, processes, threads)
    elapsed = time.perf_counter() - start
    shutil.rmtree(folder, ignore_errors=True)
    return texts, elapsed


# --- report -------------------------------------------------------------------------------
def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def accuracy_table(gt: list[dict], local: LocalRun, tess: list[str] | None) -> None:
    print("\n== Accuracy: whitehead_scan10.pdf, CER per page (furniture + body vs the text layer) ==")
    print(f"{'scan':>4} {'source':>6} {'kind':<5} {'local':>7} {'tesseract':>9}")
    rows: dict[str, list[tuple[float, float | None]]] = {"prose": [], "math": []}
    for entry in gt:
        n = entry["scan_page"]
        kind = "math" if entry["source_page"] in MATH_SOURCE_PAGES else "prose"
        local_cer = cer(local.pages[n], entry["text_layer"])
        tess_cer = cer(tess[n - 1], entry["text_layer"]) if tess else None
        rows[kind].append((local_cer, tess_cer))
        tess_text = f"{tess_cer:9.4f}" if tess_cer is not None else f"{'-':>9}"
        print(f"{n:>4} {entry['source_page']:>6} {kind:<5} {local_cer:7.4f} {tess_text}")
    for kind, values in rows.items():
        local_median = median_or_nan([v[0] for v in values])
        tess_median = median_or_nan([v[1] for v in values if v[1] is not None])
        print(f"median {kind:<5} ({len(values)} pages): local {local_median:.4f}   tesseract {tess_median:.4f}")
    prose_ok = median_or_nan([v[0] for v in rows["prose"]]) <= median_or_nan(
        [v[1] for v in rows["prose"] if v[1] is not None]
    )
    math_ok = median_or_nan([v[0] for v in rows["math"]]) <= 0.06
    print(
        f"target prose median <= tesseract's: {'PASS' if prose_ok else 'FAIL' if tess else 'n/a'};  math median <= 0.06: {'PASS' if math_ok else 'FAIL'}"
    )


def order_report(name: str, markdown: str, rules: list[dict]) -> None:
    results = [check_rule(rule, markdown) for rule in rules]
    order = [r for r in results if r.kind == "order"]
    other = [r for r in results if r.kind != "order"]
    print(
        f"{name}: order rules {sum(r.passed for r in order)}/{len(order)} pass; present/absent {sum(r.passed for r in other)}/{len(other)}"
    )
    for r in results:
        print(f"   {r.rule_id:<28} {r.kind:<8} {'pass' if r.passed else 'FAIL'} {r.detail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds (median reported)")
    parser.add_argument("--long-side", type=int, default=DEFAULT_LONG_SIDE, help="page image size for both engines")
    parser.add_argument(
        "--book-pages", type=int, default=60, help="pages of the longer scanned book (0: skip that part)"
    )
    parser.add_argument("--book-rounds", type=int, default=2, help="interleaved rounds on the longer book")
    add_isa_argument(parser)
    parser.add_argument("--book-only", action="store_true", help="only part 4, the longer book")
    args = parser.parse_args()
    cap_isa(args.isa)
    print(describe())
    if args.book_only:
        book_section(
            args.data / BOOK, args.book_pages, args.book_rounds, args.long_side, tesseract_version() is not None
        )
        return 0
    scan, gt_path = args.data / SCAN, args.data / SCAN_GT
    if not scan.is_file() or not gt_path.is_file():
        print(f"skip: {scan} not found (pass --data)")
        return 0
    gt = [json.loads(line) for line in gt_path.read_text().splitlines() if line.strip()]
    tess_version = tesseract_version()
    engine = LocalEngine()
    print(
        f"local: {engine.version()} on {engine.backend}, {engine.workers} workers x {engine.threads} thread(s), "
        f"page images {args.long_side} px long side, detector at most {DET_LONG_SIDE} px, no angle classifier"
    )
    if tess_version is None:
        print("tesseract: not installed, its columns are skipped (Debian: apt-get install tesseract-ocr)")
    else:
        print(f"tesseract: {tess_version}, -l eng --psm 3 --dpi <render dpi>, on the runner's page images")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        local_rates, runner_rates, local_runs = [], [], []
        tess_rates: dict[tuple[int, int], list[float]] = {s: [] for s in TESSERACT_SETTINGS}
        tess_texts: list[str] | None = None
        for _ in range(args.rounds):
            run = run_local(scan, work, args.long_side)
            local_runs.append(run)
            local_rates.append(len(run.pages) / run.wall_s)
            runner_rates.append(run.runner_pages_per_s)
            if tess_version:
                for setting in TESSERACT_SETTINGS:
                    texts, seconds = tesseract_end_to_end(scan, work, args.long_side, *setting)
                    tess_rates[setting].append(len(texts) / seconds)
                    tess_texts = tess_texts or texts
        accuracy_table(gt, local_runs[0], tess_texts)

        print("\n== Reading order: multi_column_miss.pdf rasterised (200 dpi gray JPEG, slight skew, image-only) ==")
        mc_pdf = args.data / MULTI_COLUMN
        rules_path = args.data / RULES
        if mc_pdf.is_file() and rules_path.is_file():
            rules = [json.loads(line) for line in rules_path.read_text().splitlines() if line.strip()]
            rules = [r for r in rules if r.get("pdf") == mc_pdf.name and r["type"] in ("order", "present", "absent")]
            mc_scan = rasterise_pdf(mc_pdf, work / "multi_column_scan.pdf", dpi=200)
            mc_local = run_local(mc_scan, work, args.long_side)
            order_report("local", mc_local.markdown[1], rules)
            if tess_version:
                texts, _ = tesseract_end_to_end(mc_scan, work, args.long_side, 1, 2)
                order_report("tesseract", texts[0], rules)
        else:
            print(f"skip: {mc_pdf} not found")

    print(f"\n== Speed: end to end on the {len(gt)} image-only pages, median of {args.rounds} interleaved rounds ==")
    local_median = statistics.median(local_rates)
    print(
        f"local (bookocr ocr --engine local, whole CLI process): {local_median:.3f} pages/s  rounds {[round(r, 3) for r in local_rates]}"
    )
    print(f"local (the runner's own pages/s, without process start-up): {statistics.median(runner_rates):.3f} pages/s")
    if tess_version:
        best = max(TESSERACT_SETTINGS, key=lambda s: statistics.median(tess_rates[s]))
        for setting in TESSERACT_SETTINGS:
            procs, threads = setting
            rates = tess_rates[setting]
            print(
                f"tesseract ({procs} process(es) x OMP_THREAD_LIMIT={threads}, render included): {statistics.median(rates):.3f} pages/s  rounds {[round(r, 3) for r in rates]}"
            )
        ratio = local_median / statistics.median(tess_rates[best])
        print(
            f"ratio local / best tesseract ({best[0]}x{best[1]}): {ratio:.2f} (target >= 1.5: {'PASS' if ratio >= 1.5 else 'FAIL'})"
        )
    if args.book_pages > 0:
        book_section(args.data / BOOK, args.book_pages, args.book_rounds, args.long_side, tess_version is not None)
    return 0


def book_section(pdf: Path, pages: int, rounds: int, long_side: int, with_tesseract: bool) -> None:
    """Speed and CER on a book-length scan: pages of Whitehead's born-digital PDF rasterised into an image-only PDF.

    The 10-page run above mostly measures start-up (about 1 s before the first page); a book shows the
    rate a user sees. CER is against each source page's own text layer, for both engines.
    """
    print(
        f"\n== A longer scanned book: {pages} pages of {pdf.name} from page {BOOK_FIRST_PAGE}, rasterised (200 dpi gray JPEG, slight skew) =="
    )
    if not pdf.is_file():
        print(f"skip: {pdf} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        part = work / "part.pdf"
        with pymupdf.open(pdf) as doc, pymupdf.open() as out:
            last = min(doc.page_count, BOOK_FIRST_PAGE + pages - 1)
            numbers = range(BOOK_FIRST_PAGE, last + 1)
            references = [doc[n - 1].get_text() for n in numbers]
            out.insert_pdf(doc, from_page=BOOK_FIRST_PAGE - 1, to_page=last - 1)
            out.save(part)
        scan = rasterise_pdf(part, work / "scan.pdf", dpi=200)
        local_rates, tess_rates = [], []
        for _ in range(rounds):
            run = run_local(scan, work, long_side)
            local_rates.append(len(numbers) / run.wall_s)
            if with_tesseract:
                texts, seconds = tesseract_end_to_end(scan, work, long_side, 2, 1)
                tess_rates.append(len(numbers) / seconds)
    local_cer = statistics.median(cer(run.pages[i + 1], ref) for i, ref in enumerate(references))
    print(
        f"local: {statistics.median(local_rates):.3f} pages/s  rounds {[round(r, 3) for r in local_rates]}; median CER {local_cer:.4f}"
    )
    if with_tesseract:
        tess_cer = statistics.median(cer(text, ref) for text, ref in zip(texts, references))
        print(
            f"tesseract (2 processes x OMP_THREAD_LIMIT=1): {statistics.median(tess_rates):.3f} pages/s  rounds {[round(r, 3) for r in tess_rates]}; median CER {tess_cer:.4f}"
        )
        ratio = statistics.median(local_rates) / statistics.median(tess_rates)
        print(f"ratio local / tesseract: {ratio:.2f} (target >= 1.5: {'PASS' if ratio >= 1.5 else 'FAIL'})")


if __name__ == "__main__":
    sys.exit(main())
