"""Page rebuilding from positioned lines (synthetic lines: no OCR, fast)."""

from __future__ import annotations

import random

from ocr_backend.layout import TextLine, build_markdown, join_lines

WIDTH, HEIGHT = 600.0, 800.0
H = 12.0  # line box height
PITCH = 16.0


def line(text: str, x0: float, y0: float, x1: float | None = None, h: float = H, **kw: object) -> TextLine:
    return TextLine(text=text, x0=x0, y0=y0, x1=x1 if x1 is not None else x0 + 5.5 * len(text), y1=y0 + h, **kw)  # type: ignore[arg-type]


def column(prefix: str, x0: float, x1: float, top: float, count: int, pitch: float = PITCH) -> list[TextLine]:
    return [line(f"{prefix} line {i:02d} of the column text", x0, top + i * pitch, x1) for i in range(count)]


def shuffled(lines: list[TextLine], seed: int = 1) -> list[TextLine]:
    lines = list(lines)
    random.Random(seed).shuffle(lines)  # OCR engines return lines in no useful order
    return lines


def positions(text: str, needles: list[str]) -> list[int]:
    found = [text.find(n) for n in needles]
    assert all(p >= 0 for p in found), (needles, text)
    return found


# --- reading order ----------------------------------------------------------------------
def test_two_columns_with_aligned_baselines_read_column_by_column() -> None:
    title = line("A Title Across Both Columns", 150, 40, 450, h=24)
    left = column("left", 50, 290, 100, 12)
    right = column("right", 310, 550, 100, 12)  # same baselines: rows alone would interleave
    layout = build_markdown(shuffled([title, *left, *right]), WIDTH, HEIGHT)
    text = layout.markdown
    order = positions(text, ["A Title", "left line 00", "left line 11", "right line 00", "right line 11"])
    assert order == sorted(order)
    assert layout.columns == 2


def test_two_columns_with_offset_baselines_and_a_full_width_footer_block() -> None:
    left = column("left", 50, 290, 100, 10)
    right = column("right", 310, 550, 106, 10)  # baselines half a line apart
    after = [line("A closing paragraph that runs the full width of the page again, below both columns.", 50, 300, 550)]
    text = build_markdown(shuffled([*left, *right, *after]), WIDTH, HEIGHT).markdown
    order = positions(text, ["left line 00", "left line 09", "right line 00", "right line 09", "A closing paragraph"])
    assert order == sorted(order)


def test_narrow_gutter_still_separates_columns() -> None:
    left = column("left", 50, 296, 100, 10)
    right = column("right", 301, 550, 100, 10)  # 5 units of white: under half a line height
    text = build_markdown(shuffled([*left, *right]), WIDTH, HEIGHT).markdown
    assert text.find("left line 09") < text.find("right line 00")


def test_three_columns() -> None:
    cols = [
        column(name, x, x + 150, 100, 8)
        for name, x in (
            (
                "first",
                40,
            ),
            ("second", 215),
            ("third", 390),
        )
    ]
    layout = build_markdown(shuffled([ln for c in cols for ln in c]), WIDTH, HEIGHT)
    order = positions(layout.markdown, ["first line 07", "second line 00", "second line 07", "third line 00"])
    assert order == sorted(order)
    assert layout.columns == 3


def test_single_column_with_display_maths_is_not_split_into_columns() -> None:
    body = [
        line(f"Body text line {i} that runs across the whole measure of the page.", 50, 100 + i * PITCH, 550)
        for i in range(4)
    ]
    # "for n = 1," with a fraction beside it, three times: short pieces with a white strip between
    display = []
    for k in range(3):
        y = 180 + k * 3 * PITCH
        display += [
            line(f"for n = {k + 1},", 90, y + PITCH, 160),
            line("x^(n+1)", 200, y, 250),
            line("1 - x", 200, y + 2 * PITCH, 250),
            line(f"= .0{k}111 ...", 270, y + PITCH, 360),
        ]
    centred = line("(x, y) - (u, v) = (x - u, y - v).", 220, 340, 380)
    tail = [
        line(f"Closing text line {i} that runs across the whole measure of the page.", 50, 370 + i * PITCH, 550)
        for i in range(3)
    ]
    layout = build_markdown(shuffled([*body, *display, centred, *tail]), WIDTH, HEIGHT)
    assert layout.columns == 1
    order = positions(
        layout.markdown,
        ["Body text line 3", "for n = 1,", "for n = 2,", "for n = 3,", "(x, y) - (u, v)", "Closing text line 0"],
    )
    assert order == sorted(order)
    assert "\n\n(x, y) - (u, v) = (x - u, y - v).\n\n" in layout.markdown  # display maths stands alone


