"""The OpenVINO engine (`--provider openvino`, extra `edgecls[openvino]`): Intel's runtime reading the
same .onnx file, compiled for the CPU. Its graph compiler fuses the recurrent models' per-step nodes
into its own sequence ops and, on CPUs with AMX or AVX512-BF16, runs in bf16 unless told otherwise.

Precision: "fp32" (`--provider openvino`) holds OpenVINO to f32 arithmetic (INFERENCE_PRECISION_HINT f32),
so the logits answer like the model that was trained, within its export tolerance. "bf16"
(`--precision bf16`, on CPUs with AMX or AVX512-BF16) computes in bf16: logits move by up to ~1e-1, so it
is gated on accuracy (evaluate, bench --peers). "fp16" is the same on CPUs with AVX512-FP16. "int8"
compiles model.int8.onnx (the QDQ file `edgecls quantize` writes): OpenVINO's low-precision transformations
turn its Quantize/Dequantize pairs into integer kernels (VNNI, AMX-INT8), the layers between them in f32.
"default" leaves OpenVINO its own choice, as a user
calling it directly gets (bf16 where the CPU has it, f32 elsewhere); `edgecls bench --peers` times it as
a peer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecls.errors import MissingExtra, UsageError
from edgecls.metadata import read_props

from .engine import Engine, TensorInfo, variant_file
from .parallel import available_cpus

# precision -> INFERENCE_PRECISION_HINT (int8: the file carries the integer layers; the rest stay f32)
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32", "default": None}
# the CPU capability (OPTIMIZATION_CAPABILITIES) each reduced precision needs, and where it comes from
NEEDS = {"bf16": ("BF16", "AMX or AVX512-BF16"), "fp16": ("FP16", "AVX512-FP16 or AMX-FP16"), "int8": ("INT8", "")}
OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "u8": "tensor(uint8)"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise MissingExtra("--provider openvino needs OpenVINO: pip install 'edgecls[openvino]'") from None
    return openvino


class OpenVinoEngine(Engine):
    """One compiled model on OpenVINO's CPU plugin, latency-tuned, with `threads` inference threads.
    `split` is accepted for the seam's signature and not used: OpenVINO spreads a batch over its own
    threads."""

    def __init__(
        self, path: Path, provider: str = "openvino", threads: int | None = None, split: bool = True, precision="fp32"
    ):
        ov = _openvino()
        if precision not in PRECISIONS:
            raise UsageError(f"OpenVINO runs precision {' or '.join(PRECISIONS)} here, not {precision!r}")
        self.path = variant_file(path, "int8") if precision == "int8" else path
        self.provider, self.precision = "openvino", precision
        self.threads = threads or available_cpus()
        # the file's metadata first, read the one way every engine's file is read: a damaged or foreign file
        # fails here in one line, before OpenVINO's parser prints its own report
        self._props = read_props(self.path)
        core = ov.Core()
        need, where = NEEDS.get(precision, ("", ""))
        if need and need not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise UsageError(f"--precision {precision} needs a CPU with {where}, which this one lacks; use fp32")
        try:
            model = core.read_model(str(self.path))
            config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"}
            if PRECISIONS[precision]:
                config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"OpenVINO cannot compile {self.path}: {first[:300]}") from None
        self.request = self.compiled.create_infer_request()
        # what it computes in: bf16 or f32 (the hint, or OpenVINO's own choice for this CPU)
        computes_in = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
        computes_in = {"f32": "fp32", "f16": "fp16"}.get(computes_in, computes_in)
        self.arithmetic = "int8" if precision == "int8" else computes_in
        self.providers = [f"OpenVINO CPU ({ov.get_version().split('-')[0]}, {self.arithmetic})"]

    def run(self, inputs: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(inputs, dtype=np.float32)})
        return np.array(result[self.compiled.output(0)], dtype=np.float32)  # a copy: the request reuses its buffer

    def metadata(self) -> dict[str, str]:
        return self._props

    def _tensors(self, ports) -> list[TensorInfo]:
        out = []
        for port in ports:
            shape = tuple(d.get_length() if d.is_static else "batch" for d in port.get_partial_shape())
            out.append(
                TensorInfo(port.get_any_name(), OV_TYPES.get(port.get_element_type().get_type_name(), "?"), shape)
            )
        return out

    def inputs(self) -> list[TensorInfo]:
        return self._tensors(self.compiled.inputs)

    def outputs(self) -> list[TensorInfo]:
        return self._tensors(self.compiled.outputs)

    def execution(self, rows: int) -> str:
        return f"OpenVINO CPU, {self.threads} thread{'s' if self.threads > 1 else ''}, {self.arithmetic}"
