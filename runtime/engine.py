"""The runtime's engine seam. An engine owns everything about running a model file's graph: the backend
session, the device it runs on, its threads and how a batch is split; `Classifier` sits on top of one
with preprocessing and top-k.

The contract is Triton's model contract in small: the constructor initializes, `run` executes one batch
(float32 [N, C, H, W] in, logits [N, K] out), `close` finalizes; whoever calls `run` owns batching.
An engine is one file beside this one, named in ENGINES by the provider names it serves; nothing else in
the runtime changes when one is added.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.errors import UsageError

# provider name -> "module:class" of the engine that serves it (imported only when asked for)
ENGINES = {
    "auto": "edgecls.runtime.ort_engine:OrtEngine",
    "cpu": "edgecls.runtime.ort_engine:OrtEngine",
    "cuda": "edgecls.runtime.ort_engine:OrtEngine",
    "openvino": "edgecls.runtime.openvino_engine:OpenVinoEngine",
}
PROVIDERS = tuple(ENGINES)
# --precision: what the engine computes in. fp32 answers like the trained model (parity-tested); bf16 is
# OpenVINO's on CPUs with AMX or AVX512-BF16, gated on accuracy (evaluate, bench --peers), not on logits.
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as the model file declares it: ONNX type ("tensor(float)") and shape,
    with a str for a symbolic axis such as the batch."""

    name: str
    type: str
    shape: tuple


class Engine(abc.ABC):
    """One model file, ready to run batches."""

    provider: str  # where it runs, in edgecls's words: a key of ENGINES other than "auto"
    providers: list[str]  # the same in the backend's words, preferred first
    fallback_reason: str = ""  # for provider "auto": why the preferred device was not taken
    threads: int  # CPU threads it may use
    precision: str = "fp32"  # what it computes in (PRECISIONS)

    @abc.abstractmethod
    def run(self, inputs: np.ndarray) -> np.ndarray:
        """float32 [N, C, H, W], already normalized -> logits [N, K]. Safe to call from one thread at a time."""

    @abc.abstractmethod
    def metadata(self) -> dict[str, str]:
        """The file's metadata properties (read into a ModelInfo by edgecls.metadata)."""

    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    def execution(self, rows: int) -> str:
        """How a batch of `rows` runs, in words (bench output, logs)."""
        return self.provider

    def close(self) -> None:  # noqa: B027 - optional: most engines hold nothing to release
        """Release what the engine holds; the default has nothing to release."""


def check_provider(provider: str) -> None:
    if provider not in ENGINES:
        raise UsageError(f"unknown provider {provider!r}; use {', '.join(PROVIDERS)}")


def check_threads(threads) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"--threads must be a whole number of at least 1 (got {threads!r})")


def open_engine(
    path: str | Path, provider: str = "auto", threads: int | None = None, split: bool = True, precision: str = "fp32"
) -> Engine:
    """The engine serving `provider` for the model file at `path`. `threads`: CPU threads it may use [all
    this process may use]; `split`: let it split large batches across threads (see parallel.py);
    `precision`: one of PRECISIONS, where the engine offers it. Every failure is a one-line EdgeclsError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no ONNX model at {path}; run `edgecls export` first or pass --onnx FILE")
    check_threads(threads)
    check_provider(provider)
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    module, name = ENGINES[provider].split(":")
    return getattr(importlib.import_module(module), name)(path, provider, threads, split, precision=precision)
