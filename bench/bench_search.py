"""Benchmark issues 3 and 14: search_book over a library of up to 600,000 pages (1,000+ books).

The library: the text layers of Whitehead's *An Introduction to Mathematics* and
``bws_book_ch2`` imported from ``../shared/testdata`` through the real runner (into a scratch
corpus, indexed live as any run is; their folders are then copied into the library last, so that
equal scores never favour them), a DeepSeek-style LaTeX statistics book written in
``search_probes.py``, and generated distractor books of 250 pages up to ``--pages``: text cut into
1-4 word pieces from all three books and shuffled (so every probe word and formula fragment recurs
all over the library), 1% of words misread as OCR does and 1% replaced by made-up words (a large
vocabulary, as a real library has). Each distractor book is stored as a run stores one (manifest and
page files, written without fsync to save time), and its pages go into the index through
``SearchIndex.add_pages`` in batches.

Reported: index build rate and bytes per page; p50/p95 query latency per query kind in a warm
process, as the MCP server runs it (``Library.search``, wall time; and ``search_library`` alone,
the index's share), every probe run ``--rounds`` times; p50/p95 of a cold ``bookocr search`` CLI
process, end to end (``--cold-per-kind`` probes of each kind, twice); and recall@5 per probe kind for
``Library.search``, ``search_library``, and, up to ``--baselines-up-to`` pages, plain SQLite FTS5
over the raw markdown (no normalisation, no fuzzy expansion, AND of the words) and a rapidfuzz
``partial_ratio`` scan over every page.

    .venv/bin/python bench/bench_search.py                                   # 600,000 pages
    .venv/bin/python bench/bench_search.py --pages 20000                     # quick look, with baselines
    .venv/bin/python bench/bench_search.py --work /tmp/search600k --reuse    # query a library built before

``--reuse`` keeps a library the same ``--work`` folder holds from an earlier run of the same
``--pages`` (rebuilding only its index, through ``reindex``, when the index format has changed).
Skips (exit 0) when ../shared/testdata is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_report import describe  # noqa: E402
from search_probes import MATH_BOOK, MATH_PAGES, PROBE_PDFS, TESTDATA, Probe, math_probes, nohit_probes, sample_probes  # noqa: E402

from ocr_backend.engines.base import PageResult  # noqa: E402
from ocr_backend.sources import SourceInfo  # noqa: E402
from server import corpus as corpus_module  # noqa: E402
from server.corpus import DONE_STATUSES, Corpus  # noqa: E402
from server.library import Library  # noqa: E402
from server.runner import RunOptions, ocr_book  # noqa: E402
from server.search import SearchIndex, search_library  # noqa: E402
from server.search import store as search_store  # noqa: E402

KINDS = ("word", "phrase", "typo", "content", "math", "nohit")
PROBE_BOOKS = [*PROBE_PDFS, MATH_BOOK]
BOOK_PAGES = 250  # pages per generated distractor book
BATCH = 500  # pages per add_pages transaction
OCR_NOISE = 0.01  # share of words misread
NEW_WORDS = 0.01  # share of words replaced by made-up ones (names, other books' vocabulary)
FLOORS_MS = {"word": 60.0, "phrase": 60.0, "typo": 150.0, "math": 150.0}  # warm p95 (issue 14)
COLD_FLOOR_MS = 300.0  # a cold `bookocr search`, end to end
BYTES_PER_PAGE_FLOOR = 3072
LIBRARY_FILE = "library.json"  # in --work: what was built, for --reuse
OCR_CONFUSIONS = {
    "o": "0c",
    "l": "1i",
    "e": "co",
    "i": "l1",
    "s": "5",
    "a": "o",
    "n": "u",
    "m": "rn",
    "h": "b",
    "t": "f",
    "c": "e",
    "r": "n",
}
SYLLABLES = "ka lo mi ne ru sa ti vo ber cal dor fen gis hal jor kel lum mar nor pel quin ros sul tam ven wil xan yor zet".split()


# --- the library -------------------------------------------------------------------------------------
def import_probe_books(corpus: Corpus) -> tuple[list[tuple[str, int, str]], dict[str, float]]:
    """OCR (text layer) the probe books into the corpus through the runner, which indexes each page as it lands."""
    started = time.perf_counter()
    for book_id, pdf in PROBE_PDFS.items():
        ocr_book(corpus, pdf, RunOptions(book=book_id, engine="text-layer"))
    imported = time.perf_counter() - started
    write_math_book(corpus)
    return probe_book_pages(corpus), {"ocr_and_live_index_s": imported}


def probe_book_pages(corpus: Corpus) -> list[tuple[str, int, str]]:
    pages = []
    for book_id in PROBE_BOOKS:
        book = corpus.book(book_id)
        for number in range(1, book.page_count + 1):
            view = book.read_page(number)
            if view.status in DONE_STATUSES:
                pages.append((book_id, number, view.markdown))
    return pages


def write_book(corpus: Corpus, book_id: str, texts: list[str], engine: str) -> None:
    """Store a book as a run would store it (manifest + page files)."""
    digest = hashlib.sha256("".join(texts).encode()).hexdigest()
    info = SourceInfo(
        path=f"/bench/{book_id}.pdf", name=f"{book_id}.pdf", kind="pdf", sha256=digest, bytes=0, page_count=len(texts)
    )
    with corpus.lock(book_id):
        book = corpus.prepare_book(book_id, info, engine)
        for number, text in enumerate(texts, start=1):
            book.record(PageResult(number=number, markdown=text, status="ok", engine=engine, engine_version="bench"))
        book.flush()


def write_math_book(corpus: Corpus) -> None:
    """The DeepSeek-style book, stored as a run would store it, then indexed."""
    write_book(corpus, MATH_BOOK, [text for text, _ in MATH_PAGES], "deepseek")
    SearchIndex(corpus).sync_book(MATH_BOOK)


@contextlib.contextmanager
def unsynced_writes() -> Iterator[None]:
    """Write the distractor books' files without fsync (600,000 fsyncs would take most of an hour)."""

    def write(path: Path, data: str | bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)

    real = corpus_module.atomic_write
    corpus_module.atomic_write = write
    try:
        yield
    finally:
        corpus_module.atomic_write = real


