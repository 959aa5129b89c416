"""Output cleaning: fixtures written here, modelled on real DeepSeek-OCR raw output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from ocr_backend.deepseek.clean import clean, detect_repetition, parse_blocks, parse_boxes
from tests.deepseek_fakes import EOS, RAW_EQUATIONS, RAW_MALFORMED, RAW_TABLE_FIGURE, raw_loop

TAG = re.compile(r"<\|/?(ref|det|grounding)\|>")


def test_equations_keep_their_math_and_lose_the_tags() -> None:
    page = clean(RAW_EQUATIONS)
    md = page.markdown
    assert not TAG.search(md) and EOS not in md
    assert md.startswith("# Worksheet 3")
    assert "\\[P(a \\le X \\le b) = \\Phi\\left(\\frac{b-\\mu}{\\sigma}\\right)" in md
    assert "\\begin{align*}" in md and "\\end{align*}" in md
    assert "\\(Z := (X - \\mu)/\\sigma\\)" in md  # \coloneqq -> :=
    assert "\\operatorname{Var}(X) =: \\sigma^2" in md  # \eqqcolon -> =:
    assert "\n\n\n" not in md
    assert all(line == line.rstrip() for line in md.split("\n"))
    assert page.repetition is None and page.malformed_boxes == 0


def test_table_stays_html_and_figures_become_references() -> None:
    page = clean(RAW_TABLE_FIGURE)
    md = page.markdown
    assert "<table><tr><td></td><td>0</td><td>π/2</td></tr>" in md and '<td colspan="2">cos</td>' in md
    assert md.startswith("[Figure 1]")
    assert "Figure 2.1: A density." in md and "<center>" not in md
    assert md.index("Table 2: Values") < md.index("<table>")
    assert [f.box for f in page.figures] == [(100, 80, 600, 400)]


def test_figures_are_cropped_and_saved_beside_the_page_when_asked(tmp_path: Path) -> None:
    image = Image.new("RGB", (1000, 1400), "white")
    image.paste((200, 0, 0), (100, 112, 600, 560))  # the figure's area: x 100-600, y 80-400 of 999
    page = clean(RAW_TABLE_FIGURE, image, tmp_path, "page_0007")
    saved = tmp_path / "page_0007_fig1.jpg"
    assert "![Figure 1](page_0007_fig1.jpg)" in page.markdown
    with Image.open(saved) as crop:
        assert abs(crop.width - 500) <= 2 and abs(crop.height - 448) <= 2
        assert crop.getpixel((crop.width // 2, crop.height // 2))[0] > 150  # it is the red figure


def test_malformed_boxes_never_crash_and_keep_the_text() -> None:
    page = clean(RAW_MALFORMED)
    md = page.markdown
    for text in (
        "missing comma box",
        "x1 greater than x2",
        "no det at all",
        "letter in box",
        "three numbers",
        "zero width",
    ):
        assert text in md
    assert "\\[a^2 + b^2 = c^2\\]" in md and "\\[ x = 1 \\]" in md
    assert not TAG.search(md)
    assert page.malformed_boxes >= 5
    assert len(page.figures) == 1 and page.figures[0].box == (144, 772, 999, 789)  # clamped, corners ordered


@pytest.mark.parametrize(
    ("det", "boxes", "malformed"),
    [
        ("[[1, 2, 3, 4]]", [(1, 2, 3, 4)], False),
        ("[[150 876, 315, 900]]", [(150, 876, 315, 900)], True),
        ("[[900, 10, 100, 50]]", [(100, 10, 900, 50)], False),
        ("[[1, 2, 3]]", [], True),
        ("", [], True),
        (None, [], True),
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [(1, 2, 3, 4), (5, 6, 7, 8)], False),
        ("[[5, 5, 5, 9]]", [], True),
    ],
)
def test_parse_boxes(det: str | None, boxes: list[tuple[int, ...]], malformed: bool) -> None:
    assert parse_boxes(det) == (boxes, malformed)


def test_unclosed_det_keeps_the_content() -> None:
    blocks = parse_blocks("<|ref|>equation<|/ref|><|det|>[[1, 2, 30, 40]]\n\\[ e^{i\\pi} = -1 \\]")
    assert blocks[0].boxes == [(1, 2, 30, 40)] and "e^{i\\pi}" in blocks[0].content


def test_plain_output_without_tags_is_kept() -> None:
    assert clean("Just text.\n\n\n\nMore text." + EOS).markdown == "Just text.\n\nMore text."


def test_repetition_loop_is_flagged_and_good_pages_are_not() -> None:
    assert clean(raw_loop()).repetition is not None
    assert detect_repetition("abc " * 200) is not None  # exact back-to-back repeats
    for good in (RAW_EQUATIONS, RAW_TABLE_FIGURE, RAW_MALFORMED):
        assert clean(good).repetition is None


def test_a_long_sparse_table_is_not_a_loop() -> None:
    table = (
        "<table>"
        + "<tr>"
        + "<td></td>" * 12
        + "</tr>" * 1
        + "".join("<tr>" + "<td></td>" * 12 + "</tr>" for _ in range(60))
        + "</table>"
    )
    assert detect_repetition("Some prose before the table.\n\n" + table + "\n\nSource: survey.") is None
