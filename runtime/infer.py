"""`edgecls infer`: classify image files and folders with ONNX Runtime alone, streaming: files are
decoded by worker processes ahead of the model, and results are written in input order as they come."""

from __future__ import annotations

import collections
import csv
import functools
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from edgecls.errors import EdgeclsError, UsageError

from .classifier import Classifier, softmax
from .decode import process_pool
from .parallel import available_cpus


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
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise UsageError(f"folder {p} holds no files to classify")
            files += found
        else:
            raise UsageError(f"path {p} does not exist")
    if not files:
        raise UsageError("no image paths given")
    return files


PREFETCH = 2  # batches decoded ahead of the one ONNX Runtime is running
POOL_MIN_BATCHES = 4  # fewer batches than this decode inline: starting worker processes costs ~0.5 s
# --workers auto: the pool must have enough decoding to take over. Below about 1 ms per image (CIFAR-size
# JPEGs: 0.1 ms) handing files and pixels between processes costs what decoding saves, and under about 1 s
# of decoding in all the pool's start-up does (docs/guide/results.md, "Streaming infer": measured on both sides).
AUTO_MIN_IMAGE_S = 1e-3
AUTO_MIN_DECODE_S = 1.0


def default_workers() -> int:
    return min(4, available_cpus())


def pool_pays(decode_s_per_image: float, remaining: int, cpus: int | None = None) -> bool:
    """--workers auto: would decode workers beat decoding in this thread for `remaining` more files?"""
    return (
        (cpus or available_cpus()) >= 2
        and decode_s_per_image >= AUTO_MIN_IMAGE_S
        and decode_s_per_image * remaining >= AUTO_MIN_DECODE_S
    )


def decoding_text(workers: int) -> str:
    """How files were decoded, as infer's summary line says it."""
    return f"{workers} decode worker processes" if workers else "decoding in the main process"


def stream_predictions(
    classifier: Classifier,
    files: list[Path],
    batch_size: int,
    top_k: int,
    workers: int | None = 0,
    warn=lambda msg: print(msg, file=sys.stderr),
    on_choice=lambda workers: None,
    strict_input: bool = False,
) -> Iterator[list[Prediction]]:
    """Predictions batch by batch, in input order. With `workers` > 0 (and enough files), that many
    processes decode up to PREFETCH batches ahead while ONNX Runtime runs the current one; with 0 this
    thread decodes. None (auto) times this thread decoding the first batch, then starts
    default_workers() processes only if `pool_pays`; `on_choice` hears the worker count used (0: none). At most
    PREFETCH + 1 batches of pixels are held, whatever the number of files. An image that does not fit the
    model (fit_note) is warned about once; with `strict_input` it stops the run (UsageError)."""
    chunks = (files[i : i + batch_size] for i in range(0, len(files), batch_size))
    unfit = []

    def predict(chunk: list[Path], decoded: list) -> list[Prediction]:
        preds, arrays, ok = [], [], []
        for f, (d, note) in zip(chunk, decoded):
            if note is not None and not unfit:
                unfit.append(f)
                if strict_input:
                    raise UsageError(f"{f} does not fit the model: {note} (--strict-input)")
                warn(f"warning: {f} is {note}: answers for such images mean little (said once; "
                     "--strict-input makes it an error)")  # fmt: skip
            if isinstance(d, str):  # the reason it is not a usable image
                warn(f"skipped {f}: {d}")
                preds.append(Prediction(str(f), error=str(d)))
            else:
                arrays.append(d)
                preds.append(Prediction(str(f)))
                ok.append(preds[-1])
        if arrays:
            for pred, top in zip(ok, classifier.top_k(softmax(classifier.logits(np.stack(arrays))), top_k)):
                pred.top = top
        return preds

    # one picklable job, run here or in a worker process: list of paths -> (decoded image or reason, fit note)
    job = functools.partial(classifier.preprocess.decode, with_fit=True)

    if workers is None:
        first = next(chunks, None)
        if first is None:
            return
        t0 = time.perf_counter()
        decoded = job([str(f) for f in first])
        per_image = (time.perf_counter() - t0) / len(first)
        yield predict(first, decoded)
        remaining = len(files) - len(first)
        workers = default_workers() if pool_pays(per_image, remaining) else 0
    elif workers < 1 or len(files) < POOL_MIN_BATCHES * batch_size:
        workers = 0
    on_choice(workers)
    if workers:
        yield from _pooled(job, chunks, workers, predict)
    else:
        for chunk in chunks:
            yield predict(chunk, job([str(f) for f in chunk]))