def test_indented_equation_lines_do_not_make_a_column() -> None:
    lines = []
    for i in range(8):
        y = 100 + i * PITCH
        if i % 2:
            lines += [line("x + 1 = 3,", 120, y, 180), line("so that x = 2 in this case here", 300, y, 480)]
        else:
            lines.append(line(f"Prose line {i} running over the whole width of the text block.", 50, y, 550))
    text = build_markdown(shuffled(lines), WIDTH, HEIGHT).markdown
    order = positions(text, ["Prose line 0", "Prose line 2", "Prose line 4", "Prose line 6"])
    assert order == sorted(order)
    assert text.index("x + 1 = 3, so that x = 2") < text.index("Prose line 2")


def magazine_columns(top: float, rows: int, stop: int, resume: float) -> list[TextLine]:
    """Two columns of ``rows`` rows each that stop after row ``stop`` and go on from y = ``resume``."""
    lines = []
    for name, x0, x1 in (("left", 50, 290), ("right", 310, 550)):
        for i in range(rows):
            y = top + i * PITCH if i < stop else resume + (i - stop) * PITCH
            lines.append(line(f"{name} line {i:02d} of the column text", x0, y, x1))
    return lines


def test_pull_quote_over_the_gutter_is_read_after_the_left_column_runs_on() -> None:
    lead = [
        line(
            f"A lead paragraph across the page, line {i}, set above both columns of the article.",
            50,
            60 + i * PITCH,
            550,
        )
        for i in range(2)
    ]
    columns = magazine_columns(120, 16, 8, 280)  # the columns stop at y = 232 and go on at y = 280
    quote = [
        line("Numbers tell the story of the river", 160, 240, 440, h=17),
        line("better than any of us could", 200, 258, 400, h=17),
    ]
    layout = build_markdown(shuffled([*lead, *columns, *quote]), WIDTH, HEIGHT)
    text = layout.markdown
    order = positions(
        text,
        [
            "A lead paragraph",
            "left line 00",
            "left line 07",
            "left line 08",
            "left line 15",
            "right line 00",
            "right line 07",
            "right line 08",
            "right line 15",
        ],
    )
    assert order == sorted(order)
    paragraphs = text.split("\n\n")
    assert "Numbers tell the story of the river better than any of us could" in paragraphs
    assert any("left line 07 of the column text left line 08" in p for p in paragraphs)  # no break where the quote was
    assert layout.columns == 2


def test_heading_across_the_columns_starts_a_new_section() -> None:
    """Columns that end in full sentences, a centred heading over the gutter, new columns: read section by section."""
    upper = magazine_columns(100, 6, 6, 0)
    upper[5] = line("and the left column of part one ends here.", 50, 100 + 5 * PITCH, 290)
    upper[11] = line("and so does the right column of part one.", 310, 100 + 5 * PITCH, 550)
    heading = line("Part Two Of The Article", 220, 210, 380, h=18)
    lower = magazine_columns(250, 6, 6, 0)
    lower[0] = line("Left text of part two starts the column", 50, 250, 290)
    lower[6] = line("Right text of part two goes on here", 310, 250, 550)
    text = build_markdown(shuffled([*upper, heading, *lower]), WIDTH, HEIGHT).markdown
    order = positions(
        text,
        [
            "left line 00",
            "left column of part one",
            "right line 00",
            "right column of part one",
            "Part Two",
            "Left text of part two",
            "Right text of part two",
        ],
    )
    assert order == sorted(order)


def test_caption_under_a_figure_is_read_after_the_sentence_it_interrupts() -> None:
    above = [
        line(f"Body text line {i} of the page, set across the measure and running", 50, 100 + i * PITCH, 550)
        for i in range(5)
    ]
    caption = [
        line("Figure 2. Tagged fish in the second catch, by the hour.", 120, 300, 480, h=9)
    ]  # below a drawing: white above it
    below = [
        line(f"on again, body text line {i} after the figure, to the end of the page", 50, 330 + i * PITCH, 550)
        for i in range(5)
    ]
    below[-1] = line("and the paragraph ends.", 50, 330 + 4 * PITCH, 200)
    text = build_markdown(shuffled([*above, *caption, *below]), WIDTH, HEIGHT).markdown
    assert text.split("\n\n") == [
        " ".join(ln.text for ln in above + below),
        "Figure 2. Tagged fish in the second catch, by the hour.",
    ]


