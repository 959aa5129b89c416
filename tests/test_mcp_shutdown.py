"""The server goes when its client goes: a real server process, with an OCR job stuck in a page.

The server runs as ``python -m tests.slow_serve`` (the real CLI, plus the test-only engine
``test-slow`` whose pages from BOOKOCR_TEST_SLOW_FROM on hang for 10 minutes). The stdio test speaks
JSON-RPC over the pipes itself rather than through the SDK's stdio client, because that client kills
the server 2 s after closing its stdin, which would hide a server that does not exit on its own.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from mcp import Client

from server.corpus import Corpus
from tests.conftest import numbered_text_pdf

ROOT = Path(__file__).resolve().parent.parent
EXIT_WITHIN_S = 5.0


def start_server(corpus: Path, books: Path, stderr: IO[str], slow_from: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BOOKOCR_TEST_SLOW_FROM": str(slow_from), "BOOKOCR_TEST_SLOW_S": "600"}
    command = [
        sys.executable,
        "-m",
        "tests.slow_serve",
        "-v",
        "--corpus",
        str(corpus),
        "serve",
        "--allow",
        str(books),
        *extra,
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
    )


class StdioSession:
    """A minimal MCP client over a server process's pipes: requests and their answers, nothing else."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in process.stdout], daemon=True).start()
        self.next_id = 0
        self.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads(self.lines.get(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def call(self, tool: str, **args: Any) -> dict[str, Any]:
        result = self.request("tools/call", {"name": tool, "arguments": args})
        assert not result.get("isError"), result
        return result["structuredContent"]

    def wait_for(self, book: str, done: int, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("book_status", book=book)
            if status["done"] >= done:
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.1)

    def close(self) -> float:
        """Close stdin, as a client that goes away does; seconds until the process exited."""
        started = time.monotonic()
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=EXIT_WITHIN_S + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the server was still running {EXIT_WITHIN_S + 5:.0f} s after its stdin closed")
        return time.monotonic() - started


def page_writers(corpus: Corpus, book: str) -> list[str]:
    """Which process wrote each page (the test engine puts its pid in the text)."""
    b = corpus.book(book)
    return [b.read_page(n).markdown.rsplit(" ", 1)[-1].strip() for n in range(1, b.page_count + 1)]


def test_stdio_server_exits_when_stdin_closes_and_the_next_one_resumes(tmp_path: Path) -> None:
    books, corpus_dir = tmp_path / "books", tmp_path / "corpus"
    books.mkdir()
    pdf = numbered_text_pdf(books / "stuck.pdf", 6)
    corpus = Corpus(corpus_dir)
    with (tmp_path / "first.log").open("w") as log:
        first = StdioSession(start_server(corpus_dir, books, log, slow_from=3))
        status = first.call("ocr_book", path=str(pdf), engine="test-slow")
        assert status["state"] == "running", status
        assert first.wait_for("stuck", done=2)["state"] == "running"  # page 3 hangs in the engine now
        assert corpus.is_locked("stuck")
        seconds = first.close()
    assert seconds < EXIT_WITHIN_S, f"the server took {seconds:.1f} s to exit"
    assert not corpus.is_locked("stuck"), "the lock must be free once the server is gone"
    assert corpus.book("stuck").counts() == {"ok": 2, "fallback": 0, "failed": 0, "pending": 4}, (
        "the pages done are kept"
    )
    first_pid = str(first.process.pid)

    with (tmp_path / "second.log").open("w") as log:
        second = StdioSession(start_server(corpus_dir, books, log, slow_from=99))
        second.call("ocr_book", path=str(pdf), engine="test-slow")
        assert second.wait_for("stuck", done=6)["done"] == 6
        second_pid = str(second.process.pid)
        assert second.close() < EXIT_WITHIN_S
    assert page_writers(corpus, "stuck") == [first_pid] * 2 + [second_pid] * 4, (
        "only the pages not done were done again"
    )
    note = f"took over the lock of book stuck left by pid {first_pid}, which is no longer running"
    assert note in (tmp_path / "second.log").read_text()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_http_server_exits_when_stopped_while_a_job_is_stuck(tmp_path: Path, anyio_backend: str) -> None:
    books, corpus_dir = tmp_path / "books", tmp_path / "corpus"
    books.mkdir()
    pdf = numbered_text_pdf(books / "stuck.pdf", 4)
    port = free_port()
    with (tmp_path / "server.log").open("w") as log:
        process = start_server(corpus_dir, books, log, 2, "--http", "--port", str(port))
        try:
            await wait_for_port(port)
            async with Client(f"http://127.0.0.1:{port}/mcp") as c:
                result = await c.call_tool("ocr_book", {"path": str(pdf), "engine": "test-slow"})
                assert result.structured_content["state"] == "running", result
                started = time.monotonic()
                process.send_signal(signal.SIGINT)  # Ctrl-C, or a supervisor stopping the server
                while process.poll() is None and time.monotonic() - started < EXIT_WITHIN_S + 5:
                    await anyio.sleep(0.1)
            assert process.poll() is not None, "the server did not stop"
            assert time.monotonic() - started < EXIT_WITHIN_S
        finally:
            if process.poll() is None:
                process.kill()
    corpus = Corpus(corpus_dir)
    assert not corpus.is_locked("stuck")
    assert corpus.book("stuck").counts()["ok"] == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.aclose()
            return
        except OSError:
            assert time.monotonic() < deadline, f"the server did not listen on port {port}"
            await anyio.sleep(0.2)


def test_a_thread_left_behind_does_not_keep_the_process() -> None:
    """After the server, any other thread that would hold the interpreter's exit (an engine's worker
    pool, a tool call) is cut short by the watchdog."""
    code = (
        "import threading, time\n"
        "import server.mcp_server as m\n"
        "m.EXIT_GRACE_S = 0.5\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()  # not a daemon: Python would wait for it\n"
        "m.leave(True)\n"
    )
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30)
    assert process.returncode == 0 and time.monotonic() - started < 10
