"""An int8 recogniser for the ``local`` engine: opt-in (``BOOKOCR_LOCAL_INT8=1``), built once per machine, cached.

Measured on an AVX2-only CPU (OpenVINO in f32; emulated with ``bench_local_ocr.py --isa avx2``, see
``bench/cpu_report.py``), whole CLI against the float recogniser, same EPYC:

- 60-page rasterised Whitehead: 1.38 against 0.75 pages/s (1.84x; Tesseract 2.2 pages/s), but median CER
  0.0084 against 0.0046 (Tesseract 0.0088).
- ``whitehead_scan10``: prose median CER 0.0038 against 0.0021, math 0.070 against 0.025.
- AVX-512 BF16 + VNNI (this EPYC uncapped), one thread, 12 pages: lines read 1.2-1.3x faster than in bf16.

So it is off by default: it buys speed with accuracy, math most of all. NNCF's post-training quantisation
of the same convolutions read better (median CER 0.0018 against 0.0015 on 20 pages) but pulls in ~250 MB
(scikit-learn, SciPy) and quantising more than the convolutions put stray characters between words.

Only the convolutions (93% of the recogniser's time) take int8: weights per output channel, symmetric;
their inputs per tensor, asymmetric, over the range seen on calibration lines (correcting biases for the
mean shift rounding causes, as NNCF does, changed nothing measurable). The calibration lines come from
pages this module typesets and renders itself (no test data, no download), read by the float models.
Building takes seconds, in a child process with a deadline (:func:`ensure_int8_recognizer`); the result is
cached under the user's cache folder, keyed by the model file's hash, this recipe and the OpenVINO version,
and written atomically. If it cannot be built, the engine reads with the float recogniser and logs why.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RECIPE = "conv-int8-v1"  # change when the quantisation below changes: old cache entries are then not used
BUILD_TIMEOUT_S = 300.0
CACHE_ENV = "BOOKOCR_CACHE_DIR"
INT8_ENV = "BOOKOCR_LOCAL_INT8"  # "1" reads with the int8 recogniser (off by default: see above)
CALIBRATION_TEXT = (
    "The posterior distribution p(θ | y) is proportional to the likelihood times the prior. In 1687 Newton "
    "published the Principia; Galileo, in Italy, had measured falling bodies. Let X1, ..., Xn be independent "
    "with mean μ = E[X] and variance σ² = Var(X) < ∞. Then √n (X̄ − μ) / σ → N(0, 1) as n → ∞ (Theorem 2.3). "
    'Table 4: 12.5%, 0.375, 1,024 and −7.25. "Quoted words", [brackets], {braces}; a - b + c = d / e * f. '
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 — αβγδε λ π Σ ≤ ≥ ≠ ± × ÷ ∫ ∂."
)
CALIBRATION_FONTS = ("tiro", "tiit", "helv", "cour", "tibo")
MAX_SAMPLES = 160


def enabled() -> bool:
    return os.environ.get(INT8_ENV, "0") == "1"


def cache_dir() -> Path:
    """``BOOKOCR_CACHE_DIR``, else ``$XDG_CACHE_HOME/bookocr/models`` (``~/.cache/bookocr/models``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bookocr" / "models"


def cached_path(model_file: Path) -> Path:
    """Where the int8 recogniser for ``model_file`` is kept: named by the file's hash, the recipe and OpenVINO's
    version (the file is the same on every CPU; OpenVINO picks the int8 kernels when it loads it)."""
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"rec-{digest}-{RECIPE}-ov{metadata.version('openvino')}.xml"


def ensure_int8_recognizer(model_file: Path, timeout: float = BUILD_TIMEOUT_S) -> Path | None:
    """The cached int8 recogniser, built first (in a child process, within ``timeout``) if missing;
    None when int8 is switched off or cannot be built (the reason is logged)."""
    if not enabled():
        return None
    try:
        path = cached_path(model_file)
    except (OSError, metadata.PackageNotFoundError) as exc:  # no model file, no OpenVINO: read without int8
        logger.info("int8 recogniser not used: %s", exc)
        return None
    if path.is_file() and path.with_suffix(".bin").is_file():
        return path
    command = [sys.executable, "-m", "ocr_backend.quantize", "--out", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        logger.warning("int8 recogniser not built within %.0f s; reading with the unquantised one", timeout)
        return None
    if done.returncode != 0 or not path.is_file():
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        logger.warning("int8 recogniser could not be built (%s); reading with the unquantised one", reason)
        return None
    return path


# --- building it ------------------------------------------------------------------------------------------


def build(out: Path) -> None:
    """Calibrate on typeset lines, quantise, save ``out`` (+ ``.bin``) atomically."""
    import openvino as ov

    from ocr_backend import ppocr

    finder, reader = ppocr.openvino_models(threads=os.cpu_count() or 1, long_side=1280, precision="f32")
    samples = calibration_lines(finder)
    model, _ = ppocr.compact_recognizer()
    quantised = with_int8_convolutions(model, samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".building-") as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(quantised, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), out.with_suffix(".bin"))  # the weights first: the .xml marks it done
        os.replace(staged, out)
    logger.info("int8 recogniser built from %d calibration lines: %s", len(samples), out)


def calibration_pages() -> list[np.ndarray]:
    """A few pages of mixed prose, numbers and math in several fonts and sizes, rendered as a scanner would."""
    import pymupdf

    pages = []
    with pymupdf.open() as doc:
        for i, font in enumerate(CALIBRATION_FONTS):
            page = doc.new_page(width=432, height=648)
            size = 9.5 + i
            page.insert_textbox(pymupdf.Rect(54, 54, 378, 594), CALIBRATION_TEXT * 2, fontname=font, fontsize=size)
            pixmap = page.get_pixmap(dpi=200 + 30 * i, colorspace=pymupdf.csRGB)
            pixels = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, 3)
            pages.append(pixels.copy())
    return pages


