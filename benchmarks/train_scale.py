#!/usr/bin/env python
"""Training images/s of torchrun data parallelism against one process, side by side on this machine:

    python benchmarks/train_scale.py [--model gru] [--limit 20000] [--epochs 2] [--procs 2]

Runs `edgecls train` on real data four ways, at the same global batch size (the model's):
1. one process with torch's default thread count (one per core): what a plain `edgecls train` does;
2. one process, one thread;
3. `torchrun --standalone --nproc-per-node=P`: P processes, cores/P threads each (DDP, gloo);
4. the ceiling of 3: P independent one-thread processes at batch/P running at the same time, with no
   gradient exchange at all (the sum of their rates).
The rate of each is the last epoch's images/s from history.json. Aim: 3 >= 1.6x 1.
Writes train_scale.md and .json to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIM = 1.6


def rate(run: Path, model: str) -> float:
    return json.loads((run / model / "history.json").read_text())["history"][-1]["images_per_s"]


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def done(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(proc.args[:8])} ... failed:\n{out[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gru")
    parser.add_argument("--limit", type=int, default=20000, help="training images (a seeded subset)")
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch's rate is reported")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from edgecls.errors import EdgeclsError
    from edgecls.fileio import ensure_writable_dir, write_report
    from edgecls.machine import cpu_name
    from edgecls.registry import get_spec

    try:
        spec = get_spec(args.model)
        if args.procs < 2 or args.epochs < 1 or args.limit < 20:
            raise EdgeclsError("--procs must be at least 2, --epochs at least 1, --limit at least 20")
        batch = spec.hparams["batch_size"]
        if batch % args.procs:
            raise EdgeclsError(f"{args.model}'s batch size {batch} does not split over {args.procs} processes")
        out_dir = ensure_writable_dir(args.out, "--out")
    except EdgeclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0))
    # A CPU benchmark: on a GPU machine --device auto would put every rank on a GPU (or refuse 2 ranks on 1).
    common = ["--model", args.model, "--epochs", str(args.epochs), "--limit", str(args.limit), "--device", "cpu"]
    if args.data_dir:
        common += ["--data-dir", args.data_dir]
    train = [sys.executable, "-m", "edgecls", "train", *common]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def one(name: str, extra: list[str], threads: int) -> None:
            done(start([*train, *extra, "--artifacts", str(tmp / name)]))
            rows.append(
                {"run": name, "processes": 1, "threads_each": threads, "images_per_s": rate(tmp / name, args.model)}
            )
            print(f"{name}: {rows[-1]['images_per_s']:.0f} img/s", flush=True)

        one("one process", [], cores)
        one("one process, 1 thread", ["--threads", "1"], 1)
        done(
            start(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc-per-node={args.procs}",
                    "-m",
                    "edgecls",
                    "train",
                    *common,
                    "--artifacts",
                    str(tmp / "ddp"),
                ]
            )
        )
        rows.append(
            {
                "run": f"torchrun, {args.procs} processes (DDP, gloo)",
                "processes": args.procs,
                "threads_each": max(1, cores // args.procs),
                "images_per_s": rate(tmp / "ddp", args.model),
            }
        )
        print(f"{rows[-1]['run']}: {rows[-1]['images_per_s']:.0f} img/s", flush=True)
        procs = [
            start(
                [
                    *train,
                    "--threads",
                    "1",
                    "--batch-size",
                    str(batch // args.procs),
                    "--seed",
                    str(i),
                    "--artifacts",
                    str(tmp / f"solo{i}"),
                ]
            )
            for i in range(args.procs)
        ]
        for p in procs:
            done(p)
        ceiling = sum(rate(tmp / f"solo{i}", args.model) for i in range(args.procs))
        rows.append(
            {
                "run": f"ceiling: {args.procs} independent 1-thread processes at batch {batch // args.procs}",
                "processes": args.procs,
                "threads_each": 1,
                "images_per_s": ceiling,
            }
        )
        print(f"{rows[-1]['run']}: {ceiling:.0f} img/s (sum)", flush=True)

    base, single, ddp = (r["images_per_s"] for r in rows[:3])
    result = {
        "machine": f"{cpu_name()}, {cores} cores",
        "model": args.model,
        "global_batch": batch,
        "limit": args.limit,
        "epochs": args.epochs,
        "command": "python benchmarks/train_scale.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
        "ddp_vs_one_process": ddp / base,
        "ddp_vs_one_thread": ddp / single,
        "ddp_of_ceiling": ddp / ceiling,
        "ceiling_vs_one_process": ceiling / base,
        "aim": AIM,
    }
    lines = [
        f"# Training throughput: torchrun DDP against one process ({args.model})",
        "",
        f"{result['machine']}; global batch {batch}; {args.limit} training images; rate of epoch "
        f"{args.epochs}; `{result['command'].strip()}`, {result['date']}.",
        "",
        "| run | processes x threads | images/s | vs one process |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['run']} | {r['processes']} x {r['threads_each']} | {r['images_per_s']:.0f} | "
        f"{r['images_per_s'] / base:.2f}x |"
        for r in rows
    ]
    verdict = (
        "met"
        if ddp / base >= AIM
        else (
            f"missed; bounded here by the ceiling row ({ceiling / base:.2f}x): one process already gets "
            f"{base / single:.2f}x from its second thread, and DDP reaches {100 * ddp / ceiling:.0f} % of the ceiling"
        )
    )
    lines += ["", f"Aim: torchrun >= {AIM}x one process: **{ddp / base:.2f}x**, {verdict}."]
    print(lines[-1])
    write_report(out_dir, "train_scale", "\n".join(lines) + "\n", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
