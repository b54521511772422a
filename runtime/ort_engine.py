"""The ONNX Runtime engine: its CPU and CUDA execution providers. CUDA is either really in use or an
error, never a silent CPU fallback (ORT's own behaviour when the CUDA provider fails to load); with
"auto" the reason CUDA was not taken is kept. On the CPU, large batches are split across 1-thread
sessions (parallel.py)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecls.errors import UsageError
from edgecls.metadata import INPUT_NAME, read_props

from .engine import Engine, TensorInfo, check_provider
from .parallel import BatchParallel, available_cpus, split_count

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# ORT's CUDA provider computes fp32 MatMul/Gemm/Conv in TF32 (10-bit mantissa) on Ampere and newer GPUs
# by default: on an H100 that moved gru's logits 0.016 from eager PyTorch and failed `evaluate`'s parity
# bar. fp32 must answer like the model that was trained; reduced precision is the fp16 file's job.
CUDA_OPTIONS = {"use_tf32": "0"}


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options chosen on purpose:
    - ORT_ENABLE_ALL: every graph fusion (Conv+BN+ReLU, Gemm, layout); all are exact in fp32 up to
      rounding, which the parity checks bound;
    - intra-op threads = `threads` (None: ORT's default, one per physical core); one inter-op thread and
      sequential execution, since these graphs are chains with no parallel branches;
    - log severity 3 (errors): ORT warns about benign things like unused initializers.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


@contextlib.contextmanager
def _captured_stderr(fd: int = 2) -> Iterator[list[str]]:
    """Capture what ORT's C++ side writes to a file descriptor (its CUDA load errors go to 2)."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as buf:
        saved = os.dup(fd)
        try:
            os.dup2(buf.fileno(), fd)
            yield lines
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            buf.seek(0)
            lines.extend(buf.read().splitlines())


def _cuda_failure_reason(log: list[str]) -> str:
    text = "\n".join(log)
    m = re.search(r"with error: ([^\n\x1b]+)", text)
    if m:
        return m.group(1).strip()
    m = re.search(r"Failed to create CUDAExecutionProvider\.? ?([^\n\x1b]*)", text)
    if m:
        return "CUDA provider failed to start" + (f": {m.group(1).strip()}" if m.group(1).strip() else "")
    return "the CUDA provider did not load (no usable GPU, CUDA or cuDNN)"


def _preload_cuda_libraries() -> None:
    # onnxruntime-gpu >= 1.21 can load the CUDA/cuDNN libraries that pip-installed torch brings along.
    # Where they are missing it print()s "Failed to load ..." to stdout, which would corrupt
    # `infer --format json` output, so both streams are captured.
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        import io
        import sys

        sys.stdout.flush()
        with (
            contextlib.suppress(Exception),
            _captured_stderr(2),
            _captured_stderr(1),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            preload()


def create_session(
    path: str, provider: str = "auto", threads: int | None = None, options: ort.SessionOptions | None = None
) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession on `provider` ("cpu", "cuda" or "auto"), and for `auto` on the CPU the
    reason CUDA was not taken ("" otherwise). `options`: other session options than session_options()."""
    check_provider(provider)
    opts = options or session_options(threads)
    reason = ""
    if provider in ("auto", "cuda"):
        if ORT_PROVIDERS["cuda"] not in ort.get_available_providers():
            reason = "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
        else:
            _preload_cuda_libraries()
            with _captured_stderr() as log:
                session = _load(path, opts, [(ORT_PROVIDERS["cuda"], CUDA_OPTIONS), ORT_PROVIDERS["cpu"]])
            if session.get_providers()[0] == ORT_PROVIDERS["cuda"]:
                return session, ""
            reason = _cuda_failure_reason(log)
            if provider == "auto":  # ORT already fell back to the CPU provider in this session
                return session, reason
        if provider == "cuda":
            raise UsageError(f"CUDA execution provider unavailable: {reason}; use --provider cpu")
    return _load(path, opts, [ORT_PROVIDERS["cpu"]]), reason


def _load(path: str, opts: ort.SessionOptions, providers: list) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(path, opts, providers=providers)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"ONNX Runtime cannot load {path}: {first[:300]}") from None


def _tensors(values) -> list[TensorInfo]:
    return [TensorInfo(v.name, v.type, tuple(v.shape)) for v in values]


class OrtEngine(Engine):
    """One ONNX Runtime session (the whole batch, all threads) and, on the CPU with 2 threads or more,
    1-thread sessions that large batches are split across."""

    def __init__(
        self, path: Path, provider: str = "auto", threads: int | None = None, split: bool = True, precision="fp32"
    ):
        if precision != "fp32":
            raise UsageError(
                f"--precision {precision} runs on --provider openvino; ONNX Runtime runs the file in fp32 "
                "(edgecls quantize writes int8 and fp16 files for it)"
            )
        self.path = path
        self.session, self.fallback_reason = create_session(str(path), provider, threads)
        self.providers = self.session.get_providers()
        self.provider = "cuda" if self.providers[0] == ORT_PROVIDERS["cuda"] else "cpu"
        self.threads = threads or available_cpus()
        self.parallel = None
        if split and self.provider == "cpu" and self.threads >= 2:
            self.parallel = BatchParallel(
                lambda: create_session(str(path), "cpu", 1)[0], INPUT_NAME, self.threads, whole=self.session
            )

    def run(self, inputs: np.ndarray) -> np.ndarray:
        if self.parallel is not None:
            return self.parallel.run(inputs)
        return self.session.run(None, {INPUT_NAME: inputs})[0]

    def metadata(self) -> dict[str, str]:
        return read_props(self.session)

    def inputs(self) -> list[TensorInfo]:
        return _tensors(self.session.get_inputs())

    def outputs(self) -> list[TensorInfo]:
        return _tensors(self.session.get_outputs())

    def execution(self, rows: int) -> str:
        k = split_count(rows, self.threads) if self.parallel is not None else 1
        if k > 1:
            return f"{k} x 1-thread sessions"
        return (
            f"1 session, {self.threads} thread{'s' if self.threads > 1 else ''}" if self.provider == "cpu" else "CUDA"
        )

    def close(self) -> None:
        if self.parallel is not None:
            self.parallel.pool.shutdown(wait=True)
