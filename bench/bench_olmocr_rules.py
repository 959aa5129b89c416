"""olmOCR-Bench's rules on the sample in the test data: `local`, Tesseract and olmOCR's stored outputs side by side.

Usage: .venv/bin/python bench/bench_olmocr_rules.py [--data ../shared/testdata] [--long-side 1600] [--details] [--out DIR]

Every rule of ``olmocr_bench_sample/dataset.jsonl`` (present, absent, order, table, math) is scored
on each engine's markdown of the page it names:

* ``local``: each PDF rasterised into an image-only scan (200 dpi grey JPEG, slight skew and
  speckle, as ``bench_local_ocr.py`` does), then ``bookocr ocr --engine local``; the page body is
  scored (running heads and page numbers the layout set apart are not in it).
* ``tesseract``: the same scans, rendered as the runner renders them, ``-l eng --psm 3`` (skipped
  with a message when the ``tesseract`` command is absent: ``apt-get install tesseract-ocr``).
* ``olmocr``: olmOCR's own outputs stored in ``olmocr_bench_sample/olmocr_pipeline/`` (the peer row;
  it read the original PDFs, not these scans).

The rules are implemented as olmOCR-Bench defines them (``olmocr/bench/tests.py``): its text
normalisation; present/absent by rapidfuzz ``partial_ratio`` >= 1 - max_diffs/len, with
``first_n``/``last_n`` and case folding; order by fuzzy search within ``max_diffs`` edits, passing
when some match of ``before`` starts before some match of ``after``; table by the cell graph of
every markdown and HTML table (up/down/left/right neighbours, top/left headings, rowspan and
colspan), cells compared with ``fuzz.ratio``. Two departures:

* math: olmOCR-Bench renders both LaTeX strings with KaTeX in a headless browser and passes when the
  reference's rendering is found within an equation's rendering. No browser here, so equations are
  taken from the page the same way (``\\(..\\)``, ``\\[..\\]``, ``$$..$$``, ``$..$``), an exact match
  passes as upstream, and otherwise both sides go through :func:`normalise_latex` (spacing,
  ``\\left``/``\\right`` and sizing commands dropped; ``\\dfrac``/``\\tfrac`` as ``\\frac``; upright-text
  wrappers such as ``\\operatorname{Ann}`` unwrapped; ``^{\\prime}`` as ``'``; braces around a single
  sub/superscript token dropped; whitespace removed) and the rule passes when the normalised
  reference occurs within a normalised equation. Stricter than rendering where two spellings
  render alike in ways not listed (``\\cdot`` vs ``\\cdotp``), looser nowhere that matters here.
* The per-page ``baseline`` rule (not blank, no repetition loop) is not scored.

Each olmOCR output file is a repeat; a rule passes when most repeats pass (one repeat here).
Prints the CPU first; exits 0 with a ``skip:`` line when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from bench_local_ocr import bench_normalise, check_rule, run_local, tesseract_end_to_end, tesseract_version
from cpu_report import add_isa_argument, cap_isa, describe
from rapidfuzz import fuzz

from ocr_backend.render import DEFAULT_LONG_SIDE
from server.sample_book import rasterise_pdf

SAMPLE = "olmocr_bench_sample"
CATEGORIES = ("present", "absent", "order", "table", "math")

Pages = dict[int, str]  # page number -> markdown


# --- present / absent -----------------------------------------------------------------------
def check_presence(rule: dict, markdown: str) -> tuple[bool, str]:
    query, text = bench_normalise(rule["text"]), bench_normalise(markdown)
    if not rule.get("case_sensitive", True):
        query, text = query.lower(), text.lower()
    first, last = rule.get("first_n"), rule.get("last_n")
    if first and last:
        text = text[:first] + text[-last:]
    elif first:
        text = text[:first]
    elif last:
        text = text[-last:]
    diffs = int(rule.get("max_diffs", 0))
    # partial_ratio scores a text shorter than the query against the query's best part: too short never matches
    ratio = fuzz.partial_ratio(query, text) / 100 if len(text) >= len(query) - diffs else 0.0
    found = ratio >= 1 - diffs / max(1, len(query))
    passed = found if rule["type"] == "present" else not found
    return passed, "" if passed else f"best partial ratio {ratio:.2f}"


# --- tables ---------------------------------------------------------------------------------
Cell = tuple[int, int]  # (row, column) of a cell's top-left slot


@dataclass
class CellSpec:
    text: str
    heading: bool
    rowspan: int = 1
    colspan: int = 1


@dataclass
class Table:
    """A table as a grid of slots, each naming the cell that covers it (spans cover several)."""

    grid: dict[Cell, Cell] = field(default_factory=dict)
    text: dict[Cell, str] = field(default_factory=dict)
    span: dict[Cell, tuple[int, int]] = field(default_factory=dict)  # cell -> (rowspan, colspan)
    headings: set[Cell] = field(default_factory=set)

    @classmethod
    def from_rows(cls, rows: list[list[CellSpec]]) -> Table:
        table = cls()
        for r, specs in enumerate(rows):
            c = 0
            for spec in specs:
                while (r, c) in table.grid:  # slots taken by a rowspan from above
                    c += 1
                table.text[(r, c)] = spec.text
                table.span[(r, c)] = (spec.rowspan, spec.colspan)
                if spec.heading:
                    table.headings.add((r, c))
                for dr in range(spec.rowspan):
                    for dc in range(spec.colspan):
                        table.grid[(r + dr, c + dc)] = (r, c)
                c += spec.colspan
        return table

    def walk(self, cell: Cell, dr: int, dc: int, first_only: bool) -> set[Cell]:
        """Cells met going from ``cell`` in direction (dr, dc) along every row or column it spans."""
        (r0, c0), (rows, cols) = cell, self.span[cell]
        if dc:
            starts = [(r, c0 + cols - 1 if dc > 0 else c0) for r in range(r0, r0 + rows)]
        else:
            starts = [(r0 + rows - 1 if dr > 0 else r0, c) for c in range(c0, c0 + cols)]
        height = max(r for r, _ in self.grid) + 1
        width = max(c for _, c in self.grid) + 1
        found: set[Cell] = set()
        for r, c in starts:
            r, c = r + dr, c + dc
            while 0 <= r < height and 0 <= c < width:
                other = self.grid.get((r, c))
                if other is not None and other != cell:
                    found.add(other)
                    if first_only:
                        break
                r, c = r + dr, c + dc
        return found

    def related(self, cell: Cell, relation: str) -> set[Cell]:
        steps = {
            "up": (-1, 0),
            "down": (1, 0),
            "left": (0, -1),
            "right": (0, 1),
            "top_heading": (-1, 0),
            "left_heading": (0, -1),
        }
        if relation.endswith("_heading"):
            return self.walk(cell, *steps[relation], first_only=False) & self.headings
        return self.walk(cell, *steps[relation], first_only=True)


def markdown_tables(markdown: str) -> list[Table]:
    """Runs of two or more lines holding a '|'; the dashes row dropped; first row and column are headings."""
    tables, run = [], []
    for line in [*markdown.strip().split("\n"), ""]:
        if "|" in line:
            run.append(line)
            continue
        if len(run) >= 2:
            rows = []
            for row in run:
                if set(row.replace("|", "").strip()) <= set("- :"):
                    continue  # the separator row
                cells = [c.strip() for c in row.split("|")]
                cells = cells[1:] if cells and cells[0] == "" else cells
                cells = cells[:-1] if cells and cells[-1] == "" else cells
                if cells:
                    rows.append([CellSpec(text, heading=(not rows or j == 0)) for j, text in enumerate(cells)])
            if rows:
                tables.append(Table.from_rows(rows))
        run = []
    return tables


class _HtmlTables(HTMLParser):
    """<table> rows and cells: th cells and cells in a thead are headings; <br> reads as a line break."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[CellSpec]]] = []
        self.cell: CellSpec | None = None
        self.in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "thead":
            self.in_head = True
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables and self.tables[-1]:
            spans = {k: _span(v) for k, v in attrs if k in ("rowspan", "colspan")}
            self.cell = CellSpec("", tag == "th" or self.in_head, spans.get("rowspan", 1), spans.get("colspan", 1))
            self.tables[-1][-1].append(self.cell)
        elif tag == "br" and self.cell is not None:
            self.cell.text += "\n"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.cell.text = self.cell.text.strip()
            self.cell = None
        elif tag == "thead":
            self.in_head = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.text += data


