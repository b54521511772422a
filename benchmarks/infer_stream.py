#!/usr/bin/env python
"""Streaming `edgecls infer` against the earlier path (Pillow decoding in the main thread, full-size JPEG
decode), in one run on one machine:

    python benchmarks/infer_stream.py [--cifar 10000] [--photos 200] [--workers N]

1. The CIFAR-10 test JPEGs (--cifar of them, evenly spaced): the earlier path (Pillow, inline), the
   libjpeg-turbo path inline, and that path in worker processes; the answers must be identical.
2. --photos CIFAR-10 test images upscaled to 4000x3000 JPEG photos (made in a temporary folder):
   the fast path (libjpeg-turbo + reduced-scale decoding + workers) against the earlier path (Pillow,
   inline, full decode), and top-1 accuracy of both against the true labels.
3. `--workers auto` (infer's default) against no workers and --workers N, on those two inputs and on
   two small folders: 1,000 JPEGs of 32-256 px and 300 of 512-1024 px (CIFAR-10 images resized).
Writes infer_stream.md and .json to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from edgecls import timing
from edgecls.fileio import ensure_writable_dir, write_report
from edgecls.locations import shipped_onnx
from edgecls.runtime import Classifier
from edgecls.runtime.infer import classify_files, decoding_text, default_workers

REPO = Path(__file__).resolve().parents[1]
PHOTO_BATCH = 16
# Decode workers (forkserver) import this module again: torch-using modules are imported in main() only,
# as in the edgecls command, whose main module is light.


def timed(
    classifier: Classifier, files: list[Path], workers: int | None, batch: int = 64, choice: list | None = None
) -> tuple[float, list]:
    """(seconds, predictions) of one whole pass of infer's path over `files`."""
    return timing.timed(
        lambda: classify_files(
            classifier,
            files,
            batch,
            1,
            workers=workers,
            warn=lambda m: None,
            on_choice=(choice if choice is not None else []).append,
        )
    )


def resized(sources: list[str], folder: Path, sizes: list[int]) -> list[Path]:
    folder.mkdir()
    files = [folder / f"{i:05d}.jpg" for i in range(len(sizes))]
    for src, size, f in zip(sources, sizes, files):
        Image.open(src).convert("RGB").resize((size, size), Image.BILINEAR).save(f, quality=90)
    return files


def auto_row(
    name: str,
    classifier: Classifier,
    files: list[Path],
    workers: int,
    batch: int = 64,
    known: tuple[float, float] | None = None,
) -> dict:
    """img/s with --workers auto, 0 and `workers`; `known`: the seconds of the last two, already measured."""
    choice: list = []
    auto_s, _ = timed(classifier, files, None, batch, choice)
    none_s, pool_s = known or (timed(classifier, files, 0, batch)[0], timed(classifier, files, workers, batch)[0])
    return {
        "input": name,
        "images": len(files),
        "batch_size": batch,
        "auto_img_s": len(files) / auto_s,
        "auto_choice": decoding_text(choice[-1]),
        "inline_img_s": len(files) / none_s,
        "workers_img_s": len(files) / pool_s,
    }


def accuracy(preds, labels, names) -> float:
    return 100 * float(np.mean([names.index(p.top[0][0]) == y for p, y in zip(preds, labels)]))


def cifar_row(fast: Classifier, exact: Classifier, files: list[Path], labels, workers: int) -> tuple[dict, tuple]:
    """The CIFAR-10 JPEGs through the earlier path (Pillow, inline), libjpeg-turbo inline and with workers;
    also (inline, workers) seconds for the auto row."""
    timed(fast, files[:256], workers)  # warm-up: page cache, pool start
    inline_s, inline = timed(exact, files, 0)
    turbo_s, turbo = timed(fast, files, 0)
    pool_s, pooled = timed(fast, files, workers)
    if not [p.top for p in inline] == [p.top for p in turbo] == [p.top for p in pooled]:
        raise SystemExit("libjpeg-turbo or worker decoding changed an answer")
    return (
        {
            "images": len(files),
            "inline_img_s": len(files) / inline_s,
            "turbo_img_s": len(files) / turbo_s,
            "workers_img_s": len(files) / pool_s,
            "speedup": inline_s / pool_s,
            "turbo_speedup": inline_s / turbo_s,
            "accuracy_pct": accuracy(pooled, labels, list(fast.class_names)),
        },
        (turbo_s, pool_s),
    )


def photo_row(fast: Classifier, exact: Classifier, photos: list[Path], labels, workers: int) -> tuple[dict, tuple]:
    """4000x3000 photos: full Pillow decoding against reduced-scale libjpeg-turbo, inline and with workers.
    Batches of 16, so that 200 photos make enough batches for infer to start its worker pool
    (POOL_MIN_BATCHES); at 64 they would all decode inline."""
    names = list(fast.class_names)
    timed(fast, photos[:8], workers, PHOTO_BATCH)
    old_s, old = timed(exact, photos, 0, PHOTO_BATCH)
    inline_fast_s, _ = timed(fast, photos, 0, PHOTO_BATCH)
    new_s, new = timed(fast, photos, workers, PHOTO_BATCH)
    agree = float(np.mean([a.top[0][0] == b.top[0][0] for a, b in zip(old, new)]) * 100)
    return (
        {
            "images": len(photos),
            "size": "4000x3000",
            "earlier_img_s": len(photos) / old_s,
            "fast_img_s": len(photos) / new_s,
            "speedup": old_s / new_s,
            "batch_size": PHOTO_BATCH,
            "fast_inline_img_s": len(photos) / inline_fast_s,
            "fast_inline_speedup": old_s / inline_fast_s,
            "accuracy_full_decode_pct": accuracy(old, labels, names),
            "accuracy_fast_pct": accuracy(new, labels, names),
            "top1_agreement_pct": agree,
        },
        (inline_fast_s, new_s),
    )


