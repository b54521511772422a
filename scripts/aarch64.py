#!/usr/bin/env python
"""The shipped models on aarch64 against x86, the two halves of scripts/check-aarch64.sh.

    python scripts/aarch64.py probe --artifacts artifacts --samples samples --out x86.json [--cli]
    python scripts/aarch64.py compare x86.json arm-cortex-a72.json arm-cortex-a76.json

`probe` runs wherever edgecls is installed (the x86 checkout, or the wheel in an emulated arm64 root) and
needs only the runtime (onnxruntime, numpy, Pillow): for every shipped file (artifacts/*/model.onnx and
its variants model.*.onnx: reduced precision, or the fused graph form in fp32) it writes the logits the
runtime gives on that model's sample images (samples/), its ms per image, and with --cli the top-1 labels
`edgecls infer` prints.

`compare` (on the host, where onnx is installed) applies the gates, prints one table and exits 1 on any
difference:
- fp32 (model.onnx, model.fused.onnx): max |Δlogit| within the model's parity atol, and the same top-1 on every image;
- a reduced-precision file: within one output quantization step (the scale of the DequantizeLinear that
  makes the logits), and the same top-1 wherever the x86 margin between the two leading logits exceeds
  two steps: each of the two may move by one step, so a smaller margin may tie or flip. A file whose logits
  come out in float (a dynamically quantized LSTM: its activations are quantized on each call, so a float
  rounding upstream can move one by a step) has no such step; its bar is its own quantization error, the
  largest |Δlogit| between it and the fp32 file on x86 on the same images, which the accuracy gate accepted.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
from pathlib import Path

import numpy as np


def shipped_files(artifacts: Path, models: list[str] | None = None) -> list[tuple[str, str, Path]]:
    """(model, precision, file) of every shipped model file (of `models`): fp32 first, then its variants."""
    out = []
    for folder in sorted(p for p in artifacts.iterdir() if (p / "model.onnx").is_file()):
        if models and folder.name not in models:
            continue
        out.append((folder.name, "fp32", folder / "model.onnx"))
        out += [(folder.name, f.name.split(".")[1], f) for f in sorted(folder.glob("model.*.onnx"))]
    return out


def cli_labels(onnx_file: Path, folder: Path) -> list[str]:
    """The top-1 labels `edgecls infer` prints for the images in `folder`, in file order. The command runs
    in this process (click's runner): under emulation a new interpreter per file would cost more than the
    inference."""
    from click.testing import CliRunner

    from edgecls.commands.cli import main

    args = ["infer", str(folder), "--onnx", str(onnx_file), "--format", "jsonl", "--workers", "0"]
    done = CliRunner().invoke(main, args, catch_exceptions=False)
    if done.exit_code != 0:
        raise SystemExit(f"edgecls infer failed on {onnx_file} (exit {done.exit_code}): {done.output[-500:]}")
    return [json.loads(line)["top_k"][0]["label"] for line in done.stdout.splitlines()]


def probe(artifacts: Path, samples: Path, out: Path, cli: bool, models: list[str] | None = None) -> None:
    from edgecls.commands.samples import DATASET_FOLDERS, sample_files
    from edgecls.runtime import Classifier
    from edgecls.timing import best_round

    rows = []
    for model, precision, path in shipped_files(artifacts, models):
        clf = Classifier(path, "cpu")
        files = sample_files(_dataset(clf), samples)
        x = np.stack([clf.to_uint8(f) for f in files])
        logits = clf.logits(x)
        seconds = best_round(lambda clf=clf, x=x: clf.logits(x), seconds=0.5, rounds=2)
        row = {"model": model, "precision": precision, "file": str(path.relative_to(artifacts)), "images": len(files),
               "logits": logits.tolist(), "ms_per_image": 1000 * seconds / len(files)}  # fmt: skip
        if cli:
            row["cli_top1"] = cli_labels(path, samples / DATASET_FOLDERS[_dataset(clf)])
        rows.append(row)
        print(f"{model:12} {precision:5} {len(files):3} images, {row['ms_per_image']:.3f} ms/img", flush=True)
    import onnxruntime

    out.write_text(json.dumps({"machine": platform.machine(), "onnxruntime": onnxruntime.__version__, "rows": rows}))


def _dataset(clf) -> str:
    from edgecls.registry import get_spec

    return get_spec(clf.info.model).dataset


@functools.cache  # one read per file, not one per CPU model compared
def output_step(path: Path) -> float:
    """The quantization step of a file's logits: the scale of the DequantizeLinear producing them (0 for
    a float output)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    producer = next((n for n in graph.node if graph.output[0].name in n.output), None)
    if producer is None or producer.op_type != "DequantizeLinear":
        return 0.0
    inits = {i.name: i for i in graph.initializer}
    return float(numpy_helper.to_array(inits[producer.input[1]]).max())


