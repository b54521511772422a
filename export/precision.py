"""Lower-precision variants of an exported model: INT8 (onnxruntime.quantization: static QDQ calibrated on
real training images, or for LSTM graphs ORT's dynamically quantized LSTM) and FP16 (ORT's float16 converter,
float32 inputs and outputs kept).

A variant is kept only when its accuracy on the full test split, run through the runtime, is within
GATE_POINTS of the fp32 file's, measured in the same call; otherwise nothing is written and the call
fails, as a failed parity check does.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from edgecls.data import load_for_spec, normalize
from edgecls.errors import EdgeclsError, UsageError
from edgecls.fileio import atomic_path, ensure_writable_dir, write_json
from edgecls.locations import refuse_shipped
from edgecls.metadata import read_props, write_props
from edgecls.registry import get_spec
from edgecls.runtime import Classifier
from edgecls.runtime.classifier import accuracy_pct
from edgecls.runtime.engine import ACCURACY_GATE_POINTS

log = logging.getLogger(__name__)
GATE_POINTS = ACCURACY_GATE_POINTS
PRECISIONS = ("int8", "fp16")


class _BelowGate(Exception):
    """A variant below the accuracy gate: its temporary file is discarded."""


@dataclass(frozen=True)
class Int8Recipe:
    """One static-quantization setting; they are tried in order and the first within the gate is kept."""

    name: str
    method: str = "MinMax"
    reduce_range: bool = False
    keep_ends_fp32: bool = False  # the first and last Conv/Gemm/MatMul stay in float
    dynamic: bool = False  # LSTM nodes -> ORT's DynamicQuantizeLSTM; no calibration

    def describe(self) -> str:
        if self.dynamic:
            return (
                "dynamic int8 LSTM (ORT's DynamicQuantizeLSTM: int8 weights, activations quantized per call), "
                "the other layers in fp32"
            )
        return (
            f"static QDQ, per-channel int8 weights, uint8 activations, {self.method} calibration"
            + (", reduce_range (7-bit weights)" if self.reduce_range else "")
            + (", first and last layer in fp32" if self.keep_ends_fp32 else "")
        )


# reduce_range first: on CPUs without VNNI, ORT's u8s8 kernels can saturate with full 8-bit weights;
# measured on cnn it kept 72.97 % of 73.01 % where plain MinMax lost 3 points.
INT8_RECIPES = (
    Int8Recipe("minmax-reduce-range", reduce_range=True),
    Int8Recipe("minmax-ends-fp32", keep_ends_fp32=True),
    Int8Recipe("percentile", method="Percentile"),
)
# Static QDQ leaves ONNX's LSTM node in float (it quantizes only Conv/Gemm/MatMul around it), so for the LSTM
# models it is all cost and no gain. ORT's DynamicQuantizeLSTM runs the recurrence on int8 weights instead:
# through the runtime on the VNNI+AMX Xeon of the results page it ran lstm and lstm-binary at batch 256 1.43x
# faster than fp32 (equal at batch 1), within 0.03 points on the full test split. Tried first for LSTM graphs.
LSTM_RECIPE = Int8Recipe("dynamic-lstm", dynamic=True)


def int8_recipes(source: Path) -> tuple[Int8Recipe, ...]:
    """The recipes to try for `source`, in order."""
    has_lstm = any(n.op_type == "LSTM" for n in onnx.load(str(source), load_external_data=False).graph.node)
    return (LSTM_RECIPE, *INT8_RECIPES) if has_lstm else INT8_RECIPES


def _calibration(spec, data_dir, count: int) -> np.ndarray:
    """`count` seeded random images of the *training* split (the test split is never used to calibrate)."""
    train = load_for_spec(spec, "train", data_dir, download=False)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]
    return normalize(train.images(idx), spec.preprocess).numpy()


def _int8(src: Path, target: Path, recipe: Int8Recipe, calibration: np.ndarray, input_name: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: calibration[i : i + 64]} for i in range(0, len(calibration), 64)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # shape inference and constant folding: the dynamo exporter's LSTM weights are Slice/Concat of
        # initializers until folded, which the quantizers cannot see as weights
        quant_pre_process(str(src), str(pre))
        if recipe.dynamic:
            from onnxruntime.quantization import quantize_dynamic

            quantize_dynamic(str(pre), str(target), op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
            return
        layers = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        exclude = [layers[0], layers[-1]] if recipe.keep_ends_fp32 and layers else []
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress
            quantize_static(
                str(pre),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=recipe.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, recipe.method),
                nodes_to_exclude=exclude,
            )


def _fp16(src: Path, target: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(target))


def _loads_safely(path: Path) -> None:
    """Load `path` in a child process first: ORT 1.31's CPU provider crashed (SIGSEGV) creating a session for
    the fp16 rnn graph, which would take this process down with it instead of failing one recipe."""
    probe = "import sys, onnxruntime as o; o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True)
    if done.returncode < 0:
        raise RuntimeError(f"ONNX Runtime's CPU provider crashed loading it (signal {-done.returncode})")
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(f"ONNX Runtime cannot load it: {lines[-1][:200] if lines else 'unknown error'}")


def _stamp(src: Path, target: Path, precision: str, method: str) -> None:
    """The fp32 file's metadata (class names, preprocessing, ...) plus precision and method."""
    model = onnx.load(str(target))
    write_props(model, {**read_props(onnx.load(str(src))), "precision": precision, "precision_method": method})
    onnx.save(model, str(target))


