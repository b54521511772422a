#!/usr/bin/env python
"""One table per model over every format edgecls makes, measured in one run on one machine (in the spirit
of Ultralytics' `yolo benchmark`):

    python benchmarks/formats.py [--models all] [--artifacts DIR] [--no-browser]

Rows: eager PyTorch, ONNX fp32, .ort, int8, fp16, and the browser (onnxruntime-web, wasm, in headless
Chromium). Columns: status (ok, or failed and why), file size, accuracy on the full test split, ms/img at
batch 1, img/s at batch 64. ONNX-family rows run through the runtime's Classifier on the CPU provider;
the browser row feeds the same normalized test tensors to session.run inside the page (decoding is not
part of it). Models come from <artifacts>/<name>/ (model.onnx and, for the eager row, checkpoint.pt),
default the shipped ones, which carry no PyTorch weights. int8/fp16 go through `edgecls quantize`'s
gate. Writes formats.md and .json to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecls.asgi import wait_until_up
from edgecls.timing import best_round

REPO = Path(__file__).resolve().parents[1]


def timed(fn, seconds: float = 0.3, rounds: int = 3) -> float:
    """Seconds per call: the best of `rounds` round medians, `seconds` each, after a warm-up call."""
    return best_round(fn, seconds * rounds, rounds)


def accuracy(run, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    return float(100 * np.mean(np.concatenate([run(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)]) == y))


def onnx_row(path: Path, x: np.ndarray, y: np.ndarray) -> dict:
    from edgecls.runtime import Classifier

    c = Classifier(path, "cpu")
    one, many = x[:1], x[:64]
    return {
        "status": "ok",
        "bytes": path.stat().st_size,
        "accuracy_pct": accuracy(c.run, x, y),
        "ms_batch1": 1000 * timed(lambda: c.run(one)),
        "img_s_batch64": 64 / timed(lambda: c.run(many)),
    }


def eager_row(ckpt: Path, x: np.ndarray, y: np.ndarray) -> dict:
    import torch

    from edgecls import checkpoint as ckpt_io

    _, model = ckpt_io.model_from_checkpoint(ckpt_io.load(ckpt))

    def run(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return {
        "status": "ok",
        "bytes": ckpt.stat().st_size,
        "accuracy_pct": accuracy(run, x, y),
        "ms_batch1": 1000 * timed(lambda: run(x[:1])),
        "img_s_batch64": 64 / timed(lambda: run(x[:64])),
    }


BROWSER_JS = """async ([name, n, c, h, w, b64]) => {
  const e = window.edgecls;
  if (e.ready !== name) throw new Error('model not loaded');
  const bytes = Uint8Array.from(atob(b64), ch => ch.charCodeAt(0));
  const all = new Float32Array(bytes.buffer);
  const size = c * h * w, inName = e.session.inputNames[0], outName = e.session.outputNames[0];
  const run = async (start, count) => (await e.session.run({[inName]: new ort.Tensor('float32',
      all.subarray(start * size, (start + count) * size), [count, c, h, w])}))[outName].data;
  const preds = [];
  for (let i = 0; i < n; i += 64) {
    const k = Math.min(64, n - i), out = await run(i, k), classes = out.length / k;
    for (let j = 0; j < k; j++) {
      let best = 0;
      for (let q = 1; q < classes; q++) if (out[j * classes + q] > out[j * classes + best]) best = q;
      preds.push(best);
    }
  }
  const time = async (count) => { await run(0, count); let best = 1e9;
    for (let r = 0; r < 3; r++) { let m = 0; const t0 = performance.now();
      while (performance.now() - t0 < 300) { await run(0, count); m++; }
      best = Math.min(best, (performance.now() - t0) / m); }
    return best; };
  return {preds, ms1: await time(1), ms64: await time(64)};
}"""


def browser_rows(page_url: str, chromium: str, inputs: dict[str, tuple[np.ndarray, np.ndarray]], sizes) -> dict:
    import base64

    from playwright.sync_api import sync_playwright

    rows = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(page_url)
        page.wait_for_function("window.edgecls && window.edgecls.ready", timeout=60_000)
        for name, (x, y) in inputs.items():
            page.select_option("#model", name)
            page.wait_for_function(f"window.edgecls.ready === {name!r}", timeout=60_000)
            got = {"preds": []}
            for start in range(0, len(x), 2048):  # chunks keep each message small
                chunk = np.ascontiguousarray(x[start : start + 2048], np.float32)
                out = page.evaluate(
                    BROWSER_JS, [name, len(chunk), *chunk.shape[1:], base64.b64encode(chunk.tobytes()).decode()]
                )
                got["preds"] += out["preds"]
                got.update(ms1=out["ms1"], ms64=out["ms64"])
            rows[name] = {
                "status": "ok (" + page.evaluate("window.edgecls.backend") + ")",
                "bytes": sizes[name],
                "accuracy_pct": float(100 * np.mean(np.asarray(got["preds"]) == y)),
                "ms_batch1": got["ms1"],
                "img_s_batch64": 64000 / got["ms64"],
            }
        browser.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="all")
    parser.add_argument("--artifacts", default=None, help="folder of <name>/model.onnx (+ checkpoint.pt)")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from edgecls.errors import EdgeclsError
    from edgecls.fileio import ensure_writable_dir, write_report
    from edgecls.locations import shipped_names
    from edgecls.machine import cpu_name
    from edgecls.registry import get_spec

    try:
        names = shipped_names() if args.models == "all" else args.models.split(",")
        for n in names:
            get_spec(n)
        root = Path(args.artifacts) if args.artifacts else REPO / "artifacts"
        missing = [n for n in names if not (root / n / "model.onnx").is_file()]
        if missing:
            raise EdgeclsError(f"no model.onnx in {root} for {', '.join(missing)}")
        out_dir = ensure_writable_dir(args.out, "--out")
    except EdgeclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    tables, browser_inputs, sizes = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            tables[name], browser_inputs[name] = file_rows(name, root, Path(tmp) / name)
            sizes[name] = (root / name / "model.onnx").stat().st_size
            summary = {k: v.get("accuracy_pct", v["status"][:40]) for k, v in tables[name].items()}
            print(f"{name}: {summary}", flush=True)
    if args.no_browser or chromium is None:
        why = "--no-browser" if args.no_browser else "no chromium here"
        for name in names:
            tables[name]["browser (onnxruntime-web)"] = {"status": f"skipped: {why}"}
    else:
        for name, row in browser_table(names, root, args.artifacts, chromium, browser_inputs, sizes).items():
            tables[name]["browser (onnxruntime-web)"] = row
    result = {
        "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores",
        "command": "python benchmarks/formats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tables": tables,
    }
    text = markdown(result)
    print(text)
    write_report(out_dir, "formats", text, result)
    return 0


def file_rows(name: str, root: Path, work: Path) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """Eager, ONNX fp32, .ort, int8 and fp16 rows for one model, and its normalized test split."""
    from edgecls.data import load_for_spec, normalize
    from edgecls.errors import EdgeclsError
    from edgecls.export.ort_format import ORT_FILE, write_ort
    from edgecls.export.precision import make_variant
    from edgecls.registry import get_spec

    spec = get_spec(name)
    test = load_for_spec(spec, "test", download=False)
    x, y = normalize(test.images(), spec.preprocess).numpy(), test.labels.numpy()
    src, ckpt = root / name / "model.onnx", root / name / "checkpoint.pt"
    rows = {
        "eager PyTorch": eager_row(ckpt, x, y)
        if ckpt.is_file()
        else {"status": "skipped: no checkpoint.pt beside the ONNX file (shipped models carry no PyTorch weights)"}
    }
    rows["ONNX fp32"] = onnx_row(src, x, y)
    work.mkdir()
    shutil.copyfile(src, work / "model.onnx")
    try:
        write_ort(work / "model.onnx", [x[:64]], spec.atol)
        rows[".ort"] = onnx_row(work / ORT_FILE, x, y)
    except EdgeclsError as exc:
        rows[".ort"] = {"status": f"failed: {exc}"}
    for precision in ("int8", "fp16"):
        try:
            make_variant(name, precision, src, work)
            rows[precision] = onnx_row(work / f"model.{precision}.onnx", x, y)
        except EdgeclsError as exc:
            rows[precision] = {"status": f"failed: {exc}"}
    return rows, (x, y)


def browser_table(names: list[str], root: Path, artifacts: str | None, chromium: str, inputs, sizes) -> dict:
    """The browser rows: `edgecls web` serving the models, headless Chromium running them."""
    with socket.socket() as probe:  # a free port, as the tests pick theirs
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "edgecls", "web", "--port", str(port), *sum((["--model", n] for n in names), [])]
        + (["--artifacts", str(root)] if artifacts else []),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until_up(url, server)
        except RuntimeError as exc:
            raise SystemExit(f"error: edgecls web failed: {exc}") from None
        return browser_rows(url, chromium, inputs, sizes)
    finally:
        server.terminate()
        server.wait(timeout=20)


def markdown(result: dict) -> str:
    lines = [
        "# Formats: one table per model",
        "",
        f"{result['machine']}; `{result['command'].strip()}`, "
        f"{result['date']}. CPU provider (browser: wasm in headless Chromium). Accuracy on the full test split.",
        "",
    ]
    for name, rows in result["tables"].items():
        lines += [
            f"## {name}",
            "",
            "| format | status | size | accuracy | ms/img @1 | img/s @64 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for fmt, r in rows.items():
            if "accuracy_pct" in r:
                lines.append(
                    f"| {fmt} | {r['status']} | {r['bytes'] / 1e3:,.0f} kB | {r['accuracy_pct']:.2f} % | "
                    f"{r['ms_batch1']:.3f} | {r['img_s_batch64']:,.0f} |"
                )
            else:
                lines.append(f"| {fmt} | {r['status']} | | | | |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
