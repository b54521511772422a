"""`edgecls bench`: eager PyTorch against ONNX Runtime, side by side in one process.

Model speed: per model and batch size, latency (median, p90 after warm-up) and throughput of the
eager model (inference mode) and of its exported ONNX file, with the same thread count, measured in
alternating rounds so that drift of a shared machine hits both alike. Weights do not change the
timing, so the eager side uses the run's checkpoint when there is one and a fresh model otherwise.
Both are set against this CPU's measured fp32 GEMM rate: the fraction of it a model reaches says how
much of the gap is the model's shape (tiny matrices, sequential steps) rather than the engine.

End to end: `edgecls infer`'s path (decode, preprocess, ONNX Runtime) on the CIFAR-10 test JPEGs,
against what a PyTorch user would write instead (ImageFolder + DataLoader + eager model).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgecls import __version__
from edgecls import checkpoint as ckpt_io
from edgecls.errors import EdgeclsError, UsageError
from edgecls.fileio import atomic_path, ensure_writable_dir, write_json
from edgecls.locations import RUNS, find_onnx
from edgecls.machine import cpu_flags, cpu_name
from edgecls.registry import ModelSpec, get_spec, model_names
from edgecls.runtime import Classifier, open_engine
from edgecls.runtime.classifier import accuracy_pct
from edgecls.runtime.engine import ACCURACY_GATE_POINTS
from edgecls.runtime.parallel import available_cpus
from edgecls.timing import time_calls, timed

from .choose import resolve

log = logging.getLogger(__name__)
DEFAULT_BATCH_SIZES = (1, 8, 64, 256)
ROUNDS = 3  # eager and ONNX Runtime alternate this many times per batch size


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--batch-sizes must be comma-separated integers like 1,8,64 (got {text!r})") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-sizes must be positive integers (got {text!r})")
    return sizes


def hardware(provider: str, threads: int) -> dict:
    info = {
        "cpu": cpu_name(),
        "isa": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "provider": provider,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_parallel": " ".join(torch.__config__.parallel_info().split()[:40]),
    }
    import onnxruntime as ort

    info["onnxruntime"] = ort.__version__
    if provider in ("cuda", "tensorrt") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _summary(rounds: list[list[float]], batch: int) -> dict:
    """Median and p90 over all calls, and the best round's median (min of rounds: the machine's
    least disturbed moment)."""
    ordered = sorted(t for r in rounds for t in r)
    median = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    best = min(statistics.median(r) for r in rounds)
    return {
        "median_ms": median * 1e3,
        "p90_ms": p90 * 1e3,
        "min_round_ms": best * 1e3,
        "images_per_s": batch / median,
        "images_per_s_best_round": batch / best,
        "runs": len(ordered),
    }


def gemm_gflops(threads: int, device: str = "cpu", n: int = 1024, seconds: float = 1.0) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at `threads`: the ceiling the models are measured against."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)

    def mm():
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        mm()
    med = statistics.median(time_calls(mm, seconds))
    return 2 * n**3 / med / 1e9


def model_flops(model: torch.nn.Module, spec: ModelSpec) -> int:
    """Floating-point operations of one image's forward pass (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # oneDNN runs an LSTM as one fused op the counter cannot see into; the plain path shows its matmuls
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flags() warns about Intel-GPU TF32 on every switch
        with torch.backends.mkldnn.flags(enabled=False), counter, torch.inference_mode():
            model(torch.zeros(1, *spec.input_shape))
    return int(counter.get_total_flops())


FRESH = "fresh model (weights do not change the timing)"


def _eager_model(spec: ModelSpec, onnx_path: Path) -> tuple[torch.nn.Module, Path | None]:
    """The checkpoint beside the ONNX file and its path, else a freshly initialised model and None."""
    path = onnx_path.parent / "checkpoint.pt"
    if path.is_file():
        _, model = ckpt_io.model_from_checkpoint(ckpt_io.load(path, spec.name))
        return model.eval(), path
    torch.manual_seed(0)
    return spec.build().eval(), None


