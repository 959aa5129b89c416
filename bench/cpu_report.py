"""One line about the machine, printed by every benchmark next to its figures: a speed measured on one
CPU can be a slow-down on another (OpenVINO runs bf16 where the CPU has AMX or AVX-512 BF16, f32 elsewhere).

A newer CPU can stand in for an older one: :func:`cap_isa` (the benches' ``--isa avx2``) sets
``OV_CPU_MAX_ISA`` and ``ONEDNN_MAX_CPU_ISA`` together before OpenVINO loads, for this process and the
``bookocr`` processes it starts. OpenVINO's own kernels honour the first (release wheels since 2026.4),
oneDNN's the second; with only one of them set the CPU plugin mixes AVX-512 and AVX2 kernels and the
recogniser crashes (seen). Capped to AVX2, the plugin reports f32 as its inference precision and only FP32
and INT8 among its capabilities, as on an AVX2-only CPU, and every primitive it runs is an ``avx2`` one.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
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


ISA_CAPS = {"avx2": "AVX2", "avx512": "AVX512_CORE"}  # --isa values -> the variables' value
CAP_VARIABLES = ("OV_CPU_MAX_ISA", "ONEDNN_MAX_CPU_ISA")


def cap_isa(isa: str | None) -> None:
    """Make OpenVINO (here and in child processes) use at most ``isa``: "avx2" (f32, as an AVX2-only CPU),
    "avx512" (f32 AVX-512, no BF16/VNNI/AMX) or None (what the CPU has). Call before OpenVINO is imported."""
    if isa is None:
        return
    if "openvino" in sys.modules:
        raise RuntimeError("cap_isa must run before openvino is imported")
    for name in CAP_VARIABLES:
        os.environ[name] = ISA_CAPS[isa]


def add_isa_argument(parser: argparse.ArgumentParser) -> None:
    """``--isa``, for the benches that run the local engine; the bench passes its value to :func:`cap_isa`."""
    parser.add_argument(
        "--isa",
        choices=sorted(ISA_CAPS),
        help="run OpenVINO as on a CPU with at most this ISA (f32); see cpu_report.py",
    )


def isa_cap() -> str | None:
    return os.environ.get(CAP_VARIABLES[0]) or os.environ.get(CAP_VARIABLES[1])


def openvino_precision() -> str:
    try:
        import openvino as ov

        return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    except Exception as exc:  # noqa: BLE001 - not installed, or no CPU plugin
        return f"n/a ({type(exc).__name__})"


def describe() -> str:
    flags = ", ".join(isa_flags()) or "none of " + "/".join(ISA_FLAGS)
    if isa_cap():
        flags += f"; OpenVINO capped to {isa_cap()} by {'/'.join(CAP_VARIABLES)}"
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
