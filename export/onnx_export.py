"""Checkpoint -> ONNX with a named dynamic batch axis, validated against eager PyTorch in the same step.

The file is written under a temporary name and renamed over `model.onnx` only after onnx's full
checker and the parity validation pass: a failed export never replaces a good model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch

import edgecls
from edgecls import checkpoint as ckpt_io
from edgecls.data import evenly_spaced, load_for_spec, normalize
from edgecls.errors import EdgeclsError, UsageError
from edgecls.fileio import ensure_writable_dir, write_json
from edgecls.locations import RUNS, refuse_shipped
from edgecls.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo, write_props
from edgecls.registry import ModelSpec

from .validate import BATCH_SIZES, batch_dim_names, op_types, time_onnx, validate

log = logging.getLogger(__name__)
# torch.onnx's two exporters, and the tanh-RNN models' own "steps" form (steps_form.py, torchscript-exported)
EXPORTERS = ("torchscript", "dynamo", "steps")
DEFAULT_OPSET = 18  # the dynamo exporter's native opset; ORT >= 1.14 runs it
MIN_OPSET = 14  # GRU/LSTM/RNN with batch_first layouts and the ops these graphs use
RECURRENT_OPS = {"RNN", "GRU", "LSTM"}  # ONNX's fused recurrent nodes (cuDNN kernels on ORT's CUDA provider)
FUSED_FILE = "model.fused.onnx"  # that form beside model.onnx, where model.onnx unrolled it (engine.PREFERRED_FORMS)
TIE_MARGIN = 0.10  # within 10 % of each other, the smaller graph (fewer nodes) wins: timings are noisy


@dataclass
class ExportResult:
    onnx_path: Path
    report_path: Path
    exporter: str
    report: dict


def _export_one(model: torch.nn.Module, spec: ModelSpec, exporter: str, opset: int, target: Path) -> None:
    # Batch 2, never 1: an example batch of 1 lets exporters specialize the dimension to a constant.
    example = (torch.randn(2, *spec.input_shape),)
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    if exporter == "steps":
        from .steps_form import stepwise

        model, exporter = stepwise(model), "torchscript"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(
                model,
                example,
                str(target),
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                **kwargs,
            )
        else:
            torch.onnx.export(
                model,
                example,
                str(target),
                dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                **kwargs,
            )


def _name_batch_axis(target: Path) -> None:
    """Name the batch axis 'batch' on input and output whatever the exporter called it."""
    model = onnx.load(str(target))
    for value in (model.graph.input[0], model.graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_param:
            dim.dim_param = "batch"
    onnx.save(model, str(target))


def _real_inputs(spec: ModelSpec, data_dir: str | None, count: int = max(BATCH_SIZES)):
    """Evenly spaced test images, normalized as in training; (None, reason) where no data is at hand."""
    try:
        test = load_for_spec(spec, "test", data_dir, download=False)
    except EdgeclsError as exc:
        return None, str(exc)
    return normalize(test.images(evenly_spaced(len(test), count)), spec.preprocess), test.source


def check_opset(opset: int) -> None:
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"--opset {opset} is not supported: the installed onnx {onnx.__version__} writes "
            f"opsets {MIN_OPSET}..{newest} for these models"
        )


def export_model(
    name: str,
    *,
    artifacts: str | Path = RUNS,
    checkpoint: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    atol: float | None = None,
    validate_parity: bool = True,
    data_dir: str | None = None,
    ort: bool = False,
) -> ExportResult:
    """Export `name` to <artifacts>/<name>/model.onnx and write export.json; raises EdgeclsError when
    the ONNX file does not reproduce the eager logits."""
    if exporter not in ("auto", *EXPORTERS):
        raise UsageError(f"unknown exporter {exporter!r}; use auto, {' or '.join(EXPORTERS)}")
    check_opset(opset)
    out = Path(artifacts) / name
    refuse_shipped(out)
    ckpt_path = Path(checkpoint) if checkpoint else out / "checkpoint.pt"
    ckpt = ckpt_io.load(ckpt_path, name)
    spec, model = ckpt_io.model_from_checkpoint(ckpt)
    atol = spec.atol if atol is None else atol
    if not atol > 0:
        raise UsageError(f"--atol must be positive (got {atol})")
    ensure_writable_dir(out)
    real, real_source = _real_inputs(spec, data_dir) if validate_parity else (None, "validation skipped")
    if validate_parity and real is None:
        log.info(f"note: no real test images for validation ({real_source}); using random inputs only")

    candidates = list(EXPORTERS) if exporter == "auto" else [exporter]
    tmp_files = {exp: out / f".model.{exp}.{os.getpid()}.onnx.tmp" for exp in candidates}
    try:
        tried = {
            exp: _try_exporter(
                model, spec, exp, opset, tmp_files[exp], atol, real, validate_parity, timed=exporter == "auto"
            )
            for exp in candidates
        }
        chosen, why = _choose(tried, exporter)
        report = {
            "model": name,
            "checkpoint": str(ckpt_path),
            "onnx": str(out / "model.onnx"),
            **_versions(),
            "opset": opset,
            "atol": atol,
            "exporter_requested": exporter,
            "exporter": chosen,
            "why": why,
            "validated": validate_parity,
            "real_images": real_source,
            "batch_sizes": list(BATCH_SIZES),
            "passed": chosen is not None,
            "exporters": tried,
        }
        report_path = out / "export.json"
        if chosen is None:
            write_json(report_path, report)
            raise EdgeclsError(
                f"export of {name} failed validation: {why}; report in {report_path}, model.onnx not written"
            )
        fused = _fused_form(tried, chosen)
        if fused:  # validated like the chosen file; written first, so model.onnx never has a stale one beside it
            _describe(tmp_files[fused], spec, ckpt.get("test_accuracy"), fused, opset, validate_parity)
            os.replace(tmp_files[fused], out / FUSED_FILE)
            report["fused_form"] = {"file": FUSED_FILE, "exporter": fused}
        else:  # one from an earlier export would hold the earlier weights
            (out / FUSED_FILE).unlink(missing_ok=True)
        _describe(tmp_files[chosen], spec, ckpt.get("test_accuracy"), chosen, opset, validate_parity)
        os.replace(tmp_files[chosen], out / "model.onnx")
        write_json(report_path, report)
    finally:
        for tmp in tmp_files.values():
            tmp.unlink(missing_ok=True)
    if not validate_parity:
        log.warning("WARNING: --no-validate: model.onnx was NOT checked against the PyTorch model")
    else:
        log.info(f"{name}: {tried[chosen]['summary']}")
    log.info(f"exported {name} with the {chosen} exporter (opset {opset}): {out / 'model.onnx'}; {why}")
    if fused:
        log.info(f"and the {fused} exporter's fused recurrent nodes, for CUDA: {out / FUSED_FILE}")
    if ort:
        _write_ort(out / "model.onnx", spec, real, atol, report, report_path)
    return ExportResult(out / "model.onnx", report_path, chosen, report)


def _try_exporter(
    model: torch.nn.Module,
    spec: ModelSpec,
    exporter: str,
    opset: int,
    tmp: Path,
    atol: float,
    real,
    validate_parity: bool,
    timed: bool,
) -> dict:
    """Export with one exporter into `tmp` and check it: the report entry for export.json."""
    try:
        _export_one(model, spec, exporter, opset, tmp)
        _name_batch_axis(tmp)
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as exc:  # exporter limits, unsupported opsets: reported per exporter
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"exported": False, "error": msg[:500]}
    entry = {"exported": True, "batch_dims": batch_dim_names(str(tmp)), "op_types": op_types(str(tmp))}
    entry["nodes"] = sum(entry["op_types"].values())
    symbolic = entry["batch_dims"] == ["batch", "batch"]
    if validate_parity:
        parity = validate(str(tmp), model, spec.input_shape, atol, real)
        entry.update(passed=parity.passed and symbolic, parity=parity.rows, summary=parity.summary())
        if not symbolic:
            entry["summary"] = f"batch axis not symbolic: {entry['batch_dims']}"
    else:
        entry["passed"] = symbolic
    if timed and entry["passed"]:
        entry["timing"] = time_onnx(str(tmp), spec.input_shape)
    return entry


def _fused_form(tried: dict[str, dict], chosen: str) -> str | None:
    """The exporter whose validated file holds ONNX's fused RNN/GRU/LSTM nodes, where the chosen file unrolled
    the recurrence (the steps form of rnn and birnn): a GPU runs the fused nodes as one cuDNN kernel per
    layer, the unrolled ones as a kernel launch per node and step."""
    if RECURRENT_OPS & set(tried[chosen].get("op_types", {})):
        return None
    for exporter, entry in tried.items():
        if entry.get("passed") and RECURRENT_OPS & set(entry.get("op_types", {})):
            return exporter
    return None


def _versions() -> dict:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edgecls_version": edgecls.__version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }


def _describe(path: Path, spec: ModelSpec, test_accuracy, exporter: str, opset: int, validated: bool) -> None:
    """Write the file's self-description (edgecls.metadata) and producer, and check the file again."""
    pre = spec.preprocess
    info = ModelInfo(model=spec.name, class_names=spec.class_names, input_shape=spec.input_shape,
                     color_mode=pre.color_mode, mean=pre.mean, std=pre.std, scale=pre.scale,
                     test_accuracy=test_accuracy, edgecls_version=edgecls.__version__, exporter=exporter,
                     opset=opset, validated=validated)  # fmt: skip
    onnx_model = onnx.load(str(path))
    write_props(onnx_model, info.to_props(dataset=spec.dataset, input_name=INPUT_NAME, output_name=OUTPUT_NAME))
    onnx_model.producer_name, onnx_model.producer_version = "edgecls", edgecls.__version__
    onnx.save(onnx_model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def _write_ort(onnx_path: Path, spec: ModelSpec, real, atol: float, report: dict, report_path: Path) -> None:
    """model.ort beside model.onnx, checked on the real test images (and a seeded random batch)."""
    from .ort_format import write_ort

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((7, *spec.input_shape)).astype(np.float32)]
    if real is not None:
        inputs.insert(0, real.numpy().astype(np.float32))
    try:
        report["ort"] = write_ort(onnx_path, inputs, atol)
    except EdgeclsError as exc:
        report["ort"] = {"passed": False, "error": str(exc)}
        raise
    finally:
        write_json(report_path, report)
    log.info(
        f"ORT format: {report['ort']['file']} ({report['ort']['bytes']:,} bytes, max |Δlogit| "
        f"{report['ort']['max_abs_diff']:.1e} against model.onnx) and {report['ort']['operators']}"
    )