@dataclass
class Pair:
    """A model opened for both sides: its ONNX session and the eager module on the matching device."""

    spec: ModelSpec
    onnx_path: Path
    classifier: Classifier
    model: torch.nn.Module
    checkpoint: Path | None
    device: torch.device
    precision: str = "fp32"  # what the ONNX side runs (--precision); "auto": resolved per batch size
    provider: str = "cpu"
    threads: int | None = None

    def engine_for(self, batch: int):
        """The ONNX side's engine at `batch` rows: the classifier's, or --precision auto's choice there."""
        if self.precision != "auto":
            return self.classifier.engine
        provider, precision = resolve(self.onnx_path, self.provider, "auto", self.threads, batch)
        return open_engine(self.onnx_path, provider, self.threads, precision=precision)


def open_pair(
    spec: ModelSpec, provider: str, threads: int, artifacts: str | Path | None, precision: str = "fp32"
) -> Pair:
    onnx_path = find_onnx(spec.name, artifacts)
    # raises a one-line error for a missing/unusable file
    classifier = Classifier(onnx_path, provider, threads, precision="fp32" if precision == "auto" else precision)
    if classifier.info.model != spec.name:
        raise UsageError(f"{onnx_path} is a {classifier.info.model!r} model, not {spec.name!r}")
    model, ckpt_path = _eager_model(spec, onnx_path)
    device = torch.device("cuda" if classifier.provider in ("cuda", "tensorrt") else "cpu")
    return Pair(spec, onnx_path, classifier, model.to(device), ckpt_path, device, precision, provider, threads)


SETTLE_S = 0.05  # pause between the sides, so one side's spinning threads (OpenMP, ORT) are idle when the other runs
AIM_BATCH_1, AIM_BATCH_256, AIM_END_TO_END = 4.0, 1.5, 3.0  # ORT over eager, the runtime speed aims


def bench_model(
    pair: Pair,
    *,
    batch_sizes: tuple[int, ...],
    seconds: float,
    gemm: float,
    peers: dict | None = None,
    offered: dict | None = None,
    accuracy: dict | None = None,
) -> dict:
    """`peers`: name -> engine timed beside eager and ONNX Runtime in the same rounds (--peers); `offered`:
    the same for edgecls's other configurations; `accuracy`: configuration -> points on the full test split,
    where it was measured."""
    spec, model, device, ckpt_path = pair.spec, pair.model, pair.device, pair.checkpoint
    peers, offered = peers or {}, offered or {}
    flops = model_flops(model.cpu(), spec)
    model.to(device)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        x = torch.randn(batch, *spec.input_shape, generator=gen)
        x_np = x.numpy()

        def eager(x=x):
            with torch.inference_mode():  # host in, host out: the same work session.run does
                return model(x.to(device)).cpu()

        engine = pair.engine_for(batch)

        def onnx(x_np=x_np, engine=engine):
            return engine.run(x_np)  # the runtime's own path: a big batch is split over 1-thread sessions

        sides = {"eager": eager, "onnx": onnx}
        # a peer that is the very configuration edgecls offers (OpenVINO fp32; its default, bf16 on AMX) is
        # the same engine object: timed once, so the two figures cannot differ by noise alone
        first = {}
        for name, other in {**offered, **peers}.items():
            first.setdefault(id(other), name)
        alias = {name: first[id(other)] for name, other in {**offered, **peers}.items()}
        sides.update(
            {name: (lambda x_np=x_np, e=other: e.run(x_np)) for name, other in {**offered, **peers}.items()
             if alias[name] == name}
        )  # fmt: skip
        diff = float(np.abs(eager().numpy() - onnx()).max())  # also the warm-up
        for fn in sides.values():
            time_calls(fn, min(0.2, seconds / 5), min_reps=2)
        times = {side: [] for side in sides}
        for _ in range(ROUNDS):
            for side, fn in sides.items():
                time.sleep(SETTLE_S)
                times[side].append(time_calls(fn, seconds / ROUNDS))
        times.update({name: times[source] for name, source in alias.items()})
        row = {
            "batch_size": batch,
            "eager": _summary(times["eager"], batch),
            "onnx": _summary(times["onnx"], batch),
            "onnx_execution": engine.execution(batch),
            "onnx_precision": engine.precision,
            # fresh weights are not the same model; reduced precision is gated on accuracy, not on logits
            "max_abs_logit_diff": diff if ckpt_path and engine.precision == "fp32" else None,
        }
        if peers:
            row["peers"] = {
                name: {"engine": "openvino", "precision": engine.arithmetic, **_summary(times[name], batch)}
                for name, engine in peers.items()
            }
            engine_name = {"cpu": "onnxruntime"}
            row["offered"] = {
                name: {"engine": engine_name.get(engine.provider, engine.provider), "precision": engine.precision,
                       "execution": engine.execution(batch), **_summary(times[name], batch)}
                for name, engine in offered.items()
            }  # fmt: skip
            row["best"] = best_offered(row, accuracy or {})
        row["speedup"] = row["onnx"]["images_per_s"] / row["eager"]["images_per_s"]
        row["speedup_best_round"] = row["onnx"]["images_per_s_best_round"] / row["eager"]["images_per_s_best_round"]
        for side in ("eager", "onnx"):
            row[side]["gflops"] = flops * row[side]["images_per_s"] / 1e9
            row[side]["fraction_of_gemm"] = row[side]["gflops"] / gemm
        rows.append(row)
        if engine is not pair.classifier.engine:  # --precision auto opened one for this batch size
            engine.close()
        e, o = row["eager"], row["onnx"]
        log.info(
            f"{spec.name:12}{batch:>6}{e['median_ms']:>10.3f}{e['p90_ms']:>9.3f}{e['images_per_s']:>9.0f}"
            f"{100 * e['fraction_of_gemm']:>7.1f}%{o['median_ms']:>10.3f}{o['p90_ms']:>9.3f}{o['images_per_s']:>9.0f}"
            f"{100 * o['fraction_of_gemm']:>7.1f}%{row['speedup']:>8.2f}x"
        )
    ran = pair.classifier.engine.path  # the file the provider runs: an int8/fp16 file, CUDA's fused form
    nodes = onnx_nodes(ran)
    result = {
        "model": spec.name,
        "onnx": str(ran),
        "exporter": pair.classifier.info.exporter,
        "onnx_provider": pair.classifier.providers[0],
        "eager_weights": str(ckpt_path or FRESH),
        "flops_per_image": flops,
        "onnx_nodes": nodes,
        "rows": rows,
    }
    result["bounds"] = bounds(result) + peer_bounds(result, accuracy or {})
    if accuracy:
        result["accuracy_points"] = accuracy
    return result


