"""Each Modal error a user can act on, and how fast it comes. Nothing here touches the
network: the API host is pointed at a closed port on this machine, or faked."""

from __future__ import annotations

import io
import socket
import time
from typing import Any

import modal
import modal.exception
import pytest
from PIL import Image

from ocr_backend import deepseek_client
from ocr_backend.deepseek_client import ModalRemote, check_network, encode_page, error_kind, has_modal_credentials
from ocr_backend.engines.deepseek import DeepseekEngine
from ocr_backend.errors import EngineError
from tests.deepseek_fakes import StubFallback, number_of, page_image


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


class FakeCls:
    def __init__(self, hydrate_error: BaseException | None = None) -> None:
        self.hydrate_error = hydrate_error
        self.options: dict[str, Any] = {}
        self.calls: list[tuple[list[bytes], dict[str, Any]]] = []

    def hydrate(self) -> FakeCls:
        if self.hydrate_error:
            raise self.hydrate_error
        return self

    def with_options(self, **options: Any) -> FakeCls:
        self.options.update(options)
        return self

    def __call__(self) -> Any:
        parent = self

        class Method:
            def remote(self, images: list[bytes], options: dict[str, Any]) -> list[dict[str, Any]]:
                parent.calls.append((images, options))
                return [{"text": "x", "finish_reason": "stop"} for _ in images]

        class Obj:
            ocr = Method()

        return Obj()


@pytest.fixture
def signed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deepseek_client, "has_modal_credentials", lambda: True)


def engine(**options: Any) -> DeepseekEngine:
    return DeepseekEngine(fallback=StubFallback(), **options)


def test_no_token_says_how_to_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deepseek_client, "has_modal_credentials", lambda: False)
    checked: list[Any] = []
    with pytest.raises(EngineError, match=r"modal setup"):
        engine(network_check=lambda *a: checked.append(a)).connect()
    assert not checked  # decided locally, before any network


def test_token_detection_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
    assert has_modal_credentials()


def test_no_network_fails_within_seconds(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deepseek_client, "modal_api_host", lambda: ("127.0.0.1", closed_port()))
    start = time.monotonic()
    with pytest.raises(EngineError, match=r"cannot reach Modal at 127\.0\.0\.1.*check your network"):
        engine().connect()
    assert time.monotonic() - start < 3.5


def test_a_hanging_lookup_is_cut_off_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*_: Any, **__: Any) -> None:
        time.sleep(2)
        raise OSError("answered far too late")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    with pytest.raises(EngineError, match="no answer within"):
        check_network("api.modal.com", 443, timeout=0.3)
    assert time.monotonic() - start < 1.0


def test_not_deployed_says_bookocr_deploy(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCls(modal.exception.NotFoundError("Lookup failed for Cls 'DeepseekOcr' from the 'bookocr' app"))
    monkeypatch.setattr(modal.Cls, "from_name", lambda app, name: fake)
    with pytest.raises(EngineError, match=r"not deployed.*`bookocr deploy`"):
        engine(network_check=lambda *a: None).connect()


def test_a_rejected_token_says_how_to_sign_in(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCls(modal.exception.AuthError("Token invalid"))
    monkeypatch.setattr(modal.Cls, "from_name", lambda app, name: fake)
    with pytest.raises(EngineError, match="modal setup"):
        engine(network_check=lambda *a: None).connect()


def test_a_deployed_class_is_called_with_the_chosen_gpu(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCls()
    looked_up: list[tuple[str, str]] = []
    monkeypatch.setattr(modal.Cls, "from_name", lambda app, name: looked_up.append((app, name)) or fake)
    remote = ModalRemote("bookocr", "DeepseekOcr", gpu="H100").connect(lambda *a: None)
    assert remote.ocr([b"img"], {"ngram_size": 30}) == [{"text": "x", "finish_reason": "stop"}]
    assert looked_up == [("bookocr", "DeepseekOcr")] and fake.options == {"gpu": "H100"}
    assert fake.calls == [([b"img"], {"ngram_size": 30})]


def test_error_kinds() -> None:
    assert error_kind(modal.exception.AuthError("x")) == "fatal"
    assert error_kind(modal.exception.NotFoundError("x")) == "fatal"
    assert error_kind(modal.exception.ConnectionError("x")) == "transient"
    assert error_kind(modal.exception.FunctionTimeoutError("x")) == "transient"
    assert error_kind(modal.exception.InternalFailure("x")) == "transient"
    assert error_kind(TimeoutError()) == "transient"
    assert error_kind(ValueError("remote code raised")) == "batch"


def test_pages_are_sized_and_encoded_compactly() -> None:
    big = page_image(5, size=(2400, 3300))
    data = encode_page(big)
    with Image.open(io.BytesIO(data)) as img:
        assert max(img.size) == 1600 and img.mode == "L"
        assert number_of(img) == 5
    assert len(data) < 60_000  # a flat page is tiny
