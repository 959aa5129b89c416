"""PP-OCR's text detector and recogniser, run directly on OpenVINO or onnxruntime: the models of the ``local`` engine.

The ONNX models ship inside the ``rapidocr`` wheel. bookocr runs them itself, with RapidOCR's settings
(DB detector, CTC recogniser), rather than through RapidOCR's pipeline. Every change below was measured
on Whitehead's scanned pages, OpenVINO, one thread per page, on a 2-core Xeon:

- Start-up: RapidOCR parses its YAML model tables on import (0.35 s per process); not needed here.
- Detection: pixels are normalised in float32, not float64 (0.04 s per page), and each line is cropped once, not twice.
- Recognition: the model scores 18,710 characters at every step, nine in ten of them CJK. Its output
  layer and softmax took a third of the recogniser's time. Under OpenVINO the layer is cut to the
  1,750 characters below U+2E80: Latin, Greek, digits, punctuation, arrows, math operators. Lines read
  about 1.3x faster, and can no longer come out as CJK look-alikes (二 for =, 十 for +).
- Every new input shape costs OpenVINO about 20 ms of kernel preparation. Line widths are rounded up to a
  multiple of ``WIDTH_STEP``, so a worker meets a few dozen shapes instead of one per line.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyclipper

from ocr_backend.errors import EngineError

DETECTOR_FILE = "PP-OCRv6_det_small.onnx"
RECOGNIZER_FILE = "PP-OCRv6_rec_small.onnx"

Infer = Callable[[np.ndarray], np.ndarray]  # one input tensor -> the model's one output


# --- running a model ------------------------------------------------------------------------------------


def model_path(name: str) -> Path:
    """A model file from the ``rapidocr`` wheel's ``models`` folder."""
    try:
        import rapidocr
    except ImportError as exc:  # pragma: no cover - a broken install
        raise EngineError("the local engine needs the 'rapidocr' package: pip install 'rapidocr>=3.10,<4'") from exc
    path = Path(rapidocr.__file__).parent / "models" / name
    if not path.is_file():
        raise EngineError(
            f"PP-OCR model {name} is missing from the rapidocr package ({path.parent}); reinstall it: pip "
            "install --force-reinstall 'rapidocr>=3.10,<4'"
        )
    return path


# Two threads setting up OpenVINO models at once can deadlock inside the binding: seen stuck in
# __cxa_guard_acquire on two first inferences, and in pthread_cond_timedwait while two threads built the
# compact head and compiled (1 process in 7 hung on an AVX2-only EPYC). So every OpenVINO call other than an
# inference on a compiled model that has already run once holds this lock: reading, editing, reshaping,
# compiling, creating requests, first inferences; onnxruntime sessions are created under it too. Pages
# normally run in worker processes of one OCR thread each (ocr_backend/workers.py); this covers callers
# that read pages on threads of their own.
MODEL_SETUP = threading.RLock()


def openvino_infer(model: Any, threads: int, precision: str | None = None) -> Infer:
    """Compile an OpenVINO model (or a path to one) for the CPU; a function that runs it. ``precision``
    ("f32") overrides the CPU's own choice (bf16 where it has AVX-512 BF16 or AMX)."""
    import openvino as ov

    # Unpinned: pinned, every worker's single thread lands on the same core (measured: 0.9 vs 1.6 pages/s).
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    with MODEL_SETUP:
        compiled = ov.Core().compile_model(model, "CPU", config)
        request = compiled.create_infer_request()

    def run(tensor: np.ndarray) -> np.ndarray:
        request.infer([tensor])
        return request.get_output_tensor().data

    return first_run_under_lock(run)


def first_run_under_lock(run: Infer) -> Infer:
    """``run``, with its first call holding :data:`MODEL_SETUP` (see there)."""
    first_done = threading.Event()

    def infer(tensor: np.ndarray) -> np.ndarray:
        if first_done.is_set():
            return run(tensor)
        with MODEL_SETUP:
            output = run(tensor)
        first_done.set()
        return output

    return infer


