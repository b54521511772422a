#!/usr/bin/env python
"""Accuracy benchmark: train, export and evaluate every model with its default settings on the full
real data, and write the results table (markdown + JSON).

    python benchmarks/accuracy.py                       # all models, runs in runs/accuracy/
    python benchmarks/accuracy.py --models gru,rnn --reuse --ship

--reuse keeps a finished run whose settings are the model's current defaults on the full data (and
resumes an unfinished one); anything else is trained afresh. --ship copies each model that beats its
report into artifacts/<name>/ with a model card; only full-data runs with default settings ship.
--epochs/--limit make a quick (non-shippable) run for tests.

The results table keeps one row per model: a run of some models replaces their rows and keeps the
others' (each row names the command and date that measured it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from edgecls import __version__
from edgecls import checkpoint as ckpt_io
from edgecls.commands.evaluate import evaluate
from edgecls.errors import EdgeclsError
from edgecls.export import export_model
from edgecls.fileio import atomic_path, ensure_writable_dir, write_json, write_report
from edgecls.locations import MODEL_CARD, shipped_root
from edgecls.machine import cpu_name
from edgecls.registry import all_specs, get_spec, model_names
from edgecls.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]


def run_state(run: Path, spec, cfg: TrainConfig) -> str:
    """'finished', 'unfinished' (resumable with these settings) or 'other' (absent or other settings)."""
    try:
        ckpt = ckpt_io.load(run / "checkpoint.pt", cfg.model)
    except EdgeclsError:
        ckpt = None
    same_model = ckpt is not None and ckpt.get("builder_kwargs", spec.builder_kwargs) == spec.builder_kwargs
    if same_model and _settings(ckpt.get("hparams")) == asdict(cfg) and ckpt.get("test_accuracy") is not None:
        return "finished"
    try:
        state = ckpt_io.load(run / "resume.pt", cfg.model, kind="resume state")
    except EdgeclsError:
        return "other"
    return "unfinished" if _settings(state["config"]) == asdict(cfg) else "other"


def _settings(saved: dict | None) -> dict | None:
    """Saved settings with today's defaults for fields added since (so older runs still compare)."""
    try:
        return asdict(TrainConfig(**saved))
    except TypeError:
        return None


def bench_one(name: str, runs: Path, args) -> dict:
    spec = get_spec(name)
    overrides = {"epochs": args.epochs, "limit": args.limit}
    cfg = TrainConfig.from_spec(spec, **overrides)
    run = runs / name
    state = run_state(run, spec, cfg) if args.reuse else "other"
    if state != "finished":
        train(
            name, artifacts=runs, data_dir=args.data_dir, device=args.device, resume=state == "unfinished", **overrides
        )
    ckpt = ckpt_io.load(run / "checkpoint.pt", name)
    exported = export_model(name, artifacts=runs, data_dir=args.data_dir)
    parity = evaluate(name, artifacts=runs, provider="cpu", data_dir=args.data_dir, threads=args.threads)
    history = ckpt["history"]
    full_defaults = args.epochs is None and args.limit is None
    return {
        "model": name,
        "dataset": spec.dataset,
        "test_images": parity["images"],
        "accuracy_eager_pct": parity["accuracy_eager_pct"],
        "accuracy_onnx_pct": parity["accuracy_onnx_pct"],
        "accuracy_diff_pp": parity["accuracy_diff_pp"],
        "argmax_agreement_pct": parity["argmax_agreement_pct"],
        "max_abs_logit_diff": parity["max_abs_logit_diff"],
        "atol": parity["atol"],
        "parity_passed": parity["passed"],
        "epochs": len(history),
        "best_epoch": ckpt["best_epoch"],
        "train_seconds": sum(h["seconds"] for h in history),
        "train_device": ckpt.get("device", "cpu"),
        "train_threads": ckpt.get("torch_threads"),
        "hparams": ckpt["hparams"],
        "full_data_defaults": full_defaults,
        "exporter": exported.exporter,
        "opset": exported.report["opset"],
        "export_why": exported.report["why"],
        "report": spec.report,
        "bar_pct": spec.bar_pct,
        "beats_report": parity["accuracy_onnx_pct"] > spec.bar_pct and parity["accuracy_eager_pct"] > spec.bar_pct,
        "run": str(run),
    }


