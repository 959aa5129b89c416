"""A plain progress bar on stderr for terminals (pages done, pages/s, ETA); silent elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from server.runner import Progress


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, width: int = 28, min_interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.width = width
        self.min_interval = min_interval
        self._last = 0.0
        self._shown = False

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        final = p.done >= p.total
        if not final and now - self._last < self.min_interval:
            return
        self._last = now
        filled = int(self.width * p.done / p.total) if p.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        extra = f" failed {p.failed}" if p.failed else ""
        extra += f" fallback {p.fallback}" if p.fallback else ""
        line = f"\r{p.book} [{bar}] {p.done}/{p.total} pages  {p.rate:.2f} p/s  ETA {format_duration(p.eta)}{extra}"
        self.stream.write(line.ljust(100)[:140])
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