def _span(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


def html_tables(markdown: str) -> list[Table]:
    parser = _HtmlTables()
    parser.feed(markdown)
    return [Table.from_rows(rows) for rows in parser.tables if any(rows)]


def check_table(rule: dict, markdown: str) -> tuple[bool, str]:
    tables = markdown_tables(markdown) + html_tables(markdown)
    if not tables:
        return False, "no tables"
    diffs = int(rule.get("max_diffs", 0))
    target = bench_normalise(rule["cell"])
    relations = {
        k: bench_normalise(rule[k])
        for k in ("up", "down", "left", "right", "top_heading", "left_heading")
        if rule.get(k)
    }

    def similar(expected: str, text: str) -> bool:
        return fuzz.ratio(expected, bench_normalise(text)) / 100 >= max(0.5, 1 - diffs / max(1, len(expected)))

    for table in tables:
        for cell, text in table.text.items():
            if not similar(target, text):
                continue
            if all(
                any(similar(expected, table.text[other]) for other in table.related(cell, relation))
                for relation, expected in relations.items()
            ):
                return True, ""
    return False, "no matching cell with those neighbours"


# --- math -----------------------------------------------------------------------------------
_DELIMITED = (r"\\\((.+?)\\\)", r"\\\[(.+?)\\\]", r"\$\$(.+?)\$\$", r"\$(.+?)\$")
_DROPPED = re.compile(r"\\(?:left|right|[bB]igg?[lr]?|displaystyle|textstyle|quad|qquad)(?![A-Za-z])|\\[,;:! ]")
_UPRIGHT = re.compile(r"\\(?:operatorname|mathrm|text|textrm|rm)\s*\{([^{}]*)\}")
_ONE_TOKEN = re.compile(r"([_^])\{(\\[A-Za-z]+|[A-Za-z0-9])\}")


def equations(markdown: str) -> list[str]:
    """Delimited equations, taken out pattern by pattern as olmOCR-Bench does."""
    found = []
    for pattern in _DELIMITED:
        found += [m.strip() for m in re.findall(pattern, markdown, re.DOTALL)]
        markdown = re.sub(pattern, "", markdown, flags=re.DOTALL)
    return found


def normalise_latex(tex: str) -> str:
    """Spellings that KaTeX renders alike, made equal (see the module notes)."""
    tex = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", tex)
    tex = _UPRIGHT.sub(r"\1", tex)
    tex = _DROPPED.sub("", tex)
    tex = re.sub(r"\^\{?\\prime\}?", "'", tex)
    tex = _ONE_TOKEN.sub(r"\1\2", tex)
    return re.sub(r"\s+", "", tex)


def check_math(rule: dict, markdown: str) -> tuple[bool, str]:
    found = equations(markdown)
    if rule["math"] in found:
        return True, ""
    reference = normalise_latex(rule["math"])
    passed = any(reference in normalise_latex(eq) for eq in found)
    return passed, "" if passed else f"not among {len(found)} equations"


# --- all rules ------------------------------------------------------------------------------
CHECKS: dict[str, Callable[[dict, str], tuple[bool, str]]] = {
    "present": check_presence,
    "absent": check_presence,
    "table": check_table,
    "math": check_math,
}


def check(rule: dict, markdown: str) -> tuple[bool, str]:
    if rule["type"] == "order":
        result = check_rule(rule, markdown)
        return result.passed, result.detail
    return CHECKS[rule["type"]](rule, markdown)


def load_rules(path: Path) -> list[dict]:
    rules = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rules if r["type"] in CATEGORIES]


