#!/usr/bin/env python
"""What each GPU lever of the ORT engine is worth, one lever at a time, against eager PyTorch:

    python benchmarks/cuda_levers.py [--models all] [--provider cuda] [--seconds 0.3] [--out benchmarks/results]

For each shipped model, at batch 1 and 256, on `--provider` (cuda; cpu runs the same code on the CPU device,
where there is no CUDA graph), timed in alternating rounds after a warm-up:
- eager: the model on the same device, host tensor in and logits back on the host (fresh weights: they do not
  change the timing), TF32 off as ORT's fp32 has it;
- run: a plain `session.run` with numpy arrays, what the engine did before these levers;
- bound: IOBinding with the buffers kept on the device (runtime/iobinding.py);
- graph: batch 1 replayed as a CUDA graph (ort_engine.cuda_graph_session), CUDA only;
- each of those again on the fused graph form (model.fused.onnx), where the model ships one;
- engine: the runtime's own path, which picks among them (OrtEngine.run), and how it ran.
Writes cuda_levers-<provider>.json with the machine's record.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgecls.fileio import ensure_writable_dir, write_json
from edgecls.locations import shipped_names, shipped_onnx
from edgecls.machine import run_record
from edgecls.registry import get_spec
from edgecls.runtime import open_engine
from edgecls.runtime.iobinding import BoundSession
from edgecls.runtime.ort_engine import create_session, cuda_graph_session
from edgecls.timing import time_calls

ROUNDS, BATCHES = 3, (1, 256)


def sides_for(name: str, provider: str, threads: int, batch: int, x: np.ndarray) -> tuple[dict, dict]:
    """name -> a call returning logits, and what could not be timed (name -> why)."""
    device = "cuda" if provider == "cuda" else "cpu"
    torch.manual_seed(0)
    model = get_spec(name).build().eval().to(device)
    xt = torch.from_numpy(x)

    def eager():
        with torch.inference_mode():
            out = model(xt.to(device)).cpu()
        return out.numpy()

    sides, missing = {"eager": eager}, {}
    files = {"": shipped_onnx(name)}
    if shipped_onnx(name).with_name("model.fused.onnx").is_file():
        files["fused "] = shipped_onnx(name).with_name("model.fused.onnx")
    for label, path in files.items():
        session = create_session(str(path), provider, threads)[0]
        sides[f"{label}run"] = lambda s=session: s.run(None, {"input": x})[0]
        bound = BoundSession(session, device)
        sides[f"{label}bound"] = lambda b=bound: b.run(x)
        if provider == "cuda" and batch == 1:
            graph, why = cuda_graph_session(str(path), threads)
            if graph is None:
                missing[f"{label}graph"] = why
            else:
                sides[f"{label}graph"] = lambda g=graph: g.run(x)
    engine = open_engine(shipped_onnx(name), provider, threads)
    sides["engine"] = lambda: engine.run(x)
    return sides, {"missing": missing, "engine_execution": engine.execution(batch), "engine_file": engine.path.name}


def measure(name: str, provider: str, threads: int, seconds: float) -> list[dict]:
    rows = []
    for batch in BATCHES:
        x = np.random.default_rng(0).standard_normal((batch, *get_spec(name).input_shape)).astype(np.float32)
        sides, info = sides_for(name, provider, threads, batch, x)
        for fn in sides.values():  # warm-up: allocations, cuDNN/cuBLAS choices, graph capture
            time_calls(fn, min(0.2, seconds), min_reps=3)
        times = {side: [] for side in sides}
        for _ in range(ROUNDS):
            for side, fn in sides.items():
                time.sleep(0.02)
                times[side].append(statistics.median(time_calls(fn, seconds / ROUNDS)))
        best = {side: min(t) for side, t in times.items()}
        row = {"batch_size": batch, **info,
               "images_per_s": {side: batch / s for side, s in best.items()},
               "over_eager": {side: best["eager"] / s for side, s in best.items() if side != "eager"}}  # fmt: skip
        rows.append(row)
        levers = "  ".join(f"{side} {v:.2f}x" for side, v in row["over_eager"].items())
        print(f"{name:12} {batch:>4}  {levers}  [{info['engine_execution']}]", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="all")
    parser.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--threads", type=int, default=2, help="ORT's threads (eager keeps torch's)")
    parser.add_argument("--seconds", type=float, default=0.3, help="per side, batch size and model")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.provider == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (run with --provider cpu for the CPU device)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 like ORT's (use_tf32 0)
    models = shipped_names() if args.models == "all" else args.models.split(",")
    record = run_record("benchmarks/cuda_levers.py", argv, provider=args.provider, threads=args.threads)
    if args.provider == "cuda":
        record["gpu"] = torch.cuda.get_device_name(0)
    record["models"] = [
        {"model": name, "rows": measure(name, args.provider, args.threads, args.seconds)} for name in models
    ]
    ensure_writable_dir(args.out)
    out = args.out / f"cuda_levers-{args.provider}.json"
    write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
