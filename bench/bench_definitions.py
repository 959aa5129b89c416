"""Benchmark issue 15: "where is X defined / introduced?" — is the defining page the top hit?

The two probe books of ``bench_search.py`` (Whitehead's *An Introduction to Mathematics* and
``bws_book_ch2``) are OCR'd with the text-layer engine through the library into a scratch corpus; each
probe is a term and the PDF page that defines or introduces it (a heading that names it, or a sentence
such as "... is called a vector"). Reported: the share of probes whose top hit, library-wide, is that
page, for a plain search and (where the code has it) a search asked for definitions.

    .venv/bin/python bench/bench_definitions.py
    .venv/bin/python bench/bench_definitions.py --corpus /tmp/defs   # keep (and reuse) the corpus

Skips (exit 0) when ../shared/testdata is absent.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from cpu_report import describe  # noqa: E402
from search_probes import PROBE_PDFS  # noqa: E402

from server.corpus import Corpus  # noqa: E402
from server.library import Library  # noqa: E402
from server.runner import RunOptions  # noqa: E402

# (book, term, PDF page that defines or introduces it)
PROBES: list[tuple[str, str, int]] = [
    ("bws-ch2", "domino analogy", 19),
    ("bws-ch2", "induction", 19),
    ("bws-ch2", "mathematical induction", 19),
    ("bws-ch2", "n-cube", 4),
    ("bws-ch2", "recurrence relations", 43),
    ("bws-ch2", "factorial function", 38),
    ("bws-ch2", "Tower of Hanoi", 39),
    ("bws-ch2", "recursive programming", 37),
    ("bws-ch2", "winning strategies", 33),
    ("bws-ch2", "dominos and tilings", 29),
    ("bws-ch2", "lines on the plane", 12),
    ("bws-ch2", "bigger cubes", 4),
    ("bws-ch2", "other analogies", 25),
    ("bws-ch2", "lookahead", 48),
    ("whitehead", "unknown", 13),
    ("whitehead", "vector", 41),
    ("whitehead", "acceleration", 42),
    ("whitehead", "quadratic equations", 54),
    ("whitehead", "incommensurable", 59),
    ("whitehead", "abscissa", 78),
    ("whitehead", "ordinate", 78),
    ("whitehead", "imaginary quantities", 92),
    ("whitehead", "ellipse", 109),
    ("whitehead", "hyperbola", 109),
    ("whitehead", "parabola", 109),
    ("whitehead", "major axis", 112),
    ("whitehead", "function", 122),
    ("whitehead", "resonance", 143),
    ("whitehead", "triangulation", 148),
    ("whitehead", "scale of the map", 149),
    ("whitehead", "harmonic analysis", 161),
    ("whitehead", "periodic function", 160),
    ("whitehead", "permutations", 164),
    ("whitehead", "sum to infinity", 169),
    ("whitehead", "divergent", 170),
    ("whitehead", "uniformly convergent", 175),
    ("whitehead", "exponential function", 178),
    ("whitehead", "addition-theorem", 178),
    ("whitehead", "differential coefficient", 197),
]


def build(root: Path) -> Library:
    library = Library(Corpus(root))
    for book_id, pdf in PROBE_PDFS.items():
        if book_id not in library.book_ids():
            library.ocr(pdf, RunOptions(book=book_id, engine="text-layer"))
    return library


def top_hit_share(library: Library, defined: bool) -> tuple[float, list[str]]:
    """The share of probes whose top hit is the expected page, and a line per miss."""
    kwargs = {"defined": True} if defined else {}
    misses = []
    for book, term, page in PROBES:
        hits = library.search(term, limit=5, **kwargs).hits
        top = (hits[0].book, hits[0].page) if hits else None
        if top != (book, page):
            where = [(h.book, h.page) for h in hits[:3]]
            misses.append(f"  miss {term!r}: want {book} p{page}, got {where}")
    return 1 - len(misses) / len(PROBES), misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="corpus folder to build in (default: a temporary one)")
    parser.add_argument("--verbose", action="store_true", help="list the misses")
    args = parser.parse_args()
    print(describe())
    if not all(pdf.is_file() for pdf in PROBE_PDFS.values()):
        print("skipped: the probe PDFs under ../shared/testdata are not here")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        library = build(args.corpus or Path(scratch) / "corpus")
        print(f"{len(PROBES)} probes over {', '.join(PROBE_PDFS)} (built in {time.perf_counter() - started:.1f} s)")
        modes = [False, True] if "defined" in inspect.signature(library.search).parameters else [False]
        for defined in modes:
            share, misses = top_hit_share(library, defined)
            print(f"{'defined=True' if defined else 'plain search'}: defining page is the top hit for {share:.0%}")
            if args.verbose:
                print("\n".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
