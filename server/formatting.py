"""How durations read, for people and for agents: one home, so the CLI, MCP and errors agree."""

from __future__ import annotations


def clock(seconds: float | None) -> str:
    """A progress-bar clock: ``03:07``, ``1:02:03``, or ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def describe_duration(seconds: float) -> str:
    """In words: ``4.2 s``, ``45 s``, ``3 min 5 s``, ``2 h 3 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