def onnxruntime_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with MODEL_SETUP:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_infer(session: Any) -> Infer:
    input_name = session.get_inputs()[0].name

    def run(tensor: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: tensor})[0]

    return first_run_under_lock(run)


# --- detection: where the lines are ------------------------------------------------------------------------

BINARY_THRESHOLD = 0.3  # text probability above which a pixel is text (RapidOCR's default)
BOX_THRESHOLD = 0.3  # mean probability a box needs; RapidOCR's 0.5 drops a lone page number ("2") on a speckled scan
UNCLIP_RATIO = 1.6  # how far each found region is grown back out to the whole line (RapidOCR's default)
MAX_REGIONS = 1000
MIN_SIDE = 3


class LineFinder:
    """Finds text lines: each as 4 corner points (top-left, top-right, bottom-right, bottom-left) in page pixels.

    ``runner(shape)`` gives a function that runs the detector on input of that (height, width), or of any
    size for ``None``. Under OpenVINO a detector compiled for one fixed size runs a page in 0.085 s instead
    of 0.124 s, and skips 0.12 s of first-use preparation (measured); the pages of a book share a size or
    a few, so each size seen gets its own, up to ``MAX_FIXED_SIZES``, and any further size the general one.
    """

    MAX_FIXED_SIZES = 4

    def __init__(self, runner: Callable[[tuple[int, int] | None], Infer], long_side: int) -> None:
        self.runner = runner
        self.long_side = long_side
        self._runners: dict[tuple[int, int] | None, Infer] = {}

    def find(self, pixels: np.ndarray) -> list[np.ndarray]:
        height, width = pixels.shape[:2]
        tensor = self.input_tensor(pixels)
        probabilities = self._runner_for(tensor.shape[2], tensor.shape[3])(tensor)[0, 0]
        return regions_to_boxes(probabilities, width, height)

    def _runner_for(self, height: int, width: int) -> Infer:
        size: tuple[int, int] | None = (height, width)
        if size not in self._runners and len(self._runners) >= self.MAX_FIXED_SIZES:
            size = None
        if size not in self._runners:
            self._runners[size] = self.runner(size)
        return self._runners[size]

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """The page at most ``long_side`` on its long side, sides multiples of 32, BGR, values in [-1, 1]."""
        height, width = pixels.shape[:2]
        ratio = min(1.0, self.long_side / max(height, width))
        size = (max(32, round(int(width * ratio) / 32) * 32), max(32, round(int(height * ratio) / 32) * 32))
        return cv2.dnn.blobFromImage(pixels, 1 / 127.5, size, (127.5, 127.5, 127.5), swapRB=True)


