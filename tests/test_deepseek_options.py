"""The DeepSeek engines' own options (declared, checked, taken by the constructor) and their estimate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ocr_backend.deepseek.constants import DEFAULT_CONTAINERS, GPU_CHOICES
from ocr_backend.engines import create_engine, engine_classes
from ocr_backend.engines.deepseek import DeepseekEngine
from ocr_backend.engines.deepseek_local import DeepseekLocalEngine
from ocr_backend.errors import EngineError


def test_the_options_are_declared_once_with_the_gpu_choices() -> None:
    options = {option.name: option for option in DeepseekEngine.options}
    assert set(options) == {"gpu", "gpu_price", "figures"}
    assert (
        options["gpu"].choices == GPU_CHOICES and options["gpu_price"].minimum == 0 and options["figures"].type is bool
    )
    assert {option.name for option in DeepseekLocalEngine.options} == {
        "gpu_price",
        "figures",
    }  # its GPU is this machine's


def test_checked_options_are_converted() -> None:
    checked = DeepseekEngine.check_options({"gpu": "H200", "gpu_price": "4.5", "figures": "yes", "model": None})
    assert checked == {"gpu": "H200", "gpu_price": 4.5, "figures": True}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"gpu": "T4"}, "option gpu must be one of A100, A100-80GB, H100, H200, L40S, not 'T4'"),
        ({"gpu_price": -1.0}, "option gpu_price must be a number from 0 to 1000, not -1.0"),
        ({"gpu_price": "cheap"}, "option gpu_price must be a number"),
        ({"figures": "maybe"}, "option figures must be true or false"),
        ({"containers": 8}, "engine 'deepseek' has no option 'containers'; it takes figures, gpu, gpu_price"),
    ],
)
def test_bad_options_are_refused_clearly(values: dict[str, Any], message: str) -> None:
    with pytest.raises(EngineError, match=message.replace("(", r"\(")):
        DeepseekEngine.check_options(values)


def test_deepseek_local_refuses_a_gpu_choice() -> None:
    with pytest.raises(EngineError, match="engine 'deepseek-local' has no option 'gpu'"):
        DeepseekLocalEngine.check_options({"gpu": "H100"})


def test_the_constructor_takes_the_checked_options_by_name(tmp_path: Path) -> None:
    options = DeepseekEngine.check_options({"gpu": "H100", "gpu_price": 3.6, "figures": True})
    engine = create_engine("deepseek", pages_dir=tmp_path, **options)
    assert isinstance(engine, DeepseekEngine)
    assert (engine.gpu, engine.gpu_price, engine.figures_dir) == ("H100", 3.6, tmp_path)


def test_the_estimate_comes_from_the_engine_class() -> None:
    est = engine_classes()["deepseek"].estimate(600, {"gpu": "A100"})
    assert est is not None
    figures = est.as_dict()
    assert figures["pages"] == 600 and figures["gpu"] == "A100" and figures["containers"] == DEFAULT_CONTAINERS
    assert figures["gpu_seconds"] == pytest.approx(400) and figures["compute_usd"] == pytest.approx(0.2332)
    assert "600 page(s) on 4 x A100" in est.describe()
    priced = DeepseekEngine.estimate(10, {"gpu": "H200", "gpu_price": 3.6}).as_dict()  # type: ignore[union-attr]
    assert priced["gpu"] == "H200" and priced["usd_per_gpu_hour"] == 3.6


def test_the_estimate_checks_the_options() -> None:
    with pytest.raises(EngineError, match="option gpu must be one of"):
        DeepseekEngine.estimate(10, {"gpu": "T4"})


def test_engines_that_cost_nothing_estimate_none() -> None:
    classes = engine_classes()
    assert classes["local"].estimate(10, {}) is None and classes["text-layer"].estimate(10, {}) is None
    with pytest.raises(EngineError, match="engine 'local' has no option 'gpu'"):
        classes["local"].estimate(10, {"gpu": "H100"})
    assert DeepseekLocalEngine.estimate(10, {}) is None  # your own GPU: nothing billed unless you price it
    priced = DeepseekLocalEngine.estimate(100, {"gpu_price": 1.0})
    assert priced is not None and priced.as_dict()["containers"] == 1
