#!/usr/bin/env python
"""Write model.fused.onnx beside a shipped steps-form model (rnn, birnn): the same weights as ONNX RNN
nodes, the graph form ORT's CUDA provider runs on cuDNN (engine.PREFERRED_FORMS). `edgecls export` writes
it itself; the shipped models have no checkpoint, so this re-exports them from their own files:

    python scripts/fused_form_shipped.py rnn birnn [--write]

1. The weights are read back from the steps-form file's initializers (export/steps_form.py names them):
   w_ih_t / w_hh_t are nn.RNN's weights transposed, bias is b_ih + b_hh (given to b_ih, with b_hh zero: the
   same sums), the rest is the wrapped model's own parameters under "model.".
2. `edgecls export --exporter torchscript` runs on them (parity validation against eager PyTorch).
3. The new file is compared with the shipped one on the full test split: same accuracy, argmax agreement,
   max |Δlogit|. With --write it is written beside model.onnx and recorded in the model card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from steps_form_shipped import against_shipped, export_from_weights  # scripts/, beside this file

from edgecls.data import load_for_spec, normalize
from edgecls.export.onnx_export import FUSED_FILE
from edgecls.locations import shipped_onnx
from edgecls.metadata import read_props
from edgecls.registry import get_spec
from edgecls.runtime import Classifier


def weights_from_steps_form(name: str, path: Path) -> dict[str, torch.Tensor]:
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(str(path)).graph.initializer}
    state = {}
    for key, value in get_spec(name).build().state_dict().items():
        if key.startswith("rnn."):  # weight_ih_l0, bias_hh_l0_reverse, ...
            kind, suffix = key.removeprefix("rnn.").split("_l")
            source = {"weight_ih": "w_ih_t", "weight_hh": "w_hh_t", "bias_ih": "bias"}.get(kind)
            tensor = torch.zeros_like(value) if kind == "bias_hh" else inits[f"{source}{suffix}"]
            state[key] = tensor.t().contiguous() if kind.startswith("weight") else tensor
        else:
            state[key] = inits[f"model.{key}"]
        if state[key].shape != value.shape:
            raise SystemExit(f"{name}: {key} is {tuple(state[key].shape)} in {path}, not {tuple(value.shape)}")
    return state


def logits(clf: Classifier, x: np.ndarray) -> np.ndarray:
    return np.concatenate([clf.run(x[i : i + 512]) for i in range(0, len(x), 512)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", choices=["rnn", "birnn"])
    parser.add_argument("--write", action="store_true", help=f"write {FUSED_FILE} beside model.onnx, update the card")
    args = parser.parse_args(argv)
    for name in args.models:
        spec, shipped = get_spec(name), shipped_onnx(name)
        props = read_props(onnx.load(str(shipped)))
        if props.get("exporter") != "steps":
            raise SystemExit(f"{name}: {shipped} is not in the steps form (exporter {props.get('exporter')!r})")
        state = weights_from_steps_form(name, shipped)
        with tempfile.TemporaryDirectory() as tmp:
            result = export_from_weights(name, state, float(props["test_accuracy"]), Path(tmp), "torchscript")
            test = load_for_spec(spec, "test", download=False)
            x, y = normalize(test.images(), spec.preprocess).numpy(), test.labels.numpy()
            a, b = logits(Classifier(shipped, "cpu"), x), logits(Classifier(result.onnx_path, "cpu"), x)
            ops = {n.op_type for n in onnx.load(str(result.onnx_path)).graph.node}
            summary = {
                **against_shipped(a, b, y, "fused"),
                "nodes": result.report["exporters"]["torchscript"]["nodes"],
            }
            print(name, json.dumps(summary))
            if "RNN" not in ops or summary["accuracy_shipped_pct"] != summary["accuracy_fused_pct"]:
                print(f"{name}: no RNN node, or the accuracy differs; not written", file=sys.stderr)
                return 1
            if args.write:
                data = result.onnx_path.read_bytes()
                shipped.with_name(FUSED_FILE).write_bytes(data)
                card_path = shipped.parent / "model_card.json"
                card = json.loads(card_path.read_text())
                card["fused_form"] = {
                    "file": FUSED_FILE,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "command": f"python scripts/fused_form_shipped.py {name} --write",
                    "exporter": "torchscript",
                    "why": "ONNX RNN nodes for ORT's CUDA provider (cuDNN), exported on "
                    f"{date.today().isoformat()} from the weights in model.onnx ({summary['nodes']} nodes; same "
                    f"accuracy on the {len(y):,} test images, argmax agreement {summary['argmax_agreement_pct']:.2f} "
                    f"%, max |Δlogit| {summary['max_abs_logit_diff_vs_shipped']:.1e} against model.onnx)",
                }
                card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
                print(f"wrote {shipped.with_name(FUSED_FILE)} and {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