def test_pull_quote_in_larger_type_inside_a_column_does_not_split_the_sentence() -> None:
    above = [
        line(f"Body text line {i} of the page, set across the measure and running", 50, 100 + i * PITCH, 550)
        for i in range(5)
    ]
    quote = [line("Two visits and a ratio count a river", 150, 190, 450, h=17)]
    below = [
        line(f"on again, body text line {i} after the quote, to the end of the page", 50, 222 + i * PITCH, 550)
        for i in range(3)
    ]
    text = build_markdown(shuffled([*above, *quote, *below]), WIDTH, HEIGHT).markdown
    assert text.split("\n\n") == [" ".join(ln.text for ln in above + below), "Two visits and a ratio count a river"]


# --- furniture --------------------------------------------------------------------------
def test_running_head_with_page_number_is_furniture_not_body() -> None:
    head = [line("2", 50, 40, 60), line("NATURE OF MATHEMATICS", 220, 40, 380)]
    body = [
        line(f"The body text of the page, line number {i}, set in the usual way.", 50, 90 + i * PITCH, 550)
        for i in range(6)
    ]
    layout = build_markdown(shuffled([*head, *body]), WIDTH, HEIGHT)
    assert layout.furniture == ["2 NATURE OF MATHEMATICS"]
    assert "NATURE" not in layout.markdown
    assert layout.markdown.startswith("The body text of the page, line number 0")


def test_a_letter_read_off_a_drawing_neither_shows_nor_hides_the_running_head() -> None:
    head = [line("2.5. APPLICATIONS", 60, 40, 200), line("141", 520, 40, 540)]
    drawing = [line("E", 250, 56, 300, h=5 * H), line("Start", 160, 70, 200)]
    body = [
        line(f"The text under the figure, line number {i}, set in the usual way.", 50, 200 + i * PITCH, 550)
        for i in range(6)
    ]
    layout = build_markdown(shuffled([*head, *drawing, *body]), WIDTH, HEIGHT)
    assert layout.furniture == ["2.5. APPLICATIONS 141"]
    assert "E" not in layout.markdown.split() and "Start" in layout.markdown


def test_a_tall_formula_line_is_kept() -> None:
    lines = [
        line(f"Body text line number {i} of the page, set in the usual way.", 50, 90 + i * PITCH, 550) for i in range(4)
    ]
    lines.append(line("∑ x_i = n", 200, 160, 320, h=3 * H))
    assert "∑ x_i = n" in build_markdown(shuffled(lines), WIDTH, HEIGHT).markdown


def test_caps_running_head_and_bottom_folio() -> None:
    head = line("BAYESIAN INFERENCE", 240, 40, 360, h=9)
    body = [
        line(f"Posterior distributions summarise what the data say, line {i}.", 50, 90 + i * PITCH, 550)
        for i in range(6)
    ]
    folio = line("37", 295, 740, 305)
    layout = build_markdown(shuffled([head, *body, folio]), WIDTH, HEIGHT)
    assert layout.furniture == ["BAYESIAN INFERENCE", "37"]
    assert "37" not in layout.markdown and "BAYESIAN" not in layout.markdown


def test_chapter_title_at_the_top_is_a_heading_not_furniture() -> None:
    title = line("Chapter 1. Bayesian Inference", 50, 60, 330, h=20)
    body = [
        line(f"Bayesian statistics treats every unknown as random, line {i} of it.", 50, 110 + i * PITCH, 550)
        for i in range(5)
    ]
    layout = build_markdown(shuffled([title, *body]), WIDTH, HEIGHT)
    assert layout.furniture == []
    assert layout.markdown.startswith("# Chapter 1. Bayesian Inference\n\n")


def test_last_body_line_ending_in_a_number_is_not_a_folio() -> None:
    body = [
        line(f"Text line {i} of a page that has no page number at all, as we see", 50, 90 + i * PITCH, 550)
        for i in range(5)
    ]
    body.append(line("and the answer is 12", 50, 90 + 5 * PITCH, 160))
    layout = build_markdown(body, WIDTH, HEIGHT)
    assert layout.furniture == []
    assert layout.markdown.endswith("and the answer is 12")