FP32 = ("fp32", "fused")  # what shipped_files calls the fp32 files: model.onnx, and its fused graph form


def gate(model: str, precision: str, ref: np.ndarray, got: np.ndarray, step: float, atol: float) -> dict:
    """One file on one CPU against x86: the figures and whether the gates pass."""
    diff = float(np.abs(ref - got).max())
    same = ref.argmax(1) == got.argmax(1)
    if precision in FP32:
        bar, must_agree = atol, np.ones(len(ref), bool)
    else:
        top2 = np.sort(ref, axis=1)[:, -2:]
        # one step, with room for float32 rounding of the dequantized values (scale * (q - zero point))
        bar, must_agree = step * (1 + 1e-3), (top2[:, 1] - top2[:, 0]) > 2 * step
    return {"max_abs_diff": diff, "bar": bar, "top1_agree": int(same.sum()), "images": len(ref),
            "top1_required": int(must_agree.sum()), "passed": diff <= bar and bool(same[must_agree].all())}  # fmt: skip


def compare(x86_file: Path, arm_files: list[Path], artifacts: Path, report: Path | None = None) -> int:
    from edgecls.registry import get_spec

    x86_run = json.loads(x86_file.read_text())
    x86 = {(r["model"], r["precision"]): r for r in x86_run["rows"]}
    versions = {"x86": x86_run.get("onnxruntime")}
    lines = [
        "| model | file | CPU (QEMU_CPU) | max \\|Δlogit\\| | bar | top-1 agreement | `infer` top-1 "
        "| ms/img (emulated) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    failed, records = 0, []
    for arm_file in arm_files:
        arm = json.loads(arm_file.read_text())
        cpu = arm_file.stem.removeprefix("arm-")
        versions["aarch64"] = arm.get("onnxruntime")
        if arm["machine"] != "aarch64":
            raise SystemExit(f"{arm_file} was not made on aarch64 (machine {arm['machine']})")
        got_keys = {(r["model"], r["precision"]) for r in arm["rows"]}
        for key in sorted(set(x86) - got_keys):
            lines.append(f"| `{key[0]}` | {key[1]} | {cpu} | missing | | | | | FAIL |")
            failed += 1
        for row in arm["rows"]:
            ref = x86.get((row["model"], row["precision"]))
            if ref is None:
                raise SystemExit(f"{arm_file}: {row['file']} has no x86 reference")
            step = output_step(artifacts / row["file"])
            float_out = step == 0 and row["precision"] not in FP32
            if float_out:  # no output step: the file's own error against fp32 on x86 (see the docstring)
                fp32 = np.asarray(x86[(row["model"], "fp32")]["logits"])
                step = float(np.abs(np.asarray(ref["logits"]) - fp32).max())
            g = gate(row["model"], row["precision"], np.asarray(ref["logits"]), np.asarray(row["logits"]), step,
                     get_spec(row["model"]).atol)  # fmt: skip
            cli = "n/a"
            if "cli_top1" in row and "cli_top1" in ref:
                agree = sum(a == b for a, b in zip(row["cli_top1"], ref["cli_top1"]))
                cli = f"{agree}/{len(ref['cli_top1'])}"
                if row["precision"] in FP32 and agree != len(ref["cli_top1"]):
                    g["passed"] = False
            failed += not g["passed"]
            records.append({"model": row["model"], "file": row["file"], "cpu": cpu, "step": step,
                            "ms_per_image": row["ms_per_image"], "cli_top1": cli, **g})  # fmt: skip
            bar = f"atol {g['bar']:.0e}" if row["precision"] in FP32 else f"1 step ({step:.3g})"
            if float_out:
                bar = f"its x86 error vs fp32 ({step:.3g})"
            agreement = f"{g['top1_agree']}/{g['images']}" + (
                f" ({g['top1_required']} with a margin over 2 steps)" if row["precision"] not in FP32 else ""
            )
            lines.append(
                f"| `{row['model']}` | {row['file']} | {cpu} | {g['max_abs_diff']:.2e} | {bar} | {agreement} "
                f"| {cli} | {row['ms_per_image']:.2f} | {'ok' if g['passed'] else 'FAIL'} |"
            )
    verdict = (f"aarch64 (emulated, {', '.join(f.stem.removeprefix('arm-') for f in arm_files)}) against "
               f"{json.loads(x86_file.read_text())['machine']}: "
               + ("every file within its bar" if not failed else f"{failed} file(s) outside their bar"))  # fmt: skip
    print("\n".join(lines))
    print(f"\n{verdict}")
    if report is not None:
        from datetime import datetime, timezone

        from edgecls.fileio import write_report

        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        head = (f"aarch64 check, {created}: `bash scripts/check-aarch64.sh` on {platform.machine()} "
                f"({_cpu()}), qemu-user; onnxruntime {versions['x86']} on x86, {versions['aarch64']} on "
                f"aarch64 (each the newest wheel pip chose there); {verdict}.\n\n")  # fmt: skip
        write_report(report, "aarch64", head + "\n".join(lines) + "\n",
                     {"created": created, "host_cpu": _cpu(), "onnxruntime": versions, "verdict": verdict,
                      "rows": records})  # fmt: skip
    return 1 if failed else 0


def _cpu() -> str:
    from edgecls.machine import cpu_name

    return cpu_name()


def serve_check(url: str, model: str, artifacts: Path, samples: Path, timeout: float = 300.0) -> int:
    """One tritonclient request (binary tensors) from this machine to `edgecls serve` at `url`: the logits
    must be this machine's runtime's within the model's atol."""
    import time

    import tritonclient.http as tc

    from edgecls.commands.samples import sample_files
    from edgecls.registry import get_spec
    from edgecls.runtime import Classifier

    clf = Classifier(artifacts / model / "model.onnx", "cpu")
    x = clf.preprocess.normalize(np.stack([clf.to_uint8(f) for f in sample_files(get_spec(model).dataset, samples)]))
    client = tc.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    while True:  # emulated start-up is slow
        try:
            if client.is_server_ready():
                break
        except Exception:
            pass
        if time.monotonic() > deadline:
            print(f"edgecls serve on arm64 did not get ready within {timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(1)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(model, [inp]).as_numpy("logits")
    diff = float(np.abs(got - clf.run(x)).max())
    ok = diff <= get_spec(model).atol
    print(
        f"edgecls serve on arm64 answered tritonclient ({len(x)} {model} samples in one request): max |Δlogit| "
        f"{diff:.2e} against {platform.machine()} (atol {get_spec(model).atol:g}): {'ok' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


def perturb(path: Path) -> None:
    """Test of the checker: scale the first float weight of `path` by 1.01, in place."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            init.CopyFrom(numpy_helper.from_array(arr * np.float32(1.01), init.name))
            break
    onnx.save(model, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cli", action="store_true", help="also run `edgecls infer` on each file")
    p.add_argument("--models", default="", help="comma-separated shipped models [all]")
    c = sub.add_parser("compare")
    c.add_argument("x86", type=Path)
    c.add_argument("arm", type=Path, nargs="+")
    c.add_argument("--artifacts", type=Path, required=True)
    c.add_argument("--report", type=Path, default=None, help="also write aarch64.md and .json into this folder")
    q = sub.add_parser("perturb")
    q.add_argument("file", type=Path)
    s = sub.add_parser("serve-check")
    s.add_argument("--url", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--artifacts", type=Path, required=True)
    s.add_argument("--samples", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.action == "serve-check":
        return serve_check(args.url, args.model, args.artifacts, args.samples)
    if args.action == "probe":
        probe(args.artifacts, args.samples, args.out, args.cli, [m for m in args.models.split(",") if m])
        return 0
    if args.action == "perturb":
        perturb(args.file)
        return 0
    return compare(args.x86, args.arm, args.artifacts, args.report)


if __name__ == "__main__":
    sys.exit(main())
