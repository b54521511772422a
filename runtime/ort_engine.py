"""The ONNX Runtime engine: its CPU, CUDA and TensorRT execution providers. CUDA and TensorRT are either
really in use or an error, never a silent CPU fallback (ORT's own behaviour when a provider fails to
load); with "auto" the reason CUDA was not taken is kept. On the CPU, large batches are split across
1-thread sessions (parallel.py).

On a GPU (CUDA, TensorRT) batches run through IOBinding with buffers kept on the device (iobinding.py); on
CUDA, batch 1 replays a CUDA graph, and fp32 runs the file's fused graph form where export wrote one
(engine.PREFERRED_FORMS).

Precision: fp32 runs the file as it is. int8 runs model.int8.onnx (`edgecls quantize`: static QDQ, or
ORT's DynamicQuantizeLSTM for LSTM graphs) on the CPU provider, fp16 runs model.fp16.onnx on CUDA, or builds
TensorRT's engine with fp16 kernels allowed."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecls.errors import UsageError
from edgecls.locations import user_cache
from edgecls.metadata import INPUT_NAME, read_props

from .engine import Engine, TensorInfo, check_provider, form_file, variant_file
from .iobinding import BoundSession
from .parallel import BatchParallel, available_cpus, split_count

ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# where each precision runs on ONNX Runtime: provider -> precisions (the rest are refused in one line)
ORT_PRECISIONS = {"cpu": ("fp32", "int8"), "cuda": ("fp32", "fp16"), "tensorrt": ("fp32", "fp16")}
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


def _cuda_failure_reason(log: list[str], name: str = "CUDA") -> str:
    text = "\n".join(log)
    m = re.search(r"with error: ([^\n\x1b]+)", text)
    if m:
        return m.group(1).strip()
    m = re.search(rf"Failed to create {name}ExecutionProvider\.? ?([^\n\x1b]*)", text)
    if m:
        return f"{name} provider failed to start" + (f": {m.group(1).strip()}" if m.group(1).strip() else "")
    return f"the {name} provider did not load (no usable GPU, CUDA or cuDNN)"


def _preload_cuda_libraries() -> None:
    # onnxruntime-gpu >= 1.21 can load the CUDA/cuDNN libraries that pip-installed torch brings along.
    # Where they are missing it print()s "Failed to load ..." to stdout, which would corrupt
    # `infer --format json` output, so both streams are captured.
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        import sys

        sys.stdout.flush()
        with (
            contextlib.suppress(Exception),
            _captured_stderr(2),
            _captured_stderr(1),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            preload()


# TensorRT builds one engine per input-shape profile: batches 1..TRT_MAX_BATCH, tuned for TRT_OPT_BATCH;
# Engine.run splits larger batches. The built engine is cached (building takes seconds to minutes).
TRT_MAX_BATCH, TRT_OPT_BATCH = 1024, 64
# TensorRT's libraries as pip installs them (tensorrt-cu13-libs, the [tensorrt] extra): ORT 1.31's provider
# links TensorRT 10.
TRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10")


def _preload_tensorrt() -> None:
    """pip puts TensorRT's libraries in site-packages/tensorrt_libs, where the dynamic loader does not look;
    loading them first (RTLD_GLOBAL) lets ORT's TensorRT provider find them. Where they are missing, the
    provider's own load error says so."""
    try:
        import tensorrt_libs
    except ImportError:
        return
    folder = Path(tensorrt_libs.__file__).parent
    for name in TRT_LIBRARIES:
        with contextlib.suppress(OSError):
            ctypes.CDLL(str(folder / name), mode=ctypes.RTLD_GLOBAL)