# --- paragraphs, hyphens, headings ------------------------------------------------------
def test_indents_start_paragraphs_and_split_words_are_mended() -> None:
    rows = [
        ("The object of the following chapters is not to teach math-", 50),
        ("ematics, but to show what the science is about and why it", 50),
        ("matters to exact thought.", 50),
        ("The first acquaintance which most people have with it is", 70),
        ("through arithmetic, a well-", 50),
        ("Known example.", 50),
    ]
    lines = [line(text, x, 100 + i * PITCH, 550 if i not in (2, 5) else None) for i, (text, x) in enumerate(rows)]
    text = build_markdown(shuffled(lines), WIDTH, HEIGHT).markdown
    paragraphs = text.split("\n\n")
    assert (
        paragraphs[0]
        == "The object of the following chapters is not to teach mathematics, but to show what the science is about and why it matters to exact thought."
    )
    assert paragraphs[1].startswith("The first acquaintance")
    assert paragraphs[1].endswith("a well- Known example.")  # a capital after the hyphen: not a split word


def test_vertical_gap_starts_a_paragraph() -> None:
    first = [
        line(f"Block paragraph one, line {i}, with no indent at all anywhere.", 50, 100 + i * PITCH, 550)
        for i in range(3)
    ]
    second = [
        line(f"Block paragraph two, line {i}, with no indent at all anywhere.", 50, 170 + i * PITCH, 550)
        for i in range(3)
    ]
    text = build_markdown(shuffled([*first, *second]), WIDTH, HEIGHT).markdown
    assert text.count("\n\n") == 1


def test_larger_rows_become_headings_but_a_large_type_passage_does_not() -> None:
    heading = line("1.1 Conjugate Priors", 50, 60, 260, h=17)
    abstract = [
        line(f"An abstract set in larger type, line {i} of five, runs on", 50, 100 + i * 22, 550, h=17)
        for i in range(5)
    ]
    body = [
        line(f"Ordinary body text follows the abstract here, line {i}.", 50, 230 + i * PITCH, 550) for i in range(8)
    ]
    text = build_markdown(shuffled([heading, *abstract, *body]), WIDTH, HEIGHT).markdown
    assert text.startswith("## 1.1 Conjugate Priors\n\n")
    assert text.count("#") == 2


def test_two_row_heading_is_one_heading() -> None:
    title = [
        line("Corporate social responsibility and the", 50, 60, 500, h=22),
        line("tobacco industry: hope or hype?", 50, 86, 400, h=22),
    ]
    body = [
        line(f"Body text line {i} of the article, set in the ordinary size.", 50, 130 + i * PITCH, 550)
        for i in range(6)
    ]
    text = build_markdown(shuffled([*title, *body]), WIDTH, HEIGHT).markdown
    assert text.startswith("# Corporate social responsibility and the tobacco industry: hope or hype?\n\n")


def test_text_layer_font_sizes_and_bold_caps_headings() -> None:
    lines = [
        *[
            line(f"The text of the last section ends here, line {i} of it.", 50, 60 + i * PITCH, 500, size=9)
            for i in range(2)
        ],
        line("REFERENCES", 50, 100, 130, bold=True, size=9),
        *[
            line(f"{i} Author A. A title of a work cited here. Journal {i}.", 50, 116 + i * PITCH, 500, size=9)
            for i in range(1, 5)
        ],
    ]
    text = build_markdown(lines, WIDTH, HEIGHT).markdown
    assert "\n\n### REFERENCES\n\n1 Author A." in text


def test_dot_leaders_are_dropped_and_empty_pages_are_empty() -> None:
    body = [line(f"Some text on line {i} of this page, long enough.", 50, 100 + i * PITCH, 550) for i in range(3)]
    layout = build_markdown([*body, line("....................", 50, 160, 550)], WIDTH, HEIGHT)
    assert "....." not in layout.markdown
    assert build_markdown([], WIDTH, HEIGHT).markdown == ""
    assert build_markdown([line("   ", 50, 50, 60)], WIDTH, HEIGHT).markdown == ""


def test_paragraph_broken_by_a_column_end_carries_on() -> None:
    left = column("left", 50, 290, 100, 8)
    left[-1] = line("and the last word is respon-", 50, 100 + 7 * PITCH, 290)
    right = column("right", 310, 550, 100, 8)
    right[0] = line("sibility, which ends the sentence.", 310, 100, 550)
    text = build_markdown(shuffled([*left, *right]), WIDTH, HEIGHT).markdown
    assert "the last word is responsibility, which ends the sentence." in text


def test_join_lines() -> None:
    assert join_lines(["conver-", "gent series"]) == "convergent series"
    assert join_lines(["x = -", "1"]) == "x = - 1"
    assert join_lines(["  spaced  ", "", "out"]) == "spaced out"