def merge_rows(previous: Path, rows: list[dict]) -> list[dict]:
    """Earlier rows of models not run now, plus this run's rows, in registry order."""
    try:
        doc = json.loads(previous.read_text())
        old = [{"measured": doc.get("created"), "command": doc.get("command"), **r} for r in doc["rows"]]
    except (OSError, ValueError, KeyError, TypeError):
        old = []
    merged = {r["model"]: r for r in old if r.get("model") in model_names()}
    merged.update({r["model"]: r for r in rows})
    return sorted(merged.values(), key=lambda r: model_names().index(r["model"]))


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Accuracy benchmark, {meta['created']}: `{meta['command']}`",
        f"Evaluation: {meta['eval_hardware']}. Training: see the device column (threads where recorded).",
        "",
        "| model | data (test images) | eager | ONNX | Δ pp | argmax agree | max \\|Δlogit\\| | epochs (best) "
        "| train time | device | exporter | must beat | beats |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        threads = f", {r['train_threads']} thr" if r["train_threads"] else ""
        lines.append(
            f"| `{r['model']}` | {r['dataset']} ({r['test_images']:,}) | {r['accuracy_eager_pct']:.2f} % "
            f"| {r['accuracy_onnx_pct']:.2f} % | {r['accuracy_diff_pp']:.2f} | {r['argmax_agreement_pct']:.2f} % "
            f"| {r['max_abs_logit_diff']:.1e} | {r['epochs']} ({r['best_epoch']}) | {r['train_seconds'] / 60:.1f} min "
            f"| {r['train_device']}{threads} | {r['exporter']} | {r['bar_pct']:.2f} % "
            f"| {'yes' if r['beats_report'] else '**no**'} |"
        )
    earlier = sorted(
        {(r.get("measured"), r.get("command")) for r in rows if r.get("measured") != meta["created"]}, key=str
    )
    for when, cmd in earlier:
        kept = ", ".join(f"`{r['model']}`" for r in rows if (r.get("measured"), r.get("command")) == (when, cmd))
        lines += ["", f"Kept from an earlier run ({when}: `{cmd}`): {kept}."]
    if not all(r["full_data_defaults"] for r in rows):
        lines += ["", "Quick run (--epochs/--limit given): not the models' defaults, not comparable to the reports."]
    return "\n".join(lines) + "\n"


def ship(row: dict, runs: Path, dest_root: Path) -> Path:
    """Copy a run's model.onnx into <dest_root>/<model>/ with its model card (both renamed into place)."""
    spec = get_spec(row["model"])
    src = runs / row["model"] / "model.onnx"
    dest = dest_root / row["model"]
    dest.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    card = {
        "model": row["model"],
        "summary": spec.summary,
        "architecture": spec.builder_kwargs,
        "dataset": row["dataset"],
        "test_images": row["test_images"],
        "classes": list(spec.class_names),
        "accuracy": {
            "eager_pct": row["accuracy_eager_pct"],
            "onnx_pct": row["accuracy_onnx_pct"],
            "must_beat_pct": row["bar_pct"],
            "report": row["report"],
        },
        "parity": {k: row[k] for k in ("accuracy_diff_pp", "argmax_agreement_pct", "max_abs_logit_diff", "atol")},
        "training": {
            "command": f"edgecls train --model {row['model']}",
            "hparams": row["hparams"],
            "epochs": row["epochs"],
            "best_epoch": row["best_epoch"],
            "seconds": round(row["train_seconds"]),
            "device": row["train_device"],
            "threads": row["train_threads"],
        },
        "export": {
            "command": f"edgecls export --model {row['model']}",
            "exporter": row["exporter"],
            "opset": row["opset"],
            "why": row["export_why"],
        },
        "onnx": {"file": "model.onnx", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        "created": datetime.now(timezone.utc).date().isoformat(),
        "edgecls_version": __version__,
    }
    with atomic_path(dest / "model.onnx") as tmp:
        tmp.write_bytes(data)
    write_json(dest / MODEL_CARD, card)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="all", help="comma-separated names or all")
    parser.add_argument("--runs", default="runs/accuracy", help="where the runs are trained [runs/accuracy]")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder of the results table")
    parser.add_argument("--reuse", action="store_true", help="keep finished default runs, resume unfinished ones")
    parser.add_argument("--ship", action="store_true", help="copy models that beat their report into artifacts/")
    parser.add_argument("--ship-to", default=None, help=argparse.SUPPRESS)  # tests: another shipped root
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for evaluation")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="quick runs only: not shippable")
    parser.add_argument("--limit", type=int, default=None, help="quick runs only: not shippable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # train/export progress
    try:
        names = (
            [s.name for s in all_specs()]
            if args.models == "all"
            else [get_spec(n.strip()).name for n in args.models.split(",")]
        )
        if args.ship and (args.epochs is not None or args.limit is not None):
            raise EdgeclsError("--ship needs full-data runs with default settings; drop --epochs/--limit")
        runs, out = Path(args.runs), ensure_writable_dir(args.out, "--out")
        t0 = time.time()
        rows = [bench_one(n, runs, args) for n in names]
    except EdgeclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "eval_hardware": f"{cpu_name()}, ONNX Runtime CPU provider, torch {torch.__version__}",
        "wall_seconds": round(time.time() - t0),
        "edgecls_version": __version__,
    }
    for row in rows:
        row.update(measured=meta["created"], command=meta["command"])
    table = merge_rows(out / "accuracy.json", rows)
    write_report(out, "accuracy", markdown(table, meta), {**meta, "rows": table})
    print(markdown(table, meta))
    if args.ship:
        dest_root = Path(args.ship_to) if args.ship_to else shipped_root()
        for row in rows:
            if row["beats_report"] and row["parity_passed"]:
                print(f"shipped {row['model']} to {ship(row, runs, dest_root)}")
            else:
                print(
                    f"NOT shipped {row['model']}: {row['accuracy_onnx_pct']:.2f} % does not beat "
                    f"{row['bar_pct']:.2f} % or parity failed"
                )
    missed = [r["model"] for r in rows if not (r["beats_report"] and r["parity_passed"])]
    if missed:
        print(f"missed the bar or parity: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