# --- engines --------------------------------------------------------------------------------
def local_pages(scan: Path, work: Path, long_side: int) -> Pages:
    try:
        return run_local(scan, work, long_side).markdown
    except RuntimeError as exc:
        print(f"local failed on {scan.name}: {exc}", file=sys.stderr)
        return {}


def tesseract_pages(scan: Path, work: Path, long_side: int) -> Pages:
    texts, _ = tesseract_end_to_end(scan, work, long_side, 1, 2)
    return dict(enumerate(texts, start=1))


def olmocr_repeats(folder: Path, pdf: str, page: int) -> list[str]:
    stem = pdf.removesuffix(".pdf")
    return [p.read_text(encoding="utf-8") for p in sorted(folder.glob(f"{stem}_pg{page}_repeat*.md"))]


def score(rules: list[dict], outputs: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, tuple[bool, str]]]:
    """engine -> rule id -> (passed, why not); ``outputs``: engine -> "pdf#page" -> repeats."""
    results: dict[str, dict[str, tuple[bool, str]]] = {}
    for engine, pages in outputs.items():
        results[engine] = {}
        for rule in rules:
            repeats = pages.get(f"{rule['pdf']}#{rule.get('page', 1)}", [])
            runs = [check(rule, md) for md in repeats]
            passed = sum(ok for ok, _ in runs) > len(runs) / 2 if runs else False
            why = next((why for ok, why in runs if not ok), "no output")
            results[engine][rule["id"]] = (passed, "" if passed else why)
    return results


