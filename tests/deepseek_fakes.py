"""Stand-ins for the GPU side of DeepSeek-OCR, and raw-output fixtures.

The fixtures are written here, modelled on the format of real DeepSeek-OCR output
(grounding tags, 0-999 boxes, HTML tables, \\( \\) / \\[ \\] math, a repetition loop,
malformed boxes); no third-party output is copied into the repository.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymupdf
from PIL import Image

from ocr_backend.deepseek.runner import DeepseekRunner
from ocr_backend.engines.base import OcrEngine, PageInput, PageResult

EOS = "<｜end▁of▁sentence｜>"

RAW_EQUATIONS = (
    "<|ref|>title<|/ref|><|det|>[[120, 60, 480, 95]]<|/det|>\n# Worksheet 3 \n\n"
    "<|ref|>text<|/ref|><|det|>[[120, 110, 870, 150]]<|/det|>\n"
    "Let \\(X\\) be normal with mean \\(\\mu\\) and variance \\(\\sigma^2\\). We set \\(Z \\coloneqq (X - \\mu)/\\sigma\\). \n\n"
    "<|ref|>equation<|/ref|><|det|>[[130, 160, 700, 190]]<|/det|>\n"
    "\\[P(a \\le X \\le b) = \\Phi\\left(\\frac{b-\\mu}{\\sigma}\\right) - \\Phi\\left(\\frac{a-\\mu}{\\sigma}\\right)\\]\n\n"
    "<|ref|>equation<|/ref|><|det|>[[130, 200, 760, 280]]<|/det|>\n"
    "\\[\n\\begin{align*}\nE[X] &= \\mu \\\\\n\\operatorname{Var}(X) \\eqqcolon \\sigma^2\n\\end{align*}\n\\]\n\n\n\n"
    "<|ref|>text<|/ref|><|det|>[[120, 300, 860, 330]]<|/det|>\nHence the claim. " + EOS
)

RAW_TABLE_FIGURE = (
    "<|ref|>image<|/ref|><|det|>[[100, 80, 600, 400]]<|/det|>\n \n\n"
    "<|ref|>image_caption<|/ref|><|det|>[[100, 405, 400, 425]]<|/det|>\n<center>Figure 2.1: A density.</center> \n\n"
    "<|ref|>table_caption<|/ref|><|det|>[[100, 440, 500, 460]]<|/det|>\nTable 2: Values \n\n"
    "<|ref|>table<|/ref|><|det|>[[100, 470, 900, 700]]<|/det|>\n"
    "<table><tr><td></td><td>0</td><td>π/2</td></tr><tr><td>sin</td><td>0</td><td>1</td></tr>"
    '<tr><td colspan="2">cos</td><td>0</td></tr></table>' + EOS
)

RAW_MALFORMED = (
    "<|ref|>text<|/ref|><|det|>[[150 876, 315, 900]]<|/det|>\nmissing comma box \n\n"
    "<|ref|>text<|/ref|><|det|>[[900, 100, 100, 140]]<|/det|>\nx1 greater than x2 \n\n"
    "<|ref|>text<|/ref|>\nno det at all \n\n"
    "<|ref|>equation<|/ref|><|det|> [[125, 264, 737, 311]]<|/det|>\n\\[a^2 + b^2 = c^2\\] \n\n"
    "<|ref|>image<|/ref|><|det|>[[1158, 772, 144, 789]]<|/det|>\n \n\n"
    "<|ref|>text<|/ref|><|det|>[[117, s 325, 330, 389]]<|/det|>\nletter in box \n\n"
    "<|ref|>equation<|/ref|><|det|>\\[ x = 1 \\] \n\n"
    "<|ref|>text<|/ref|><|det|>[[1, 2, 3]]<|/det|>\nthree numbers \n\n"
    "<|ref|>text<|/ref|><|det|>[[10, 10, 10, 50]]<|/det|>\nzero width"
)


def raw_loop(lines: int = 400) -> str:
    """A good start, then a degenerate loop of near-identical lines until the budget ran out."""
    start = "<|ref|>equation<|/ref|><|det|>[[125, 116, 562, 162]]<|/det|>\n\\[ \\nabla f = 2xy^2 \\]\n\n"
    variants = [
        "overline[[overline][||",
        "overline[[overline][||",
        "\\overline[[overline||||",
        "overline[[overline]|[|[",
    ]
    return (
        start
        + "<|ref|>text<|/ref|><|det|>[[115, 547, 512, 565]]<|/det|>\n"
        + "\n\n".join(variants[i % 7 % 4] for i in range(lines))
    )


def good_raw(number: int) -> str:
    return (
        f"<|ref|>text<|/ref|><|det|>[[100, 100, 900, 200]]<|/det|>\nPage {number} says \\(x_{number} = {number}\\). \n\n"
        f"<|ref|>equation<|/ref|><|det|>[[100, 220, 900, 260]]<|/det|>\n\\[ y = {number} x \\]" + EOS
    )


# --- page images that say which page they are --------------------------------------------
# Two grey squares in the top-left corner spell the page number (tens, units), in a way
# that survives rendering, resizing and JPEG.
def _grey(digit: int) -> int:
    return 10 + 20 * digit


def _digit(value: float) -> int:
    return round((value - 10) / 20)


def page_image(number: int, size: tuple[int, int] = (300, 420)) -> Image.Image:
    image = Image.new("L", size, color=255)
    w, h = size
    image.paste(_grey(number // 10), (0, 0, w // 10, h // 10))
    image.paste(_grey(number % 10), (w // 10, 0, w // 5, h // 10))
    return image


def number_of(image: Image.Image) -> int:
    grey = image.convert("L")
    w, h = grey.size
    tens, units = (grey.getpixel((int(w * x), h // 20)) for x in (0.05, 0.15))
    return 10 * _digit(tens) + _digit(units)


def marked_pdf(path: Path, pages: int) -> Path:
    """An image-free PDF whose pages carry the number squares (and a line of text)."""
    doc = pymupdf.open()
    for number in range(1, pages + 1):
        page = doc.new_page(width=400, height=560)
        for i, digit in enumerate((number // 10, number % 10)):
            grey = _grey(digit) / 255
            page.draw_rect(pymupdf.Rect(40 * i, 0, 40 * (i + 1), 56), color=None, fill=(grey, grey, grey))
        page.insert_text((60, 200), f"Page {number} of a marked test book.", fontsize=12)
    doc.save(path)
    doc.close()
    return path


# --- a fake vLLM ---------------------------------------------------------------------------
@dataclass
class FakeCompletion:
    text: str
    finish_reason: str
    token_ids: list[int]


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]
    finished: bool = True


Respond = Callable[[int, dict[str, Any]], tuple[str, str]]  # (page number, extra_args) -> (text, finish_reason)


def respond_good(number: int, _: dict[str, Any]) -> tuple[str, str]:
    return good_raw(number), "stop"


@dataclass
class FakeLLM:
    """Shaped like ``vllm.LLM``: ``generate(requests, params)`` returns one output per request."""

    respond: Respond = respond_good
    calls: list[tuple[list[dict[str, Any]], Any]] = field(default_factory=list)

    def generate(self, requests: list[dict[str, Any]], params: Any, **_: Any) -> list[FakeRequestOutput]:
        self.calls.append((requests, params))
        extra = params.get("extra_args", {}) if isinstance(params, dict) else getattr(params, "extra_args", {})
        outs = []
        for request in requests:
            text, reason = self.respond(number_of(request["multi_modal_data"]["image"]), extra)
            outs.append(
                FakeRequestOutput(
                    prompt_token_ids=list(range(900)),
                    outputs=[FakeCompletion(text, reason, list(range(len(text) // 4 + 1)))],
                )
            )
        return outs


@dataclass
class FakeAsyncLLM:
    """Shaped like vLLM's ``AsyncLLM``: ``generate(request, params, request_id, priority=)`` streams
    cumulative outputs, ``chunk`` tokens at a time (4 characters a token); a stream closed early
    is an aborted request."""

    respond: Respond = respond_good
    chunk: int = 512
    requests: list[tuple[dict[str, Any], Any, int]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)

    async def generate(
        self, request: dict[str, Any], params: Any, request_id: str, priority: int = 0
    ) -> AsyncIterator[FakeRequestOutput]:
        self.requests.append((request, params, priority))
        extra = params.get("extra_args", {}) if isinstance(params, dict) else getattr(params, "extra_args", {})
        text, reason = self.respond(number_of(request["multi_modal_data"]["image"]), extra)
        tokens = list(range(len(text) // 4 + 1))
        try:
            for end in range(self.chunk, len(tokens) + self.chunk, self.chunk):
                done = end >= len(tokens)
                completion = FakeCompletion(text[: end * 4], reason if done else "", tokens[:end])
                yield FakeRequestOutput(list(range(900)), [completion], finished=done)
                await asyncio.sleep(0)
        except GeneratorExit:
            self.aborted.append(request_id)
            raise


def fake_params(settings: Any) -> dict[str, Any]:
    return {
        "max_tokens": settings.max_tokens,
        "extra_args": {"ngram_size": settings.ngram_size, "window_size": settings.window_size},
    }


class FakeClock:
    """Each generate() call takes 1.0 s of 'GPU time'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def fake_runner(respond: Respond = respond_good) -> DeepseekRunner:
    return DeepseekRunner(FakeLLM(respond), make_params=fake_params, gpu="A100", device="fake", clock=FakeClock())