def _pooled(job, chunks: Iterator[list[Path]], workers: int, predict) -> Iterator[list[Prediction]]:
    """Decode on `workers` processes, PREFETCH batches ahead, predicting in input order here."""
    with process_pool(workers) as pool:
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(job, [str(f) for f in chunk])))
            if len(pending) > PREFETCH + workers - 1:  # keep every worker busy, and the model too
                chunk0, future = pending.popleft()
                yield predict(chunk0, future.result())
        while pending:
            chunk0, future = pending.popleft()
            yield predict(chunk0, future.result())


def classify_files(
    classifier: Classifier,
    files: list[Path],
    batch_size: int,
    top_k: int,
    warn=lambda msg: print(msg, file=sys.stderr),
    workers: int | None = 0,
    on_choice=lambda workers: None,
) -> list[Prediction]:
    """Every prediction in a list (for callers that want them all at once, such as the bench)."""
    return [
        p for batch in stream_predictions(classifier, files, batch_size, top_k, workers, warn, on_choice) for p in batch
    ]


class Writer:
    """Results in one of the formats, written batch by batch as they come."""

    def __init__(self, stream: TextIO, fmt: str, top_k: int, width: int = 4):
        self.stream, self.fmt, self.top_k, self.width, self.first = stream, fmt, top_k, width, True

    def csv_header(self) -> list[str]:
        return ["file", "status"] + [f"{c}{i}" for i in range(1, self.top_k + 1) for c in ("label", "prob")]

    def start(self) -> None:
        if self.fmt == "csv":
            csv.writer(self.stream, lineterminator="\n").writerow(self.csv_header())
        elif self.fmt == "table":
            self.stream.write(f"{'file'.ljust(self.width)}  prediction\n")
        elif self.fmt == "json":
            self.stream.write("[")

    def write(self, results: list[Prediction]) -> None:
        if self.fmt == "csv":
            writer = csv.writer(self.stream, lineterminator="\n")
            for r in results:
                cells = [v for lab, p in r.top for v in (lab, f"{p:.6f}")]
                writer.writerow([r.file, f"error: {r.error}" if r.error else "ok"] + cells)
        elif self.fmt in ("json", "jsonl"):
            for r in results:
                item = json.dumps(_record(r), indent=None if self.fmt == "jsonl" else 2)
                if self.fmt == "jsonl":
                    self.stream.write(item + "\n")
                else:
                    self.stream.write(
                        ("\n" if self.first else ",\n") + "\n".join("  " + line for line in item.splitlines())
                    )
                    self.first = False
        else:
            for r in results:
                shown = f"SKIPPED ({r.error})" if r.error else ", ".join(f"{lab} ({100 * p:.1f}%)" for lab, p in r.top)
                self.stream.write(f"{r.file.ljust(self.width)}  {shown}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if not self.first else "]\n")
        self.stream.flush()


def _record(r: Prediction) -> dict:
    return {
        "file": r.file,
        "status": "error" if r.error else "ok",
        "error": r.error,
        "top_k": [{"label": lab, "probability": round(p, 6)} for lab, p in r.top],
    }


def resume_point(partial: Path, fmt: str, header: list[str], files: list[Path]) -> tuple[int, int]:
    """(files already done, how many of them failed) in an interrupted output; a half-written last line
    is cut off. The rows must be exactly the first inputs, in order."""
    data = partial.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(partial, "r+b") as fh:
            fh.truncate(len(complete))
    lines = complete.decode("utf-8").splitlines()
    if fmt == "csv":
        if not lines or next(csv.reader([lines[0]])) != header:
            raise UsageError(
                f"--resume: {partial} does not start with the header of --format csv --top-k "
                f"{len(header) // 2 - 1}; run without --resume"
            )
        rows = [(row[0], row[1] != "ok") for row in csv.reader(lines[1:])]
    else:
        try:
            rows = [(rec["file"], rec["status"] != "ok") for rec in map(json.loads, lines)]
        except (ValueError, KeyError, TypeError):
            raise UsageError(
                f"--resume: {partial} is not JSON Lines from edgecls infer; run without --resume"
            ) from None
    for i, (name, _) in enumerate(rows):
        if i >= len(files) or name != str(files[i]):
            expected = str(files[i]) if i < len(files) else "nothing"
            raise UsageError(
                f"--resume: row {i + 1} of {partial} is {name}, but input {i + 1} is {expected}; "
                "the inputs changed, so run without --resume"
            )
    return len(rows), sum(failed for _, failed in rows)


