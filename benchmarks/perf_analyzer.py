"""`benchmarks/serve.py --client perf_analyzer`: Triton's own load generator against `edgecls serve`
(dynamic batching on and off) and against the peer a user would pick instead, a KServe Python model
server on the same ONNX files (benchmarks/kserve_peer.py), over HTTP and gRPC, in one run.

perf_analyzer (../shared/tools/perf-analyzer, or $PERF_ANALYZER) sends its default random FP32 data,
single-image requests, at a fixed concurrency; it measures in windows until three in a row agree
within 15 %, after --warmup-request-count requests, so no cold window is reported.
Servers run at once, idle while another is measured; measurements alternate between them per row.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KSERVE_VERSION = "0.21.0"
KSERVE_ENV = REPO / ".venv-kserve"
SERVER_SPLIT = re.compile(
    r"Avg request latency: (\d+) usec \(overhead (\d+) usec \+ queue (\d+) usec \+ compute input (\d+) usec "
    r"\+ compute infer (\d+) usec \+ compute output (\d+) usec\)"
)


def perf_analyzer_command() -> list[str]:
    tool = os.environ.get("PERF_ANALYZER") or str(REPO.parent / "shared" / "tools" / "perf-analyzer")
    if not Path(tool).is_file():
        raise RuntimeError(f"perf_analyzer not found at {tool}; set $PERF_ANALYZER to Triton's perf_analyzer")
    return [tool]


def measure(model: str, address: str, protocol: str, clients: int, window_ms: int, shape: str | None = None) -> dict:
    """One perf_analyzer run at `clients` concurrent requests: req/s, p50 and p99 (ms), and the server's
    own split of its latency where the server reports statistics (edgecls does, KServe does not). Where
    the windows never agree (two cores shared with the servers are noisy), once more with windows twice
    as long, then taking the mean of the last three windows whatever their spread (agreement 1000 %: a
    server whose rate swings, as the KServe peer's does at 32 clients); the row says which it took."""
    for window, stability in ((window_ms, 15), (2 * window_ms, 15), (2 * window_ms, 1000)):
        try:
            row = _measure(model, address, protocol, clients, window, shape, stability)
            return {**row, "window_ms": window, "stability_percent": stability}
        except Unstable as exc:
            last = exc
    raise RuntimeError(f"{model} {protocol} at {clients} clients on {address}: {last}")


class Unstable(RuntimeError):
    """perf_analyzer found no three windows in a row that agree."""


def _measure(
    model: str, address: str, protocol: str, clients: int, window_ms: int, shape: str | None, stability: int
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "pa.csv"
        cmd = perf_analyzer_command() + [
            "-m", model, "-u", address, "-i", protocol,
            "--concurrency-range", f"{clients}:{clients}",
            "--measurement-interval", str(window_ms),
            "--warmup-request-count", str(4 * clients + 20),
            "--stability-percentage", str(stability),
            "--max-trials", "10",
            "-f", str(report),
        ] + (["--shape", f"input:{shape}"] if shape else [])  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if "Failed to obtain stable measurement" in done.stdout + done.stderr:
            raise Unstable(f"no stable measurement with {window_ms} ms windows")
        if done.returncode != 0 or not report.is_file():
            raise RuntimeError(f"perf_analyzer failed ({' '.join(cmd[1:])}): {(done.stdout + done.stderr)[-600:]}")
        (row,) = list(csv.DictReader(report.open()))
    split = SERVER_SPLIT.search(done.stdout)
    server = None
    if split:
        names = ("request", "overhead", "queue", "compute_input", "compute_infer", "compute_output")
        server = {f"{n}_us": int(v) for n, v in zip(names, split.groups())}
    return {
        "throughput": float(row["Inferences/Second"]),
        "p50_ms": int(row["p50 latency"]) / 1000,
        "p99_ms": int(row["p99 latency"]) / 1000,
        "server_split": server,
    }


def kserve_python() -> Path:
    """The KServe environment's python, made on first use: KServe pins its own web stack, so it does not
    go into edgecls's environment."""
    python = KSERVE_ENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m, onnxruntime, tritonclient; "
             f"assert m.version('kserve') == {KSERVE_VERSION!r}"]  # fmt: skip
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {KSERVE_ENV} (kserve=={KSERVE_VERSION}, onnxruntime, tritonclient[grpc]) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(KSERVE_ENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"kserve=={KSERVE_VERSION}", "onnxruntime", "tritonclient[grpc]"], check=True)  # fmt: skip
    return python


def start_kserve(models: dict[str, Path], threads: int, http_port: int, grpc_port: int) -> subprocess.Popen:
    cmd = [str(kserve_python()), str(REPO / "benchmarks" / "kserve_peer.py"), "--http-port", str(http_port),
           "--grpc-port", str(grpc_port), "--threads", str(threads)]  # fmt: skip
    for name, path in models.items():
        cmd += ["--model", f"{name}={path}"]
    # KServe logs every request: into a file, not a pipe nobody reads (a full pipe would stall the server)
    log = tempfile.NamedTemporaryFile("w+", prefix="kserve-peer-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the KServe peer exited: {Path(log.name).read_text()[-600:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2)
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the KServe peer did not get ready within 120 s") from None
            time.sleep(0.3)


def markdown(rows: list[dict], summary: list[dict], meta: dict) -> str:
    lines = [
        f"Serving benchmark with Triton's perf_analyzer, {meta['created']}: `{meta['command']}`",
        f"{meta['cpu']}; perf_analyzer {meta['perf_analyzer']} (its default random FP32 data, single-image "
        f"requests, windows of {meta['window_ms']} ms until 3 agree within 15 %; each row in the JSON says the "
        "window and agreement it took), on the same machine as the servers. Servers: ONNX Runtime CPU, "
        f"{meta['threads']} intra-op thread(s) per model; edgecls "
        f"--max-batch {meta['max_batch']}; the peer is a KServe {meta['kserve']} Python model server on the "
        "same ONNX files (benchmarks/kserve_peer.py; KServe has no dynamic batching).",
        "",
        "| model | protocol | clients | server | req/s | p50 ms | p99 ms | server: queue / infer / overhead us |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["throughput"] is None:
            lines.append(
                f"| `{r['model']}` | {r['protocol']} | {r['clients']} | {r['server']} | failed: {r['error']} | | | |"
            )
            continue
        s = r["server_split"]
        split = f"{s['queue_us']} / {s['compute_infer_us']} / {s['overhead_us']}" if s else "not reported"
        lines.append(
            f"| `{r['model']}` | {r['protocol']} | {r['clients']} | {r['server']} | {r['throughput']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {split} |"
        )
    lines += [
        "",
        "| model | protocol | clients | batching on / KServe | batching off / KServe |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        ratios = f"{s['on_over_kserve']:.1f}x | {s['off_over_kserve']:.1f}x"
        lines.append(f"| `{s['model']}` | {s['protocol']} | {s['clients']} | {ratios} |")
    return "\n".join(lines) + "\n"