def tensorrt_options(input_shape: tuple[int, ...], precision: str) -> dict[str, str]:
    """ORT's TensorRT provider options: engine and timing caches in the user's cache, one batch profile,
    fp16 kernels only for --precision fp16."""
    cache = user_cache("tensorrt")
    cache.mkdir(parents=True, exist_ok=True)
    dims = "x".join(str(d) for d in input_shape)
    return {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": "True" if precision == "fp16" else "False",
        "trt_profile_min_shapes": f"{INPUT_NAME}:1x{dims}",
        "trt_profile_opt_shapes": f"{INPUT_NAME}:{TRT_OPT_BATCH}x{dims}",
        "trt_profile_max_shapes": f"{INPUT_NAME}:{TRT_MAX_BATCH}x{dims}",
    }


def _tensorrt_session(path: str, opts: ort.SessionOptions, precision: str) -> ort.InferenceSession:
    if ORT_PROVIDERS["tensorrt"] not in ort.get_available_providers():
        raise UsageError("this onnxruntime build has no TensorRT provider (install onnxruntime-gpu)")
    shape = tuple(_load(path, session_options(1), [ORT_PROVIDERS["cpu"]]).get_inputs()[0].shape[1:])
    _preload_cuda_libraries()
    _preload_tensorrt()
    providers = [(ORT_PROVIDERS["tensorrt"], tensorrt_options(shape, precision)), (ORT_PROVIDERS["cuda"], CUDA_OPTIONS)]
    # ORT's Python layer print()s an "EP Error" banner to stdout when TensorRT fails to load, then retries
    # without it: kept off stdout (infer's results), its C++ log off stderr, both read for the reason
    with _captured_stderr() as log, contextlib.redirect_stdout(io.StringIO()) as printed:
        session = _load(path, opts, [*providers, ORT_PROVIDERS["cpu"]])
    log += printed.getvalue().splitlines()
    if session.get_providers()[0] != ORT_PROVIDERS["tensorrt"]:
        raise UsageError(
            f"TensorRT execution provider unavailable: {_cuda_failure_reason(log, 'Tensorrt')}; it needs an NVIDIA "
            "GPU and TensorRT 10 (pip install 'edgecls[tensorrt]'); use --provider cuda or cpu"
        )
    return session


