"""A plain progress bar on stderr for terminals (pages done, pages/s, ETA); silent elsewhere.

The bar redraws itself every second, so the elapsed time moves and a run where no page has finished
for a long time says so (see :attr:`server.runner.Progress.stalled_for`) even though no page event
comes to redraw it.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO

from server.formatting import clock, describe_duration
from server.runner import Progress, ShelfProgress

TICK_S = 1.0  # how often the bar redraws on its own


def stall_text(seconds: float) -> str:
    quiet = describe_duration(seconds)
    return f"stalled: no page finished for {quiet}; the run goes on (Ctrl-C stops it, a re-run resumes)"


def progress_line(p: Progress | ShelfProgress, width: int = 28) -> str:
    if isinstance(p, ShelfProgress):
        return shelf_line(p, width)
    filled = int(width * p.done / p.total) if p.total else width
    bar = "#" * filled + "-" * (width - filled)
    head = f"{p.book} [{bar}] {p.done}/{p.total} pages"
    stalled = p.stalled_for
    if stalled is not None:
        return f"{head}  {stall_text(stalled)}"
    extra = f" failed {p.failed}" if p.failed else ""
    extra += f" fallback {p.fallback}" if p.fallback else ""
    return f"{head}  {p.rate:.2f} p/s  ETA {clock(p.eta)}{extra}"


def shelf_line(p: ShelfProgress, width: int) -> str:
    """The book running now and the whole job: ``[3/10 books] name [###---] 40/200 | all 1234/5000 pages ...``.
    With several books running at once (DeepSeek), the bar follows the one that started first, so it does not
    flip between books as their pages come back: ``[3/10 books, 4 running] name ...``."""
    running = list(p.running.values())  # one copy: the books' threads change it as they go
    book = running[0] if running else p.current
    head = f"[{p.finished_books}/{len(p.books)} books" + (f", {len(running)} running]" if len(running) > 1 else "]")
    if book is not None:
        filled = int(width * book.done / book.total) if book.total else width
        head += f" {book.book} [{'#' * filled}{'-' * (width - filled)}] {book.done}/{book.total}"
    head += f" | all {p.done}/{p.total} pages"
    stalled = p.stalled_for
    if stalled is not None:
        return f"{head}  {stall_text(stalled)}"
    failed = f" failed {p.failed}" if p.failed else ""
    return f"{head}  {p.rate:.2f} p/s  ETA {clock(p.eta)}{failed}"


class ProgressBar:
    def __init__(
        self, stream: TextIO | None = None, width: int = 28, min_interval: float = 0.1, tick: float = TICK_S
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.width = width
        self.min_interval = min_interval
        self.tick = tick
        self._last = 0.0
        self._shown = False
        self._progress: Progress | ShelfProgress | None = None
        self._draw_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, p: Progress | ShelfProgress) -> None:
        if not self.enabled:
            return
        self._progress = p
        if self._ticker is None and not self._stop.is_set():
            self._ticker = threading.Thread(target=self._tick, name="bookocr-progress", daemon=True)
            self._ticker.start()
        final = p.done >= p.total
        if final or time.monotonic() - self._last >= self.min_interval:
            self._draw(p)

    def _tick(self) -> None:
        while not self._stop.wait(self.tick):
            progress = self._progress
            if progress is not None and progress.state == "running":
                self._draw(progress)

    def _draw(self, p: Progress | ShelfProgress) -> None:
        columns = shutil.get_terminal_size((160, 24)).columns - 1  # a wrapped line would not be redrawn in place
        with self._draw_lock:
            self._last = time.monotonic()
            self.stream.write("\r" + progress_line(p, self.width).ljust(min(100, columns))[:columns])
            self.stream.flush()
            self._shown = True

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * self.tick + 1)
        with self._draw_lock:
            if self._shown:
                self.stream.write("\n")
                self.stream.flush()
                self._shown = False
