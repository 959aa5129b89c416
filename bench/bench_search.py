"""Benchmark issue 3: search_book over a 50,000-page library.

The library: the text layers of Whitehead's *An Introduction to Mathematics* and
``bws_book_ch2`` imported from ``../shared/testdata`` through the real runner (into a scratch
corpus, indexed live as any run is; their folders are then copied into the library last, so that
equal scores never favour them), a DeepSeek-style LaTeX statistics book written in
``search_probes.py``, and generated distractor books up to ``--pages``: text cut into 1-4 word pieces from all three books
and shuffled (so every probe word and formula fragment recurs all over the library), 1% of words
misread as OCR does and 1% replaced by made-up words (a large vocabulary, as a real library has). Distractors go straight through ``SearchIndex.add_pages``.

Reported: index build rate and bytes per page; p50/p95 in-process query latency per query
kind (``elapsed_ms`` as search_library measures it, every probe run ``--rounds`` times); and
recall@5 per probe kind for bookocr search, plain SQLite FTS5 over the raw markdown (no
normalisation, no fuzzy expansion, AND of the words), and a rapidfuzz ``partial_ratio`` scan
over every page.

    .venv/bin/python bench/bench_search.py                   # 50,000 pages
    .venv/bin/python bench/bench_search.py --pages 5000      # quick look

Skips (exit 0) when ../shared/testdata is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sqlite3
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_report import describe  # noqa: E402
from search_probes import MATH_BOOK, MATH_PAGES, PROBE_PDFS, TESTDATA, Probe, math_probes, nohit_probes, sample_probes  # noqa: E402

from ocr_backend.engines.base import PageResult  # noqa: E402
from ocr_backend.sources import SourceInfo  # noqa: E402
from server.corpus import DONE_STATUSES, Corpus  # noqa: E402
from server.runner import RunOptions, ocr_book  # noqa: E402
from server.search import SearchIndex, search_library  # noqa: E402
from server.search import store as search_store  # noqa: E402

KINDS = ("word", "phrase", "typo", "content", "math", "nohit")
BOOK_PAGES = 250  # pages per generated distractor book
BATCH = 500  # pages per add_pages transaction
OCR_NOISE = 0.01  # share of words misread
NEW_WORDS = 0.01  # share of words replaced by made-up ones (names, other books' vocabulary)
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
    pages = []
    for book_id in [*PROBE_PDFS, MATH_BOOK]:
        book = corpus.book(book_id)
        for number in range(1, book.page_count + 1):
            view = book.read_page(number)
            if view.status in DONE_STATUSES:
                pages.append((book_id, number, view.markdown))
    return pages, {"ocr_and_live_index_s": imported}


def write_math_book(corpus: Corpus) -> None:
    """The DeepSeek-style book, stored as a run would store it (manifest + page files), then indexed."""
    texts = [text for text, _ in MATH_PAGES]
    digest = hashlib.sha256("".join(texts).encode()).hexdigest()
    info = SourceInfo(
        path=f"/bench/{MATH_BOOK}.pdf",
        name=f"{MATH_BOOK}.pdf",
        kind="pdf",
        sha256=digest,
        bytes=0,
        page_count=len(texts),
    )
    with corpus.lock(MATH_BOOK):
        book = corpus.prepare_book(MATH_BOOK, info, "deepseek")
        for number, text in enumerate(texts, start=1):
            book.record(
                PageResult(number=number, markdown=text, status="ok", engine="deepseek", engine_version="bench")
            )
        book.flush()
    SearchIndex(corpus).sync_book(MATH_BOOK)


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


def distractor_pages(pool: list[str], count: int, seed: int = 11) -> Any:
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
    corpus: Corpus, probe_pages: list[tuple[str, int, str]], total_pages: int
) -> tuple[list[tuple[str, int, str]], dict[str, float]]:
    pool = [w for _, _, text in probe_pages for w in text.split()]
    index = SearchIndex(corpus)
    wanted = max(0, total_pages - len(probe_pages))
    library = list(probe_pages)  # the probe books are added to the index later, by the runner
    batch: list[tuple[str, int, str, str | None]] = []
    seconds = 0.0

    def flush() -> float:
        started = time.perf_counter()
        index.add_pages(batch)
        batch.clear()
        return time.perf_counter() - started

    for n, text in enumerate(distractor_pages(pool, wanted)):
        book, page = f"gen-{n // BOOK_PAGES + 1:04d}", n % BOOK_PAGES + 1
        batch.append((book, page, text, None))
        library.append((book, page, text))
        if len(batch) == BATCH:
            seconds += flush()
    if batch:
        seconds += flush()
    single = time_single_commits(index)
    return library, {
        "distractor_pages": wanted,
        "build_s": seconds,
        "build_pages_per_s": wanted / seconds if seconds else 0.0,
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
    conn = index._conn()
    rows = conn.execute(
        "SELECT id, text FROM pages WHERE id >> 20 = (SELECT num FROM books WHERE book='gen-0001') LIMIT ?", (count,)
    )
    return [("gen-0001", rowid & 0xFFFFF, search_store.unpack(blob)) for rowid, blob in rows]


def index_bytes(index: SearchIndex) -> int:
    index._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in index.path.parent.glob(index.path.name + "*") if not p.name.endswith("-shm"))


# --- the baselines --------------------------------------------------------------------------------------
class PlainFts:
    """SQLite FTS5 over the raw markdown: its own tokenizer only, the query's words AND-ed (a quoted query as a phrase)."""

    def __init__(self, path: Path, library: list[tuple[str, int, str]]) -> None:
        self.keys = [(book, page) for book, page, _ in library]
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
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


