"""What this machine is, in the words the benchmarks record: the CPU's name and the vector instruction
sets that decide which kernels ONNX Runtime and PyTorch run. Standard library only."""

from __future__ import annotations

import platform
from pathlib import Path

ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def _cpuinfo_line(prefix: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_line("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector instruction sets this CPU reports, in ISA_FLAGS order."""
    have = set((_cpuinfo_line("flags") or "").split())
    return [f for f in ISA_FLAGS if f in have]