def infer(
    paths: list[str],
    onnx_path: str,
    provider: str = "auto",
    batch_size: int = 64,
    top_k: int = 1,
    fmt: str = "table",
    output: str | None = None,
    threads: int | None = None,
    out=None,
    err=None,
    workers: int | None = None,
    draft: bool = True,
    resume: bool = False,
    strict_input: bool = False,
    precision: str = "fp32",
) -> int:
    """Classify `paths`; returns the exit code: 0 all classified, 1 some files skipped.

    With --output the results stream into FILE.partial, which is renamed to FILE once complete: an
    interrupted run never replaces a finished file, and --resume continues the .partial."""
    out, err = out or sys.stdout, err or sys.stderr
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1 (got {top_k})")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be 0 (decode in the main thread) or more (got {workers})")
    if output and not Path(output).parent.is_dir():
        raise UsageError(f"--output {output}: folder {Path(output).parent} does not exist")
    if resume and not output:
        raise UsageError("--resume continues an --output FILE; give the same --output as the interrupted run")
    if resume and fmt not in ("csv", "jsonl"):
        raise UsageError("--resume works with --format csv or jsonl (results written line by line)")
    files = collect_files(paths)
    try:
        classifier = Classifier(onnx_path, provider, threads, draft=draft, precision=precision)
    except EdgeclsError as exc:
        raise UsageError(str(exc)) from None
    if classifier.fallback_reason:
        print(f"provider auto: using CPU (CUDA not available: {classifier.fallback_reason})", file=err)
    top_k = min(top_k, len(classifier.class_names))
    partial = Path(f"{output}.partial") if output else None
    done = failed_before = 0
    if resume and not partial.is_file() and Path(output).is_file():
        # a finished job script run again: the output is there whole, so there is nothing to do
        header = Writer(io.StringIO(), fmt, top_k).csv_header()
        if resume_point(Path(output), fmt, header, files)[0] == len(files):
            print(f"--resume: {output} is complete ({len(files)} files); nothing to do", file=err)
            return 0
    if resume:
        if not partial.is_file():
            raise UsageError(
                f"--resume: no interrupted run to continue ({partial} does not exist); run without --resume"
            )
        done, failed_before = resume_point(partial, fmt, Writer(io.StringIO(), fmt, top_k).csv_header(), files)
        print(f"resuming {partial}: {done} of {len(files)} files already done", file=err)
    stream = open(partial, "a" if resume else "w", encoding="utf-8", newline="") if partial else out
    writer = Writer(stream, fmt, top_k, width=max([len(str(f)) for f in files] + [4]))
    t0 = time.perf_counter()
    count = skipped = 0
    decoding = [0]  # the decode workers stream_predictions chose
    bar = tqdm(
        total=len(files),
        initial=done,
        unit="img",
        file=err,
        desc="classifying",
        disable=None if len(files) >= 200 else True,
    )
    try:
        if not resume:
            writer.start()
        for batch in stream_predictions(
            classifier,
            files[done:],
            batch_size,
            top_k,
            workers,
            warn=lambda m: print(m, file=err),
            on_choice=decoding.append,
            strict_input=strict_input,
        ):
            writer.write(batch)
            count += len(batch)
            skipped += sum(1 for r in batch if r.error)
            bar.update(len(batch))
        writer.finish()
    finally:
        bar.close()
        if partial:
            stream.close()
    if partial:
        os.replace(partial, output)
    seconds = time.perf_counter() - t0
    ok = count - skipped
    print(
        f"classified {ok} of {count} files ({skipped} skipped) in {seconds:.2f} s, "
        f"{ok / seconds if seconds else 0:.0f} img/s, {decoding_text(decoding[-1])}, "
        f"provider {classifier.providers[0]}, model {classifier.engine.path}"
        + (f"; {done} done before resuming" if resume else ""),
        file=err,
    )
    return 1 if skipped or failed_before else 0