def report(rules: list[dict], results: dict[str, dict[str, tuple[bool, str]]], details: bool) -> None:
    engines = list(results)
    print(f"\n{'category':<9} {'rules':>5} " + " ".join(f"{e:>10}" for e in engines))
    for category in (*CATEGORIES, "all"):
        ids = [r["id"] for r in rules if category in (r["type"], "all")]
        counts = [sum(results[e][i][0] for i in ids) for e in engines]
        print(f"{category:<9} {len(ids):>5} " + " ".join(f"{c:>10}" for c in counts))
    if "local" in results and "tesseract" in results:
        kinds = ("present", "absent", "order")
        tally = {
            e: {k: sum(results[e][r["id"]][0] for r in rules if r["type"] == k) for k in kinds}
            for e in ("local", "tesseract")
        }
        at_least = all(tally["local"][k] >= tally["tesseract"][k] for k in kinds)
        print(
            f"local passes at least as many present/absent/order rules as tesseract: {'PASS' if at_least else 'FAIL'}"
        )
    order = [r["id"] for r in rules if r["type"] == "order"]
    if "local" in results and order:
        passed = sum(results["local"][i][0] for i in order)
        print(f"local order rules >= 10 of {len(order)}: {passed} {'PASS' if passed >= 10 else 'FAIL'}")
    if details:
        print(f"\n{'rule':<44} {'type':<8} " + " ".join(f"{e:>10}" for e in engines))
        for rule in rules:
            marks = " ".join(f"{'pass' if results[e][rule['id']][0] else 'FAIL':>10}" for e in engines)
            why = "; ".join(f"{e}: {results[e][rule['id']][1]}" for e in engines if not results[e][rule["id"]][0])
            print(f"{rule['id'][:44]:<44} {rule['type']:<8} {marks}  {why[:160]}")


def save(outputs: dict[str, dict[str, list[str]]], out: Path) -> None:
    """Each engine's pages in olmOCR-Bench's layout (ENGINE/<pdf stem>_pg<page>_repeat1.md), for its own scorer."""
    for engine, pages in outputs.items():
        for key, repeats in pages.items():
            pdf, page = key.rsplit("#", 1)
            for n, markdown in enumerate(repeats, start=1):
                path = out / engine / f"{pdf.removesuffix('.pdf')}_pg{page}_repeat{n}.md"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(markdown, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    parser.add_argument("--long-side", type=int, default=DEFAULT_LONG_SIDE, help="page image size for both OCR engines")
    parser.add_argument("--details", action="store_true", help="every rule, with why it failed")
    parser.add_argument("--out", type=Path, help="keep each engine's page markdown here, in olmOCR-Bench's layout")
    add_isa_argument(parser)
    args = parser.parse_args()
    cap_isa(args.isa)
    print(describe())
    sample = args.data / SAMPLE
    if not (sample / "dataset.jsonl").is_file() or not (sample / "pdfs").is_dir():
        print(f"skip: {sample / 'dataset.jsonl'} not found (pass --data)")
        return 0
    rules = load_rules(sample / "dataset.jsonl")
    pdfs = sorted({r["pdf"] for r in rules})
    print(
        f"{len(rules)} rules on {len(pdfs)} PDFs; local and tesseract read them rasterised (200 dpi grey JPEG, image-only); "
        "olmocr: its stored outputs of the original PDFs"
    )
    tess = tesseract_version()
    print(
        f"tesseract: {tess}, -l eng --psm 3"
        if tess
        else "tesseract: not installed, its column is skipped (Debian: apt-get install tesseract-ocr)"
    )

    engines: dict[str, Callable[[Path, Path, int], Pages]] = {"local": local_pages}
    if tess:
        engines["tesseract"] = tesseract_pages
    outputs: dict[str, dict[str, list[str]]] = {name: {} for name in engines}  # engine -> "pdf#page" -> repeats
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for pdf in pdfs:
            scan = rasterise_pdf(sample / "pdfs" / pdf, work / "scans" / pdf, dpi=200)
            for name, read in engines.items():
                for page, markdown in read(scan, work, args.long_side).items():
                    outputs[name][f"{pdf}#{page}"] = [markdown]
    peer = sample / "olmocr_pipeline"
    if peer.is_dir():
        outputs["olmocr"] = {
            f"{r['pdf']}#{r.get('page', 1)}": olmocr_repeats(peer, r["pdf"], r.get("page", 1)) for r in rules
        }
    else:
        print(f"olmocr: {peer} not found, its column is skipped")
    if args.out:
        save(outputs, args.out)
    report(rules, score(rules, outputs), args.details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
