"""`--precision auto`: the fastest configuration (engine x precision) for a model file on this machine,
among those that answer like the trained model.

A configuration counts when it is fp32 (parity-tested) or when its accuracy on the model's full test split,
measured here, is within GATE_POINTS of ONNX Runtime fp32 on the same images. Where the test split is not
found (an edge box without the data sets), only the fp32 configurations count, and the log says so.
Candidates are timed at the batch size the command runs, warmed up, in alternating rounds; the choice is
cached per file (sha256), machine (CPU and instruction sets), library versions, threads and batch size in
the user's cache, so the next call opens the chosen engine at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecls import __version__
from edgecls.errors import EdgeclsError, UsageError
from edgecls.fileio import write_json
from edgecls.locations import user_cache
from edgecls.machine import cpu_flags, cpu_name
from edgecls.metadata import read_info
from edgecls.runtime.classifier import accuracy_pct
from edgecls.runtime.engine import ACCURACY_GATE_POINTS, PRECISIONS, PROVIDERS, open_engine
from edgecls.runtime.preprocess import Preprocessor
from edgecls.timing import time_calls

log = logging.getLogger(__name__)
GATE_POINTS = ACCURACY_GATE_POINTS  # the gate `edgecls quantize` and `edgecls evaluate` hold reduced precision to
ROUNDS = 3
SECONDS_PER_ROUND = 0.3
# where auto looks when --provider auto: every engine; the ones this machine cannot run refuse in one line
AUTO_PROVIDERS = ("cpu", "openvino", "cuda", "tensorrt")


@dataclass(frozen=True)
class Choice:
    provider: str
    precision: str
    images_per_s: float
    accuracy_delta_points: float | None  # against ONNX Runtime fp32; None where not measured (fp32 only)
    batch_size: int
    considered: list[dict]  # every configuration tried: speed, accuracy, or why it could not run
    cached: bool = False

    def describe(self) -> str:
        delta = "" if self.accuracy_delta_points is None else f", {self.accuracy_delta_points:+.2f} points"
        return (
            f"--precision auto: {self.provider} {self.precision} ({self.images_per_s:,.0f} img/s at batch "
            f"{self.batch_size}{delta}; {'cached choice' if self.cached else 'measured now'})"
        )


CHOICE_FIELDS = [f.name for f in fields(Choice) if f.name != "cached"]


def cache_file() -> Path:
    return user_cache("choices.json")


def _versions() -> dict[str, str]:
    import onnxruntime

    versions = {"edgecls": __version__, "onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    return versions


def cache_key(path: Path, provider: str, threads: int | None, batch: int) -> str:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    siblings = sorted(p.name for p in Path(path).parent.glob(f"{Path(path).stem}.*.onnx"))  # int8/fp16 files
    machine = {"cpu": cpu_name(), "isa": cpu_flags(), **_versions()}
    return json.dumps([digest, siblings, machine, provider, threads, batch], sort_keys=True)


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: measure again


def _test_split(model: str, data_dir: str | None):
    """uint8 images and labels of the model's full test split, or (None, why) where they are not at hand."""
    try:
        from edgecls.data import load_for_spec
        from edgecls.registry import get_spec
    except ImportError:
        return None, "the data loaders need edgecls[train]"
    try:
        test = load_for_spec(get_spec(model), "test", data_dir, download=False)
    except EdgeclsError as exc:
        return None, str(exc)
    return (test.images().numpy(), test.labels.numpy()), test.source