def calibration_lines(finder: Any) -> list[np.ndarray]:
    """Recogniser inputs for the lines the detector finds on :func:`calibration_pages`."""
    from ocr_backend import ppocr

    samples = []
    for pixels in calibration_pages():
        samples += [ppocr.line_tensor(ppocr.crop_line(pixels, box)) for box in finder.find(pixels)]
    if not samples:
        raise RuntimeError("the detector found no lines on the calibration pages")
    return samples[:MAX_SAMPLES]


def with_int8_convolutions(model: Any, samples: list[np.ndarray]) -> Any:
    """``model`` with a FakeQuantize before each Convolution's input (asymmetric, the mean of each sample's
    range) and on its weights (symmetric, per output channel), which OpenVINO runs as int8 convolutions."""
    from openvino import opset13 as ops

    convolutions = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    ranges = activation_ranges(model, [conv.input_value(0) for conv in convolutions], samples)
    for conv, (low, high) in zip(convolutions, ranges):
        low, high = min(low, 0.0), max(high, min(low, 0.0) + 1e-6)  # the range holds 0: padding stays exact
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        conv.input(0).replace_source_output(ops.fake_quantize(conv.input_value(0), lo, hi, lo, hi, 256).output(0))
        weights = conv.input_value(1).get_node()
        if weights.get_type_name() != "Constant":
            continue  # weights computed at run time: left in float
        data = weights.get_data().astype(np.float32)
        limit = np.maximum(np.abs(data).max(axis=tuple(range(1, data.ndim)), keepdims=True), 1e-8)
        lo, hi = ops.constant(-limit), ops.constant(limit)
        conv.input(1).replace_source_output(ops.fake_quantize(weights.output(0), lo, hi, lo, hi, 255).output(0))
    model.validate_nodes_and_infer_types()
    return model


def activation_ranges(model: Any, points: list[Any], samples: list[np.ndarray]) -> list[tuple[float, float]]:
    """Mean over ``samples`` of each point's min and max, read from a float copy of the model."""
    import openvino as ov

    probe = model.clone()
    outputs = probe.add_outputs([_matching_output(probe, point) for point in points])
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    lows, highs = np.zeros(len(points)), np.zeros(len(points))
    for sample in samples:
        request.infer([sample])
        for i, output in enumerate(outputs):
            values = request.get_tensor(compiled.output(output.get_any_name())).data
            lows[i] += float(values.min())
            highs[i] += float(values.max())
    return [(low / len(samples), high / len(samples)) for low, high in zip(lows, highs)]


def _matching_output(clone: Any, point: Any) -> Any:
    """The output in ``clone`` that is ``point`` in the model it was cloned from (by node name and index)."""
    name = point.get_node().get_friendly_name()
    node = next(op for op in clone.get_ordered_ops() if op.get_friendly_name() == name)
    output = node.output(point.get_index())
    if not output.get_names():
        output.set_names({f"{name}:{point.get_index()}"})
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description="build the local engine's int8 recogniser")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
