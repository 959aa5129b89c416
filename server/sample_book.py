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
            "<center><i>p</i>(<i>θ</i> | <i>y</i>) = <i>p</i>(<i>y</i> | <i>θ</i>) <i>p</i>(<i>θ</i>) / <i>p</i>(<i>y</i>),</center>",
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
            "<i>μ</i> ~ N(<i>μ</i><sub>0</sub>, <i>τ</i><sub>0</sub><sup>2</sup>), the posterior precision is the sum of "
            "the prior precision and the data precision:",
            "<center>1/<i>τ</i><sub><i>n</i></sub><sup>2</sup> = 1/<i>τ</i><sub>0</sub><sup>2</sup> + <i>n</i>/<i>σ</i><sup>2</sup>.</center>",
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
            page.insert_htmlbox(pymupdf.Rect(MARGIN, 24, width - MARGIN, 44), f"<p style='font-size:9px;text-align:center'>{spec.running_head}</p>")
        body = ""
        if spec.heading:
            body += f"<h2 style='font-size:15px'>{spec.heading}</h2>"
        body += "".join(f"<p style='font-size:11px;text-align:justify'>{p}</p>" for p in spec.paragraphs)
        page.insert_htmlbox(pymupdf.Rect(MARGIN, 58, width - MARGIN, height - 60), body)
        if spec.folio:
            page.insert_htmlbox(pymupdf.Rect(MARGIN, height - 44, width - MARGIN, height - 24), f"<p style='font-size:10px;text-align:center'>{spec.folio}</p>")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(path)
    doc.close()
    return path


def rasterise_pdf(src: Path, dst: Path, dpi: int = 200, skew_degrees: float = 0.6, noise: float = 0.04, seed: int = 0) -> Path:
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
