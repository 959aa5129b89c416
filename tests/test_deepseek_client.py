"""Each Modal error a user can act on, and how fast it comes. Nothing here touches the
network: the API host is pointed at a closed port on this machine, or faked."""

from __future__ import annotations

import io
import socket
import threading
import time
from typing import Any

import modal
import modal.exception
import pytest
from PIL import Image

from ocr_backend.deepseek import client
from ocr_backend.deepseek.client import (
    DeadlineExceeded,
    ModalRemote,
    check_network,
    encode_page,
    error_kind,
    has_modal_credentials,
)
from ocr_backend.engines.base import PageInput
from ocr_backend.engines.deepseek import DeepseekEngine
from ocr_backend.errors import EngineError
from tests.deepseek_fakes import StubFallback, number_of, page_image


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


class FakeCall:
    """Shaped like ``modal.FunctionCall``: ``get(timeout)`` answers, or waits out the
    timeout and raises the builtin TimeoutError as modal 1.6 does."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.timeouts: list[float | None] = []
        self.cancelled: list[bool] = []

    def get(self, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        if isinstance(self.answer, BaseException):
            raise self.answer
        if self.answer is not NO_ANSWER:
            return self.answer
        if timeout is None:
            raise AssertionError("waited for a class that never answers, with no deadline")
        time.sleep(timeout)
        raise TimeoutError()

    def cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled.append(terminate_containers)


NO_ANSWER = object()


class FakeCls:
    """Shaped like the class ``modal.Cls.from_name`` finds. ``answers`` maps a method to
    what its calls return (``NO_ANSWER``: they never do; an exception: they raise it)."""

    def __init__(
        self,
        hydrate_error: BaseException | None = None,
        answers: dict[str, Any] | None = None,
        methods: tuple[str, ...] = ("ocr", "info"),
    ) -> None:
        self.hydrate_error = hydrate_error
        self.answers = answers or {}
        self.methods = methods
        self.options: dict[str, Any] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.spawned: list[FakeCall] = []

    def hydrate(self) -> FakeCls:
        if self.hydrate_error:
            raise self.hydrate_error
        return self

    def with_options(self, **options: Any) -> FakeCls:
        self.options.update(options)
        return self

    def answer(self, name: str, args: tuple[Any, ...]) -> Any:
        if name in self.answers:
            return self.answers[name]
        if name == "info":
            return {"gpu": "A100", "model": "deepseek-ai/DeepSeek-OCR", "vllm": "0.16.0", "startup_error": None}
        return [{"text": "x", "finish_reason": "stop"} for _ in args[0]]

    def __call__(self) -> Any:
        parent = self

        class Method:
            def __init__(self, name: str) -> None:
                self.name = name

            def spawn(self, *args: Any) -> FakeCall:
                parent.calls.append((self.name, args))
                call = FakeCall(parent.answer(self.name, args))
                parent.spawned.append(call)
                return call

        class Obj:
            def __getattr__(self, name: str) -> Method:
                if name not in parent.methods:
                    raise modal.exception.NotFoundError(f"Class has no method `{name}`")
                return Method(name)

        return Obj()


@pytest.fixture
def signed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "has_modal_credentials", lambda: True)


def engine(**options: Any) -> DeepseekEngine:
    return DeepseekEngine(fallback=StubFallback(), **options)


def test_no_token_says_how_to_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "has_modal_credentials", lambda: False)
    checked: list[Any] = []
    with pytest.raises(EngineError, match=r"modal setup"):
        engine(network_check=lambda *a: checked.append(a)).connect()
    assert not checked  # decided locally, before any network


def test_token_detection_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
    assert has_modal_credentials()


def test_no_network_fails_within_seconds(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "modal_api_host", lambda: ("127.0.0.1", closed_port()))
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
    assert remote.ocr([b"img"], {"ngram_size": 30}, timeout=42.0) == [{"text": "x", "finish_reason": "stop"}]
    assert looked_up == [("bookocr", "DeepseekOcr")] and fake.options == {"gpu": "H100"}
    assert fake.calls == [("ocr", ([b"img"], {"ngram_size": 30}))]
    [call] = fake.spawned
    assert call.timeouts == [42.0] and not call.cancelled  # spawned, waited for with the deadline


def test_a_modal_call_with_no_answer_is_cancelled_at_its_deadline(
    signed_in: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCls(answers={"ocr": NO_ANSWER})
    monkeypatch.setattr(modal.Cls, "from_name", lambda app, name: fake)
    remote = ModalRemote("bookocr", "DeepseekOcr").connect(lambda *a: None)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"timed out after 0\.3 s"):
        remote.ocr([b"img"], {}, timeout=0.3)
    assert time.monotonic() - start < 1.0
    [call] = fake.spawned
    # cancelled alone: its container serves many other pages at once
    assert call.timeouts == [0.3] and call.cancelled == [False]
    assert error_kind(DeadlineExceeded(0.3)) == "batch"  # failed pages, not retried like a transient error


def test_a_cancelled_call_is_cancelled_on_modal_at_once(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCls(answers={"ocr": NO_ANSWER})
    monkeypatch.setattr(modal.Cls, "from_name", lambda app, name: fake)
    remote = ModalRemote("bookocr", "DeepseekOcr").connect(lambda *a: None)
    cancel = client.Cancel()
    start = time.monotonic()
    threading.Thread(target=lambda: time.sleep(0.1) or cancel.cancel(), daemon=True).start()
    with pytest.raises(client.CallCancelled):  # the caller stops waiting at once, not at the 5 s deadline
        client.call_within(lambda: remote.ocr([b"img"], {}, timeout=5.0, cancel=cancel), 5.0, cancel=cancel)
    assert time.monotonic() - start < 1.0
    [call] = fake.spawned
    deadline = time.monotonic() + 2
    while not call.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert call.cancelled == [False]  # the call alone, in the background: its container serves other pages


def test_modal_s_own_timeouts_are_not_taken_for_the_deadline(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCls(answers={"ocr": modal.exception.FunctionTimeoutError("the function ran past its 900 s timeout")})
    monkeypatch.setattr(modal.Cls, "from_name", lambda app, name: fake)
    remote = ModalRemote("bookocr", "DeepseekOcr").connect(lambda *a: None)
    with pytest.raises(modal.exception.FunctionTimeoutError):  # transient: the engine retries it
        remote.ocr([b"img"], {}, timeout=5.0)
    assert not fake.spawned[0].cancelled


def modal_engine(fake: FakeCls, monkeypatch: pytest.MonkeyPatch, **options: Any) -> DeepseekEngine:
    monkeypatch.setattr(modal.Cls, "from_name", lambda app, name: fake)
    return engine(network_check=lambda *a: None, sleep=lambda _: None, **options)


def test_the_engine_gives_every_modal_call_a_deadline(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCls()
    eng = modal_engine(fake, monkeypatch, startup_timeout_s=300, page_timeout_s=10, containers=1)
    eng.start()
    results = list(eng.recognize_many(PageInput(number=n, image=page_image(n)) for n in range(1, 7)))
    assert len(results) == 6
    assert fake.calls[0][0] == "info" and fake.spawned[0].timeouts == [300]  # the start-up allowance
    sizes = [len(args[0]) for name, args in fake.calls if name == "ocr"]
    timeouts = [call.timeouts[0] for (name, _), call in zip(fake.calls, fake.spawned) if name == "ocr"]
    # a page a call, each allowed the start-up allowance plus the budget of the 16 pages it may share a batch with
    assert sizes == [1] * 6 and timeouts == [300 + 10 * 16] * 6

    fake = FakeCls()
    eng = modal_engine(fake, monkeypatch, startup_timeout_s=300, page_timeout_s=10, client="batch", batch_size=4)
    list(eng.recognize_many(PageInput(number=n, image=page_image(n)) for n in range(1, 7)))
    sizes = [len(args[0]) for _, args in fake.calls]
    timeouts = [call.timeouts[0] for call in fake.spawned]
    assert sum(sizes) == 6 and timeouts == [300 + 10 * n for n in sizes]  # the batch client: a budget per page


def test_modal_calls_past_their_deadline_fall_back_with_the_reason(
    signed_in: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCls(answers={"ocr": NO_ANSWER})
    eng = modal_engine(fake, monkeypatch, startup_timeout_s=0.2, page_timeout_s=0.05, containers=2)
    start = time.monotonic()
    results = list(eng.recognize_many(PageInput(number=n, image=page_image(n)) for n in range(1, 5)))
    assert time.monotonic() - start < 2.5
    assert sorted(r.number for r in results) == [1, 2, 3, 4]
    assert {r.status for r in results} == {"fallback"}
    assert all("the GPU call failed: timed out after 1 s" in r.reason for r in results)
    ocr_calls = [call for (name, _), call in zip(fake.calls, fake.spawned) if name == "ocr"]
    assert len(ocr_calls) == 4  # one try per page: a deadline is not retried
    eng.close()
    assert all(call.cancelled for call in ocr_calls)


def test_a_class_that_never_answers_fails_start_within_its_allowance(
    signed_in: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCls(answers={"info": NO_ANSWER})
    eng = modal_engine(fake, monkeypatch, startup_timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(
        EngineError, match=r"the GPU class failed to start: no answer within 0\.5 s.*modal app logs bookocr"
    ):
        eng.start()
    assert time.monotonic() - start < 1.5
    eng.close()
    assert fake.spawned[0].cancelled[0] is True  # Modal stops trying to start a container for it


def test_a_class_that_could_not_load_its_model_fails_start(signed_in: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCls(
        answers={
            "info": {
                "startup_error": "loading deepseek-ai/DeepSeek-OCR on A100 failed: OutOfMemoryError: CUDA out of memory"
            }
        }
    )
    with pytest.raises(EngineError, match=r"the GPU class failed to start: loading .* CUDA out of memory"):
        modal_engine(fake, monkeypatch).start()


def test_a_class_deployed_by_an_older_bookocr_asks_for_a_redeploy(
    signed_in: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCls(methods=("ocr",))
    with pytest.raises(EngineError, match=r"no `info` method.*bookocr deploy"):
        modal_engine(fake, monkeypatch).start()


def test_deadlines_can_be_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKOCR_DEEPSEEK_STARTUP_TIMEOUT_S", "90")
    monkeypatch.setenv("BOOKOCR_DEEPSEEK_PAGE_TIMEOUT_S", "2.5")
    assert engine().call_deadline(10) == 115.0
    monkeypatch.setenv("BOOKOCR_DEEPSEEK_PAGE_TIMEOUT_S", "soon")
    with pytest.raises(EngineError, match="BOOKOCR_DEEPSEEK_PAGE_TIMEOUT_S"):
        engine()


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
