"""`edgecls evaluate`: the eager checkpoint and the ONNX model through the runtime, on the real test
split, side by side: accuracy, argmax agreement, max |Δlogit| and speed."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgecls import checkpoint as ckpt_io
from edgecls.data import evenly_spaced, load_for_spec
from edgecls.errors import EdgeclsError, UsageError
from edgecls.fileio import write_json
from edgecls.locations import RUNS
from edgecls.runtime import Classifier
from edgecls.runtime.engine import ACCURACY_GATE_POINTS
from edgecls.timing import timed
from edgecls.train.trainer import predict_logits

from .choose import resolve

log = logging.getLogger(__name__)
ACCURACY_BAR_PP = 0.01  # fp32: accuracy may differ by at most 0.01 percentage points (and logits by atol)
# bf16, fp16, int8: accuracy within the one reduced-precision gate; their logits are not held to atol
REDUCED_PRECISION_BAR_PP = ACCURACY_GATE_POINTS


def evaluate(
    name: str,
    *,
    artifacts: str | Path = RUNS,
    provider: str = "auto",
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 256,
    threads: int | None = None,
    precision: str = "fp32",
) -> dict:
    """Compare and write <artifacts>/<name>/parity.json; raises EdgeclsError when the parity bar is missed."""
    out = Path(artifacts) / name
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    ckpt = ckpt_io.load(out / "checkpoint.pt", name)
    spec, model = ckpt_io.model_from_checkpoint(ckpt)
    provider, precision = resolve(out / "model.onnx", provider, precision, threads, batch_size, data_dir)
    classifier = Classifier(out / "model.onnx", provider, threads, precision=precision)
    if classifier.info.model != name:
        raise UsageError(f"{out / 'model.onnx'} is a {classifier.info.model!r} model, not {name!r}")
    test = load_for_spec(spec, "test", data_dir)
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit must be at least 1 (got {limit})")
        test = test.subset(evenly_spaced(len(test), limit))
    else:
        test = test.subset(torch.arange(len(test)))  # decode image files once, outside the timed runs
    labels = test.labels.numpy()

    eager_s, eager = timed(lambda: predict_logits(model, test, spec, torch.device("cpu"), batch_size).numpy())
    uint8 = test.images().numpy()
    onnx_s, ort_logits = timed(
        lambda: np.concatenate([classifier.logits(uint8[i : i + batch_size]) for i in range(0, len(uint8), batch_size)])
    )

    acc_eager = float((eager.argmax(1) == labels).mean() * 100)
    acc_onnx = float((ort_logits.argmax(1) == labels).mean() * 100)
    max_diff = float(np.abs(eager - ort_logits).max())
    result = {
        "model": name,
        "images": int(len(labels)),
        "data_source": test.source,
        "provider": classifier.providers[0],
        "accuracy_eager_pct": acc_eager,
        "accuracy_onnx_pct": acc_onnx,
        "accuracy_diff_pp": abs(acc_eager - acc_onnx),
        "argmax_agreement_pct": float((eager.argmax(1) == ort_logits.argmax(1)).mean() * 100),
        "max_abs_logit_diff": max_diff,
        "atol": spec.atol,
        "eager_images_per_s": len(labels) / eager_s,
        "onnx_images_per_s": len(labels) / onnx_s,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    result["precision"] = precision
    if precision == "fp32":
        result["passed"] = result["accuracy_diff_pp"] <= ACCURACY_BAR_PP and max_diff <= spec.atol
        bar = f"accuracy within {ACCURACY_BAR_PP} pp and max |Δlogit| <= atol {spec.atol:g}"
    else:
        result["passed"] = result["accuracy_diff_pp"] <= REDUCED_PRECISION_BAR_PP
        bar = f"{precision}: accuracy within {REDUCED_PRECISION_BAR_PP} pp (logits are not held to atol)"
    result["bar"] = bar
    write_json(out / "parity.json", result)
    log.info(
        f"{'':10}{'accuracy':>10}{'images/s':>12}\n{'pytorch':10}{acc_eager:9.2f}%{result['eager_images_per_s']:12.0f}\n"
        f"{'onnx':10}{acc_onnx:9.2f}%{result['onnx_images_per_s']:12.0f}  ({classifier.providers[0]})\n"
        f"{len(labels)} test images; argmax agreement {result['argmax_agreement_pct']:.2f}%; "
        f"max |Δlogit| {max_diff:.3g} (atol {spec.atol:g}); report {out / 'parity.json'}"
    )
    if not result["passed"]:
        raise EdgeclsError(
            f"parity bar missed for {name}: accuracy differs by {result['accuracy_diff_pp']:.3f} pp, "
            f"max |Δlogit| {max_diff:.3g}; the bar: {bar}"
        )
    return result
