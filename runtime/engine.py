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
from edgecls.metadata import read_props

# provider name -> "module:class" of the engine that serves it (imported only when asked for)
ENGINES = {
    "auto": "edgecls.runtime.ort_engine:OrtEngine",
    "cpu": "edgecls.runtime.ort_engine:OrtEngine",
    "cuda": "edgecls.runtime.ort_engine:OrtEngine",
    "tensorrt": "edgecls.runtime.ort_engine:OrtEngine",
    "openvino": "edgecls.runtime.openvino_engine:OpenVinoEngine",
}
PROVIDERS = tuple(ENGINES)
# What an engine computes in. fp32 answers like the trained model (parity-tested); the others are gated on
# accuracy on the full test split (within 0.5 points: evaluate, bench, --precision auto), not on logits:
# - bf16: OpenVINO on CPUs with AMX or AVX512-BF16;
# - fp16: OpenVINO on CPUs with AVX512-FP16, the model.fp16.onnx file on CUDA, TensorRT's fp16 kernels;
# - int8: the model.int8.onnx file (`edgecls quantize`) beside the fp32 one, on ONNX Runtime's CPU provider
#   or compiled by OpenVINO.
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# --precision also takes "auto": the fastest configuration on this machine that passes the gate
# (edgecls.commands.choose), resolved to a provider and one of PRECISIONS before an engine is opened.
PRECISION_CHOICES = (*PRECISIONS, "auto")
# The one accuracy gate for reduced precision: quantize keeps a variant, evaluate passes it, auto and bench
# count it, when its top-1 accuracy on the full test split is within this many points of fp32.
ACCURACY_GATE_POINTS = 0.5


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as the model file declares it: ONNX type ("tensor(float)") and shape,
    with a str for a symbolic axis such as the batch."""

    name: str
    type: str
    shape: tuple


class Engine(abc.ABC):
    """One model file, ready to run batches."""

    path: Path  # the file it runs: the one asked for, or its int8/fp16 file (variant_file)
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


def _sibling(path: Path, kind: str) -> Path:
    """model.<kind>.onnx beside model.onnx (any stem), or `path` itself when it is that file."""
    path = Path(path)
    if path.name.endswith(f".{kind}.onnx"):
        return path
    return path.with_name(f"{path.name.removesuffix('.onnx')}.{kind}.onnx")


def _same_model(path: Path, sibling: Path, remake: str) -> Path:
    # a file copied in from another model's folder would answer with that model's classes
    ours, theirs = (read_props(p).get("model") for p in (path, sibling))
    if ours != theirs:
        raise UsageError(
            f"{sibling} holds model {theirs!r}, not {ours!r} like {Path(path).name} beside it; {remake.format(ours)}"
        )
    return sibling


def variant_file(path: Path, precision: str) -> Path:
    """The file an engine runs for `precision` where the precision lives in the file (int8, fp16 on
    CUDA): model.<precision>.onnx beside the fp32 model.onnx, or `path` itself when it is that file."""
    variant = _sibling(path, precision)
    if variant == Path(path):
        return variant
    if not variant.is_file():
        raise UsageError(
            f"--precision {precision} runs {variant.name} beside {path}, and there is none; make one with "
            f"`edgecls quantize --model NAME --precision {precision}` and pass it with --onnx"
        )
    return _same_model(path, variant, f"remake it with `edgecls quantize --model {{}} --precision {precision}`")


# The graph form a provider runs fastest, where export wrote it beside model.onnx (which holds the form the
# CPU runs fastest). "fused": ONNX's RNN/GRU/LSTM nodes, which ORT's CUDA provider runs as cuDNN's fused
# kernels, one per layer; the steps form that rnn and birnn ship for the CPU is two small nodes per time step,
# each its own kernel launch on a GPU. TensorRT builds its own kernels from either and keeps model.onnx. So does
# OpenVINO, measured: its sequence ops from the fused nodes ran rnn/birnn at batch 256 in 5.8/7.8 ms (bf16)
# against the steps form's 3.6/3.5 ms (benchmarks/results/recurrent_forms-openvino.json).
PREFERRED_FORMS = {"cuda": "fused"}


def form_file(path: Path, provider: str) -> Path:
    """The file `provider` runs for the fp32 model at `path`: its preferred form beside it where there is
    one (export wrote it), else `path`."""
    form = PREFERRED_FORMS.get(provider)
    sibling = _sibling(path, form) if form else Path(path)
    if sibling == Path(path) or not sibling.is_file():
        return Path(path)
    return _same_model(path, sibling, "remove it, or export the model again (`edgecls export --model {}`)")


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
    if precision == "auto":
        raise UsageError("--precision auto is resolved by edgecls.commands.choose before an engine is opened")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use {', '.join(PRECISION_CHOICES)}")
    module, name = ENGINES[provider].split(":")
    return getattr(importlib.import_module(module), name)(path, provider, threads, split, precision=precision)
