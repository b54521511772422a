"""`edgecls infer`: classify image files and folders with ONNX Runtime alone."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgecls.errors import EdgeclsError
from edgecls.fileio import atomic_path

from .classifier import Classifier, softmax
from .preprocess import ImageError


class UsageError(EdgeclsError):
    """Nothing could be classified: bad paths or options (exit code 2)."""


@dataclass
class Prediction:
    file: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None


def collect_files(paths: list[str]) -> list[Path]:
    """Files as given, folders recursed (sorted; hidden files skipped)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise UsageError(f"folder {p} holds no files to classify")
            files += found
        else:
            raise UsageError(f"path {p} does not exist")
    if not files:
        raise UsageError("no image paths given")
    return files


def classify_files(classifier: Classifier, files: list[Path], batch_size: int, top_k: int,
                   warn=lambda msg: print(msg, file=sys.stderr)) -> list[Prediction]:
    results: list[Prediction] = []
    bar = tqdm(total=len(files), unit="img", file=sys.stderr, disable=None if len(files) >= 200 else True,
               desc="classifying")
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        arrays, ok = [], []
        for f in chunk:
            try:
                arrays.append(classifier.to_uint8(f))
                ok.append(Prediction(str(f)))
            except ImageError as exc:
                warn(f"skipped {f}: {exc}")
                results.append(Prediction(str(f), error=str(exc)))
        if arrays:
            probs = softmax(classifier.logits(np.stack(arrays)))
            order = np.argsort(-probs, axis=1)[:, :top_k]
            for pred, p, idx in zip(ok, probs, order):
                pred.top = [(classifier.class_names[i], float(p[i])) for i in idx]
            results += ok
        bar.update(len(chunk))
    bar.close()
    order = {str(f): i for i, f in enumerate(files)}
    return sorted(results, key=lambda r: order[r.file])


def format_results(results: list[Prediction], fmt: str, top_k: int) -> str:
    if fmt == "json":
        return json.dumps([{"file": r.file, "status": "error" if r.error else "ok", "error": r.error,
                            "top_k": [{"label": lab, "probability": round(p, 6)} for lab, p in r.top]}
                           for r in results], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["file", "status"] + [f"{c}{i}" for i in range(1, top_k + 1) for c in ("label", "prob")])
        for r in results:
            cells = [v for lab, p in r.top for v in (lab, f"{p:.6f}")]
            writer.writerow([r.file, f"error: {r.error}" if r.error else "ok"] + cells)
        return buf.getvalue()
    width = max([len(r.file) for r in results] + [4])
    lines = [f"{'file'.ljust(width)}  prediction"]
    for r in results:
        shown = f"SKIPPED ({r.error})" if r.error else ", ".join(f"{lab} ({100 * p:.1f}%)" for lab, p in r.top)
        lines.append(f"{r.file.ljust(width)}  {shown}")
    return "\n".join(lines) + "\n"


def infer(paths: list[str], onnx_path: str, provider: str = "auto", batch_size: int = 64, top_k: int = 1,
          fmt: str = "table", output: str | None = None, threads: int | None = None,
          out=None, err=None) -> int:
    """Classify `paths`; returns the exit code: 0 all classified, 1 some files skipped."""
    out, err = out or sys.stdout, err or sys.stderr
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1 (got {top_k})")
    if output and not Path(output).parent.is_dir():
        raise UsageError(f"--output {output}: folder {Path(output).parent} does not exist")
    files = collect_files(paths)
    try:
        classifier = Classifier(onnx_path, provider, threads)
    except EdgeclsError as exc:
        raise UsageError(str(exc)) from None
    if classifier.fallback_reason:
        print(f"provider auto: using CPU (CUDA not available: {classifier.fallback_reason})", file=err)
    top_k = min(top_k, len(classifier.class_names))
    t0 = time.perf_counter()
    results = classify_files(classifier, files, batch_size, top_k, warn=lambda m: print(m, file=err))
    seconds = time.perf_counter() - t0
    text = format_results(results, fmt, top_k)
    if output:
        with atomic_path(output) as tmp:
            tmp.write_text(text)
    else:
        out.write(text)
    skipped = sum(1 for r in results if r.error)
    done = len(results) - skipped
    print(f"classified {done} of {len(results)} files ({skipped} skipped) in {seconds:.2f} s, "
          f"{done / seconds if seconds else 0:.0f} img/s, provider {classifier.providers[0]}, model {onnx_path}", file=err)
    return 1 if skipped else 0
