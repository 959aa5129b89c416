"""A small scanned statistics book, generated: the demo's input and the tests' fixtures.

Text is typeset with PyMuPDF, then rasterised with scan-like skew and noise into an
image-only PDF (no text layer), so the OCR path is exercised for real.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import pymupdf
from PIL import Image, ImageFilter

PAGE_SIZE = (432.0, 648.0)  # 6 x 9 in, a common textbook trim size
MARGIN = 54.0


@dataclass
class SamplePage:
    heading: str = ""
    paragraphs: list[str] = field(default_factory=list)  # HTML allowed (<i>, <sup>, <sub>)
    running_head: str = ""
    folio: str = ""  # the printed page number


SAMPLE_PAGES: list[SamplePage] = [
    SamplePage(
        heading="Chapter 1. Bayesian Inference",
        paragraphs=[
            "Bayesian statistics treats every unknown quantity as a random variable. Before the data arrive, "
            "our beliefs about a parameter <i>θ</i> are summarised by a prior distribution <i>p</i>(<i>θ</i>). "
            "After observing data <i>y</i>, Bayes' rule gives the posterior distribution",
            "<center><i>p</i>(<i>θ</i> | <i>y</i>) = "
            "<i>p</i>(<i>y</i> | <i>θ</i>) <i>p</i>(<i>θ</i>) / <i>p</i>(<i>y</i>),</center>",
            "where the marginal likelihood <i>p</i>(<i>y</i>) does not depend on <i>θ</i>. Because the denominator "
            "is a constant, we often write the posterior as proportional to the likelihood times the prior.",
        ],
        folio="1",
    ),
    SamplePage(
        heading="1.1 Conjugate priors",
        paragraphs=[
            "A prior is conjugate to a likelihood when the posterior belongs to the same family as the prior. "
            "For exponential data with rate <i>λ</i>, the Gamma distribution is conjugate: if "
            "<i>λ</i> ~ Gamma(<i>α</i>, <i>β</i>) and we observe <i>n</i> waiting times with sum <i>s</i>, then",
            "<center><i>λ</i> | <i>y</i> ~ Gamma(<i>α</i> + <i>n</i>, <i>β</i> + <i>s</i>).</center>",
            "The posterior mean (<i>α</i> + <i>n</i>)/(<i>β</i> + <i>s</i>) is a weighted compromise between the prior "
            "mean <i>α</i>/<i>β</i> and the maximum likelihood estimate <i>n</i>/<i>s</i>.",
        ],
        running_head="BAYESIAN INFERENCE",
        folio="2",
    ),
    SamplePage(
        heading="1.2 The normal model",
        paragraphs=[
            "Suppose <i>y</i><sub>1</sub>, ..., <i>y<sub>n</sub></i> are independent draws from a normal distribution "
            "with unknown mean <i>μ</i> and known variance <i>σ</i><sup>2</sup>. With a normal prior "
            "<i>μ</i> ~ N(<i>μ</i><sub>0</sub>, <i>τ</i><sub>0</sub><sup>2</sup>), "
            "the posterior precision is the sum of "
            "the prior precision and the data precision:",
            "<center>1/<i>τ</i><sub><i>n</i></sub><sup>2</sup> = "
            "1/<i>τ</i><sub>0</sub><sup>2</sup> + <i>n</i>/<i>σ</i><sup>2</sup>.</center>",
            "As the sample size grows, the data dominate and the posterior concentrates around the sample mean.",
        ],
        running_head="BAYESIAN INFERENCE",
        folio="3",
    ),
    SamplePage(
        heading="1.3 Credible intervals",
        paragraphs=[
            "A 95% credible interval contains the parameter with posterior probability 0.95. Unlike a confidence "
            "interval, it makes a direct probability statement about the parameter given the observed data.",
            "The highest posterior density interval is the shortest such interval; for a symmetric unimodal "
            "posterior it coincides with the equal-tailed interval between the 2.5% and 97.5% quantiles.",
            "Exercise 1.4. Derive the posterior predictive distribution for a new observation under the normal model.",
        ],
        running_head="BAYESIAN INFERENCE",
        folio="4",
    ),
]


def typeset_pdf(path: Path, pages: list[SamplePage], page_size: tuple[float, float] = PAGE_SIZE) -> Path:
    """Write a born-digital PDF (real text layer) of the given pages."""
    doc = pymupdf.open()
    width, height = page_size
    for spec in pages:
        page = doc.new_page(width=width, height=height)
        if spec.running_head:
            page.insert_htmlbox(
                pymupdf.Rect(MARGIN, 24, width - MARGIN, 44),
                f"<p style='font-size:9px;text-align:center'>{spec.running_head}</p>",
            )
        body = ""
        if spec.heading:
            body += f"<h2 style='font-size:15px'>{spec.heading}</h2>"
        body += "".join(f"<p style='font-size:11px;text-align:justify'>{p}</p>" for p in spec.paragraphs)
        page.insert_htmlbox(pymupdf.Rect(MARGIN, 58, width - MARGIN, height - 60), body)
        if spec.folio:
            page.insert_htmlbox(
                pymupdf.Rect(MARGIN, height - 44, width - MARGIN, height - 24),
                f"<p style='font-size:10px;text-align:center'>{spec.folio}</p>",
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(path)
    doc.close()
    return path


def rasterise_pdf(
    src: Path, dst: Path, dpi: int = 200, skew_degrees: float = 0.6, noise: float = 0.04, seed: int = 0
) -> Path:
    """Turn every page into a grey JPEG 'scan' (skewed, speckled, slightly blurred) in an image-only PDF."""
    rng = random.Random(seed)
    out = pymupdf.open()
    with pymupdf.open(src) as doc:
        for page in doc:
            pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
            image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
            angle = rng.uniform(-skew_degrees, skew_degrees)
            image = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
            image = _speckle(image, noise, rng).filter(ImageFilter.GaussianBlur(0.4))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=75)
            new = out.new_page(width=page.rect.width, height=page.rect.height)
            new.insert_image(new.rect, stream=buffer.getvalue())
    dst.parent.mkdir(parents=True, exist_ok=True)
    out.save(dst, garbage=3, deflate=True)
    out.close()
    return dst


def _speckle(image: Image.Image, amount: float, rng: random.Random) -> Image.Image:
    """Sprinkle dark and light specks over about amount/20 of the pixels."""
    pixels = image.load()
    w, h = image.size
    for _ in range(int(w * h * amount / 20)):
        x, y = rng.randrange(w), rng.randrange(h)
        pixels[x, y] = rng.choice((60, 120, 235))
    return image


def make_sample_book(dst: Path, pages: list[SamplePage] | None = None, seed: int = 0) -> Path:
    """Generate the scanned sample book at ``dst`` (an image-only PDF)."""
    born_digital = dst.with_name(dst.stem + ".typeset.pdf")
    typeset_pdf(born_digital, pages or SAMPLE_PAGES)
    rasterise_pdf(born_digital, dst, seed=seed)
    born_digital.unlink()
    return dst


# --- a magazine-style page: reading order beyond plain columns ------------------------------
# A title and a lead paragraph across the page, then an article in two columns. A pull quote sits
# over the gutter (both columns stop above it and go on below it), and a figure with its caption
# interrupts the right column. The article's text flows through the columns in reading order:
# left column above and below the quote, then the right column above and below the figure.
MAGAZINE_TITLE = "Counting What We Cannot See"
MAGAZINE_LEAD = (
    "Ecologists estimate how many fish live in a river without ever seeing most of them. The trick "
    "takes two visits, a box of small numbered tags and a ratio that statisticians have trusted for "
    "more than a century."
)
MAGAZINE_PARAGRAPHS = [
    "On a cold morning in early spring, a team of four wades into the shallows with nets, buckets and "
    "a box of numbered tags. They catch as many fish as they can in one hour, fix a tag to each fin, "
    "write the number in a notebook and let every fish slip back into the current.",
    "A week later the team returns to the same stretch of water and fishes again for exactly one hour. "
    "Most of the fish they catch this time carry no tag at all, but a few of them do, and those few are "
    "the whole point of the exercise, because the share of tagged fish in the second catch tells us how "
    "large the population of the river must be.",
    "The reasoning is simple proportion. If one hundred fish were tagged on the first visit and one in "
    "ten fish caught on the second visit carries a tag, then the tagged fish make up about a tenth of "
    "the river, and the river holds roughly a thousand fish in all.",
    "The estimate rests on assumptions that field workers check with care. Tagged fish must mix freely "
    "with the others, no fish may lose its tag, and the river must neither gain nor lose many fish "
    "between the two visits, or the ratio will mislead everyone who reads it.",
    "When those conditions fail, the same idea still works with corrections. Modern versions of the "
    "method model births, deaths and migration over many visits, and they report an interval rather "
    "than a single number, so that a reader can judge how much the data really say about the river.",
    "Counting this way is cheap, and it travels well. The same two-visit design is used for birds ringed "
    "on their legs, for butterflies marked with a dot of paint and even for estimating how many people "
    "in a city sleep rough on a given night.",
    "Each case brings its own worries, about marks that wear off or animals that learn to avoid the nets, "
    "but the arithmetic at the heart of the method has hardly changed since it was first written down.",
    "What has changed is the computing. A field team can now fit a model on a laptop at the riverbank, "
    "compare the result with last year's count before packing up the nets, and decide on the spot "
    "whether a third visit would be worth the trouble and the cold.",
]
MAGAZINE_PULL_QUOTE = "Two short visits and one ratio can count a whole river."
MAGAZINE_CAPTION = "Figure 1. Tagged and untagged fish in the second catch, by hour of the morning."

_MAG_LEFT, _MAG_RIGHT, _MAG_GUTTER = 54.0, 558.0, 20.0
_MAG_BODY = ("tiro", 10.5, 13.5)  # font, size, leading


def typeset_magazine_pdf(path: Path) -> Path:
    """Write the magazine page described above as a born-digital PDF (letter size)."""
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((_MAG_LEFT, 92), MAGAZINE_TITLE, fontname="hebo", fontsize=26)
    _set_block(page, MAGAZINE_LEAD.split(), _MAG_LEFT, _MAG_RIGHT, 128, ("tiro", 13.0, 17.0))
    middle = (_MAG_LEFT + _MAG_RIGHT) / 2
    left = (_MAG_LEFT, middle - _MAG_GUTTER / 2)
    right = (middle + _MAG_GUTTER / 2, _MAG_RIGHT)
    # pull quote over the gutter, between rules; both columns skip its height
    page.draw_line((150, 318), (462, 318), width=0.8)
    _set_block(page, MAGAZINE_PULL_QUOTE.split(), 170, 442, 342, ("tiit", 16.0, 20.0), centred=True)
    page.draw_line((150, 378), (462, 378), width=0.8)
    # a figure in the right column (bars, no text), its caption below it
    page.draw_rect(pymupdf.Rect(right[0], 452, right[1], 540), color=(0.4, 0.4, 0.4), width=0.6)
    for i, bar in enumerate((30, 55, 70, 45, 25)):
        x = right[0] + 25 + i * 40
        page.draw_rect(pymupdf.Rect(x, 532 - bar, x + 22, 532), color=None, fill=(0.55, 0.55, 0.55))
    _set_block(page, MAGAZINE_CAPTION.split(), right[0], right[1], 556, ("heit", 8.5, 11.0))
    slots = [(*left, 200, 306), (*left, 402, 660), (*right, 200, 306), (*right, 402, 440), (*right, 590, 660)]
    _flow(page, MAGAZINE_PARAGRAPHS, slots, _MAG_BODY)
    page.insert_text((300, 750), "12", fontname="tiro", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(path)
    doc.close()
    return path


def _flow(
    page: pymupdf.Page,
    paragraphs: list[str],
    slots: list[tuple[float, float, float, float]],
    body: tuple[str, float, float],
) -> None:
    """Pour the paragraphs through the slots (x0, x1, first baseline, last baseline) in order: justified,
    first lines of paragraphs indented."""
    font, size, leading = body
    words = [(word, k == len(p.split()) - 1) for p in paragraphs for k, word in enumerate(p.split())]
    pos, starts_paragraph = 0, False
    for x0, x1, y, last in slots:
        while pos < len(words) and y <= last:
            indent = 1.5 * size if starts_paragraph else 0.0
            line: list[str] = []
            while pos < len(words):
                if (
                    line
                    and pymupdf.get_text_length(" ".join([*line, words[pos][0]]), fontname=font, fontsize=size)
                    > x1 - x0 - indent
                ):
                    break
                line.append(words[pos][0])
                pos += 1
                if words[pos - 1][1]:
                    break
            starts_paragraph = words[pos - 1][1]
            _set_line(page, line, x0 + indent, x1, y, font, size, justify=not starts_paragraph)
            y += leading


def _set_block(
    page: pymupdf.Page,
    words: list[str],
    x0: float,
    x1: float,
    y: float,
    style: tuple[str, float, float],
    centred: bool = False,
) -> None:
    """A short block set line by line: justified (last line ragged), or centred."""
    font, size, leading = style
    while words:
        n = 1
        while (
            n < len(words)
            and pymupdf.get_text_length(" ".join(words[: n + 1]), fontname=font, fontsize=size) <= x1 - x0
        ):
            n += 1
        line, words = words[:n], words[n:]
        if centred:
            width = pymupdf.get_text_length(" ".join(line), fontname=font, fontsize=size)
            page.insert_text(((x0 + x1 - width) / 2, y), " ".join(line), fontname=font, fontsize=size)
        else:
            _set_line(page, line, x0, x1, y, font, size, justify=bool(words))
        y += leading


def _set_line(
    page: pymupdf.Page, words: list[str], x0: float, x1: float, y: float, font: str, size: float, justify: bool
) -> None:
    widths = [pymupdf.get_text_length(w, fontname=font, fontsize=size) for w in words]
    space = pymupdf.get_text_length(" ", fontname=font, fontsize=size)
    if justify and len(words) > 1:
        space = (x1 - x0 - sum(widths)) / (len(words) - 1)
    x = x0
    for word, width in zip(words, widths):
        page.insert_text((x, y), word, fontname=font, fontsize=size)
        x += width + space
