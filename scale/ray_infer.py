"""`edgecls infer --engine ray`: batch inference with Ray Data, on this machine or on a Ray cluster.

Ray Data reads the files (read_binary_files, so a cluster's nodes read them where they are: a shared
or cloud file system), a pool of actors each holding one ONNX Runtime session decodes and classifies
them batch by batch (ActorPoolStrategy through map_batches' compute=), and the results are written as
Parquet (with each image's full probability vector) or CSV (top-k columns only). The answers are the
plain runtime's: the same decoding (runtime.preprocess) and the same Classifier.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from edgecls.errors import EdgeclsError, UsageError
from edgecls.runtime.classifier import Classifier, softmax
from edgecls.runtime.infer import collect_files
from edgecls.runtime.parallel import available_cpus

RAY_MISSING = (
    "--engine ray needs the ray extra (Ray Data); install it with pip install 'edgecls[ray]' "
    "(in a checkout: pip install -e '.[ray]')"
)


class Predictor:
    """One actor: one ORT session; a batch of file bytes in, per file its top-k and probabilities out."""

    def __init__(self, onnx_path: str, provider: str, threads: int, top_k: int, draft: bool):
        self.classifier = Classifier(onnx_path, provider, threads, draft=draft)
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        c = self.classifier
        decoded = c.preprocess.decode([bytes(data) for data in batch["bytes"]])  # the plain engine's decoding
        errors = [d if isinstance(d, str) else None for d in decoded]
        arrays = [None if isinstance(d, str) else d for d in decoded]
        good = [i for i, e in enumerate(errors) if e is None]
        k, n = self.top_k, len(errors)
        probs = np.full((n, len(c.class_names)), np.nan, np.float32)
        if good:
            probs[good] = softmax(c.logits(np.stack([arrays[i] for i in good])))
        tops = dict(zip(good, c.top_k(probs[good], k))) if good else {}
        out: dict[str, np.ndarray] = {
            "file": np.asarray(batch["path"], dtype=object),
            "status": np.asarray(["ok" if e is None else f"error: {e}" for e in errors], dtype=object),
        }
        for j in range(k):
            out[f"label{j + 1}"] = np.asarray([tops[i][j][0] if i in tops else None for i in range(n)], dtype=object)
            out[f"prob{j + 1}"] = np.asarray([tops[i][j][1] if i in tops else np.nan for i in range(n)], np.float64)
        out["probabilities"] = probs
        return out


def infer_ray(
    paths: list[str],
    onnx_path: str,
    output: str,
    provider: str = "auto",
    batch_size: int = 64,
    top_k: int = 1,
    fmt: str = "parquet",
    actors: int | None = None,
    cpus_per_actor: int = 1,
    draft: bool = True,
    err=None,
) -> int:
    """Classify `paths` on Ray; results go to the folder `output`. Returns the exit code of `infer`."""
    err = err or sys.stderr
    try:
        import ray
        import ray.data
        from ray.data.expressions import col
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    if fmt not in ("parquet", "csv"):
        raise UsageError(f"--engine ray writes --format parquet or csv (got {fmt})")
    if batch_size < 1 or top_k < 1 or cpus_per_actor < 1 or (actors is not None and actors < 1):
        raise UsageError("--batch-size, --top-k, --actors and --cpus-per-actor must be at least 1")
    out = Path(output)
    if out.exists():
        raise UsageError(f"--output {out} already exists; --engine ray writes a new folder, so name another")
    if not out.parent.is_dir():
        raise UsageError(f"--output {out}: folder {out.parent} does not exist")
    files = [str(f.resolve()) for f in collect_files(paths)]
    try:  # a bad model fails here, in one line, before any cluster work
        local = Classifier(onnx_path, "cpu", 1, split=False)
    except EdgeclsError as exc:
        raise UsageError(str(exc)) from None
    top_k = min(top_k, len(local.class_names))
    del local

    if not ray.is_initialized():
        # RAY_ADDRESS set: join that cluster; else start a local Ray on this machine's cores.
        local_ray = not os.environ.get("RAY_ADDRESS")
        ray.init(
            num_cpus=available_cpus() if local_ray else None,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=True,
        )
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = 1 if provider == "cuda" else 0
    # One CPU stays free for Ray Data's read tasks: a pool that takes every CPU starves them and stalls.
    actors = actors or max(1, (cpus - 1) // cpus_per_actor)
    if actors * cpus_per_actor >= cpus:
        raise UsageError(
            f"--actors {actors} x --cpus-per-actor {cpus_per_actor} would take all {cpus} CPUs of the "
            "Ray cluster and leave none to read the files; ask for fewer"
        )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows in input order, like the plain engine
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run plan and log-folder lines
    t0 = time.perf_counter()
    ds = (
        ray.data.read_binary_files(files, include_paths=True)
        .map_batches(
            Predictor,
            fn_constructor_args=(str(Path(onnx_path).resolve()), provider, cpus_per_actor, top_k, draft),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
            num_gpus=gpus,
        )
        .materialize()
    )
    bad = ds.filter(expr=col("status") != "ok").select_columns(["file", "status"]).take_all()
    for row in bad:
        print(f"skipped {row['file']}: {row['status'][len('error: ') :]}", file=err)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if fmt == "parquet":
        ds.write_parquet(str(partial))
    else:
        ds.drop_columns(["probabilities"]).write_csv(str(partial))
    os.replace(partial, out)
    seconds = time.perf_counter() - t0
    ok = len(files) - len(bad)
    print(
        f"classified {ok} of {len(files)} files ({len(bad)} skipped) in {seconds:.2f} s, "
        f"{ok / seconds if seconds else 0:.0f} img/s on Ray ({actors} actors x {cpus_per_actor} CPU, "
        f"{cpus} CPUs in the cluster), model {onnx_path}; results in {out}",
        file=err,
    )
    return 1 if bad else 0
