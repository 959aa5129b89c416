"""One line about the machine, printed by every benchmark next to its figures: a speed measured on one
CPU can be a slow-down on another (OpenVINO runs bf16 where the CPU has AMX, f32 elsewhere)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [flag for flag in ISA_FLAGS if flag in have]
    return []


def openvino_precision() -> str:
    try:
        import openvino as ov

        return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    except Exception as exc:  # noqa: BLE001 - not installed, or no CPU plugin
        return f"n/a ({type(exc).__name__})"


def describe() -> str:
    flags = ", ".join(isa_flags()) or "none of " + "/".join(ISA_FLAGS)
    return (
        f"cpu: {cpu_model()} ({os.cpu_count()} cores; ISA: {flags}; OpenVINO CPU precision: {openvino_precision()}); "
        f"Python {platform.python_version()}"
    )


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


if __name__ == "__main__":
    print(describe())
