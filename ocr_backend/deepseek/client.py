"""The client side of the deployed DeepSeek class: connecting, calling, encoding pages.

The engine talks to a :class:`RemoteOcr` (one call: a batch of encoded images plus
options in, one dict per page out). :class:`ModalRemote` is the real one; tests and
the benchmark pass a local stand-in, and ``deepseek-local`` passes a runner.

Every call has a deadline. A deployed class whose container crashes at start-up is
retried by Modal indefinitely, so a call that only waits would wait for ever: the
real remote spawns each call, waits with ``FunctionCall.get(timeout=...)`` and cancels
what did not answer, and :func:`call_within` bounds any remote, stand-ins included.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from PIL import Image

from ocr_backend.errors import EngineError

JPEG_QUALITY = 70  # text stays crisp: the model sees the page as 640 px tiles
MAX_LONG_SIDE = 1600  # more buys nothing: the tiles are resized to 640 px
PNG_TRY_ABOVE_BYTES = 150_000  # a large grey JPEG may be a crisp, few-tone page that PNG packs better
NETWORK_CHECK_TIMEOUT_S = 3.0
CANCEL_TIMEOUT_S = 10.0  # cancelling a call is one API request; never let it hold up an exit
STARTUP_ERROR = "startup_error"  # the key the deployed class answers with when its model did not load

# modal.exception names, matched by name so this module never needs modal imported
TRANSIENT_ERRORS = frozenset(
    {
        "ConnectionError",
        "InternalFailure",
        "InternalError",
        "ServiceError",
        "ResourceExhaustedError",
        "FunctionTimeoutError",
        "TimeoutError",
        "RemoteError",
        "ClientClosed",
    }
)
FATAL_ERRORS = frozenset({"AuthError", "NotFoundError", "PermissionDeniedError", "VersionError"})

MODAL_SETUP = "run `modal setup` (or `modal token new`) to sign in to Modal"
SETUP_HINT = f"{MODAL_SETUP}, then `bookocr deploy`"
DEPLOY_HINT = "run `bookocr deploy` to deploy the DeepSeek-OCR GPU class to your Modal workspace"


class RemoteOcr(Protocol):
    def ocr(self, images: Sequence[bytes], options: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        """OCR a batch of encoded page images; one dict per image, in order. Gives up
        (raising :class:`DeadlineExceeded`) after ``timeout`` seconds where it can. A remote whose
        ``ocr`` also takes ``cancel`` (a :class:`Cancel`) stops the call on the server when it is set."""

    def info(self, timeout: float) -> dict[str, Any]:
        """What serves the calls (gpu, model, vllm), or ``startup_error`` when it could not start."""


class DeadlineExceeded(Exception):
    """A remote call that did not answer within its deadline (and was cancelled where it could be).
    Not a TimeoutError: those count as transient and are retried, and a deadline is not retried."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds


class CallCancelled(Exception):
    """The caller gave up on a call (a hedged page answered by its other copy)."""