def choose(
    path: str | Path,
    provider: str = "auto",
    threads: int | None = None,
    batch: int = 64,
    data_dir: str | None = None,
    refresh: bool = False,
    say=log.info,
) -> Choice:
    """The fastest configuration for `path` at `batch` rows per run that passes the gate, from the cache
    where this file, machine and setting were measured before (`refresh` measures again). `say`: where
    progress lines go (infer keeps stdout for its results)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no ONNX model at {path}; run `edgecls export` first or pass --onnx FILE")
    info = read_info(path)  # a damaged or foreign file fails here, in one line
    if batch < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch})")
    key = cache_key(path, provider, threads, batch)
    cache = _read_cache()
    if not refresh and key in cache:
        try:
            return Choice(**{k: cache[key][k] for k in CHOICE_FIELDS}, cached=True)
        except (KeyError, TypeError):
            pass  # an entry written by another version: measure again
    providers = AUTO_PROVIDERS if provider == "auto" else (provider,)
    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}; use {', '.join(PROVIDERS)}")
    say(f"--precision auto: measuring {info.model} on this machine at batch {batch} (cached afterwards)")
    engines, considered = {}, []
    for prov in providers:
        for precision in PRECISIONS:
            try:
                engines[prov, precision] = open_engine(path, prov, threads, precision=precision)
            except EdgeclsError as exc:  # not on this machine, or no such file: say why, go on
                considered.append({"provider": prov, "precision": precision, "unavailable": str(exc)})
    if not engines or (("cpu", "fp32") not in engines and provider in ("auto", "cpu")):
        why = next((c["unavailable"] for c in considered if c["precision"] == "fp32"), "")
        raise UsageError(f"--precision auto: nothing to choose from for {path} on --provider {provider}: {why}")
    try:
        choice = _measure(info, engines, considered, batch, data_dir, say)
    finally:
        for engine in engines.values():
            engine.close()
    cache[key] = {k: v for k, v in asdict(choice).items() if k != "cached"}
    cache[key]["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file(), cache)
    except OSError as exc:  # a read-only home: the choice stands, measured again next time
        say(f"  (choice not cached: {exc})")
    return choice


def _measure(info, engines: dict, considered: list, batch: int, data_dir: str | None, say) -> Choice:
    preprocess = Preprocessor.for_model(info)
    split, source = _test_split(info.model, data_dir)
    reference = ("cpu", "fp32") if ("cpu", "fp32") in engines else next(iter(engines))
    accuracy = {}
    if split is None:
        say(f"  accuracy not measured ({source}): only fp32 configurations count")
    else:
        for key, engine in engines.items():
            if key[1] != "fp32" or key == reference:
                accuracy[key] = accuracy_pct(engine.run, *split, prepare=preprocess.normalize)
    x = np.random.default_rng(0).standard_normal((batch, *info.input_shape)).astype(np.float32)
    times = {key: [] for key in engines}
    for engine in engines.values():
        time_calls(lambda e=engine: e.run(x), 0.1, min_reps=2)  # warm-up
    for _ in range(ROUNDS):  # alternating rounds: drift on a shared machine hits every candidate alike
        for key, engine in engines.items():
            times[key] += time_calls(lambda e=engine: e.run(x), SECONDS_PER_ROUND, min_reps=2)
    rows = []
    for (prov, precision), engine in engines.items():
        speed = batch / statistics.median(times[prov, precision])
        delta = accuracy[prov, precision] - accuracy[reference] if (prov, precision) in accuracy else None
        gated = precision == "fp32" or (delta is not None and abs(delta) <= GATE_POINTS)
        rows.append({"provider": prov, "precision": precision, "engine": engine.execution(batch),
                     "images_per_s": speed, "accuracy_delta_points": delta, "passed_gate": gated})  # fmt: skip
        say(
            f"  {prov:9}{precision:6}{speed:>10,.0f} img/s"
            + ("" if delta is None else f"  {delta:+.2f} points")
            + ("" if gated else "  (over the gate, or not measured)")
        )
    best = max((r for r in rows if r["passed_gate"]), key=lambda r: r["images_per_s"])
    delta = best["accuracy_delta_points"] if best["precision"] != "fp32" else None
    return Choice(best["provider"], best["precision"], best["images_per_s"], delta, batch, considered + rows)


def resolve(
    path: str | Path,
    provider: str,
    precision: str,
    threads: int | None = None,
    batch: int = 64,
    data_dir: str | None = None,
    say=log.info,
) -> tuple[str, str]:
    """(provider, precision) to open: as given, or for precision "auto" the cached or measured choice."""
    if precision != "auto":
        return provider, precision
    choice = choose(path, provider, threads, batch, data_dir, say=say)
    say(choice.describe())
    return choice.provider, choice.precision