def markdown(result: dict, workers: int) -> str:
    c, p = result["cifar"], result["photos"]
    return "\n".join(
        [
            f"Streaming infer, {result['created']}: `{result['command']}`; {result['cpu']}, cnn, "
            f"{workers} decode workers.",
            "",
            "| input | images | earlier path img/s | streaming img/s | speed-up | accuracy |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| CIFAR-10 test JPEGs (32x32) | {c['images']:,} | {c['inline_img_s']:,.0f} (Pillow, inline) "
            f"| {c['workers_img_s']:,.0f} (libjpeg-turbo, worker processes) | {c['speedup']:.2f}x "
            f"| {c['accuracy_pct']:.2f} % (identical answers) |",
            f"| CIFAR-10, libjpeg-turbo inline (no workers) | {c['images']:,} | {c['inline_img_s']:,.0f} "
            f"| {c['turbo_img_s']:,.0f} | {c['turbo_speedup']:.2f}x | identical answers |",
            f"| 4000x3000 JPEG photos | {p['images']:,} | {p['earlier_img_s']:,.1f} (Pillow, inline, full decode) "
            f"| {p['fast_img_s']:,.1f} (libjpeg-turbo + draft, workers) | {p['speedup']:.1f}x "
            f"| {p['accuracy_full_decode_pct']:.2f} % full "
            f"decode, {p['accuracy_fast_pct']:.2f} % fast; top-1 agreement {p['top1_agreement_pct']:.1f} % |",
            f"| 4000x3000 photos, libjpeg-turbo + draft inline (no workers) | {p['images']:,} "
            f"| {p['earlier_img_s']:,.1f} | {p['fast_inline_img_s']:,.1f} | {p['fast_inline_speedup']:.1f}x | |",
            "",
            f"Photos run in batches of {PHOTO_BATCH}, the CIFAR-10 JPEGs in batches of 64.",
            "",
            f"`--workers auto` (the default) against no workers and {workers} workers, img/s:",
            "",
            "| input | images | batch | auto | auto chose | no workers | workers |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *[
                f"| {r['input']} | {r['images']:,} | {r['batch_size']} | {r['auto_img_s']:,.0f} | {r['auto_choice']} "
                f"| {r['inline_img_s']:,.0f} | {r['workers_img_s']:,.0f} |"
                for r in result["auto"]
            ],
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", type=int, default=10000)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from edgecls.data import evenly_spaced, load_split
    from edgecls.errors import EdgeclsError
    from edgecls.machine import cpu_name

    try:
        if args.cifar < 1 or args.photos < 1 or args.workers < 0:
            raise EdgeclsError("--cifar and --photos must be positive, --workers 0 or more")
        out = ensure_writable_dir(args.out, "--out")
        test = load_split("cifar10", "test", args.data_dir, download=False)
        if test.files is None:
            raise EdgeclsError("this benchmark needs CIFAR-10 as image files (CIFAR10-images/test/<class>/)")
    except EdgeclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fast = Classifier(shipped_onnx("cnn"), "cpu")
    exact = Classifier(shipped_onnx("cnn"), "cpu", draft=False, fast_jpeg=False)  # the earlier path
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "workers": args.workers,
        "command": "python benchmarks/infer_stream.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    idx = evenly_spaced(len(test), args.cifar).tolist()
    files, labels = [Path(test.files[i]) for i in idx], test.labels[idx].numpy()
    result["cifar"], cifar_s = cifar_row(fast, exact, files, labels, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        pidx = evenly_spaced(len(test), args.photos).tolist()
        photos = []
        for i in pidx:
            photo = Path(tmp) / f"{i:05d}.jpg"
            Image.open(test.files[i]).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(photo, quality=90)
            photos.append(photo)
        result["photos"], photo_s = photo_row(fast, exact, photos, test.labels[pidx].numpy(), args.workers)
        rng = np.random.default_rng(0)
        srcs = [test.files[i] for i in evenly_spaced(len(test), 1000).tolist()]
        small = resized(srcs, Path(tmp) / "small", rng.integers(32, 257, 1000).tolist())
        mid = resized(srcs[:300], Path(tmp) / "mid", rng.integers(512, 1025, 300).tolist())
        result["auto"] = [
            auto_row("CIFAR-10 test JPEGs (32x32)", fast, files, args.workers, known=cifar_s),
            auto_row("JPEGs of 32-256 px", fast, small, args.workers),
            auto_row("JPEGs of 512-1024 px", fast, mid, args.workers),
            auto_row("4000x3000 photos", fast, photos, args.workers, PHOTO_BATCH, known=photo_s),
        ]
    text = markdown(result, args.workers)
    write_report(out, "infer_stream", text, result)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
