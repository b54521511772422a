#!/usr/bin/env python
"""`edgecls infer` at scale, in one run on one machine:

    python benchmarks/infer_scale.py [--files 100000] [--cifar 10000] [--model cnn]

1. Memory: `edgecls infer --output FILE` over --files image files (hard links to the CIFAR-10 test JPEGs in
   a temporary folder, only ever read). The resident memory of infer and its decode workers is sampled
   every 0.2 s; reported: RSS once the first results are written, the peak, and the growth between them.
2. Engines: the --cifar CIFAR-10 test JPEGs through plain `edgecls infer` and `edgecls infer --engine ray`
   (a local Ray on this machine's cores), wall-clock time of the whole command, start-up included.
Writes infer_scale.md and .json to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EDGECLS = [sys.executable, "-m", "edgecls"]


def tree_rss_mb(root: int) -> float:
    """Resident memory of `root` and all its descendants (MB)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        rss[int(pid)] = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 1024


def memory_run(files: list[str], count: int, model: str, tmp: Path) -> dict:
    folder = tmp / "many"
    for i in range(count):  # sub-folders of 1,000: a realistic tree, and fast to list
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        os.link(files[i % len(files)], sub / f"{i:06d}.jpg")
    out = tmp / "many.csv"
    proc = subprocess.Popen(
        [*EDGECLS, "infer", str(folder), "--model", model, "--format", "csv", "--output", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = Path(f"{out}.partial")
    samples, first = [], None
    t0 = time.perf_counter()
    while proc.poll() is None:
        mb = tree_rss_mb(proc.pid)
        if first is None and partial.is_file() and partial.stat().st_size > 4096:
            first = mb
        samples.append(mb)
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"error: infer over {count} files failed:\n{err[-2000:]}")
    rows = sum(1 for _ in out.open()) - 1
    return {
        "files": count,
        "rows_written": rows,
        "seconds": seconds,
        "rss_first_results_mb": first,
        "rss_peak_mb": max(samples),
        "growth_mb": max(samples) - first,
        "summary": err.strip().splitlines()[-1],
    }


def engine_run(paths: list[str], model: str, args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [*EDGECLS, "infer", *paths, "--model", model, *args], cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"error: infer {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, [line for line in done.stderr.splitlines() if line.startswith("classified")][-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--cifar", type=int, default=10_000)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from edgecls.data import evenly_spaced, load_split
    from edgecls.errors import EdgeclsError
    from edgecls.fileio import ensure_writable_dir, write_report
    from edgecls.machine import cpu_name

    try:
        if args.files < 1000 or args.cifar < 1:
            raise EdgeclsError("--files must be at least 1000 and --cifar at least 1")
        test = load_split("cifar10", "test", args.data_dir, download=False)
        if test.files is None:
            raise EdgeclsError("this benchmark needs CIFAR-10 as image files (CIFAR10-images/test/<class>/)")
        out_dir = ensure_writable_dir(args.out, "--out")
    except EdgeclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {
        "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores",
        "model": args.model,
        "command": "python benchmarks/infer_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    chosen = [test.files[i] for i in evenly_spaced(len(test), args.cifar).tolist()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["memory"] = memory_run(list(test.files), args.files, args.model, tmp)
        print(f"memory over {args.files} files: {result['memory']}", flush=True)
        lst = tmp / "list"
        lst.mkdir()
        for i, f in enumerate(chosen):  # one folder, so both engines take the same single path argument
            os.link(f, lst / f"{i:05d}.jpg")
        plain_s, plain_line = engine_run([str(lst)], args.model, ["--format", "csv", "--output", str(tmp / "p.csv")])
        ray_s, ray_line = engine_run([str(lst)], args.model, ["--engine", "ray", "--output", str(tmp / "ray")])
    result["engines"] = {
        "images": len(chosen),
        "plain_seconds": plain_s,
        "plain": plain_line,
        "ray_seconds": ray_s,
        "ray": ray_line,
        "ray_vs_plain": plain_s / ray_s,
    }
    m, e = result["memory"], result["engines"]
    lines = [
        "# `edgecls infer` at scale",
        "",
        f"{result['machine']}; model {args.model}; `{result['command'].strip()}`, {result['date']}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| files (hard links to the CIFAR-10 test JPEGs) | {m['files']:,} ({m['rows_written']:,} rows written) |",
        f"| time | {m['seconds']:.1f} s ({m['files'] / m['seconds']:.0f} img/s) |",
        f"| RSS of infer + decode workers once results flow | {m['rss_first_results_mb']:.0f} MB |",
        f"| peak RSS | {m['rss_peak_mb']:.0f} MB |",
        f"| growth | **{m['growth_mb']:.0f} MB** (aim < 100 MB) |",
        "",
        f"| engine, {e['images']:,} CIFAR-10 test JPEGs | wall-clock (start-up included) | vs plain |",
        "| --- | --- | --- |",
        f"| plain `edgecls infer` | {e['plain_seconds']:.1f} s | 1.00x |",
        f"| `--engine ray` (local Ray) | {e['ray_seconds']:.1f} s | {e['ray_vs_plain']:.2f}x |",
        "",
        f"plain: {e['plain']}",
        "",
        f"ray: {e['ray']}",
    ]
    print("\n".join(lines))
    write_report(out_dir, "infer_scale", "\n".join(lines) + "\n", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