def regions_to_boxes(probabilities: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """DB post-processing: text regions of the probability map, grown back to whole lines, in page pixels."""
    mask = cv2.dilate((probabilities > BINARY_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    scale = np.array([width / probabilities.shape[1], height / probabilities.shape[0]], dtype=np.float32)
    boxes = []
    for contour in contours[:MAX_REGIONS]:
        points, short_side = _min_area_box(contour)
        if short_side < MIN_SIDE or _mean_inside(probabilities, points) < BOX_THRESHOLD:
            continue
        points, short_side = _min_area_box(_grow(points))
        if short_side < MIN_SIDE + 2:
            continue
        box = _clockwise(np.round(points * scale))
        box[:, 0] = np.clip(box[:, 0], 0, width - 1)
        box[:, 1] = np.clip(box[:, 1], 0, height - 1)
        if int(np.linalg.norm(box[0] - box[1])) > MIN_SIDE and int(np.linalg.norm(box[0] - box[3])) > MIN_SIDE:
            boxes.append(box)
    return boxes


def _min_area_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    rect = cv2.minAreaRect(points.astype(np.float32))
    return cv2.boxPoints(rect), min(rect[1])


def _mean_inside(probabilities: np.ndarray, box: np.ndarray) -> float:
    height, width = probabilities.shape
    x0, y0 = np.clip(np.floor(box.min(axis=0)).astype(int), 0, [width - 1, height - 1])
    x1, y1 = np.clip(np.ceil(box.max(axis=0)).astype(int), 0, [width - 1, height - 1])
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(box - [x0, y0]).astype(np.int32)], 1)
    return cv2.mean(probabilities[y0 : y1 + 1, x0 : x1 + 1], mask)[0]


def _grow(box: np.ndarray) -> np.ndarray:
    """The region pushed out by area * ratio / perimeter, as DB was trained to shrink it."""
    distance = cv2.contourArea(box) * UNCLIP_RATIO / max(cv2.arcLength(box, True), 1e-6)
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(distance)
    return np.array(grown[0] if grown else box, dtype=np.float32)


def _clockwise(points: np.ndarray) -> np.ndarray:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def crop_line(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The line's quadrilateral straightened into a rectangle; tall narrow crops turned to lie flat."""
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(pixels, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    return np.rot90(crop) if crop.shape[0] >= 1.5 * crop.shape[1] else crop


# --- recognition: what the lines say ----------------------------------------------------------------------

LINE_HEIGHT = 48  # the model's input height
MIN_WIDTH = 320  # narrower lines are padded to this width, as PaddleOCR does
WIDTH_STEP = (
    128  # 32 to 160 read Whitehead's pages with the same CER; 128 met the fewest new shapes (0.44 vs 0.48 s/page cold)
)
# Margin added above and below each crop, as a share of its height. The detector's boxes hug the text;
# with a margin the text fills less of the 48 px, so the scaled line is narrower and reads faster
# (0.43 vs 0.48 s per page), with the same error rate on Whitehead's pages (measured).
MARGIN = 0.25
SCRIPTS_BELOW = 0x2E80  # first CJK code point; everything below is kept in the compact head


class LineRecognizer:
    """Turns line crops into ``(text, confidence)`` pairs; ``classes[i]`` is the text of output class ``i``."""

    def __init__(self, infer: Infer, classes: Sequence[str]) -> None:
        self.infer = infer
        self.classes = list(classes)

    def read(self, crop: np.ndarray) -> tuple[str, float]:
        probabilities = self.infer(line_tensor(crop))[0]
        return ctc_decode(probabilities, self.classes)


def line_tensor(crop: np.ndarray) -> np.ndarray:
    """A line crop (H, W, 3 uint8, RGB) as the model's input: margins added, height 48, width rounded up,
    BGR in [-1, 1]."""
    margin = round(crop.shape[0] * MARGIN / 2)
    if margin:
        crop = cv2.copyMakeBorder(crop, margin, margin, 0, 0, cv2.BORDER_REPLICATE)
    height, width = crop.shape[:2]
    scaled_width = max(1, math.ceil(LINE_HEIGHT * width / max(height, 1)))
    padded_width = max(MIN_WIDTH, math.ceil(scaled_width / WIDTH_STEP) * WIDTH_STEP)
    resized = cv2.resize(crop, (scaled_width, LINE_HEIGHT))[:, :, ::-1].astype(np.float32)
    tensor = np.zeros((1, 3, LINE_HEIGHT, padded_width), dtype=np.float32)
    tensor[0, :, :, :scaled_width] = resized.transpose(2, 0, 1) / 127.5 - 1.0
    return tensor


def ctc_decode(probabilities: np.ndarray, classes: Sequence[str]) -> tuple[str, float]:
    """Greedy CTC: best class per step, repeats merged, blanks (class 0) dropped; confidence is the mean."""
    best = probabilities.argmax(axis=1)
    keep = best != 0
    keep[1:] &= best[1:] != best[:-1]
    if not keep.any():
        return "", 0.0
    text = "".join(classes[i] for i in best[keep])
    return text, float(probabilities.max(axis=1)[keep].mean())


def model_classes(characters: Sequence[str]) -> list[str]:
    """The model's output classes: CTC blank, its character list, then a space (PaddleOCR's convention)."""
    return ["", *characters, " "]


def compact_classes(classes: Sequence[str]) -> list[int]:
    """Indices of the classes the compact head keeps: the blank, the space and every character below U+2E80."""
    return [i for i, text in enumerate(classes) if i == 0 or text == " " or ord(text[0]) < SCRIPTS_BELOW]


def with_compact_head(model: Any, keep: list[int]) -> Any:
    """The OpenVINO model with its last MatMul + bias + softmax rebuilt from the kept classes' weights only."""
    import openvino as ov
    from openvino import opset13 as ops

    node = model.get_results()[0].input_value(0).get_node()
    chain: dict[str, Any] = {}
    while node.get_type_name() in ("Softmax", "Identity", "Add") and len(chain) < 4:
        chain.setdefault(node.get_type_name(), node)
        node = node.input_value(0).get_node()
    if node.get_type_name() != "MatMul" or "Add" not in chain or "Softmax" not in chain:
        raise EngineError(
            "the recognition model's output layer is not MatMul + Add + Softmax; this rapidocr version is not supported"
        )
    weights = node.input_value(1).get_node().get_data()
    bias = chain["Add"].input_value(1).get_node().get_data()
    logits = ops.matmul(node.input_value(0), ops.constant(np.ascontiguousarray(weights[:, keep])), False, False)
    logits = ops.add(logits, ops.constant(np.ascontiguousarray(bias[keep])))
    return ov.Model([ops.softmax(logits, -1)], model.get_parameters(), "rec_compact")


# --- building them ---------------------------------------------------------------------------------------


def compact_recognizer() -> tuple[Any, list[str]]:
    """The recogniser as an OpenVINO model with the compact head, and its output classes."""
    import openvino as ov

    with MODEL_SETUP:
        model = ov.Core().read_model(str(model_path(RECOGNIZER_FILE)))
        classes = model_classes(model.get_rt_info(["framework", "character"]).astype(str).splitlines())
        keep = compact_classes(classes)
        return with_compact_head(model, keep), [classes[i] for i in keep]


def openvino_models(
    threads: int, long_side: int, precision: str | None = None, int8_recognizer: Path | None = None
) -> tuple[LineFinder, LineRecognizer]:
    """Detector (compiled per page size) and recogniser (with the compact head) on OpenVINO; the recogniser
    from ``int8_recognizer`` (see :mod:`ocr_backend.quantize`) when given."""
    import openvino as ov

    with MODEL_SETUP:
        core = ov.Core()
        detector = core.read_model(str(model_path(DETECTOR_FILE)))
        model, classes = compact_recognizer()
        if int8_recognizer is not None:
            model = core.read_model(str(int8_recognizer))
        reader = LineRecognizer(openvino_infer(model, threads, precision), classes)

    def detector_for(size: tuple[int, int] | None) -> Infer:
        with MODEL_SETUP:  # called while pages are read, the first time each page size is met
            model = detector.clone()
            if size is not None:
                model.reshape([1, 3, *size])
            return openvino_infer(model, threads, precision)

    return LineFinder(detector_for, long_side), reader


def onnxruntime_models(threads: int, long_side: int) -> tuple[LineFinder, LineRecognizer]:
    """Detector and recogniser (with the model's full head) on onnxruntime."""
    detect = onnxruntime_infer(onnxruntime_session(model_path(DETECTOR_FILE), threads))
    session = onnxruntime_session(model_path(RECOGNIZER_FILE), threads)
    characters = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    return LineFinder(lambda size: detect, long_side), LineRecognizer(
        onnxruntime_infer(session), model_classes(characters)
    )
