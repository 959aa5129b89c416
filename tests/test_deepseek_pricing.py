"""Prices, estimates, the cost tally, and the names the client and the deployed app share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocr_backend.deepseek import constants, modal_app
from ocr_backend.deepseek.pricing import (
    PAGES_PER_SECOND,
    PRICE_PER_SECOND,
    CostTally,
    estimate,
    gpu_key,
    page_cost,
    price_per_second,
)
from ocr_backend.engines.base import PageResult


def test_the_deployed_app_is_built_from_the_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    assert modal_app.DeepseekOcr.__name__ == constants.CLASS_NAME  # Modal looks the class up by this name
    assert modal_app.APP_NAME == constants.app_name() and modal_app.MAX_CONTAINERS == constants.DEFAULT_CONTAINERS
    spec = modal_app.DeepseekOcr._get_class_service_function()._spec_
    assert spec.gpus == constants.DEFAULT_GPU
    monkeypatch.setenv(constants.APP_NAME_ENV, "bookocr-test")
    assert constants.app_name() == "bookocr-test"


def test_every_gpu_offered_has_a_price_and_a_speed() -> None:
    assert {"H100", "H200"} <= set(constants.GPU_CHOICES) and constants.DEFAULT_GPU in constants.GPU_CHOICES
    assert all(gpu in PRICE_PER_SECOND and gpu in PAGES_PER_SECOND for gpu in constants.GPU_CHOICES)


def test_prices_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_key("a100-40gb") == "A100" and gpu_key(None) == "A100" and gpu_key("h100") == "H100"
    assert price_per_second("A100") == 0.000583
    assert price_per_second("H100", override_per_hour=3.6) == pytest.approx(0.001)
    monkeypatch.setenv("BOOKOCR_GPU_PRICES", '{"L40S": 1.8}')
    assert price_per_second("l40s") == pytest.approx(0.0005)
    with pytest.raises(ValueError, match="no price known"):
        price_per_second("TPU")
    assert page_cost(10, "TPU") == 0.0


def test_a_600_page_book_on_four_a100s() -> None:
    est = estimate(600, "A100", containers=4)
    assert est.gpu_seconds == pytest.approx(400) and est.compute_usd == pytest.approx(0.2332)
    host = 4 * 0.0000131 + 16 * 0.00000222  # 4 cores and 16 GiB a container, by the second
    assert est.cpu_memory_usd == pytest.approx((400 + 4 * (90 + 120)) * host)
    assert est.total_usd == pytest.approx((400 + 4 * (90 + 120)) * (0.000583 + host))
    assert est.first_run_usd == pytest.approx(4 * 120 * (0.000583 + host))  # compiling on each container
    assert "CPU and memory" in est.describe() and "first run after a deploy adds" in est.describe()
    assert 3 * 60 < est.wall_seconds < 4 * 60
    assert estimate(20, "A100", containers=4).containers == 1  # a short book is not spread over cold containers


def test_the_cost_tally_adds_up_gpu_pages_only() -> None:
    def page(number: int, **extra: object) -> PageResult:
        return PageResult(number, "text", "ok", "deepseek", "v", extra=dict(extra))

    tally = CostTally()
    tally(None, page(1, gpu="H100", gpu_seconds=1.25, cost_usd=0.001))
    tally(None, page(2, gpu="A100", gpu_seconds=0.75, cost_usd=None))
    tally(None, page(3))  # a page of an engine without a GPU
    assert tally.as_dict() == {"pages": 2, "gpu_seconds": 2.0, "cost_usd": 0.001, "gpus": ["A100", "H100"]}
    assert tally.describe().startswith("GPU: 2.0 s on A100, H100 for 2 page(s) (1.00 s/page), $0.0010")
    assert CostTally().describe().startswith("GPU: 0.0 s for 0 page(s)")


def test_a_deployment_record_that_cannot_be_read_or_written_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocr_backend.deepseek import deployment

    monkeypatch.setenv("BOOKOCR_CONFIG_DIR", str(tmp_path / "config"))
    assert deployment.recall("bookocr") is None
    assert deployment.remember("bookocr", "H100", 0, "m", "deploy") is None  # no containers: nothing recorded
    assert deployment.remember("bookocr", "H100", 6, "m", "class") is not None
    recalled = deployment.recall("bookocr")
    assert recalled is not None and (recalled.gpu, recalled.max_containers, recalled.source) == ("H100", 6, "class")
    deployment.record_path("bookocr").write_text("{torn")
    assert deployment.recall("bookocr") is None
    for odd in ({"max_containers": True}, {"gpu": " "}, {"recorded_at": 20261130}, {"max_containers": 10**12}):
        good = {"app": "bookocr", "gpu": "H100", "max_containers": 8, "model": "m", "recorded_at": "2026-12-01"}
        deployment.record_path("bookocr").write_text(json.dumps({**good, "source": "deploy", **odd}))
        assert deployment.recall("bookocr") is None, odd
    assert deployment.remember("bookocr", "H100", True, "m", "deploy") is None
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("BOOKOCR_CONFIG_DIR", str(blocked))  # a config dir that cannot be made: never an error
    assert deployment.remember("bookocr", "H100", 6, "m", "deploy") is None


def test_the_estimate_says_what_it_planned_for_and_where_an_unknown_gpu_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocr_backend.deepseek import deployment
    from ocr_backend.engines.deepseek import DeepseekEngine
    from ocr_backend.engines.deepseek_local import DeepseekLocalEngine
    from ocr_backend.errors import EngineError

    monkeypatch.setenv("BOOKOCR_CONFIG_DIR", str(tmp_path))
    chosen = DeepseekEngine.estimate(300, {"gpu": "H100"})
    assert chosen is not None and "default deployment" in chosen.basis and "priced for --gpu H100" in chosen.basis
    own = DeepseekLocalEngine.estimate(10, {"gpu_price": 2.0})
    assert own is not None and own.gpu == "own GPU" and "1 x own GPU" in own.describe()
    deployment.remember("bookocr", "B200", 4, "m", "class")  # a class deployed by hand on a GPU with no price here
    with pytest.raises(EngineError, match=r"no price known for GPU 'B200'.*deployment record names: .*bookocr\.json"):
        DeepseekEngine.estimate(300, {})
    assert DeepseekEngine.estimate(300, {"gpu_price": 5.0}) is not None
    for price in (1e308, float("nan"), -1):
        with pytest.raises(EngineError, match="gpu_price must be a number from 0 to 1000"):
            DeepseekEngine.estimate(300, {"gpu_price": price})
