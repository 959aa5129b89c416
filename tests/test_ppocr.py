"""PP-OCR run directly: CTC decoding, line tensors, the compact head, and the detector against RapidOCR's own."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

from ocr_backend import ppocr

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def one_hot(steps: list[int], classes: int, confidence: float = 0.9) -> np.ndarray:
    probabilities = np.full((len(steps), classes), (1 - confidence) / (classes - 1), dtype=np.float32)
    probabilities[np.arange(len(steps)), steps] = confidence
    return probabilities


def test_ctc_merges_repeats_drops_blanks_and_keeps_a_letter_repeated_across_a_blank() -> None:
    classes = ["", "a", "b", " "]
    probabilities = one_hot([0, 1, 1, 0, 1, 2, 2, 3, 0, 0], len(classes))
    probabilities[5] = [0.1, 0.1, 0.5, 0.3]  # the first "b" is less sure
    text, confidence = ppocr.ctc_decode(probabilities, classes)
    assert text == "aab "
    assert confidence == pytest.approx((0.9 + 0.9 + 0.5 + 0.9) / 4)


def test_ctc_of_only_blanks_is_empty_with_no_confidence() -> None:
    assert ppocr.ctc_decode(one_hot([0, 0, 0], 3), ["", "a", " "]) == ("", 0.0)


def test_line_tensor_adds_margins_rounds_the_width_up_and_pads_with_zeros() -> None:
    crop = np.full((30, 600, 3), 255, dtype=np.uint8)
    crop[:, :10] = 0  # a black stripe on the left, to see the channel values
    tensor = ppocr.line_tensor(crop)
    # 30 px + 2 x round(30 * 0.25 / 2) = 38 px high; 600 * 48 / 38 = 758 px wide; padded to 768
    assert tensor.shape == (1, 3, 48, 768)
    assert tensor.dtype == np.float32
    assert tensor[0, :, :, 0].max() == pytest.approx(-1.0)
    assert tensor[0, :, :, 400].min() == pytest.approx(1.0)
    assert not tensor[0, :, :, 758:].any()


def test_short_lines_are_padded_to_the_minimum_width() -> None:
    assert ppocr.line_tensor(np.zeros((40, 40, 3), dtype=np.uint8)).shape == (1, 3, 48, ppocr.MIN_WIDTH)


def test_compact_head_keeps_latin_greek_and_symbols_but_not_cjk() -> None:
    classes = ppocr.model_classes(["a", "Z", "é", "σ", "∑", "≤", "二", "十", "あ", "한"])
    kept = [classes[i] for i in ppocr.compact_classes(classes)]
    assert kept == ["", "a", "Z", "é", "σ", "∑", "≤", " "]


def text_line(text: str, height: int = 40) -> np.ndarray:
    font = ImageFont.truetype("DejaVuSans.ttf", 28) if _has_dejavu() else ImageFont.load_default(28)
    width = int(font.getlength(text)) + 20
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((10, 4), text, fill="black", font=font)
    return np.asarray(image)


def _has_dejavu() -> bool:
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
        return True
    except OSError:
        return False


@needs_openvino
def test_compact_head_reads_a_line_as_the_full_head_does() -> None:
    compact_finder, compact = ppocr.openvino_models(threads=1, long_side=640)
    _, full = ppocr.onnxruntime_models(threads=1, long_side=640)
    assert len(compact.classes) < len(full.classes) / 5
    line = "Posterior mean 0.25 with prior Beta(2, 3)"
    compact_text, compact_confidence = compact.read(text_line(line))
    full_text, _ = full.read(text_line(line))
    assert Levenshtein.distance(compact_text, line) <= 2, compact_text
    assert Levenshtein.distance(compact_text, full_text) <= 1
    assert compact_confidence > 0.8


def test_detector_finds_the_same_boxes_as_rapidocr() -> None:
    """Our port of RapidOCR's detector (pre-processing, DB post-processing) against RapidOCR itself, same model and runtime."""
    from rapidocr import RapidOCR

    page = Image.new("L", (900, 1200), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype("DejaVuSans.ttf", 22) if _has_dejavu() else ImageFont.load_default(22)
    for row, words in enumerate(
        ["Chapter 2", "The likelihood of the data under each model", "is weighed by the prior.", "37"]
    ):
        draw.text((90 + 40 * (row % 2), 120 + 70 * row), words, fill=0, font=font)
    pixels = np.asarray(page.convert("RGB"))

    detect = ppocr.onnxruntime_infer(ppocr.onnxruntime_session(ppocr.model_path(ppocr.DETECTOR_FILE), 1))
    ours = ppocr.LineFinder(lambda size: detect, 1280)
    theirs = RapidOCR(
        params={
            "Global.log_level": "error",
            "Global.use_cls": False,
            "Global.use_rec": False,
            "Det.limit_type": "max",
            "Det.limit_side_len": 1280,
            "Det.box_thresh": ppocr.BOX_THRESHOLD,
        }
    )
    found = sorted(box.tolist() for box in ours.find(pixels))
    expected = sorted(np.asarray(box, dtype=np.float32).tolist() for box in theirs(pixels).boxes)
    assert len(found) == 4
    assert np.allclose(found, expected, atol=1)


def test_tiny_specks_are_not_lines_and_a_region_grows_back_to_its_line() -> None:
    probabilities = np.zeros((200, 400), dtype=np.float32)
    probabilities[50:60, 40:300] = 0.9  # a shrunk text line
    probabilities[150:152, 200:202] = 0.9  # a speck
    boxes = ppocr.regions_to_boxes(probabilities, 800, 400)  # the page is twice the map's size
    assert len(boxes) == 1
    (x0, y0), (x1, y1) = boxes[0].min(axis=0), boxes[0].max(axis=0)
    assert x0 < 80 and x1 > 600 and y0 < 100 and y1 > 120  # grown past the region, in page pixels
    assert boxes[0][0].tolist() == [x0, y0]  # top-left first, clockwise


def test_crop_turns_a_tall_narrow_box_to_lie_flat() -> None:
    pixels = np.zeros((300, 300, 3), dtype=np.uint8)
    box = np.array([[100, 20], [130, 20], [130, 220], [100, 220]], dtype=np.float32)
    assert ppocr.crop_line(pixels, box).shape[:2] == (30, 200)
    flat = np.array([[10, 10], [210, 10], [210, 40], [10, 40]], dtype=np.float32)
    assert ppocr.crop_line(pixels, flat).shape[:2] == (30, 200)


@needs_openvino
def test_fixed_size_detectors_find_what_the_general_one_finds_and_their_number_is_bounded() -> None:
    sizes: list[tuple[int, int] | None] = []
    finder, _ = ppocr.openvino_models(threads=1, long_side=640)
    runner = finder.runner
    general = runner(None)

    def counting(size: tuple[int, int] | None) -> ppocr.Infer:
        sizes.append(size)
        return runner(size)

    finder.runner = counting
    page = np.full((800, 600, 3), 255, dtype=np.uint8)
    line = text_line("A line of text on the page", height=30)
    page[300:330, 100 : 100 + line.shape[1]] = line
    first = finder.find(page)
    assert len(first) == 1
    assert np.allclose(first, ppocr.regions_to_boxes(general(finder.input_tensor(page))[0, 0], 600, 800), atol=1)
    for width in (600, 600, 700, 800, 900, 1000, 1100):
        finder.find(np.full((800, width, 3), 255, dtype=np.uint8))
    assert sizes == [(640, 480), (640, 576), (640, 640), (576, 640), None]  # four fixed sizes, then the general one


def test_missing_model_file_says_how_to_fix_it() -> None:
    with pytest.raises(Exception, match="reinstall"):
        ppocr.model_path("no-such-model.onnx")
