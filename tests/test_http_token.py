"""Issue 16 item 9 (HTTP): an optional bearer token for `bookocr serve --http`, checked on a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx  # the HTTP client the MCP SDK installs
import pytest

from server import cli
from tests.test_mcp_shutdown import free_port

ROOT = Path(__file__).resolve().parent.parent
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


class Served:
    def __init__(self, url: str, stderr: Path) -> None:
        self.url, self.stderr = url, stderr

    def initialize(self, authorization: str | None = None) -> httpx.Response:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return httpx.post(self.url, json=INITIALIZE, headers=headers, timeout=30)


@pytest.fixture
def serve_http(tmp_path: Path) -> Iterator[Callable[[str | None], Served]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(token: str | None) -> Served:
        port, log = free_port(), tmp_path / f"serve-{len(processes)}.log"
        env = {k: v for k, v in os.environ.items() if k != "BOOKOCR_TOKEN"}
        if token is not None:
            env["BOOKOCR_TOKEN"] = token
        command = [sys.executable, "-m", "server.cli", "--corpus", str(tmp_path / "corpus"), "serve", "--http"]
        with log.open("w") as err:
            process = subprocess.Popen(
                [*command, "--port", str(port), "--allow", str(tmp_path)], cwd=ROOT, env=env, stderr=err
            )
        processes.append(process)
        served = Served(f"http://127.0.0.1:{port}/mcp", log)
        wait_listening(served, process)
        return served

    yield start
    for process in processes:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_listening(served: Served, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, served.stderr.read_text()
        try:
            httpx.get(served.url, timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)


def test_a_token_is_required_when_set(serve_http: Callable[[str | None], Served]) -> None:
    served = serve_http("s3cret-token")
    assert served.initialize().status_code == 401
    assert served.initialize("Bearer wrong").status_code == 401
    assert served.initialize("Basic s3cret-token").status_code == 401
    answer = served.initialize("Bearer s3cret-token")
    assert answer.status_code == 200, answer.text
    assert "serverInfo" in answer.text
    line = served.stderr.read_text()
    assert served.url in line and "Bearer" in line and "any local process" not in line


def test_without_a_token_the_start_line_says_anyone_local_can_connect(
    serve_http: Callable[[str | None], Served],
) -> None:
    served = serve_http(None)
    assert served.initialize().status_code == 200
    line = served.stderr.read_text()
    assert served.url in line and "any local process can connect" in line


def test_mcp_config_prints_the_token_for_http_clients(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["mcp-config", "--http", "--token", "abc123", "--port", "8123"]) == 0
    out, err = capsys.readouterr()
    server = json.loads(out)["mcpServers"]["bookocr"]
    assert server == {
        "type": "http",
        "url": "http://127.0.0.1:8123/mcp",
        "headers": {"Authorization": "Bearer abc123"},
    }
    assert "BOOKOCR_TOKEN=abc123 bookocr serve --http --port 8123" in err


def test_mcp_config_makes_a_token_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BOOKOCR_TOKEN", raising=False)
    assert cli.main(["mcp-config", "--http"]) == 0
    header = json.loads(capsys.readouterr().out)["mcpServers"]["bookocr"]["headers"]["Authorization"]
    assert header.startswith("Bearer ") and len(header) > 40