def noisy(word: str, rng: np.random.Generator) -> str:
    """One misread character: a typical OCR confusion, a dropped letter, or a random letter."""
    i = int(rng.integers(len(word)))
    kind = int(rng.integers(3))
    if kind == 0 and word[i] in OCR_CONFUSIONS:
        options = OCR_CONFUSIONS[word[i]]
        return word[:i] + options[int(rng.integers(len(options)))] + word[i + 1 :]
    if kind == 1 and len(word) > 3:
        return word[:i] + word[i + 1 :]
    return word[:i] + chr(97 + int(rng.integers(26))) + word[i + 1 :]


def made_up_word(rng: np.random.Generator) -> str:
    return "".join(SYLLABLES[int(k)] for k in rng.integers(0, len(SYLLABLES), int(rng.integers(2, 5))))


def distractor_pages(pool: list[str], count: int, seed: int = 11) -> Iterator[str]:
    """Yield ``count`` generated pages: shuffled 1-4 word pieces of the probe books, 1% OCR noise."""
    rng = np.random.default_rng(seed)
    size = len(pool)
    for _ in range(count):
        pieces = int(rng.integers(70, 130))
        starts = rng.integers(0, size - 4, pieces)
        lengths = rng.integers(1, 5, pieces)
        words = [w for s, n in zip(starts, lengths) for w in pool[s : s + n]]
        draws = rng.random(len(words))
        for i in np.flatnonzero(draws < OCR_NOISE):
            words[i] = noisy(words[i], rng)
        for i in np.flatnonzero(draws > 1 - NEW_WORDS):
            words[i] = made_up_word(rng)
        for i in range(60, len(words), int(rng.integers(50, 90))):
            words[i] = "\n\n" + words[i]
        yield " ".join(words)