def _score(timing: dict[str, float]) -> float:
    """Geometric mean of ms per image at batch 1 (latency) and batch 256 (throughput), the two ends the
    runtime's speed is judged at."""
    return math.sqrt(timing["batch_1_ms_per_image"] * timing["batch_256_ms_per_image"])


def _choose(tried: dict[str, dict], requested: str) -> tuple[str | None, str]:
    passed = {k: v for k, v in tried.items() if v.get("passed")}
    if not passed:
        reasons = "; ".join(f"{k}: {v.get('summary') or v.get('error')}" for k, v in tried.items())
        return None, reasons
    if requested != "auto":
        return requested, "requested"
    if len(passed) == 1:
        (only,) = passed
        others = "; ".join(f"{k}: {v.get('summary') or v.get('error')}" for k, v in tried.items() if k != only)
        return only, f"only {only} passed ({others})"
    scores = {k: _score(v["timing"]) for k, v in passed.items()}
    fastest = min(scores, key=scores.get)
    # of those within TIE_MARGIN of the fastest, the smallest graph (the fastest is among them)
    near = [k for k in passed if scores[k] <= scores[fastest] * (1 + TIE_MARGIN)]
    pick = min(near, key=lambda k: (passed[k]["nodes"], scores[k]))
    detail = ", ".join(f"{k} {scores[k]:.4f} ms/img ({passed[k]['nodes']} nodes)" for k in scores)
    rule = "fastest" if pick == fastest else f"within {TIE_MARGIN:.0%} of the fastest and the smallest graph"
    both = " and ".join(passed)
    return pick, f"{both} passed; {pick} is {rule} (geometric mean of batch-1 and batch-256 time: {detail})"
