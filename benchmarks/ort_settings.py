#!/usr/bin/env python
"""ONNX Runtime execution choices for the shipped models, side by side in one run: how the runtime
should run a batch on this CPU, and which session settings pay.

    python benchmarks/ort_settings.py                     # every shipped model, batches 1, 8, 64, 256
    python benchmarks/ort_settings.py --models gru --batches 1,256

Each variant runs the same random batch; the figure is the best round's median ms per batch (min of
rounds) and its speed relative to the runtime's plain session with all threads. Every variant's
logits are compared with that session's (max |Δlogit|), so a setting that changes the answers shows.

Variants: one session with all threads (the baseline) or one thread; the batch split over one
1-thread session per thread (what Classifier.run does for big batches); ORT_ENABLE_EXTENDED (no
layout transforms such as NCHWc); thread spinning off; denormals as zero; dynamic_block_base 4.
Writes ort_settings.md and .json to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecls.errors import EdgeclsError
from edgecls.fileio import ensure_writable_dir, write_report
from edgecls.locations import find_onnx, shipped_names
from edgecls.machine import run_record
from edgecls.metadata import INPUT_NAME, read_info
from edgecls.registry import get_spec
from edgecls.runtime.ort_engine import create_session, session_options
from edgecls.runtime.parallel import BatchParallel
from edgecls.timing import best_round

REPO = Path(__file__).resolve().parents[1]


def session(path: Path, threads: int, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, entries=()):
    """The runtime's own session options (ort_engine.session_options), with one setting changed."""
    opts = session_options(threads)
    opts.graph_optimization_level = level
    for key, value in entries:
        opts.add_session_config_entry(key, value)
    return create_session(str(path), "cpu", options=opts)[0]


def best_round_ms(fn, seconds: float, rounds: int = 5) -> float:
    return 1000 * best_round(fn, seconds, rounds)


def variants(path: Path, threads: int) -> dict:
    def plain(s):
        return lambda x: s.run(None, {INPUT_NAME: x})[0]

    whole = session(path, threads)
    out = {f"1 session x {threads} threads (baseline)": plain(whole), "1 session x 1 thread": plain(session(path, 1))}
    if threads > 1:
        split = BatchParallel(lambda: session(path, 1), INPUT_NAME, threads, whole=whole)
        out[f"always split over {threads} x 1-thread sessions"] = lambda x: split.run(x, count=threads)
        out["the runtime's path"] = split.run  # Classifier.run: split from SPLIT_MIN_ROWS rows per session
    out.update(
        {
            "ORT_ENABLE_EXTENDED (no layout transforms)": plain(
                session(path, threads, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
            ),
            "spinning off": plain(session(path, threads, entries=[("session.intra_op.allow_spinning", "0")])),
            "denormals as zero": plain(session(path, threads, entries=[("session.set_denormal_as_zero", "1")])),
            "dynamic_block_base 4": plain(session(path, threads, entries=[("session.dynamic_block_base", "4")])),
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="shipped", help="comma-separated names, or shipped")
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.5, help="per model, batch and variant")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    try:
        names = (
            shipped_names() if args.models == "shipped" else [get_spec(n.strip()).name for n in args.models.split(",")]
        )
        batches = [int(b) for b in args.batches.split(",")]
        if args.threads < 1 or min(batches) < 1:
            raise EdgeclsError("--threads and --batches must be positive")
        out = ensure_writable_dir(args.out, "--out")
    except (EdgeclsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        path = find_onnx(name)
        runs = variants(path, args.threads)
        shape = read_info(path).input_shape
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
            base_label = next(iter(runs))
            reference = runs[base_label](x)
            row = {"model": name, "batch": batch, "variants": {}}
            for label, fn in runs.items():
                ms = best_round_ms(lambda fn=fn, x=x: fn(x), args.seconds)
                row["variants"][label] = {"ms": ms, "max_abs_diff": float(np.abs(fn(x) - reference).max())}
            base = row["variants"][base_label]["ms"]
            for v in row["variants"].values():
                v["speed_vs_baseline"] = base / v["ms"]
            rows.append(row)
            print(
                f"{name:12} batch {batch:4}: "
                + ", ".join(f"{k.split(' (')[0]} {v['speed_vs_baseline']:.2f}x" for k, v in row["variants"].items()),
                flush=True,
            )
    meta = run_record("benchmarks/ort_settings.py", argv, threads=args.threads, onnxruntime=ort.__version__)
    labels = list(rows[0]["variants"]) if rows else []
    lines = [
        f"ONNX Runtime execution choices, {meta['created']}: `{meta['command']}`",
        f"{meta['cpu']} ({', '.join(meta['isa'])}), onnxruntime {meta['onnxruntime']}. Speed relative to the "
        "first column (best round's median); every variant's logits matched it within the max |Δlogit| shown.",
        "",
        "| model | batch | " + " | ".join(labels) + " | max \\|Δlogit\\| |",
        "| --- | --- | " + " | ".join("---" for _ in labels) + " | --- |",
    ]
    for row in rows:
        v = row["variants"]
        lines.append(
            f"| `{row['model']}` | {row['batch']} | "
            + " | ".join(
                f"{v[k]['ms']:.3f} ms" if i == 0 else f"{v[k]['speed_vs_baseline']:.2f}x" for i, k in enumerate(labels)
            )
            + f" | {max(x['max_abs_diff'] for x in v.values()):.1e} |"
        )
    write_report(out, "ort_settings", "\n".join(lines) + "\n", {**meta, "rows": rows})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
