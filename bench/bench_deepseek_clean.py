"""Run the DeepSeek output cleaner over real raw DeepSeek-OCR pages and check what it keeps.

Usage: .venv/bin/python bench/bench_deepseek_clean.py [--data ../shared/testdata]

For every ``*.raw.mmd`` under ``deepseek_ocr_raw/``: no grounding tag or end-of-sentence
token survives; every math segment (``\\[ \\]``, ``\\( \\)``) and every ``<table>`` of the raw
output is in the clean page; which pages are flagged as repetition loops; and, where the
official post-processing output is there, whether ours says the same apart from figure
references and ``<center>`` tags. Skips (exit 0) when the data is absent.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cpu_report import describe

from ocr_backend.deepseek.clean import clean, tidy

LEFTOVER = re.compile(r"<\|/?(?:ref|det|grounding)\|>|end▁of▁sentence")
MATH = re.compile(r"\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)
TABLE = re.compile(r"<table>.*?</table>", re.DOTALL)
FIGURE_REF = re.compile(r"!\[[^\]]*\]\([^)]*\)|\[Figure \d+\]")


def normalise(text: str) -> str:
    text = FIGURE_REF.sub("", re.sub(r"</?center>", "", text))
    return re.sub(r"\s+", " ", text).strip()


def check(raw_path: Path) -> tuple[bool, str]:
    raw = raw_path.read_text(encoding="utf-8")
    page = clean(raw)
    md = page.markdown
    wanted_math = {tidy(m) for m in MATH.findall(raw) if "<|" not in m}
    wanted_tables = set(TABLE.findall(raw))
    lost_math = [m for m in wanted_math if m not in md]
    lost_tables = [t for t in wanted_tables if t not in md]
    leftovers = LEFTOVER.findall(md)
    line = (
        f"{raw_path.name}: {len(raw)} -> {len(md)} chars, {page.blocks} blocks, {page.malformed_boxes} malformed boxes, "
        f"{len(page.figures)} figures; math kept {len(wanted_math) - len(lost_math)}/{len(wanted_math)}, "
        f"tables kept {len(wanted_tables) - len(lost_tables)}/{len(wanted_tables)}, tags left {len(leftovers)}; "
        f"repetition: {page.repetition or 'no'}"
    )
    official = raw_path.with_name(raw_path.name.replace(".raw.mmd", ".DERIVED_official_postproc.mmd"))
    if official.exists():
        theirs = official.read_text(encoding="utf-8").replace("<--- Page Split --->", "")
        same = normalise(theirs) == normalise(md)
        line += f"; same text as the official post-processing (figures, <center> aside): {'yes' if same else 'NO'}"
    return not (lost_math or lost_tables or leftovers), line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "testdata")
    args = parser.parse_args()
    print(describe())
    folder = args.data / "deepseek_ocr_raw"
    files = sorted(folder.glob("*.raw.mmd"))
    if not files:
        print(f"skip: no raw DeepSeek output under {folder} (pass --data)")
        return 0
    ok = True
    for path in files:
        good, line = check(path)
        ok &= good
        print(line)
    flagged = [p.name for p in files if clean(p.read_text(encoding="utf-8")).repetition]
    print(f"flagged as loops: {', '.join(flagged) or 'none'}")
    loop_samples = [p.name for p in files if "REPETITION" in p.name]
    ok &= all(name in flagged for name in loop_samples)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