def build_library(
    corpus: Corpus, probe_pages: list[tuple[str, int, str]], total_pages: int, keep_texts: bool
) -> tuple[list[tuple[str, int, str]], dict[str, float]]:
    """Write the distractor books and index their pages; the texts are kept only for the baselines."""
    pool = [w for _, _, text in probe_pages for w in text.split()]
    index = SearchIndex(corpus)
    index.page_count()  # the index exists before the first book does (else its first use rebuilds it)
    wanted = max(0, total_pages - len(probe_pages))
    library = list(probe_pages) if keep_texts else []  # the probe books are indexed later, by the runner
    batch: list[tuple[str, int, str, str | None]] = []
    book_texts: list[str] = []
    index_s = files_s = 0.0

    def flush() -> float:
        started = time.perf_counter()
        index.add_pages(batch)
        batch.clear()
        return time.perf_counter() - started

    def write(number: int) -> float:
        started = time.perf_counter()
        write_book(corpus, f"gen-{number:04d}", book_texts, "bench")
        book_texts.clear()
        return time.perf_counter() - started

    with unsynced_writes():
        for n, text in enumerate(distractor_pages(pool, wanted)):
            book, page = f"gen-{n // BOOK_PAGES + 1:04d}", n % BOOK_PAGES + 1
            book_texts.append(text)
            batch.append((book, page, text, None))
            if keep_texts:
                library.append((book, page, text))
            if len(book_texts) == BOOK_PAGES:
                files_s += write(n // BOOK_PAGES + 1)
            if len(batch) == BATCH:
                index_s += flush()
            if n % 50_000 == 0 and n:
                print(f"  {n} pages written and indexed", flush=True)
        if book_texts:
            files_s += write(wanted // BOOK_PAGES + 1)
        if batch:
            index_s += flush()
    single = time_single_commits(index)
    return library, {
        "distractor_pages": wanted,
        "distractor_books": -(-wanted // BOOK_PAGES),
        "build_s": index_s,
        "build_pages_per_s": wanted / index_s if index_s else 0.0,
        "files_s": files_s,
        **single,
    }


def time_single_commits(index: SearchIndex, count: int = 300) -> dict[str, float]:
    """add_page one page per transaction, as a run does (re-adding pages of a generated book)."""
    texts = [text for _, _, text in index_sample(index, count)]
    started = time.perf_counter()
    for n, text in enumerate(texts, start=1):
        index.add_page("gen-0001", n, text)
    seconds = time.perf_counter() - started
    return {"live_add_page_per_s": count / seconds}


def index_sample(index: SearchIndex, count: int) -> list[tuple[str, int, str]]:
    book = index.corpus.book("gen-0001")
    return [("gen-0001", n, book.read_page(n).markdown) for n in range(1, min(count, book.page_count) + 1)]


def index_bytes(index: SearchIndex) -> int:
    index._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in index.path.parent.glob(index.path.name + "*") if not p.name.endswith("-shm"))


def prepare_library(args: argparse.Namespace) -> tuple[Corpus, list[tuple[str, int, str]], dict[str, Any]]:
    """Build the library in ``--work`` (or, with ``--reuse``, take the one an earlier run built there)."""
    saved = args.work / LIBRARY_FILE
    corpus = Corpus(args.work / "corpus")
    if args.reuse and saved.exists():
        built = json.loads(saved.read_text())
        if built["pages"] == args.pages:
            print(f"reusing the library in {args.work} (built {built['built']})", flush=True)
            built["library"] = []
            reindex_if_stale(corpus, built)
            return corpus, probe_book_pages(corpus), built
    shutil.rmtree(args.work, ignore_errors=True)
    scratch = Corpus(args.work / "scratch")
    probe_pages, import_stats = import_probe_books(scratch)
    keep_texts = args.pages <= args.baselines_up_to
    library, build = build_library(corpus, probe_pages, args.pages, keep_texts)
    for book_id in PROBE_BOOKS:  # last: equal scores must not favour the expected pages
        shutil.copytree(scratch.root / book_id, corpus.root / book_id)
        SearchIndex(corpus).sync_book(book_id)
    shutil.rmtree(scratch.root)
    built = {"pages": args.pages, "built": time.strftime("%Y-%m-%d %H:%M:%S"), "build": {**build, **import_stats}}
    saved.write_text(json.dumps(built, indent=1))
    built["library"] = library
    return corpus, probe_pages, built


def reindex_if_stale(corpus: Corpus, built: dict[str, Any]) -> None:
    """An index of another format or normalisation is rebuilt from the page files, as a search would: timed."""
    index = SearchIndex(corpus)
    problem = search_store.check_index_file(index.path)
    if problem is None:
        return
    print(f"the index is not current ({problem}): rebuilding it from the page files", flush=True)
    started = time.perf_counter()
    pages = index.reindex()
    seconds = time.perf_counter() - started
    built["build"]["reindex_s"] = seconds
    built["build"]["reindex_pages_per_s"] = pages / seconds


# --- the baselines --------------------------------------------------------------------------------------
class PlainFts:
    """SQLite FTS5 over the raw markdown: its own tokenizer only, the query's words AND-ed (a quoted query as a phrase)."""

    def __init__(self, path: Path, library: list[tuple[str, int, str]]) -> None:
        self.keys = [(book, page) for book, page, _ in library]
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("DROP TABLE IF EXISTS plain")
        self.conn.execute("CREATE VIRTUAL TABLE plain USING fts5(body)")
        started = time.perf_counter()
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT INTO plain(rowid, body) VALUES(?, ?)", ((i, text) for i, (_, _, text) in enumerate(library))
        )
        self.conn.execute("COMMIT")
        self.build_s = time.perf_counter() - started

    def search(self, query: str) -> list[tuple[str, int]]:
        words = re.findall(r"\w+", query)
        if not words:
            return []
        quoted = [f'"{w}"' for w in words]
        expression = f'"{" ".join(words)}"' if query.startswith('"') and query.endswith('"') else " AND ".join(quoted)
        rows = self.conn.execute(
            "SELECT rowid FROM plain WHERE plain MATCH ? ORDER BY rank LIMIT 10", (expression,)
        ).fetchall()
        return [self.keys[r] for (r,) in rows]


class PartialRatioScan:
    """rapidfuzz partial_ratio of the lower-cased query against every lower-cased page; best 10."""

    def __init__(self, library: list[tuple[str, int, str]]) -> None:
        self.keys = [(book, page) for book, page, _ in library]
        self.texts = [text.lower() for _, _, text in library]

    def search(self, query: str) -> list[tuple[str, int]]:
        found = process.extract(query.strip('"').lower(), self.texts, scorer=fuzz.partial_ratio, limit=10)
        return [self.keys[i] for _, _, i in found]


def run_baselines(args: argparse.Namespace, library: list[tuple[str, int, str]], probes: list[Probe]) -> dict[str, Any]:
    random.Random(5).shuffle(library)  # the order of the pages must not favour the expected ones
    plain = PlainFts(args.work / "plain.sqlite", library)
    plain_lat, plain_res = run_baseline(plain.search, probes)
    scan_probes = probes
    if args.scan_probes:
        by_kind: dict[str, int] = defaultdict(int)
        scan_probes = [
            p
            for p in probes
            if (by_kind.__setitem__(p.kind, by_kind[p.kind] + 1) or by_kind[p.kind] <= args.scan_probes)
        ]
    scan = PartialRatioScan(library)
    scan_lat, scan_res = run_baseline(scan.search, scan_probes)
    return {
        "plain_fts5": {
            "build_s": plain.build_s,
            "latency_ms": percentiles(plain_lat),
            "recall_at_5": recall_at_5(probes, plain_res),
        },
        "partial_ratio_scan": {
            "probes": len(scan_probes),
            "latency_ms": percentiles(scan_lat),
            "recall_at_5": recall_at_5(scan_probes, scan_res),
        },
    }


# --- running the probes ---------------------------------------------------------------------------------
Hits = list[tuple[str, int, float]]  # (book, page, score)


def rank_of(probe: Probe, hits: list[tuple[str, int]]) -> int | None:
    key = (probe.book, probe.page)
    return hits.index(key) + 1 if key in hits else None


def warm_searchers(corpus: Corpus) -> dict[str, Callable[[str], tuple[int, Hits]]]:
    """The MCP server's path (``Library.search``: search, then heading promotion and sections) and the index alone."""
    library = Library(corpus)

    def through_library(query: str) -> tuple[int, Hits]:
        found = library.search(query, limit=10)
        return found.total, [(h.book, h.page, h.score) for h in found.hits]

    def index_only(query: str) -> tuple[int, Hits]:
        found = search_library(corpus, query, limit=10)
        return found.total, [(h.book, h.page, h.score) for h in found.hits]

    return {"library": through_library, "index": index_only}


def run_warm(
    search: Callable[[str], tuple[int, Hits]], probes: list[Probe], rounds: int
) -> tuple[dict[str, list[float]], dict[int, list[tuple[str, int]]], list[dict[str, Any]]]:
    """Every probe ``rounds`` times in a shuffled order: wall time per call, and the first round's hits."""
    latencies: dict[str, list[float]] = defaultdict(list)
    results: dict[int, list[tuple[str, int]]] = {}
    details = []
    order = list(range(len(probes)))
    for round_number in range(rounds):
        random.Random(round_number).shuffle(order)
        for i in order:
            started = time.perf_counter()
            total, hits = search(probes[i].query)
            latencies[probes[i].kind].append((time.perf_counter() - started) * 1000)
            if round_number == 0:
                results[i] = [(book, page) for book, page, _ in hits]
                details.append(
                    {
                        "kind": probes[i].kind,
                        "query": probes[i].query,
                        "expected": [probes[i].book, probes[i].page],
                        "rank": rank_of(probes[i], results[i]),
                        "total": total,
                        "top": [list(hit) for hit in hits[:3]],
                    }
                )
    return latencies, results, details


def bookocr_command() -> list[str]:
    script = Path(sys.executable).parent / "bookocr"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


def run_cold(corpus: Corpus, probes: list[Probe], per_kind: int, rounds: int = 2) -> dict[str, list[float]]:
    """A fresh ``bookocr search`` process per query, end to end (start-up, imports, the search, the output)."""
    chosen = [p for kind in KINDS for p in [q for q in probes if q.kind == kind][:per_kind]]
    latencies: dict[str, list[float]] = defaultdict(list)
    command = [*bookocr_command(), "--corpus", str(corpus.root), "search"]
    for _ in range(rounds):
        for probe in chosen:
            started = time.perf_counter()
            done = subprocess.run([*command, probe.query], capture_output=True, text=True, check=False)
            latencies[probe.kind].append((time.perf_counter() - started) * 1000)
            if done.returncode != 0:
                raise RuntimeError(f"bookocr search {probe.query!r} failed ({done.returncode}): {done.stderr}")
    return latencies


def run_baseline(search: Any, probes: list[Probe]) -> tuple[dict[str, list[float]], dict[int, list[tuple[str, int]]]]:
    latencies: dict[str, list[float]] = defaultdict(list)
    results = {}
    for i, probe in enumerate(probes):
        started = time.perf_counter()
        results[i] = search(probe.query)
        latencies[probe.kind].append((time.perf_counter() - started) * 1000)
    return latencies, results


def recall_at_5(probes: list[Probe], results: dict[int, list[tuple[str, int]]]) -> dict[str, float]:
    found: dict[str, list[bool]] = defaultdict(list)
    for i, probe in enumerate(probes):
        if i not in results:
            continue
        if probe.kind == "nohit":
            found[probe.kind].append(not results[i])  # "recall" of a no-hit query: it returned nothing
        elif probe.kind != "word":  # a single word recurs on ~1% of the generated pages: no one right page
            rank = rank_of(probe, results[i])
            found[probe.kind].append(rank is not None and rank <= 5)
    return {kind: float(np.mean(v)) for kind, v in found.items()}


def percentiles(latencies: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        kind: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": len(v)}
        for kind, v in latencies.items()
    }


def floors(report: dict[str, Any]) -> list[str]:
    """Issue 14's floors, each with the figure measured and whether it holds."""
    warm = report["library"]["latency_ms"]
    lines = [
        f"warm {kind} p95 {warm[kind]['p95']:.1f} ms <= {limit:.0f}: {'ok' if warm[kind]['p95'] <= limit else 'MISSED'}"
        for kind, limit in FLOORS_MS.items()
        if kind in warm
    ]
    cold = max((v["p95"] for v in report["cold_cli"]["latency_ms"].values()), default=0.0)
    lines.append(
        f"cold CLI p95 (worst kind) {cold:.0f} ms <= {COLD_FLOOR_MS:.0f}: {'ok' if cold <= COLD_FLOOR_MS else 'MISSED'}"
    )
    size = report["bytes_per_page"]
    lines.append(
        f"index {size:.0f} bytes/page <= {BYTES_PER_PAGE_FLOOR}: {'ok' if size <= BYTES_PER_PAGE_FLOOR else 'MISSED'}"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=600_000, help="library size in pages (default 600,000)")
    parser.add_argument(
        "--per-kind", type=int, default=30, help="sampled probes per kind (phrase, typo, content, word)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each probe is searched for the latency figures")
    parser.add_argument(
        "--cold-per-kind", type=int, default=5, help="probes per kind run as a cold CLI process (twice)"
    )
    parser.add_argument(
        "--baselines-up-to", type=int, default=50_000, help="run plain FTS5 and the scan only up to this many pages"
    )
    parser.add_argument(
        "--scan-probes",
        type=int,
        default=0,
        help="run the partial_ratio scan on only this many probes per kind (0: all)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/bookocr-bench-search"), help="scratch folder (wiped)")
    parser.add_argument("--reuse", action="store_true", help="query the library an earlier run built in --work")
    parser.add_argument("--build-only", action="store_true", help="build the library (for a later --reuse) and stop")
    parser.add_argument(
        "--out", type=Path, default=Path(".bench-out/search.json"), help="where to write the full results"
    )
    args = parser.parse_args()
    print(describe(), flush=True)
    if not all(p.exists() for p in PROBE_PDFS.values()):
        print(f"skip: test data not found under {TESTDATA}")
        return 0
    corpus, probe_pages, built = prepare_library(args)
    if args.build_only:
        print(f"built: {json.dumps(built['build'])}")
        return 0
    probes = sample_probes(probe_pages, per_kind=args.per_kind) + math_probes() + nohit_probes()
    index = SearchIndex(corpus)
    pages_indexed = index.page_count()
    size = index_bytes(index)
    print(f"library: {pages_indexed} pages ({len(probe_pages)} from the probe books), {len(probes)} probes", flush=True)

    started = time.perf_counter()  # the first search checks every book against its manifest, once
    search_library(corpus, "zebra")
    first_check_s = time.perf_counter() - started
    search_store.SHARED.clear()  # as a fresh process (the CLI)
    first_exact = search_library(corpus, next(p.query for p in probes if p.kind == "phrase")).elapsed_ms
    first = search_library(corpus, "warm up the vocabluary")
    terms = index._conn().execute("SELECT count(*) FROM terms").fetchone()[0]

    report: dict[str, Any] = {
        "pages": pages_indexed,
        "books": len(corpus.book_ids()),
        "probe_book_pages": len(probe_pages),
        "probes": {kind: sum(p.kind == kind for p in probes) for kind in KINDS},
        "build": built["build"],
        "index_bytes": size,
        "bytes_per_page": size / pages_indexed,
        "vocabulary_terms": terms,
        "first_check_s": first_check_s,
        "first_exact_query_ms": first_exact,
        "first_fuzzy_query_ms": first.elapsed_ms,
    }
    details: list[dict[str, Any]] = []
    for name, search in warm_searchers(corpus).items():
        latencies, results, found = run_warm(search, probes, args.rounds)
        report[name] = {"latency_ms": percentiles(latencies), "recall_at_5": recall_at_5(probes, results)}
        print(f"warm {name}: {json.dumps(report[name])}", flush=True)
        details = details or found
    report["cold_cli"] = {"latency_ms": percentiles(run_cold(corpus, probes, args.cold_per_kind))}
    print(f"cold CLI: {json.dumps(report['cold_cli'])}", flush=True)
    if built["library"]:
        report.update(run_baselines(args, built["library"], probes))
    report["floors"] = floors(report)
    report["misses"] = [
        d for d in details if d["kind"] not in ("nohit", "word") and (d["rank"] is None or d["rank"] > 5)
    ]
    report["probe_results"] = details
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print_report(report)
    print(f"\nfull results: {args.out}")
    return 0


