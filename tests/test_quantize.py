"""The local engine's int8 recogniser: built from calibration pages the project typesets itself, cached,
and reading lines as the float recogniser does."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from ocr_backend import ppocr, quantize
from ocr_backend.engines.local import LocalEngine
from server.corpus import Corpus
from server.sample_book import make_sample_book

pytest.importorskip("openvino")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """int8 asked for (it is off by default), built into a folder of this test's own."""
    folder = tmp_path / "models"
    monkeypatch.setenv(quantize.CACHE_ENV, str(folder))
    monkeypatch.setenv(quantize.INT8_ENV, "1")
    return folder


def recognizer_file() -> Path:
    return ppocr.model_path(ppocr.RECOGNIZER_FILE)


def test_the_int8_recogniser_is_built_once_and_reads_as_the_float_one_does(empty_cache: Path, tmp_path: Path) -> None:
    path = quantize.ensure_int8_recognizer(recognizer_file())
    assert path is not None and path.parent == empty_cache
    assert path.is_file() and path.with_suffix(".bin").is_file()
    assert [p.name for p in empty_cache.iterdir() if p.name.startswith(".")] == []  # no half-written leftovers
    built = path.stat().st_mtime_ns
    assert quantize.ensure_int8_recognizer(recognizer_file()) == path
    assert path.stat().st_mtime_ns == built  # found, not built again

    import pymupdf

    with pymupdf.open(make_sample_book(tmp_path / "book.pdf")) as doc:
        pixmap = doc[0].get_pixmap(dpi=200, colorspace=pymupdf.csRGB)
    pixels = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, 3)
    finder, float_reader = ppocr.openvino_models(1, 1280, precision="f32")
    _, int8_reader = ppocr.openvino_models(1, 1280, int8_recognizer=path)
    crops = [ppocr.crop_line(pixels, box) for box in finder.find(pixels)]
    assert len(crops) >= 8
    float_text = "\n".join(float_reader.read(crop)[0] for crop in crops)
    int8_text = "\n".join(int8_reader.read(crop)[0] for crop in crops)
    assert "Bayesian" in int8_text
    assert Levenshtein.normalized_distance(int8_text, float_text) < 0.02


def test_the_int8_graph_quantises_every_convolution_and_nothing_else() -> None:
    model, _ = ppocr.compact_recognizer()
    convolutions = sum(op.get_type_name() == "Convolution" for op in model.get_ordered_ops())
    sample = ppocr.line_tensor(np.full((32, 400, 3), 255, dtype=np.uint8))
    quantised = quantize.with_int8_convolutions(model, [sample])
    fake = [op for op in quantised.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    consumers = {target.get_node().get_type_name() for op in fake for target in op.output(0).get_target_inputs()}
    assert consumers == {"Convolution"}
    assert len(fake) == 2 * convolutions  # each one's input and its weights


def test_a_build_past_its_deadline_leaves_the_float_recogniser(
    empty_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert quantize.ensure_int8_recognizer(recognizer_file(), timeout=0.05) is None
    assert "not built within" in caplog.text
    assert not any(empty_cache.glob("*.xml"))


def test_int8_is_off_unless_asked_for(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(quantize.INT8_ENV)
    assert quantize.ensure_int8_recognizer(recognizer_file()) is None
    engine = LocalEngine(workers=1, backend="openvino")
    try:
        engine.start()
        assert engine.version().endswith("openvino-latin")
    finally:
        engine.close()


def test_the_engine_reads_with_the_int8_recogniser_and_says_so(
    empty_cache: Path, scanned_pdf: Path, corpus: Corpus
) -> None:
    from server.runner import RunOptions, ocr_book

    summary = ocr_book(corpus, scanned_pdf, RunOptions(engine="local", book="scan", pages="1"))
    assert summary.failed == 0
    page = corpus.book("scan").read_page(1)
    assert page.record.engine_version.endswith("openvino-latin-int8")
    assert "Bayesian" in page.markdown