class Cancel:
    """Set by a caller that no longer wants a call's answer; the remote registers how to stop the call
    (Modal: ``FunctionCall.cancel``, which aborts its vLLM requests and frees their batch places)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._set = False

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the call is cancelled (now, if it already is). It must not block."""
        with self._lock:
            if not self._set:
                self._callbacks.append(callback)
                return
        callback()

    def cancel(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_set(self) -> bool:
        return self._set


T = TypeVar("T")


def call_within(
    fn: Callable[[], T], timeout: float, name: str = "bookocr-remote-call", cancel: Cancel | None = None
) -> T:
    """``fn()``, or :class:`DeadlineExceeded` once ``timeout`` seconds have passed, or :class:`CallCancelled`
    as soon as ``cancel`` is set. A thread cannot be stopped, so ``fn`` runs in a daemon thread that is
    abandoned then."""
    outcome: list[Any] = []
    done = threading.Event()
    if cancel is not None:
        cancel.on_cancel(done.set)

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # re-raised in the caller
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(timeout):
        raise DeadlineExceeded(timeout)
    if cancel is not None and cancel.is_set():  # whatever the call did as it was given up
        raise CallCancelled()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def startup_failure(outputs: dict[str, Any] | Sequence[dict[str, Any]]) -> str | None:
    """The deployed class's start-up error, from an :meth:`RemoteOcr.info` or ``ocr`` answer."""
    for output in [outputs] if isinstance(outputs, dict) else outputs:
        if isinstance(output, dict) and output.get(STARTUP_ERROR):
            return str(output[STARTUP_ERROR])
    return None


# --- page images ------------------------------------------------------------------------
def encode_page(image: Image.Image, quality: int = JPEG_QUALITY, max_long_side: int = MAX_LONG_SIDE) -> bytes:
    """Compact bytes for one page: JPEG, or PNG when that is smaller for a grey page."""
    if max(image.size) > max_long_side:
        scale = max_long_side / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
        )
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    data = out.getvalue()
    if image.mode == "L" and len(data) > PNG_TRY_ABOVE_BYTES:
        png = io.BytesIO()
        image.save(png, "PNG", compress_level=6)
        if png.tell() < len(data):
            return png.getvalue()
    return data