def make_variant(
    name: str, precision: str, source: Path, out_dir: Path, data_dir: str | None = None, calibration: int = 512
) -> dict:
    """Write <out_dir>/model.<precision>.onnx from the fp32 `source` when it passes the accuracy gate."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision})")
    if calibration < 16:
        raise UsageError(f"--calibration must be at least 16 training images (got {calibration})")
    spec = get_spec(name)
    fp32 = Classifier(source, "cpu")  # a damaged or foreign file fails here, in one line
    if fp32.info.model != name:
        raise UsageError(f"{source} holds model {fp32.info.model!r}, not {name!r}")
    refuse_shipped(out_dir)
    ensure_writable_dir(out_dir)
    test = load_for_spec(spec, "test", data_dir, download=False)
    images, labels = normalize(test.images(), spec.preprocess).numpy(), test.labels.numpy()
    base = accuracy_pct(fp32.run, images, labels)
    log.info(f"{name} fp32: {base:.2f} % on the {len(labels):,} test images ({source})")
    target = out_dir / f"model.{precision}.onnx"
    tried = []
    if precision == "fp16":
        candidates = [("fp16", "ORT float16 converter, float32 inputs and outputs kept (keep_io_types)", None)]
    else:
        cal = _calibration(spec, data_dir, calibration)
        candidates = [
            (r.name, r.describe() + ("" if r.dynamic else f"; {len(cal)} training images"), r)
            for r in int8_recipes(source)
        ]
    kept = None
    for label, method, recipe in candidates:
        try:
            with atomic_path(target) as tmp:  # renamed into place only if the block ends normally
                _fp16(source, tmp) if recipe is None else _int8(source, tmp, recipe, cal, fp32.engine.inputs()[0].name)
                _stamp(source, tmp, precision, method)
                _loads_safely(tmp)
                acc = accuracy_pct(Classifier(tmp, "cpu").run, images, labels)
                tried.append(
                    {
                        "recipe": label,
                        "method": method,
                        "accuracy_pct": acc,
                        "drop_points": base - acc,
                        "passed": base - acc <= GATE_POINTS,
                    }
                )
                log.info(
                    f"  {label}: {acc:.2f} % ({acc - base:+.2f} points against fp32)"
                    f"{'  kept' if tried[-1]['passed'] else ''}"
                )
                if not tried[-1]["passed"]:
                    raise _BelowGate
        except _BelowGate:
            continue
        except Exception as exc:  # a converter or a kernel that cannot handle this graph: recorded, next
            tried.append({"recipe": label, "method": method, "error": str(exc).strip().splitlines()[0][:300]})
            log.info(f"  {label}: failed ({tried[-1]['error']})")
            continue
        kept = tried[-1]
        break
    report = {
        "model": name,
        "precision": precision,
        "source": str(source),
        "fp32_accuracy_pct": base,
        "test_images": len(labels),
        "gate_points": GATE_POINTS,
        "tried": tried,
        "kept": kept,
        "file": str(target) if kept else None,
        "bytes": target.stat().st_size if kept else None,
        "fp32_bytes": source.stat().st_size,
    }
    reports = out_dir / "precision.json"
    existing = {}
    if reports.is_file():
        try:
            existing = json.loads(reports.read_text())
        except ValueError:
            existing = {}
    write_json(reports, {**existing, precision: report})
    if kept is None:
        scores = [t["accuracy_pct"] for t in tried if "accuracy_pct" in t]
        best = f"best {max(scores):.2f} %" if scores else f"none could run: {tried[-1]['error']}"
        raise EdgeclsError(
            f"no {precision} variant of {name} within {GATE_POINTS} points of fp32 ({base:.2f} %; "
            f"{best}); nothing written, figures in {reports}"
        )
    log.info(f"wrote {target} ({report['bytes']:,} bytes, fp32 {report['fp32_bytes']:,}); {kept['method']}")
    return report
