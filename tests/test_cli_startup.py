"""A cold ``bookocr search`` starts fast: reading the corpus never imports the OCR stack.

pymupdf, Pillow, numpy and the engines (OpenVINO, OpenCV, asyncio) take ~200 ms to import, more than the
search itself; they load only where pages are rendered or OCRed. Checked by what a fresh process imported,
not by timing it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ocr_backend.engines import engine_classes
from server.cli import build_parser
from server.corpus import Corpus
from tests.test_search import STATS_PAGES, make_book

HEAVY = ("fitz", "pymupdf", "numpy", "PIL", "openvino", "cv2", "asyncio", "ocr_backend.engines.local")

# Runs the CLI as `bookocr` does, then reports the heavy modules that got imported on the way.
PROBE = """
import contextlib, io, json, sys
from server import cli
codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        codes.append(cli.main(argv))
    assert out.getvalue(), argv
heavy = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def run_fresh(commands: list[list[str]]) -> dict[str, list]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_reading_the_corpus_imports_no_ocr_stack(corpus: Corpus) -> None:
    make_book(corpus, "stats", STATS_PAGES, labels=["11", "12", "13", "14", "15"])
    root = str(corpus.root)
    commands = [
        ["--corpus", root, "search", "posterior"],
        ["--corpus", root, "search", "posterir", "distribtion"],  # typo expansion
        ["--corpus", root, "--json", "search", '"conjugate prior"', "--defined"],
        ["--corpus", root, "list"],
        ["--corpus", root, "status", "stats"],
        ["--corpus", root, "get", "stats", "2"],
        ["--corpus", root, "contents", "stats"],
    ]
    found = run_fresh(commands)
    assert found == {"codes": [0] * len(commands), "heavy": []}


def test_ocr_parser_adds_the_engines_when_used() -> None:
    """The ``ocr`` parser names the engines, and takes their options, from its first use on."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    help_text = " ".join(sub.choices["ocr"].format_help().split())
    assert f"{', '.join(engine_classes())} (default auto); see `bookocr engines`" in help_text
    assert "engine options (each applies to the engines named)" in help_text and "--gpu GPU" in help_text
    args = build_parser().parse_args(["ocr", "book.pdf", "--gpu", "H100"])
    assert args.engine_gpu == "H100" and args.engine == "auto" and args.path == ["book.pdf"]
