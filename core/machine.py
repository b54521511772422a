"""What this machine is, in the words the benchmarks record: the CPU's name and the vector instruction
sets that decide which kernels ONNX Runtime and PyTorch run. Standard library only."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
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


def run_record(script: str, argv: list[str] | None = None, **extra) -> dict:
    """The header a benchmark's JSON starts with: when, the command as typed (`argv`: its arguments, default
    sys.argv[1:]), this CPU and its instruction sets, then `extra` (threads, library versions)."""
    args = argv if argv is not None else sys.argv[1:]
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", script, *args]),
        "cpu": cpu_name(),
        "isa": cpu_flags(),
        **extra,
    }