# --- running the probes ---------------------------------------------------------------------------------
def rank_of(probe: Probe, hits: list[tuple[str, int]]) -> int | None:
    key = (probe.book, probe.page)
    return hits.index(key) + 1 if key in hits else None


def run_ours(
    corpus: Corpus, probes: list[Probe], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[int, list[tuple[str, int]]], list[dict[str, Any]]]:
    latencies: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)  # this thread's CPU time: what the query costs, whatever else runs
    results: dict[int, list[tuple[str, int]]] = {}
    details = []
    order = list(range(len(probes)))
    for round_number in range(rounds):
        random.Random(round_number).shuffle(order)
        for i in order:
            started = time.thread_time()
            response = search_library(corpus, probes[i].query, limit=10)
            cpu[probes[i].kind].append((time.thread_time() - started) * 1000)
            latencies[probes[i].kind].append(response.elapsed_ms)
            if round_number == 0:
                results[i] = [(h.book, h.page) for h in response.hits]
                details.append(
                    {
                        "kind": probes[i].kind,
                        "query": probes[i].query,
                        "expected": [probes[i].book, probes[i].page],
                        "rank": rank_of(probes[i], results[i]),
                        "total": response.total,
                        "top": [[h.book, h.page, h.score] for h in response.hits[:3]],
                    }
                )
    return latencies, cpu, results, details


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=50_000, help="library size in pages (default 50,000)")
    parser.add_argument(
        "--per-kind", type=int, default=30, help="sampled probes per kind (phrase, typo, content, word)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each probe is searched for the latency figures")
    parser.add_argument(
        "--scan-probes",
        type=int,
        default=0,
        help="run the partial_ratio scan on only this many probes per kind (0: all)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/bookocr-bench-search"), help="scratch folder (wiped)")
    parser.add_argument(
        "--out", type=Path, default=Path(".bench-out/search.json"), help="where to write the full results"
    )
    args = parser.parse_args()
    print(describe())
    if not all(p.exists() for p in PROBE_PDFS.values()):
        print(f"skip: test data not found under {TESTDATA}")
        return 0
    shutil.rmtree(args.work, ignore_errors=True)
    corpus = Corpus(args.work / "corpus")

    scratch = Corpus(args.work / "scratch")
    probe_pages, import_stats = import_probe_books(scratch)
    probes = sample_probes(probe_pages, per_kind=args.per_kind) + math_probes() + nohit_probes()
    library, build = build_library(corpus, probe_pages, args.pages)
    for book_id in [*PROBE_PDFS, MATH_BOOK]:  # last: equal scores must not favour the expected pages
        shutil.copytree(scratch.root / book_id, corpus.root / book_id)
        SearchIndex(corpus).sync_book(book_id)
    random.Random(5).shuffle(library)  # nor, in the baselines, the order of the pages
    index = SearchIndex(corpus)
    pages_indexed = index.page_count()
    size = index_bytes(index)
    print(f"library: {pages_indexed} pages ({len(probe_pages)} from the probe books), {len(probes)} probes", flush=True)

    search_store.SHARED.clear()  # as a fresh process (the CLI): an exact query needs no vocabulary ...
    first_exact = search_library(corpus, next(p.query for p in probes if p.kind == "phrase")).elapsed_ms
    first = search_library(corpus, "warm up the vocabulary")  # ... a misspelt one reads it whole, once
    vocabulary = SearchIndex(corpus).vocabulary()
    vocab_terms = len(vocabulary) if vocabulary else 0

    ours_lat, ours_cpu, ours_res, details = run_ours(corpus, probes, args.rounds)
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

    report = {
        "pages": pages_indexed,
        "probe_book_pages": len(probe_pages),
        "probes": {kind: sum(p.kind == kind for p in probes) for kind in KINDS},
        "build": {**build, **import_stats},
        "index_bytes": size,
        "bytes_per_page": size / pages_indexed,
        "vocabulary_terms": vocab_terms,
        "first_exact_query_ms": first_exact,
        "first_fuzzy_query_ms": first.elapsed_ms,
        "ours": {
            "latency_ms": percentiles(ours_lat),
            "cpu_ms": percentiles(ours_cpu),
            "recall_at_5": recall_at_5(probes, ours_res),
        },
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
        "misses": [d for d in details if d["kind"] not in ("nohit", "word") and (d["rank"] is None or d["rank"] > 5)],
        "probe_results": details,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print_report(report)
    print(f"\nfull results: {args.out}")
    return 0


def print_report(r: dict[str, Any]) -> None:
    b = r["build"]
    print(
        f"\nindex build: {b['distractor_pages']} pages in {b['build_s']:.1f} s = {b['build_pages_per_s']:.0f} pages/s (batches of {BATCH});"
        f" live add_page (one commit each) {b['live_add_page_per_s']:.0f} pages/s"
    )
    print(
        f"index size: {r['index_bytes'] / 1e6:.1f} MB = {r['bytes_per_page']:.0f} bytes/page; vocabulary {r['vocabulary_terms']} terms"
    )
    print(
        f"first query of a fresh process: exact {r['first_exact_query_ms']:.0f} ms; the first that needs near spellings"
        f" {r['first_fuzzy_query_ms']:.0f} ms (reads the vocabulary)"
    )
    print(
        f"probe books: text-layer OCR of the two PDFs through the runner, indexing each page as it lands: {b['ocr_and_live_index_s']:.1f} s"
    )
    print(f"probes: {r['probes']}")
    print(
        f"\n{'kind':<8} {'ours p50/p95 ms':>17} {'(cpu ms)':>11} {'plain FTS5 p50/p95':>19} {'scan p50/p95 ms':>17} | {'recall@5 ours':>13} {'plain':>6} {'scan':>6}"
    )
    for kind in KINDS:
        o, p, s = (r[k]["latency_ms"].get(kind) for k in ("ours", "plain_fts5", "partial_ratio_scan"))
        c = r["ours"]["cpu_ms"].get(kind)
        ro, rp, rs = (r[k]["recall_at_5"].get(kind) for k in ("ours", "plain_fts5", "partial_ratio_scan"))

        def lat(x: dict[str, float] | None) -> str:
            return f"{x['p50']:.1f}/{x['p95']:.1f}" if x else "-"

        def rec(x: float | None) -> str:
            return f"{x:.2f}" if x is not None else "-"

        print(
            f"{kind:<8} {lat(o):>17} {lat(c):>11} {lat(p):>19} {lat(s):>17} | {rec(ro):>13} {rec(rp):>6} {rec(rs):>6}"
        )
    print(
        "(word: latency only, its words recur all over the generated pages; nohit 'recall' = share of no-hit queries that returned no page)"
    )
    for miss in r["misses"]:
        print(
            f"  miss [{miss['kind']}] {miss['query']!r} expected {miss['expected']} rank {miss['rank']} top {miss['top'][:2]}"
        )


if __name__ == "__main__":
    sys.exit(main())