# --peers: what a user could run instead (name -> OpenVinoEngine precision), timed in the same rounds.
PEERS = {"openvino": "default", "openvino-fp32": "fp32"}
# and every configuration edgecls offers beside ONNX Runtime fp32 (the "onnx" side): provider -> precisions,
# each timed where it opens on this machine (an absent file, extra or instruction set: left out, logged)
OFFERED = {"cpu": ("int8",), "openvino": ("fp32", "bf16", "fp16", "int8")}


def best_offered(row: dict, accuracy: dict) -> dict:
    """The fastest configuration edgecls offers: ONNX Runtime fp32 (the "onnx" side) and every one in
    row["offered"]. fp32 configurations are parity-tested; a reduced-precision one counts only when its
    accuracy on the full test split was measured within ACCURACY_GATE_POINTS of ONNX Runtime fp32."""
    candidates = [(row["onnx"]["images_per_s"], "onnxruntime", "fp32", accuracy.get("onnx", {}).get("delta_points"))]
    for name, stats in row.get("offered", {}).items():
        delta = accuracy.get(name, {}).get("delta_points")
        if stats["precision"] == "fp32" or (delta is not None and abs(delta) <= ACCURACY_GATE_POINTS):
            candidates.append((stats["images_per_s"], stats["engine"], stats["precision"], delta))
    speed, engine, precision, delta = max(candidates, key=lambda c: c[0])
    return {"engine": engine, "precision": precision, "images_per_s": speed, "accuracy_delta_points": delta}


def peer_bounds(result: dict, accuracy: dict) -> list[str]:
    """For each batch where a peer outruns the best configuration edgecls offers: by how much, and why."""
    out = []
    for row in result["rows"]:
        best = row.get("best")
        for name, peer in (row.get("peers") or {}).items():
            if best is None or peer["images_per_s"] <= best["images_per_s"]:
                continue
            ratio = peer["images_per_s"] / best["images_per_s"]
            line = (f"batch {row['batch_size']}: OpenVINO ({name}, computing in {peer['precision']}) runs "
                    f"{peer['images_per_s']:,.0f} img/s, {ratio:.2f}x the best edgecls offers "
                    f"({best['engine']} {best['precision']}, {best['images_per_s']:,.0f})")  # fmt: skip
            delta = accuracy.get(name, {}).get("delta_points")
            if delta is None:
                line += ": its accuracy on the test split was not measured (no data found), so it is not counted"
            else:
                line += f": its accuracy moved {delta:+.2f} points, over the {ACCURACY_GATE_POINTS} gate"
            out.append(line)
    return out


