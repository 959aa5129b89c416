"""Prices, estimates, and the names the client and the deployed app must agree on."""

from __future__ import annotations

import pytest

from ocr_backend import modal_app
from ocr_backend.engines import deepseek
from ocr_backend.pricing import estimate, gpu_key, page_cost, price_per_second
from server import deepseek_cli


def test_client_and_app_agree_on_names() -> None:
    assert (deepseek.APP_NAME, deepseek.CLASS_NAME) == (modal_app.APP_NAME, modal_app.CLASS_NAME)
    assert deepseek_cli.GPU_CHOICES == modal_app.GPU_CHOICES
    assert deepseek.CONTAINERS == modal_app.MAX_CONTAINERS


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
    assert est.total_usd == pytest.approx((400 + 4 * (90 + 120)) * 0.000583)
    assert 3 * 60 < est.wall_seconds < 4 * 60
    assert estimate(20, "A100", containers=4).containers == 1  # a short book is not spread over cold containers