def print_report(r: dict[str, Any]) -> None:
    b = r["build"]
    print(
        f"\nindex build: {b['distractor_pages']} pages ({b.get('distractor_books', '?')} books) in {b['build_s']:.1f} s"
        f" = {b['build_pages_per_s']:.0f} pages/s (batches of {BATCH});"
        f" live add_page (one commit each) {b['live_add_page_per_s']:.0f} pages/s"
    )
    if "reindex_pages_per_s" in b:
        print(
            f"index rebuilt from the page files (reindex): {b['reindex_s']:.1f} s = {b['reindex_pages_per_s']:.0f} pages/s"
        )
    print(
        f"index size: {r['index_bytes'] / 1e6:.1f} MB = {r['bytes_per_page']:.0f} bytes/page; vocabulary {r['vocabulary_terms']} terms"
    )
    print(
        f"first search after the build (checks each book's manifest once): {r['first_check_s']:.1f} s; then, in a fresh"
        f" process (index only): a phrase {r['first_exact_query_ms']:.0f} ms, a misspelt query"
        f" {r['first_fuzzy_query_ms']:.0f} ms"
    )
    if "ocr_and_live_index_s" in b:
        print(
            f"probe books: text-layer OCR of the two PDFs through the runner, indexing each page as it lands: {b['ocr_and_live_index_s']:.1f} s"
        )
    print(f"{r['pages']} pages in {r['books']} books; probes: {r['probes']}")
    columns = ["library", "index", "cold_cli", "plain_fts5", "partial_ratio_scan"]
    names = {
        "library": "warm MCP",
        "index": "index only",
        "cold_cli": "cold CLI",
        "plain_fts5": "plain FTS5",
        "partial_ratio_scan": "scan",
    }
    shown = [c for c in columns if c in r]
    print(
        "\np50/p95 ms"
        + "".join(f" {names[c]:>17}" for c in shown)
        + " | recall@5"
        + "".join(f" {names[c]:>11}" for c in shown if "recall_at_5" in r[c])
    )
    for kind in KINDS:
        lat = [r[c]["latency_ms"].get(kind) for c in shown]
        rec = [r[c]["recall_at_5"].get(kind) for c in shown if "recall_at_5" in r[c]]
        print(
            f"{kind:<10}"
            + "".join(f" {_p50_p95(x):>17}" for x in lat)
            + " |         "
            + "".join(f" {(f'{x:.2f}' if x is not None else '-'):>11}" for x in rec)
        )
    print(
        "(word: latency only, its words recur all over the generated pages; nohit 'recall' = share of no-hit queries that returned no page)"
    )
    print("\nfloors (issue 14):")
    for line in r["floors"]:
        print(f"  {line}")
    for miss in r["misses"]:
        print(
            f"  miss [{miss['kind']}] {miss['query']!r} expected {miss['expected']} rank {miss['rank']} top {miss['top'][:2]}"
        )


def _p50_p95(latency: dict[str, float] | None) -> str:
    return f"{latency['p50']:.1f}/{latency['p95']:.1f}" if latency else "-"


if __name__ == "__main__":
    sys.exit(main())
