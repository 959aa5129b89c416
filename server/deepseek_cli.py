"""The DeepSeek parts of the command line: ``deploy``, ``reclean``, and the ``ocr`` options
``--estimate``, ``--gpu``, ``--gpu-price``, ``--figures`` with the GPU cost summary.

Kept apart from :mod:`server.cli` so that file only wires these in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ocr_backend.deepseek_runner import DEFAULT_MODEL
from ocr_backend.errors import BookOcrError, EngineError
from ocr_backend.pricing import DEFAULT_CONTAINERS, estimate
from ocr_backend.engines import PageResult
from server.corpus import Book, Corpus

DEEPSEEK_ENGINES = ("deepseek", "deepseek-local")
GPU_CHOICES = ("A100", "A100-80GB", "H100", "L40S")  # as ocr_backend.modal_app.GPU_CHOICES, without importing modal


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    from server.cli import emit

    emit(args, data, text)


# --- ocr options --------------------------------------------------------------------------
def add_deepseek_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--estimate", action="store_true", help="print pages, expected GPU seconds and dollars for --engine deepseek, and stop")
    p.add_argument("--gpu", help=f"GPU for deepseek: {', '.join(GPU_CHOICES)} (default: what was deployed, A100)")
    p.add_argument("--gpu-price", type=float, metavar="USD_PER_HOUR", help="override the GPU's price per hour for estimates and cost records")
    p.add_argument("--figures", action="store_true", help="deepseek: crop figures from the page and save them beside the page")


def deepseek_engine_options(args: argparse.Namespace, corpus: Corpus, book_id: str) -> dict[str, Any]:
    """Engine options from the command line; empty for the other engines."""
    if getattr(args, "engine", None) not in DEEPSEEK_ENGINES:
        return {}
    options: dict[str, Any] = {"gpu": getattr(args, "gpu", None), "gpu_price": getattr(args, "gpu_price", None)}
    if getattr(args, "figures", False):
        options["figures_dir"] = corpus.root / book_id / "pages"
    return options


def cmd_estimate(args: argparse.Namespace, corpus: Corpus) -> int:
    from ocr_backend.sources import open_source
    from server.runner import parse_pages

    with open_source(args.path) as source:
        pages = len(parse_pages(args.pages, source.info.page_count))
    try:
        est = estimate(pages, getattr(args, "gpu", None), DEFAULT_CONTAINERS, getattr(args, "gpu_price", None))
    except ValueError as exc:
        raise BookOcrError(str(exc)) from None
    note = "" if args.engine in DEEPSEEK_ENGINES else f"\n(engine {args.engine} runs on this machine's CPU: no GPU cost)"
    _emit(args, {"estimate": est.as_dict(), "engine": args.engine}, est.describe() + note)
    return 0


@dataclass
class GpuTally:
    """A runner page listener that adds up the GPU seconds and dollars a run spent."""

    pages: int = 0
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    gpus: set[str] = field(default_factory=set)

    def __call__(self, book: Book, result: PageResult) -> None:
        extra = result.extra or {}
        if "gpu_seconds" not in extra:
            return
        self.pages += 1
        self.gpu_seconds += float(extra.get("gpu_seconds") or 0.0)
        self.cost_usd += float(extra.get("cost_usd") or 0.0)
        if extra.get("gpu"):
            self.gpus.add(str(extra["gpu"]))

    def as_dict(self) -> dict[str, Any]:
        return {"pages": self.pages, "gpu_seconds": round(self.gpu_seconds, 2), "cost_usd": round(self.cost_usd, 4), "gpus": sorted(self.gpus)}

    def describe(self) -> str:
        per_page = self.gpu_seconds / self.pages if self.pages else 0.0
        on = f" on {', '.join(sorted(self.gpus))}" if self.gpus else ""
        return (
            f"GPU: {self.gpu_seconds:.1f} s{on} for {self.pages} page(s) ({per_page:.2f} s/page), "
            f"${self.cost_usd:.4f} of OCR work (container start-up and idle time are billed on top)"
        )


# --- deploy -------------------------------------------------------------------------------
def add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="deploy the DeepSeek-OCR GPU class to your Modal workspace (modal deploy)")
    p.add_argument("--gpu", default="A100", choices=GPU_CHOICES, help="GPU type (default A100, 40 GB)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model id (e.g. deepseek-ai/DeepSeek-OCR-2)")
    p.add_argument("--max-containers", type=int, default=DEFAULT_CONTAINERS, help="GPUs one job may fan out to (default 4)")
    p.set_defaults(handler=cmd_deploy)


Runner = Callable[[list[str], dict[str, str]], int]


def _run_subprocess(argv: list[str], env: dict[str, str]) -> int:
    return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode


def cmd_deploy(args: argparse.Namespace, corpus: Corpus, run: Runner | None = None) -> int:
    from ocr_backend.deepseek_client import MODAL_SETUP, has_modal_credentials
    from ocr_backend.modal_app import deploy_command

    if not has_modal_credentials():
        raise EngineError(f"no Modal token is configured: {MODAL_SETUP}, then run `bookocr deploy` again")
    try:
        argv, env = deploy_command(args.gpu, args.model, args.max_containers)
    except ValueError as exc:
        raise BookOcrError(str(exc)) from None
    code = (run or _run_subprocess)(argv, env)
    if code != 0:
        raise EngineError(f"`modal deploy` failed (exit {code}); its output above says why")
    _emit(
        args,
        {"deployed": True, "gpu": args.gpu, "model": args.model, "max_containers": args.max_containers},
        f"deployed DeepSeek-OCR ({args.model}) on {args.gpu}, up to {args.max_containers} containers; "
        "now: bookocr ocr BOOK --engine deepseek",
    )
    return 0


# --- reclean ------------------------------------------------------------------------------
def add_reclean(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reclean", help="clean a book's DeepSeek pages again from their raw output (no GPU)")
    p.add_argument("book")
    p.add_argument("--figures", action="store_true", help="also crop figures from the source file and save them beside the pages")
    p.add_argument("--wait", action="store_true", help="wait for a run on the same book instead of stopping")
    p.set_defaults(handler=cmd_reclean)


def cmd_reclean(args: argparse.Namespace, corpus: Corpus) -> int:
    from server.reclean import reclean_book

    report = reclean_book(corpus, args.book, figures=args.figures, wait=args.wait)
    if report.changed:
        from server.search import SearchIndex

        SearchIndex(corpus).reindex(args.book)
    text = f"{args.book}: {report.pages} DeepSeek page(s) cleaned again, {report.changed} changed, {report.figures} figure(s) saved"
    if report.missing_raw:
        text += f"\nno raw output kept for page(s) {_ranges(report.missing_raw)}"
    if report.flagged:
        text += f"\nraw output looks like a loop on page(s) {_ranges(report.flagged)}: redo them with `bookocr ocr SOURCE --engine deepseek --redo --pages ...`"
    _emit(args, report.as_dict(), text)
    return 0


def _ranges(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers[:20]) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")


__all__ = ["add_deepseek_options", "add_deploy", "add_reclean", "cmd_estimate", "deepseek_engine_options", "GpuTally"]
