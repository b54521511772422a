"""Parity of an ONNX file against the eager model: same inputs, logits compared batch size by batch size."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from edgecls.runtime import open_engine
from edgecls.runtime.parallel import available_cpus
from edgecls.timing import time_calls

BATCH_SIZES = (1, 2, 7, 64)
REL_FLOOR = 1e-3  # relative differences are taken against max(|eager logit|, this floor)


@dataclass
class ParityReport:
    atol: float
    rows: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r["max_abs_diff"] <= self.atol and r["argmax_mismatches"] == 0 for r in self.rows)

    @property
    def worst(self) -> dict:
        return max(self.rows, key=lambda r: (r["argmax_mismatches"], r["max_abs_diff"]))

    def summary(self) -> str:
        w = self.worst
        if "error" in w:
            return f"worst at batch {w['batch']} ({w['inputs']} inputs): {w['error']}"
        return (
            f"worst at batch {w['batch']} ({w['inputs']} inputs): max |Δlogit| {w['max_abs_diff']:.3g} "
            f"(atol {self.atol:g}), {w['argmax_mismatches']} argmax mismatches"
        )


def compare_logits(eager: np.ndarray, onnx_out: np.ndarray, atol: float) -> dict:
    diff = np.abs(eager - onnx_out)
    top2 = np.sort(eager, axis=1)[:, -2:] if eager.shape[1] > 1 else np.zeros((len(eager), 2))
    decisive = (top2[:, 1] - top2[:, 0]) > atol  # a top-2 gap within atol is a tie, not a disagreement
    agree = eager.argmax(1) == onnx_out.argmax(1)
    return {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / np.maximum(np.abs(eager), REL_FLOOR)).max()),
        "argmax_agreement": float(agree.mean()),
        "argmax_mismatches": int((~agree & decisive).sum()),
        "near_ties": int((~decisive).sum()),
    }


def validate(
    onnx_path: str,
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    atol: float,
    real_inputs: torch.Tensor | None = None,
    seed: int = 0,
) -> ParityReport:
    """Run ONNX Runtime (CPU provider) and the eager model at every batch size on random inputs and,
    when given, real (already normalized) images."""
    engine = open_engine(onnx_path, "cpu", split=False)
    report = ParityReport(atol)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    sources = [("random", None)] + ([("real", real_inputs)] if real_inputs is not None else [])
    for kind, pool in sources:
        for batch in BATCH_SIZES:
            x = torch.randn(batch, *input_shape, generator=gen) if pool is None else pool[:batch]
            with torch.inference_mode():
                eager = model(x).numpy()
            try:
                got = engine.run(x.numpy())
                error = None if got.shape == eager.shape else f"output shape {list(got.shape)} != {list(eager.shape)}"
            except Exception as exc:  # e.g. a batch size frozen into the graph: ORT refuses other batches
                error = f"ONNX Runtime failed: {str(exc).strip().splitlines()[-1][:300]}"
            if error:
                report.rows.append(
                    {
                        "batch": batch,
                        "inputs": kind,
                        "max_abs_diff": float("inf"),
                        "max_rel_diff": float("inf"),
                        "argmax_agreement": 0.0,
                        "argmax_mismatches": batch,
                        "near_ties": 0,
                        "error": error,
                    }
                )
                continue
            report.rows.append({"batch": len(x), "inputs": kind, **compare_logits(eager, got, atol)})
            if batch == max(BATCH_SIZES) and not error:  # the runtime's batch split must answer the same
                got = open_engine(onnx_path, "cpu", threads=2).run(x.numpy())
                report.rows.append(
                    {
                        "batch": len(x),
                        "inputs": f"{kind}, split over 2 x 1-thread sessions",
                        **compare_logits(eager, got, atol),
                    }
                )
    return report


def op_types(onnx_path: str) -> dict[str, int]:
    model = onnx.load(onnx_path, load_external_data=False)
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def batch_dim_names(onnx_path: str) -> list[str]:
    """The first dimension of the graph input and output: a name when symbolic, else its fixed size."""
    graph = onnx.load(onnx_path, load_external_data=False).graph

    def first(value):
        d = value.type.tensor_type.shape.dim[0]
        return d.dim_param or str(d.dim_value)

    return [first(graph.input[0]), first(graph.output[0])]


def time_onnx(onnx_path: str, input_shape: tuple[int, ...], batches=(1, 256), repeats: int = 15) -> dict[str, float]:
    """Median ms per image at each batch size through the runtime's own CPU execution (the batch split
    included, all this process's cores); used to choose between exporters."""
    engine = open_engine(onnx_path, "cpu", available_cpus())
    out = {}
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)
        times = time_calls(lambda x=x: engine.run(x), seconds=0, min_reps=repeats, warmup=3)
        out[f"batch_{batch}_ms_per_image"] = 1000 * float(np.median(times)) / batch
    return out