def decode_page(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.copy()


# --- errors ----------------------------------------------------------------------------
def error_kind(exc: BaseException) -> str:
    """'fatal' (the user must act), 'transient' (retry with backoff) or 'batch' (this batch failed)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__
    if module.startswith("modal") and names & FATAL_ERRORS:
        return "fatal"
    if names & TRANSIENT_ERRORS or isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
        return "transient"
    return "batch"


def user_error(exc: BaseException, app_name: str, class_name: str) -> EngineError:
    """An error message a user can act on, for a fatal Modal error."""
    name = type(exc).__name__
    if name == "AuthError":
        return EngineError(f"Modal rejected or is missing your token: {SETUP_HINT}")
    if name == "NotFoundError":
        return EngineError(f"the Modal class {app_name}/{class_name} is not deployed in your workspace: {DEPLOY_HINT}")
    if name == "PermissionDeniedError":
        return EngineError(
            f"your Modal token may not use {app_name}/{class_name} ({exc}); check the workspace with `modal "
            "profile list`"
        )
    return EngineError(f"Modal error {name}: {exc}")


# --- the real remote ---------------------------------------------------------------------
def has_modal_credentials() -> bool:
    """Whether a Modal token is configured (env, ~/.modal.toml profile), without the network."""
    from modal.config import config

    return bool((config.get("token_id") and config.get("token_secret")) or config.get("oauth_refresh_token"))


def modal_api_host() -> tuple[str, int]:
    from modal.config import config

    url = str(config.get("server_url") or "https://api.modal.com").split(",")[0]
    parsed = urlparse(url)
    return parsed.hostname or "api.modal.com", parsed.port or (443 if parsed.scheme == "https" else 80)


def check_network(host: str, port: int, timeout: float = NETWORK_CHECK_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when the host cannot be reached. Modal's own
    client retries for about a minute first. DNS lookups ignore socket timeouts, so
    the whole check runs in a thread that is abandoned when time is up."""
    failure: list[str] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            failure.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="bookocr-netcheck", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        failure.append(f"no answer within {timeout:.0f} s")
    if failure:
        raise EngineError(
            f"cannot reach Modal at {host}:{port} ({failure[0]}); check your network connection, "
            "or run without a GPU: --engine local"
        )


class ModalRemote:
    """The deployed class, looked up by name. :meth:`connect` fails fast and clearly;
    every call is spawned and waited for with a deadline."""

    def __init__(self, app_name: str, class_name: str, gpu: str | None = None) -> None:
        self.app_name = app_name
        self.class_name = class_name
        self.gpu = gpu
        self._obj: Any = None
        # spawned calls not yet answered, cancelled by close(): (call, whether to stop its container)
        self._pending: dict[int, tuple[Any, bool]] = {}
        self._lock = threading.Lock()

    def connect(self, network_check: Callable[[str, int], None] = check_network) -> ModalRemote:
        import modal

        if not has_modal_credentials():
            raise EngineError(f"no Modal token is configured: {SETUP_HINT}")
        network_check(*modal_api_host())
        cls = modal.Cls.from_name(self.app_name, self.class_name)
        try:
            cls.hydrate()  # the lookup: NotFoundError here, not after the first batch is rendered
        except Exception as exc:
            if error_kind(exc) == "fatal":
                raise user_error(exc, self.app_name, self.class_name) from None
            raise EngineError(
                f"cannot look up the Modal class {self.app_name}/{self.class_name}: {type(exc).__name__}: {exc}"
            ) from exc
        if self.gpu:
            cls = cls.with_options(gpu=self.gpu)
        self._obj = cls()
        return self

    def ocr(
        self, images: Sequence[bytes], options: dict[str, Any], timeout: float, cancel: Cancel | None = None
    ) -> list[dict[str, Any]]:
        # Its container serves dozens of other pages at once: cancel the call, keep the container.
        return self._call("ocr", timeout, list(images), options, terminate=False, cancel=cancel)

    def info(self, timeout: float) -> dict[str, Any]:
        # No answer to this cheap call means a container that cannot start: stop it too.
        return self._call("info", timeout, terminate=True)

    def close(self) -> None:
        """Cancel the calls still waiting, so Modal stops (re)starting containers for them."""
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for call, terminate in pending:
            _cancel(call, terminate)

    def _call(self, method: str, timeout: float, *args: Any, terminate: bool, cancel: Cancel | None = None) -> Any:
        import modal.exception

        if self._obj is None:
            self.connect()
        try:
            function = getattr(self._obj, method)
        except modal.exception.NotFoundError:
            raise EngineError(
                f"the deployed class {self.app_name}/{self.class_name} has no `{method}` method: it is older "
                f"than this bookocr; {DEPLOY_HINT}"
            ) from None
        call = function.spawn(*args)
        with self._lock:
            self._pending[id(call)] = (call, terminate)
        if cancel is not None:  # from the engine's thread: cancel in the background, never block it
            cancel.on_cancel(lambda: _cancel_in_background(call, terminate))
        try:
            return call.get(timeout=timeout)
        except (TimeoutError, modal.exception.TimeoutError) as exc:
            # modal 1.6 raises the builtin TimeoutError when get()'s wait runs out. The call
            # itself timing out on Modal, or its output expiring, are failures of the call.
            if isinstance(exc, (modal.exception.FunctionTimeoutError, modal.exception.OutputExpiredError)):
                raise
            _cancel(call, terminate)
            raise DeadlineExceeded(timeout) from None
        finally:
            with self._lock:
                self._pending.pop(id(call), None)


def _cancel_in_background(call: Any, terminate: bool) -> None:
    threading.Thread(target=_cancel, args=(call, terminate), name="bookocr-modal-cancel", daemon=True).start()


def _cancel(call: Any, terminate: bool) -> None:
    """Cancel a spawned call, best effort and bounded; with ``terminate``, its container too
    (one that never answered a cheap call is stuck starting). A page's call is cancelled alone:
    its container runs many pages at once, and a cancelled call aborts its vLLM request."""
    try:
        call_within(lambda: call.cancel(terminate_containers=terminate), CANCEL_TIMEOUT_S, "bookocr-modal-cancel")
    except Exception:  # the call is abandoned either way
        pass


__all__ = [
    "RemoteOcr",
    "ModalRemote",
    "DeadlineExceeded",
    "Cancel",
    "CallCancelled",
    "call_within",
    "startup_failure",
    "encode_page",
    "decode_page",
    "error_kind",
    "user_error",
    "check_network",
    "has_modal_credentials",
]