def fake_async_runner(respond: Respond = respond_good) -> DeepseekRunner:
    return DeepseekRunner(FakeAsyncLLM(respond), make_params=fake_params, gpu="A100", device="fake")


class LocalClass:
    """A local stand-in for the deployed class: the real runner over a fake model,
    with a record of every call and optional scripted exceptions."""

    def __init__(self, respond: Respond = respond_good, errors: list[BaseException] | None = None) -> None:
        self.runner = fake_runner(respond)
        self.errors = list(errors or [])
        self.calls: list[tuple[int, dict[str, Any]]] = []
        self.pages: list[int] = []  # the page of every image sent, in the order sent
        self.sends: list[tuple[tuple[int, ...], dict[str, Any]]] = []  # (pages, options) of each call
        self.timeouts: list[float | None] = []  # the deadline each call was given
        self.info_timeouts: list[float | None] = []

    def ocr(self, images: list[bytes], options: dict[str, Any], timeout: float | None = None) -> list[dict[str, Any]]:
        self.calls.append((len(images), dict(options)))
        self.timeouts.append(timeout)
        numbers = [number_of(Image.open(io.BytesIO(data))) for data in images]
        self.pages.extend(numbers)
        self.sends.append((tuple(numbers), dict(options)))  # one append: calls come from many threads
        if self.errors:
            raise self.errors.pop(0)
        return self.runner.run(images, options)

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        self.info_timeouts.append(timeout)
        return {"gpu": self.runner.gpu, "model": self.runner.model_id, "vllm": "fake", "startup_error": None}


class StubFallback(OcrEngine):
    name = "local-stub"

    def __init__(self) -> None:
        self.pages: list[int] = []

    def version(self) -> str:
        return "stub-1"

    def recognize(self, page: PageInput) -> PageResult:
        assert page.image is not None, "the fallback needs the page image"
        self.pages.append(page.number)
        return PageResult(page.number, f"fallback text for page {page.number}", "ok", self.name, self.version())


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()
