#!/usr/bin/env python
"""Re-export a shipped tanh-RNN model (rnn, birnn) in the "steps" graph form, from the weights in its own
shipped ONNX file (the training checkpoints are not shipped):

    python scripts/steps_form_shipped.py rnn birnn [--write]

1. The model's weights are read back from the shipped file's initializers: the named ones by name, the
   input weights (which the dynamo exporter stored transposed and unnamed) by shape, and where two fit
   (birnn's two directions) the assignment whose eager logits match the shipped file's.
2. `edgecls export --exporter steps` runs on them (the same parity validation against eager PyTorch, on
   real test images).
3. The new file is compared with the shipped one on the full test split: same accuracy, argmax agreement,
   max |Δlogit|. With --write it replaces the shipped model.onnx and its card's export and file fields.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edgecls import checkpoint as ckpt_io
from edgecls.data import load_for_spec, normalize
from edgecls.export import export_model
from edgecls.locations import shipped_onnx
from edgecls.metadata import read_props
from edgecls.registry import get_spec
from edgecls.runtime import Classifier


def weights_from_onnx(name: str, path: Path) -> dict[str, torch.Tensor]:
    spec = get_spec(name)
    model = spec.build().eval()
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(str(path)).graph.initializer}
    state = {}
    missing = []
    for key, value in model.state_dict().items():
        if key in inits and inits[key].shape == value.shape:
            state[key] = inits[key]
        else:
            missing.append(key)
    # the input weights, stored transposed under generated names: every assignment of fitting tensors
    unnamed = [k for k in inits if k not in model.state_dict()]
    options = [[u for u in unnamed if inits[u].t().shape == model.state_dict()[m].shape] for m in missing]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((16, *spec.input_shape)).astype(np.float32))
    expected = Classifier(path, "cpu", threads=1).run(x.numpy())
    for choice in itertools.product(*options):
        if len(set(choice)) < len(choice):
            continue
        trial = {**state, **{m: inits[u].t().contiguous() for m, u in zip(missing, choice)}}
        model.load_state_dict(trial)
        with torch.inference_mode():
            if np.abs(model(x).numpy() - expected).max() <= spec.atol:
                return trial
    raise SystemExit(f"{name}: no assignment of {path}'s initializers reproduces its logits")


def against_shipped(a: np.ndarray, b: np.ndarray, y: np.ndarray, form: str) -> dict:
    """The re-exported file's logits `b` against the shipped file's `a` on the test split (labels `y`)."""
    return {
        "images": len(y),
        "accuracy_shipped_pct": float((a.argmax(1) == y).mean() * 100),
        f"accuracy_{form}_pct": float((b.argmax(1) == y).mean() * 100),
        "argmax_agreement_pct": float((a.argmax(1) == b.argmax(1)).mean() * 100),
        "max_abs_logit_diff_vs_shipped": float(np.abs(a - b).max()),
    }


def export_from_weights(name: str, state: dict, test_accuracy: float, folder: Path, exporter: str):
    """`edgecls export` (its parity validation included) of a checkpoint written from `state` into `folder`."""
    ckpt = folder / name / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt_io.save({"format": ckpt_io.FORMAT, "model": name, "state_dict": state, "test_accuracy": test_accuracy}, ckpt)
    return export_model(name, artifacts=folder, checkpoint=ckpt, exporter=exporter)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", choices=["rnn", "birnn"])
    parser.add_argument("--write", action="store_true", help="replace the shipped model.onnx and update its card")
    args = parser.parse_args(argv)
    for name in args.models:
        spec, shipped = get_spec(name), shipped_onnx(name)
        state = weights_from_onnx(name, shipped)
        props = read_props(onnx.load(str(shipped)))
        with tempfile.TemporaryDirectory() as tmp:
            result = export_from_weights(name, state, float(props["test_accuracy"]), Path(tmp), "steps")
            test = load_for_spec(spec, "test", download=False)
            x, y = normalize(test.images(), spec.preprocess).numpy(), test.labels.numpy()
            old, new = Classifier(shipped, "cpu"), Classifier(result.onnx_path, "cpu")
            a = np.concatenate([old.run(x[i : i + 512]) for i in range(0, len(x), 512)])
            b = np.concatenate([new.run(x[i : i + 512]) for i in range(0, len(x), 512)])
            model = spec.build().eval()
            model.load_state_dict(state)
            with torch.inference_mode():
                eager = torch.cat([model(torch.from_numpy(x[i : i + 512])) for i in range(0, len(x), 512)]).numpy()
            summary = {
                **against_shipped(a, b, y, "steps"),
                "max_abs_logit_diff_vs_eager": float(np.abs(eager - b).max()),
                "nodes": result.report["exporters"]["steps"]["nodes"],
            }
            print(name, json.dumps(summary))
            if summary["accuracy_shipped_pct"] != summary["accuracy_steps_pct"]:
                print(f"{name}: accuracy differs; not written", file=sys.stderr)
                return 1
            if args.write:
                data = result.onnx_path.read_bytes()
                shipped.write_bytes(data)
                card_path = shipped.parent / "model_card.json"
                card = json.loads(card_path.read_text())
                card["export"] = {
                    "command": f"python scripts/steps_form_shipped.py {name} --write",
                    "exporter": "steps",
                    "opset": result.report["opset"],
                    "why": "the steps form (export/steps_form.py), re-exported on "
                    f"{date.today().isoformat()} from the weights of the dynamo-exported file it replaces "
                    f"({summary['nodes']} nodes; same accuracy on the {len(y):,} test images, argmax agreement "
                    f"{summary['argmax_agreement_pct']:.2f} %, max |Δlogit| "
                    f"{summary['max_abs_logit_diff_vs_shipped']:.1e} against it)",
                }
                card["onnx"] = {"file": "model.onnx", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                card["parity"]["max_abs_logit_diff"] = summary["max_abs_logit_diff_vs_eager"]
                card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
                print(f"wrote {shipped} and {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
