"""Fault injection: damage each kind of corpus file (and the source), and count what was lost silently.

Usage: .venv/bin/python bench/bench_faults.py [--data ../shared/testdata] [--pdf FILE] [--pages 6] [--work DIR]

A book (a generated born-digital PDF, or ``--pdf FILE``) is OCRed once with ``--engine text-layer``
into a baseline corpus. Then, for each kind of file (a page ``.mmd``, ``manifest.json``,
``document.mmd``, ``index.sqlite``, the source) and each fault (truncated to half, deleted, 64 bytes
in the middle overwritten), a fresh copy of the corpus is damaged and driven through the CLI as a
user would: ``status``, ``get`` of every page, ``search``, ``list``, the whole document (the MCP
resource), then ``bookocr ocr SOURCE`` again, and read once more. Each case is reported as

- detected: some command said so (an error, a warning, a damaged page, a state other than complete);
- repaired: after the re-run (or at once, by itself) every page, the document and the search hits are
  the baseline's again;
- lost silently: at some point a reader got other text than the baseline's with nothing said.

A last column says whether ``document.mmd`` on disk (an export; readers above get the document
composed from the checked pages) is the baseline's again after the re-run.

Floor: 0 lost silently. Prints the CPU first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpu_report import describe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BOOKOCR = Path(sys.executable).absolute().parent / "bookocr"
BOOK = "book"
FILES = ("page .mmd", "manifest.json", "document.mmd", "index.sqlite", "source")
FAULTS = ("truncated", "deleted", "corrupted")


@dataclass
class Reading:
    """What a user sees of the book: page texts, the document, search hits, and anything reported."""

    pages: list[str] = field(default_factory=list)
    document: str = ""
    hits: list[list[Any]] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    exported: str = ""  # document.mmd on disk, for those who read the file itself

    def same_content(self, other: Reading) -> bool:
        return (self.pages, self.document, self.hits) == (other.pages, other.document, other.hits)


def make_pdf(path: Path, pages: int) -> Path:
    import pymupdf

    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=432, height=648)
        body = f"Chapter page {n}. " + " ".join(
            f"term{n}w{i} and more prose about propositional functions" for i in range(30)
        )
        page.insert_textbox(pymupdf.Rect(54, 60, 378, 600), body, fontsize=10)
    doc.save(path, garbage=4, deflate=True)
    return path


def bookocr(corpus: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOOKOCR), "--corpus", str(corpus), *args], capture_output=True, text=True, timeout=600, check=False
    )


def read_book(corpus: Path, page_count: int, query: str) -> Reading:
    """Everything a reader gets, through the CLI (and the library for the whole document)."""
    from server.corpus import Corpus
    from server.library import Library

    seen = Reading()

    def run(*args: str) -> Any:
        done = bookocr(corpus, "--json", *args)
        if done.returncode != 0 or done.stderr.strip():
            seen.reports.append(f"{' '.join(args[:2])}: rc {done.returncode}: {done.stderr.strip()[:160]}")
        try:
            return json.loads(done.stdout)
        except ValueError:
            return None

    status = run("status", BOOK) or {}
    if status.get("state") != "complete" or status.get("damaged_pages"):
        seen.reports.append(f"status: {status.get('state')} damaged {status.get('damaged_pages')}")
    pages = run("get", BOOK, "1", "--to", str(page_count))
    if isinstance(pages, list):
        seen.pages = [p["markdown"] if p["status"] in ("ok", "fallback") else f"<{p['status']}>" for p in pages]
        seen.reports += [f"get: page {p['page']} {p['status']}" for p in pages if p["status"] not in ("ok", "fallback")]
    found = run("search", query, "--limit", "50") or {}
    seen.hits = [[h["book"], h["page"]] for h in found.get("hits", [])]
    listed = run("list")
    if isinstance(listed, list) and any(b.get("state") != "complete" for b in listed if isinstance(b, dict)):
        seen.reports.append("list: book not complete")
    exported = corpus / BOOK / "document.mmd"
    seen.exported = exported.read_text(encoding="utf-8", errors="replace") if exported.exists() else "<missing>"
    try:
        seen.document = Library(Corpus(corpus)).document(BOOK)
    except Exception as exc:  # a reader's error is a report, not a loss
        seen.reports.append(f"document: {type(exc).__name__}: {str(exc)[:160]}")
    return seen


def target_of(kind: str, corpus: Path, source: Path) -> Path:
    return {
        "page .mmd": corpus / BOOK / "pages" / "page_0003.mmd",
        "manifest.json": corpus / BOOK / "manifest.json",
        "document.mmd": corpus / BOOK / "document.mmd",
        "index.sqlite": corpus / "index.sqlite",
        "source": source,
    }[kind]


def damage(path: Path, fault: str) -> None:
    if fault == "deleted":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    if fault == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
        return
    middle = len(data) // 2
    data[middle : middle + 64] = os.urandom(min(64, len(data) - middle))
    path.write_bytes(bytes(data))


def run_case(kind: str, fault: str, base: Path, pdf: Path, work: Path, pages: int, query: str) -> dict[str, Any]:
    case = work / f"{kind.split()[0].replace('.', '-')}-{fault}"
    corpus, source = case / "corpus", case / pdf.name
    shutil.copytree(base, corpus)
    shutil.copy2(pdf, source)
    baseline = read_book(base, pages, query)
    damage(target_of(kind, corpus, source), fault)
    before = read_book(corpus, pages, query)
    rerun = bookocr(corpus, "ocr", str(source), "--engine", "text-layer", "--book", BOOK)
    if rerun.returncode not in (0,):
        before.reports.append(f"ocr: rc {rerun.returncode}: {rerun.stderr.strip()[:160]}")
    after = read_book(corpus, pages, query)
    reports = before.reports + after.reports
    silent_before = not before.same_content(baseline) and not before.reports
    silent_after = not after.same_content(baseline) and not reports
    repaired = after.same_content(baseline) and not after.reports
    return {
        "file": kind,
        "fault": fault,
        "detected": bool(reports),
        "repaired": repaired,
        "lost_silently": silent_before or silent_after,
        "export_ok": after.exported == baseline.exported,
        "said": reports[0] if reports else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "testdata", help="unused unless --pdf")
    parser.add_argument("--pdf", type=Path, help="a born-digital PDF to use instead of a generated one")
    parser.add_argument("--pages", type=int, default=6, help="pages of the generated PDF")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    print(describe())
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    pdf = args.pdf or make_pdf(work / "faults.pdf", args.pages)
    base = work / "baseline"
    shutil.rmtree(base, ignore_errors=True)
    first = bookocr(base, "ocr", str(pdf), "--engine", "text-layer", "--book", BOOK)
    if first.returncode != 0:
        print(f"the baseline run failed: {first.stderr.strip()}")
        return 1
    import pymupdf

    with pymupdf.open(pdf) as doc:
        pages = doc.page_count
    query = "term3w5" if not args.pdf else "the"
    rows = [run_case(kind, fault, base, pdf, work, pages, query) for kind in FILES for fault in FAULTS]
    print(f"book: {pdf.name}, {pages} pages; work folder {work}")
    print(
        f"| {'file':<14} | {'fault':<9} | detected | repaired | lost silently | document.mmd file after re-run | said |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        said = " ".join(row["said"].replace("|", "/").split())[:100]
        print(
            f"| {row['file']:<14} | {row['fault']:<9} | {'yes' if row['detected'] else 'no':<8} | "
            f"{'yes' if row['repaired'] else 'no':<8} | {'YES' if row['lost_silently'] else 'no':<13} | "
            f"{'as baseline' if row['export_ok'] else 'STALE':<30} | {said} |"
        )
    lost = sum(row["lost_silently"] for row in rows)
    print(f"lost silently: {lost} of {len(rows)} (floor: 0)")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
