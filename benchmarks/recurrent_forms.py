#!/usr/bin/env python
"""Graph forms of the recurrent models on ONNX Runtime's CPU provider, against eager PyTorch:

    python benchmarks/recurrent_forms.py [--models rnn,birnn,gru,lstm] [--threads 2] [--out benchmarks/results]

For each model (fresh weights: they do not change the timing), every form it can take:
- torchscript: torch.onnx's TorchScript exporter, ONNX's fused RNN/GRU/LSTM nodes;
- dynamo: torch.onnx's dynamo exporter (unrolls nn.RNN; keeps GRU/LSTM nodes);
- steps: edgecls's steps form for the tanh RNNs (export/steps_form.py);
- unrolled: GRU and LSTM written out step by step (this file's UnrolledCell), to measure whether an unrolled
  form could beat the fused nodes (it is not an exporter edgecls offers).
Each is timed at batch 1 and 256 on a 1-thread and a `--threads` session, warmed up, the median of
alternating rounds, beside eager PyTorch with `--threads` threads. Writes recurrent_forms.json (its docs
page is generated from it: scripts/results_pages.py). With `--engine openvino` the forms run on OpenVINO
instead (`--threads` threads, fp32 and, where the CPU has it, bf16), whose graph compiler turns the fused
nodes into its own sequence ops: recurrent_forms-openvino.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgecls.export.onnx_export import _export_one, _name_batch_axis
from edgecls.fileio import ensure_writable_dir, write_json
from edgecls.machine import run_record
from edgecls.models import rows_as_sequence
from edgecls.registry import get_spec
from edgecls.runtime.ort_engine import session_options
from edgecls.timing import time_calls

ROUNDS = 3


class UnrolledCell(nn.Module):
    """A RowRNN's GRU or LSTM written out step by step (all steps' input projections in one matmul)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rnn = model, model.rnn
        self.kind = type(model.rnn).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, seq = self.rnn, rows_as_sequence(x)
        for layer in range(r.num_layers):
            w_hh, b_hh = getattr(r, f"weight_hh_l{layer}"), getattr(r, f"bias_hh_l{layer}")
            xp = torch.matmul(seq, getattr(r, f"weight_ih_l{layer}").t()) + getattr(r, f"bias_ih_l{layer}")
            h = torch.zeros_like(xp[:, 0, : r.hidden_size])
            c, outs = torch.zeros_like(h), []
            for t in range(seq.shape[1]):
                gh, xt = torch.matmul(h, w_hh.t()) + b_hh, xp[:, t]
                if self.kind == "GRU":
                    xr, xz, xn = xt.chunk(3, 1)
                    hr, hz, hn = gh.chunk(3, 1)
                    z = torch.sigmoid(xz + hz)
                    n = torch.tanh(xn + torch.sigmoid(xr + hr) * hn)
                    h = n + z * (h - n)
                else:
                    i, f, g, o = (xt + gh).chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            seq = torch.stack(outs, 1)
        return self.model.head(seq[:, -1])


def forms(name: str, model: nn.Module, folder: Path) -> dict[str, Path]:
    spec, out = get_spec(name), {}
    for form in ("torchscript", "dynamo", "steps", "unrolled"):
        path = folder / f"{name}.{form}.onnx"
        if form == "unrolled":
            if not isinstance(getattr(model, "rnn", None), (nn.GRU, nn.LSTM)) or not hasattr(model, "dropout"):
                continue
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(UnrolledCell(model), (torch.randn(2, *spec.input_shape),), str(path), dynamo=False,
                                  input_names=["input"], output_names=["logits"], opset_version=18,
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
        else:
            try:
                _export_one(model, spec, form, 18, path)
            except ValueError:  # the steps form applies to the tanh RNNs only
                continue
            _name_batch_axis(path)
        out[form] = path
    return out


class _Session:
    """An OpenVINO engine with ORT's session.run signature, so both engines time the same way."""

    def __init__(self, engine):
        self.engine = engine

    def run(self, _outputs, feed):
        return [self.engine.run(feed["input"])]


def engines(files: dict[str, Path], engine: str, threads: int) -> dict:
    """ "<form> <threads>t[ <precision>]" -> a session with ORT's run(None, feed) for each form."""
    if engine == "ort":
        cpu = ["CPUExecutionProvider"]
        return {f"{form} {t}t": ort.InferenceSession(str(p), session_options(t), providers=cpu)
                for form, p in files.items() for t in sorted({1, threads})}  # fmt: skip
    from edgecls.errors import UsageError
    from edgecls.runtime.openvino_engine import OpenVinoEngine

    out = {}
    for form, path in files.items():
        for precision in ("fp32", "bf16"):
            try:
                engine = OpenVinoEngine(path, threads=threads, precision=precision)
                out[f"{form} {threads}t {precision}"] = _Session(engine)
            except UsageError as exc:  # bf16 on a CPU without it: left out, said
                print(f"{form} {precision}: {exc}", file=sys.stderr)
    return out


def _openvino_version() -> str:
    import openvino

    return openvino.get_version()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="rnn,birnn,gru,lstm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", choices=["ort", "openvino"], default="ort")
    parser.add_argument("--seconds", type=float, default=0.4, help="per side, round and batch size")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            spec = get_spec(name)
            torch.manual_seed(0)
            model = spec.build().eval()
            files = forms(name, model, Path(tmp))
            sessions = engines(files, args.engine, args.threads)
            for batch in (1, 256):
                x = torch.randn(batch, *spec.input_shape)
                feed = {"input": x.numpy()}
                with torch.inference_mode():
                    expected = model(x).numpy()

                    def eager(x=x, model=model):
                        return model(x)

                sides = {"eager": eager, **{k: (lambda s=s, f=feed: s.run(None, f)) for k, s in sessions.items()}}
                diffs = {k: float(np.abs(s.run(None, feed)[0] - expected).max()) for k, s in sessions.items()}
                times = {k: [] for k in sides}
                for fn in sides.values():
                    time_calls(fn, 0.1, min_reps=3)
                for _ in range(ROUNDS):
                    for k, fn in sides.items():
                        with torch.inference_mode():
                            times[k] += time_calls(fn, args.seconds / ROUNDS, min_reps=3)
                ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
                for k in sessions:
                    form, threads, *precision = k.split()
                    rows.append({"model": name, "batch": batch, "form": form, "threads": int(threads[:-1]),
                                 **({"precision": precision[0]} if precision else {}),
                                 "ms": ms[k], "eager_ms": ms["eager"], "vs_eager": ms["eager"] / ms[k],
                                 "max_abs_diff_vs_eager": diffs[k]})  # fmt: skip
                line = "  ".join(f"{k} {ms[k]:.3f} ms ({ms['eager'] / ms[k]:.2f}x)" for k in sessions)
                print(f"{name} batch {batch}: eager {ms['eager']:.3f} ms; {line}", flush=True)
    versions = {"onnxruntime": ort.__version__} if args.engine == "ort" else {"openvino": _openvino_version()}
    report = run_record("benchmarks/recurrent_forms.py", argv, threads=args.threads, **versions,
                        torch=torch.__version__, rows=rows)  # fmt: skip
    out = ensure_writable_dir(args.out, "--out")
    name = "recurrent_forms.json" if args.engine == "ort" else "recurrent_forms-openvino.json"
    write_json(out / name, report)
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