def open_peers(pair: Pair, threads: int, offered: dict) -> dict:
    """name -> OpenVINO engine; where a peer computes in what an offered OpenVINO configuration does, the
    offered engine itself (the same configuration, timed once)."""
    from edgecls.runtime.openvino_engine import OpenVinoEngine

    engines = {}
    for name, precision in PEERS.items():
        engine = OpenVinoEngine(pair.onnx_path, threads=threads, precision=precision)
        same = offered.get(f"openvino-{engine.arithmetic}")
        if same is not None and same.precision == engine.arithmetic:
            engine.close()
            engine = same
        engines[name] = engine
    return engines


def open_offered(pair: Pair, threads: int) -> dict:
    """name ("openvino-bf16", "cpu-int8") -> engine, for each configuration in OFFERED this machine runs."""
    engines = {}
    for provider, precisions in OFFERED.items():
        for precision in precisions:
            try:
                engines[f"{provider}-{precision}"] = open_engine(pair.onnx_path, provider, threads, precision=precision)
            except EdgeclsError as exc:
                log.info(f"{pair.spec.name}: {provider} {precision} not offered here: {str(exc).split(';')[0]}")
    return engines


def peer_accuracy(pair: Pair, engines: dict, data_dir: str | None) -> dict:
    """Accuracy (percent) of ONNX Runtime fp32 and of each engine on the model's full test split, and each
    one's delta from ONNX Runtime in points; {} where the test split is not found."""
    from edgecls.data import load_for_spec

    try:
        test = load_for_spec(pair.spec, "test", data_dir)
    except EdgeclsError as exc:
        log.info(f"{pair.spec.name}: accuracy not measured ({exc}); best is taken among fp32 configurations")
        return {}
    test = test.subset(torch.arange(len(test)))  # decoded once
    uint8, labels = test.images().numpy(), test.labels.numpy()
    pre = pair.classifier.preprocess
    out, seen = {"onnx": {"accuracy_pct": accuracy_pct(pair.classifier.run, uint8, labels, prepare=pre.normalize)}}, {}
    for name, engine in engines.items():  # an engine shared by a peer and an offered configuration runs once
        if id(engine) not in seen:
            seen[id(engine)] = accuracy_pct(engine.run, uint8, labels, prepare=pre.normalize)
        out[name] = {"accuracy_pct": seen[id(engine)]}
    for name in out:
        out[name]["delta_points"] = out[name]["accuracy_pct"] - out["onnx"]["accuracy_pct"]
    out["images"] = int(len(labels))
    return out


