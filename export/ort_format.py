"""The ORT format (.ort) for mobile and minimal ONNX Runtime builds, written by ORT's own converter
(onnxruntime.tools.convert_onnx_models_to_ort) and checked against the ONNX file before it is kept."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgecls.errors import EdgeclsError

from .validate import compare_logits

ORT_FILE, OPS_FILE = "model.ort", "required_operators.config"
# "basic" keeps the graph free of the CPU-specific layouts (NCHWc) that "all" would bake in, so one
# file serves ARM phones and x86 boards alike; the runtime applies its own optimizations when loading.
LEVEL = "basic"


def _convert(onnx_path: Path, work: Path) -> tuple[Path, Path]:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    shutil.copyfile(onnx_path, work / "model.onnx")
    old = os.environ.get("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL")
    os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = LEVEL
    chatter = io.StringIO()
    try:  # the converter prints progress on stdout and logs on stderr
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            convert_onnx_models_to_ort(work / "model.onnx", optimization_styles=[OptimizationStyle.Fixed])
    except Exception as exc:
        raise EdgeclsError(
            f"ORT's converter failed on {onnx_path} ({str(exc).strip().splitlines()[0][:200]}); no {ORT_FILE} written"
        ) from None
    finally:
        if old is None:
            os.environ.pop("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", None)
        else:
            os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = old
    ort_file, ops = work / f"model.{LEVEL}.ort", work / f"model.required_operators.{LEVEL}.config"
    if not (ort_file.is_file() and ops.is_file()):
        raise EdgeclsError(f"ORT's converter left no .ort file for {onnx_path}: {chatter.getvalue()[-300:]}")
    return ort_file, ops


def ort_parity(onnx_path: Path, ort_path: Path, inputs: list[np.ndarray], atol: float) -> dict:
    """Logits of the .ort file against the ONNX file's (both on ORT's CPU provider)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (onnx_path, ort_path)]
    name = sessions[0].get_inputs()[0].name
    rows = []
    for x in inputs:
        ref, got = (s.run(None, {name: x})[0] for s in sessions)
        rows.append({"batch": len(x), **compare_logits(ref, got, atol)})
    worst = max(r["max_abs_diff"] for r in rows)
    passed = worst <= atol and not any(r["argmax_mismatches"] for r in rows)
    return {"passed": passed, "atol": atol, "max_abs_diff": worst, "rows": rows}


def write_ort(onnx_path: Path, inputs: list[np.ndarray], atol: float) -> dict:
    """Write model.ort and required_operators.config beside `onnx_path`, only when the .ort file gives
    the ONNX file's logits within `atol` on `inputs`; otherwise EdgeclsError and nothing written."""
    out = onnx_path.parent
    work = Path(tempfile.mkdtemp(prefix=".ort.", dir=out))
    try:
        ort_file, ops = _convert(onnx_path, work)
        report = ort_parity(onnx_path, ort_file, inputs, atol)
        if not report["passed"]:
            raise EdgeclsError(
                f"{ORT_FILE} differs from {onnx_path.name} by {report['max_abs_diff']:.2e} "
                f"(atol {atol:g}) or in argmax; not written"
            )
        os.replace(ops, out / OPS_FILE)
        os.replace(ort_file, out / ORT_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.update(
        file=str(out / ORT_FILE),
        bytes=(out / ORT_FILE).stat().st_size,
        optimization=f"Fixed, {LEVEL}",
        operators=str(out / OPS_FILE),
    )
    return report