def create_session(
    path: str,
    provider: str = "auto",
    threads: int | None = None,
    options: ort.SessionOptions | None = None,
    precision: str = "fp32",
) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession on `provider` ("cpu", "cuda", "tensorrt" or "auto"), and for `auto` on the CPU
    the reason CUDA was not taken ("" otherwise). `options`: other session options than session_options();
    `precision`: what TensorRT may compute in (the other providers run the file as it is)."""
    check_provider(provider)
    opts = options or session_options(threads)
    if provider == "tensorrt":
        return _tensorrt_session(path, opts, precision), ""
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


def _provider_for(provider: str, precision: str) -> str:
    """The provider that runs `precision` ("auto" takes the CPU for int8 and CUDA for fp16), or a one-line
    refusal that says where it runs instead."""
    if provider == "auto" and precision != "fp32":
        provider = "cpu" if precision == "int8" else "cuda"
    if provider == "auto" or precision in ORT_PRECISIONS[provider]:
        return provider
    where = {
        "bf16": "on --provider openvino, on a CPU with AMX or AVX512-BF16 (ONNX Runtime's CPU provider has no "
        "bf16 kernels for these graphs)",
        "fp16": "on --provider cuda or tensorrt, or on --provider openvino with a CPU that has AVX512-FP16 (ONNX "
        "Runtime's CPU provider has no fast fp16 kernels)",
        "int8": "on the CPU: --provider cpu or openvino (the int8 file's integer kernels, QDQ or ORT's dynamic "
        "LSTM, are CPU kernels)",
    }[precision]
    raise UsageError(f"--precision {precision} runs {where}, not on --provider {provider}")


def _tensors(values) -> list[TensorInfo]:
    return [TensorInfo(v.name, v.type, tuple(v.shape)) for v in values]


def cuda_graph_session(path: str, threads: int | None = None) -> tuple[BoundSession | None, str]:
    """A CUDA session of the file whose batch-1 run is captured as a CUDA graph and then replayed: one
    launch for the whole model instead of one per node (a recurrent model has dozens per time step). The
    graph replays against fixed buffers, so it runs through IOBinding and at this one batch size. Returns
    the session ready to replay, or None and why ORT could not capture it (a node off the GPU, a copy
    between devices inside the graph)."""
    options = {**CUDA_OPTIONS, "enable_cuda_graph": "1"}
    try:
        with _captured_stderr():
            session = ort.InferenceSession(path, session_options(threads), providers=[(ORT_PROVIDERS["cuda"], options)])
            bound = BoundSession(session, "cuda")
            zeros = np.zeros((1, *session.get_inputs()[0].shape[1:]), np.float32)
            for _ in range(3):  # the first run allocates, the second captures, the third replays
                bound.run(zeros)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, first[:300]
    return bound, ""


class OrtEngine(Engine):
    """One ONNX Runtime session (the whole batch, all threads) and, on the CPU with 2 threads or more,
    1-thread sessions that large batches are split across; on a GPU, the session bound to device buffers
    and (CUDA) a CUDA-graph session for batch 1."""

    def __init__(
        self, path: Path, provider: str = "auto", threads: int | None = None, split: bool = True, precision="fp32"
    ):
        provider = _provider_for(provider, precision)
        # int8 and fp16 (on CUDA) live in their own files; TensorRT builds fp16 kernels from the fp32 file
        self.path = path if precision == "fp32" or provider == "tensorrt" else variant_file(path, precision)
        self.precision = precision
        self.session, self.fallback_reason = create_session(str(self.path), provider, threads, precision=precision)
        self.providers = self.session.get_providers()
        self.provider = {v: k for k, v in ORT_PROVIDERS.items()}[self.providers[0]]
        form = form_file(self.path, self.provider) if precision == "fp32" else self.path  # provider known only now
        if form != self.path:
            self.path, self.session = form, create_session(str(form), self.provider, threads)[0]
        self.threads = threads or available_cpus()
        self.parallel = self.bound = self.graph = None
        self.graph_reason = ""
        if split and self.provider == "cpu" and self.threads >= 2:
            self.parallel = BatchParallel(
                lambda: create_session(str(self.path), "cpu", 1)[0], INPUT_NAME, self.threads, whole=self.session
            )
            self.parallel.choose_small_batch_session(self.session.get_inputs()[0].shape)
        if self.provider != "cpu":
            self.bound = BoundSession(self.session, "cuda")
        if self.provider == "cuda":
            self.graph, self.graph_reason = cuda_graph_session(str(self.path), threads)

    @property
    def small_batch_threads(self) -> int:
        """Threads of the session batches too small to split run on."""
        return self.parallel.small_batch_threads if self.parallel is not None else self.threads

    def run(self, inputs: np.ndarray) -> np.ndarray:
        if self.parallel is not None:
            return self.parallel.run(inputs)
        if self.bound is None:
            return self.session.run(None, {INPUT_NAME: inputs})[0]
        if self.graph is not None and len(inputs) == 1:
            return self.graph.run(inputs)
        if self.provider == "tensorrt" and len(inputs) > TRT_MAX_BATCH:  # beyond the engine's batch profile
            parts = [inputs[i : i + TRT_MAX_BATCH] for i in range(0, len(inputs), TRT_MAX_BATCH)]
            return np.concatenate([self.bound.run(p) for p in parts])
        return self.bound.run(inputs)

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
        if self.provider == "tensorrt":
            return "TensorRT, IOBinding"
        if self.provider == "cuda":
            form = " (fused form)" if self.path.name.endswith(".fused.onnx") else ""
            if rows == 1 and self.graph:
                return f"CUDA{form}, CUDA graph"
            if rows == 1:
                return f"CUDA{form}, IOBinding (no CUDA graph: {self.graph_reason})"
            return f"CUDA{form}, IOBinding"
        threads = self.small_batch_threads
        return f"1 session, {threads} thread{'s' if threads > 1 else ''}"

    def close(self) -> None:
        if self.parallel is not None:
            self.parallel.pool.shutdown(wait=True)