def onnx_nodes(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def bounds(result: dict) -> list[str]:
    """For each missed aim, what bounds it: the figures that show where the time goes."""
    out = []
    rows = {r["batch_size"]: r for r in result["rows"]}
    if 1 in rows and rows[1]["speedup"] < AIM_BATCH_1:
        r = rows[1]
        ms, eager_ms, nodes = r["onnx"]["median_ms"], r["eager"]["median_ms"], result["onnx_nodes"]
        out.append(
            f"batch 1: {r['speedup']:.2f}x of the {AIM_BATCH_1:g}x aim. ORT takes {ms:.3f} ms for "
            f"{nodes} graph nodes ({1000 * ms / nodes:.1f} us per node) at "
            f"{100 * r['onnx']['fraction_of_gemm']:.0f} % of the GEMM rate: sequential small steps, not "
            f"arithmetic. {AIM_BATCH_1:g}x would need {eager_ms / AIM_BATCH_1:.3f} ms against eager's "
            f"{eager_ms:.3f} ms."
        )
    big = max(rows)
    if big >= 64 and rows[big]["speedup"] < AIM_BATCH_256:
        r = rows[big]
        eg, og = r["eager"]["fraction_of_gemm"], r["onnx"]["fraction_of_gemm"]
        out.append(
            f"batch {big}: {r['speedup']:.2f}x of the {AIM_BATCH_256:g}x aim ({r['onnx_execution']}). "
            f"Eager already runs at {100 * eg:.0f} % of the GEMM rate and ORT at {100 * og:.0f} %; "
            f"{AIM_BATCH_256:g}x would need ORT at {100 * AIM_BATCH_256 * eg:.0f} %."
        )
    return out


def cifar_test_files(data_dir: str | None, limit: int | None):
    """The CIFAR-10 test JPEGs the end-to-end run reads: (ImageSet, chosen indices)."""
    from edgecls.data import evenly_spaced, load_split

    test = load_split("cifar10", "test", data_dir, download=False)
    if test.files is None:
        raise UsageError(
            "the end-to-end benchmark needs CIFAR-10 as image files (CIFAR10-images/test/<class>/); "
            "pass --e2e-images 0 to skip it"
        )
    return test, evenly_spaced(len(test), limit) if limit else torch.arange(len(test))


def bench_end_to_end(pair: Pair, test, idx: torch.Tensor, batch_size: int) -> dict:
    """`edgecls infer`'s path on CIFAR-10 test JPEGs against ImageFolder + DataLoader + eager."""
    files = [Path(test.files[i]) for i in idx.tolist()]
    ours = _infer_passes(pair, files, test.labels[idx].numpy(), batch_size)
    base_s, correct = _dataloader_pass(pair, test, idx, batch_size, 0)
    base2_s, correct2 = _dataloader_pass(pair, test, idx, batch_size, 2)
    result = {
        "images": len(files),
        "folder": str(Path(test.files[0]).parent.parent),
        "batch_size": batch_size,
        "edgecls_infer": ours,
        "pytorch_baseline": {
            "seconds": base_s,
            "images_per_s": len(files) / base_s,
            "accuracy_pct": correct / len(files) * 100,
            "eager_weights": str(pair.checkpoint or FRESH),
            "what": "torchvision ImageFolder + ToTensor/Normalize + DataLoader(num_workers=0) "
            "+ eager model in inference mode",
        },
        "pytorch_baseline_2_workers": {
            "seconds": base2_s,
            "images_per_s": len(files) / base2_s,
            "accuracy_pct": correct2 / len(files) * 100,
            "what": "the same with DataLoader(num_workers=2)",
        },
    }
    result["speedup"] = ours["images_per_s"] / result["pytorch_baseline"]["images_per_s"]
    result["speedup_vs_2_workers"] = ours["images_per_s"] / result["pytorch_baseline_2_workers"]["images_per_s"]
    log.info(
        f"end to end, {len(files)} CIFAR-10 test JPEGs (decode + preprocess + model, batch {batch_size}): "
        f"edgecls infer {ours['images_per_s']:.0f} img/s ({ours['decoding']}, by --workers auto; "
        f"{ours['pool_images_per_s']:.0f} img/s with {ours['pool_workers']} decode workers, "
        f"{ours['inline_decode_images_per_s']:.0f} inline), PyTorch ImageFolder+DataLoader "
        f"{result['pytorch_baseline']['images_per_s']:.0f} img/s, {result['speedup']:.2f}x (with num_workers=2: "
        f"{result['pytorch_baseline_2_workers']['images_per_s']:.0f} img/s, {result['speedup_vs_2_workers']:.2f}x)"
    )
    if result["speedup"] < AIM_END_TO_END:
        inline_s, model_s = ours["seconds_inline"], ours["model_seconds"]
        result["bound"] = (
            f"end to end: {result['speedup']:.2f}x of the {AIM_END_TO_END:g}x aim. Decoding and "
            f"preprocessing take {ours['decode_preprocess_ms_per_image']:.3f} ms per image on one "
            f"thread ({100 * (inline_s - model_s) / inline_s:.0f} % of the inline path's time); "
            f"{available_cpus()} cores share them with the model ({ours['decoding']}). "
            f"{AIM_END_TO_END:g}x needs {AIM_END_TO_END * result['pytorch_baseline']['images_per_s']:.0f} "
            "img/s."
        )
        log.info(result["bound"])
    return result


def _infer_passes(pair: Pair, files: list[Path], labels: np.ndarray, batch_size: int) -> dict:
    """`edgecls infer`'s default (--workers auto), the worker pool and inline decoding, each a whole pass
    after a warm-up batch; all three must give the same answers. Also the model's own share of the time."""
    from edgecls.runtime.infer import classify_files, decoding_text, default_workers

    classifier = pair.classifier
    workers = default_workers()
    classify_files(classifier, files[:batch_size], batch_size, 1, workers=0)  # warm-up
    chosen = [0]
    ours_s, preds = timed(
        lambda: classify_files(classifier, files, batch_size, 1, workers=None, on_choice=chosen.append)
    )
    pool_s, pooled = timed(lambda: classify_files(classifier, files, batch_size, 1, workers=workers))
    # the earlier path: decode in the main thread, no overlap with the model
    inline_s, inline = timed(lambda: classify_files(classifier, files, batch_size, 1, workers=0))
    assert [p.top for p in inline] == [p.top for p in preds] == [p.top for p in pooled], "decoding changed an answer"
    names = list(classifier.class_names)
    # the model's share of infer's time: the same number of rows through Classifier.run alone
    x = np.zeros((batch_size, *pair.spec.input_shape), np.float32)
    calls = max(1, len(files) // batch_size)
    runs = time_calls(lambda: classifier.run(x), seconds=0, min_reps=calls, warmup=1)
    model_s = sum(runs) * len(files) / (calls * batch_size)
    return {
        "seconds": ours_s,
        "images_per_s": len(files) / ours_s,
        "accuracy_pct": float(np.mean([names.index(p.top[0][0]) == y for p, y in zip(preds, labels)]) * 100),
        "provider": classifier.providers[0],
        "decoding": decoding_text(chosen[-1]),
        "pool_workers": workers,
        "pool_images_per_s": len(files) / pool_s,
        "inline_decode_images_per_s": len(files) / inline_s,
        "seconds_inline": inline_s,
        "model_seconds": model_s,
        "decode_preprocess_ms_per_image": 1000 * max(0.0, inline_s - model_s) / len(files),
    }


def _dataloader_pass(pair: Pair, test, idx: torch.Tensor, batch_size: int, num_workers: int) -> tuple[float, int]:
    """What a PyTorch user writes instead: ImageFolder + DataLoader + the eager model; (seconds, correct),
    worker start-up included, as a user's script pays it."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    folder = Path(test.files[0]).parent.parent
    pre = pair.spec.preprocess
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std)])
    folder_set = datasets.ImageFolder(str(folder), transform=tf)
    if [Path(p) for p, _ in folder_set.samples] != [Path(f) for f in test.files]:
        raise EdgeclsError(f"{folder}: ImageFolder sees other files than edgecls; cannot compare")
    loader = DataLoader(Subset(folder_set, idx.tolist()), batch_size=batch_size, num_workers=num_workers)

    def run() -> int:
        with torch.inference_mode():
            return sum(int((pair.model(x.to(pair.device)).argmax(1).cpu() == y).sum()) for x, y in loader)

    return timed(run)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(3, n)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.4 * ((n + cols - 1) // cols)), squeeze=False
    )
    for ax, res in zip(axes.flat, results):
        sizes = [r["batch_size"] for r in res["rows"]]
        for side, style in (("eager", "o--"), ("onnx", "s-")):
            ax.plot(
                sizes,
                [r[side]["images_per_s"] for r in res["rows"]],
                style,
                label="PyTorch eager" if side == "eager" else "ONNX Runtime",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_title(f"{res['model']} ({res['exporter']})")
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def bench(
    model: str = "all",
    *,
    provider: str = "cpu",
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    artifacts: str | Path | None = None,
    seconds: float = 1.0,
    e2e_images: int | None = None,
    data_dir: str | None = None,
    out: str | Path = f"{RUNS}/bench",
    peers: bool = False,
    precision: str = "fp32",
) -> dict:
    """Benchmark `model` ("all" or a name); writes <out>/bench.json and bench.png. e2e_images: None all
    10,000 CIFAR-10 test JPEGs, 0 skips the end-to-end run. `peers`: OpenVINO at its default precision
    and in fp32 timed beside them, each row's best edgecls configuration, accuracies on the test split."""
    if provider not in ("cpu", "cuda", "tensorrt", "openvino"):
        raise UsageError(f"unknown provider {provider!r}; use cpu, cuda, tensorrt or openvino")
    names = (
        [get_spec(model).name] if model != "all" else [n for n in model_names() if find_onnx(n, artifacts).is_file()]
    )
    if not names:
        raise UsageError("no exported models to benchmark; run `edgecls export --model NAME` first")
    skipped = [n for n in model_names() if n not in names] if model == "all" else []
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {threads})")
    if not seconds > 0:
        raise UsageError(f"--seconds must be positive (got {seconds})")
    if e2e_images is not None and e2e_images < 0:
        raise UsageError(f"--e2e-images must be 0 (skip) or more (got {e2e_images})")
    out = ensure_writable_dir(out, "--out")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if provider in ("cuda", "tensorrt") and not torch.cuda.is_available():
        raise UsageError(
            f"--provider {provider} needs a GPU that PyTorch sees too (for the eager side); use --provider cpu"
        )
    # Open every model and find the data first: a bad file or folder fails before minutes of timing.
    pairs = [open_pair(get_spec(n), provider, threads, artifacts, precision) for n in names]
    e2e = cifar_test_files(data_dir, e2e_images) if "cnn" in names and e2e_images != 0 else None
    gemm = gemm_gflops(threads, "cuda" if provider in ("cuda", "tensorrt") else "cpu")
    log.info(f"{cpu_name()}, {threads} threads, provider {provider}; fp32 GEMM 1024^3: {gemm:.1f} GFLOP/s")
    if skipped:
        log.info(f"skipped (no model.onnx, neither exported nor shipped): {', '.join(skipped)}")
    log.info(f"{'':18}{'--------- PyTorch eager ---------':>34}{'--------- ONNX Runtime ----------':>35}")
    log.info(
        f"{'model':12}{'batch':>6}{'ms':>10}{'p90':>9}{'img/s':>9}{'GEMM%':>8}{'ms':>10}{'p90':>9}{'img/s':>9}"
        f"{'GEMM%':>8}{'speedup':>9}"
    )
    if peers and provider != "cpu":
        raise UsageError("--peers compares CPU engines; use --provider cpu")
    offered = {p.spec.name: open_offered(p, threads) for p in pairs} if peers else {}
    peer_engines = {p.spec.name: open_peers(p, threads, offered[p.spec.name]) for p in pairs} if peers else {}
    accuracy = {
        p.spec.name: peer_accuracy(p, {**peer_engines[p.spec.name], **offered[p.spec.name]}, data_dir) for p in pairs
    } if peers else {}  # fmt: skip
    results = [
        bench_model(pair, batch_sizes=batch_sizes, seconds=seconds, gemm=gemm, peers=peer_engines.get(pair.spec.name),
                    offered=offered.get(pair.spec.name), accuracy=accuracy.get(pair.spec.name))
        for pair in pairs
    ]  # fmt: skip
    for res in results if peers else ():
        for row in res["rows"]:
            cells = ", ".join(f"{n} {v['images_per_s']:,.0f}" for n, v in row["peers"].items())
            ours = ", ".join(f"{n} {v['images_per_s']:,.0f}" for n, v in row["offered"].items())
            b = row["best"]
            log.info(f"{res['model']:12}{row['batch_size']:>6}  peers: {cells} img/s; offered: {ours} img/s; "
                     f"best: {b['engine']} {b['precision']} {b['images_per_s']:,.0f} img/s")  # fmt: skip
    for res in results:
        for line in res["bounds"]:
            log.info(f"{res['model']}: {line}")
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edgecls_version": __version__,
        "hardware": hardware(provider, threads),
        "gemm_gflops": gemm,
        "seconds_per_point": seconds,
        "precision": precision,
        "peers": {name: f"OpenVINO, precision {p}" for name, p in PEERS.items()} if peers else None,
        "offered": {p: list(v) for p, v in OFFERED.items()} if peers else None,
        "models": results,
        "skipped": skipped,
    }
    if e2e is not None:
        report["end_to_end"] = bench_end_to_end(pairs[names.index("cnn")], *e2e, 64)
    write_json(out / "bench.json", report)
    hw = report["hardware"]
    plot(results, out / "bench.png", f"{hw['cpu']}, {threads} threads, {provider}; fp32, median of single calls")
    log.info(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return report
