#!/usr/bin/env python
"""Serving benchmark: `edgecls serve` under load on 127.0.0.1, dynamic batching on and off in one run.

    python benchmarks/serve.py                         # cnn and gru; 1, 8 and 32 clients
    python benchmarks/serve.py --models gru --clients 32 --requests 2000

For each batching mode a server process is started (`python -m edgecls serve --provider cpu`), then for
each model and client count a bounded load runs: `--requests` single-image requests at most, for at
most `--seconds`, from concurrent clients in this process, each on its own keep-alive connection.
Every response is checked against the logits ONNX Runtime gives the same real image offline: none may
be lost, none wrong (argmax equal, max |Δlogit| <= 1e-4). The server's own statistics give the mean
batch it ran. The offline figure is ONNX Runtime at batch 64 with the server's thread count, in this
process.

Clients (--client): `raw` (default) sends pre-encoded binary-tensor requests over plain HTTP/1.1 on
uvloop and decodes each response itself; `tritonclient` uses tritonclient.http.aio. Client and server
share this machine's cores, and tritonclient's own per-request Python work was measured to leave the
server mostly idle, so `raw` measures the server and `tritonclient` what a Python Triton client sees.
`perf_analyzer` runs Triton's own load generator over HTTP and gRPC against edgecls (batching on and off)
and against a KServe Python server on the same ONNX files, the peer (benchmarks/perf_analyzer.py).

Writes serve.json and serve.md (serve-<client>.* with another --client) to --out (default
benchmarks/results) and exits 1 if any response was lost or wrong (or perf_analyzer failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import tritonclient.http as tc
from tritonclient.http.aio import InferenceServerClient

from edgecls import __version__
from edgecls.commands.samples import sample_files
from edgecls.errors import EdgeclsError
from edgecls.fileio import ensure_writable_dir, write_report
from edgecls.locations import find_onnx
from edgecls.machine import cpu_name
from edgecls.registry import get_spec
from edgecls.runtime import Classifier
from edgecls.runtime.preprocess import normalize
from edgecls.timing import time_calls

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-4


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{url}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def start_server(
    models: list[str], threads: int, batching: bool, max_batch: int, max_delay_ms: float, grpc_port: int | None = None
):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "edgecls",
        "serve",
        *[a for m in models for a in ("--model", m)],
        "--port",
        str(port),
        "--provider",
        "cpu",
        "--threads",
        str(threads),
        "--max-batch",
        str(max_batch),
        "--max-delay-ms",
        str(max_delay_ms),
        "--dynamic-batching" if batching else "--no-dynamic-batching",
        *(["--grpc-port", str(grpc_port)] if grpc_port else []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise EdgeclsError(f"edgecls serve exited: {proc.stderr.read().strip()[-300:]}")
        try:
            if get_json(url, "/v2/health/ready")["ready"]:
                return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise EdgeclsError("edgecls serve did not get ready within 60 s")
        time.sleep(0.2)


def until(budget, stop_at: float):
    """Request numbers from a budget shared by every client, until the deadline."""
    for i in budget:
        if time.perf_counter() > stop_at:
            return
        yield i


async def run_clients(url: str, kind: str, clients: int, raw_worker, triton_worker) -> float:
    """`clients` workers of the chosen kind at once (raw: a connection each; tritonclient: one client
    with that many connections); returns the seconds they took."""
    t0 = time.perf_counter()
    if kind == "raw":
        await asyncio.gather(*(raw_worker() for _ in range(clients)))
    else:
        async with InferenceServerClient(url, conn_limit=clients) as client:
            await asyncio.gather(*(triton_worker(client) for _ in range(clients)))
    return time.perf_counter() - t0


def raw_requests(url: str, name: str, inputs: np.ndarray) -> list[bytes]:
    """One complete HTTP/1.1 binary-tensor infer request per image, encoded once."""
    out = []
    for k in range(len(inputs)):
        data = np.ascontiguousarray(inputs[k : k + 1], dtype="<f4").tobytes()
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, *inputs.shape[1:]],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": len(data)},
                    }
                ],
                "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
            }
        ).encode()
        out.append(
            f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: {url}\r\nContent-Length: {len(head) + len(data)}"
            f"\r\nInference-Header-Content-Length: {len(head)}\r\n\r\n".encode()
            + head
            + data
        )
    return out


class RawClient:
    """One keep-alive connection; a request, then its response, decoded to logits."""

    def __init__(self, url: str):
        self.host, self.port = url.split(":")

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        return self

    async def __aexit__(self, *exc):
        self.writer.close()

    async def infer(self, request: bytes) -> np.ndarray:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        body = await self.reader.readexactly(int(headers["content-length"]))
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        json_len = int(headers["inference-header-content-length"])
        meta = json.loads(body[:json_len])["outputs"][0]
        return np.frombuffer(body[json_len:], dtype="<f4").reshape(meta["shape"])


async def load(
    url: str,
    name: str,
    inputs: np.ndarray,
    expected: np.ndarray,
    clients: int,
    requests: int,
    seconds: float,
    kind: str = "raw",
) -> dict:
    """`clients` concurrent clients, each on its own connection, share one bounded budget of requests."""
    latencies: list[float] = []
    wrong = lost = 0
    budget = iter(range(requests))
    stop_at = time.perf_counter() + seconds
    shape = [1, *inputs.shape[1:]]
    encoded = raw_requests(url, name, inputs)

    async def check(k: int, call) -> None:
        nonlocal wrong, lost
        t0 = time.perf_counter()
        try:
            got = (await call())[0]
        except Exception:  # counted: a load test reports lost requests, it does not stop at one
            lost += 1
            return
        latencies.append(time.perf_counter() - t0)
        if got.argmax() != expected[k].argmax() or np.abs(got - expected[k]).max() > ATOL:
            wrong += 1

    async def raw_worker():
        async with RawClient(url) as client:
            for i in until(budget, stop_at):
                k = i % len(inputs)
                await check(k, lambda k=k: client.infer(encoded[k]))

    async def triton_worker(client):
        for i in until(budget, stop_at):
            k = i % len(inputs)
            inp = tc.InferInput("input", shape, "FP32")
            inp.set_data_from_numpy(inputs[k : k + 1])
            await check(k, lambda inp=inp: _triton_logits(client, name, inp))

    wall = await run_clients(url, kind, clients, raw_worker, triton_worker)
    done = len(latencies)
    ms = sorted(1000 * v for v in latencies)
    return {
        "requests": done + lost,
        "ok": done - wrong,
        "lost": lost,
        "wrong": wrong,
        "seconds": round(wall, 3),
        "throughput": done / wall if wall else 0.0,
        "p50_ms": ms[len(ms) // 2] if ms else None,
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None,
    }


async def ceiling(url: str, clients: int, requests: int, seconds: float, kind: str = "raw") -> float:
    """Requests/s of GET /v2/health/live, a request that does no work: the most any endpoint can reach
    with this client and server on this machine."""
    budget, stop_at, done = iter(range(requests)), time.perf_counter() + seconds, 0
    get = f"GET /v2/health/live HTTP/1.1\r\nHost: {url}\r\n\r\n".encode()

    async def raw_worker():
        nonlocal done
        async with RawClient(url) as client:
            for _ in until(budget, stop_at):
                client.writer.write(get)
                head = await client.reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                )
                await client.reader.readexactly(length)
                done += 1

    async def triton_worker(client):
        nonlocal done
        for _ in until(budget, stop_at):
            await client.is_server_live()
            done += 1

    seconds = await run_clients(url, kind, clients, raw_worker, triton_worker)  # before reading `done`
    return done / seconds


async def _triton_logits(client, name, inp) -> np.ndarray:
    result = await client.infer(name, [inp], outputs=[tc.InferRequestedOutput("logits")])
    return result.as_numpy("logits")


def offline(clf: Classifier, inputs: np.ndarray, batch: int = 64, seconds: float = 2.0) -> float:
    """ONNX Runtime images/s at `batch`, in this process (no HTTP)."""
    x = np.resize(inputs, (batch, *inputs.shape[1:])).astype(np.float32)
    times = time_calls(lambda: clf.run(x), seconds, warmup=1, max_reps=10**9)
    return len(times) * batch / sum(times)


def markdown(rows: list[dict], summary: list[dict], meta: dict) -> str:
    lines = [
        f"Serving benchmark, {meta['created']}: `{meta['command']}`",
        f"{meta['cpu']}; server: ONNX Runtime CPU provider, {meta['threads']} intra-op thread(s) per model, "
        f"--max-batch {meta['max_batch']}, --max-delay-ms {meta['max_delay_ms']:g}; clients: {meta['client']} "
        "(binary tensors, one keep-alive connection each), single-image requests, in one other process on the "
        "same machine.",
        "",
        "| model | clients | batching | req/s | p50 ms | p99 ms | mean batch | requests | lost | wrong |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['clients']} | {'on' if r['batching'] else 'off'} | {r['throughput']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_batch']:.1f} | {r['requests']:,} "
            f"| {r['lost']} | {r['wrong']} |"
        )
    lines += [
        "",
        f"| model | clients | offline ORT img/s (batch {meta['max_batch']}) | empty-request ceiling req/s "
        "| on / off | on / offline | ceiling / off | ceiling / offline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| `{s['model']}` | {s['clients']} | {s['offline']:,.0f} | {s['ceiling']:,.0f} "
            f"| {s['on_over_off']:.2f}x | {100 * s['on_over_offline']:.0f} % "
            f"| {s['ceiling_over_off']:.2f}x | {100 * s['ceiling_over_offline']:.0f} % |"
        )
    lines += [
        "",
        "The empty-request ceiling is GET /v2/health/live with the same clients: no endpoint can pass it, "
        "so `ceiling / off` and `ceiling / offline` bound what batching could show on this machine.",
    ]
    return "\n".join(lines) + "\n"


def run_async(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn,gru")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrent client counts")
    parser.add_argument("--requests", type=int, default=3000, help="most requests per model, mode and client count")
    parser.add_argument("--seconds", type=float, default=15.0, help="most seconds per model, mode and client count")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model in the server")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=0.0)
    parser.add_argument("--client", choices=["raw", "tritonclient", "perf_analyzer"], default="raw")
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer's measurement window")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    try:
        names = [get_spec(n.strip()).name for n in args.models.split(",")]
        clients = [int(c) for c in args.clients.split(",")]
        if any(c < 1 for c in clients) or args.requests < 1 or args.seconds <= 0 or args.threads < 1:
            raise EdgeclsError("--clients, --requests, --seconds and --threads must be positive")
        out = ensure_writable_dir(args.out, "--out")
        data = {}
        for name in names:
            clf = Classifier(find_onnx(name), "cpu", threads=args.threads)
            files = sample_files(get_spec(name).dataset)
            x = normalize(np.stack([clf.to_uint8(f) for f in files]), clf.info)
            data[name] = (x, clf.run(x), offline(clf, x, args.max_batch))
    except (EdgeclsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.client == "perf_analyzer":
        return with_perf_analyzer(names, clients, args, out, argv)

    rows, ceilings = [], {}
    for batching in (True, False):
        proc, url = start_server(names, args.threads, batching, args.max_batch, args.max_delay_ms)
        try:
            if batching:
                for c in clients:
                    run_async(ceiling(url, c, 2 * c + 20, args.seconds, args.client))
                    ceilings[c] = run_async(ceiling(url, c, args.requests, args.seconds, args.client))
                    print(f"empty requests, clients {c:3}: {ceilings[c]:8,.0f} req/s", flush=True)
            for name in names:
                x, expected, _ = data[name]
                for c in clients:
                    run_async(load(url, name, x, expected, c, 2 * c + 20, args.seconds, args.client))  # warm-up
                    before = get_json(url, f"/v2/models/{name}/stats")["model_stats"][0]
                    row = run_async(load(url, name, x, expected, c, args.requests, args.seconds, args.client))
                    after = get_json(url, f"/v2/models/{name}/stats")["model_stats"][0]
                    runs = after["execution_count"] - before["execution_count"]
                    row.update(
                        model=name,
                        clients=c,
                        batching=batching,
                        mean_batch=(after["inference_count"] - before["inference_count"]) / runs if runs else 0.0,
                    )
                    rows.append(row)
                    print(
                        f"{name:5} clients {c:3} batching {'on ' if batching else 'off'}: "
                        f"{row['throughput']:8,.0f} req/s p50 {row['p50_ms']:.2f} ms p99 {row['p99_ms']:.2f} ms, "
                        f"mean batch {row['mean_batch']:.1f}, "
                        f"{row['lost']} lost, {row['wrong']} wrong",
                        flush=True,
                    )
        finally:
            proc.terminate()
            proc.wait(30)

    summary = []
    for name in names:
        for c in clients:
            on = next(r for r in rows if r["model"] == name and r["clients"] == c and r["batching"])
            off = next(r for r in rows if r["model"] == name and r["clients"] == c and not r["batching"])
            summary.append(
                {
                    "model": name,
                    "clients": c,
                    "offline": data[name][2],
                    "ceiling": ceilings[c],
                    "on_over_off": on["throughput"] / off["throughput"],
                    "on_over_offline": on["throughput"] / data[name][2],
                    "ceiling_over_off": ceilings[c] / off["throughput"],
                    "ceiling_over_offline": ceilings[c] / data[name][2],
                }
            )
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/serve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_name(),
        "client": args.client,
        "threads": args.threads,
        "max_batch": args.max_batch,
        "max_delay_ms": args.max_delay_ms,
        "edgecls_version": __version__,
    }
    stem = "serve" if args.client == "raw" else f"serve-{args.client}"
    text = markdown(rows, summary, meta)
    write_report(out, stem, text, {**meta, "rows": rows, "summary": summary})
    print(text)
    bad = sum(r["lost"] + r["wrong"] for r in rows)
    if bad:
        print(f"{bad} responses lost or wrong", file=sys.stderr)
    return 1 if bad else 0


def with_perf_analyzer(names: list[str], clients: list[int], args, out: Path, argv) -> int:
    """edgecls (batching on, batching off) and the KServe peer, HTTP and gRPC, each measured by perf_analyzer;
    the servers run side by side and the measurements alternate between them, row by row."""
    import perf_analyzer as pa

    servers: dict[str, tuple] = {}
    procs = []
    try:
        for label, batching in (("edgecls, batching on", True), ("edgecls, batching off", False)):
            grpc_port = free_port()
            proc, url = start_server(names, args.threads, batching, args.max_batch, args.max_delay_ms, grpc_port)
            procs.append(proc)
            servers[label] = (url, f"127.0.0.1:{grpc_port}", None)
        http_port, grpc_port = free_port(), free_port()
        procs.append(pa.start_kserve({n: find_onnx(n) for n in names}, args.threads, http_port, grpc_port))
        kserve = f"KServe {pa.KSERVE_VERSION}"
        servers[kserve] = (f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", "peer")
        rows = []
        for name in names:
            shape = ",".join(map(str, (1, *Classifier(find_onnx(name), "cpu", threads=1).info.input_shape)))
            for protocol in ("http", "grpc"):
                for c in clients:
                    for label, (http_url, grpc_url, peer) in servers.items():
                        address = http_url if protocol == "http" else grpc_url
                        try:
                            row = pa.measure(name, address, protocol, c, args.window_ms, shape if peer else None)
                        except RuntimeError as exc:  # one failed measurement is reported, the rest still run
                            print(f"error: {exc}", file=sys.stderr)
                            row = {"throughput": None, "p50_ms": None, "p99_ms": None, "server_split": None,
                                   "error": str(exc)[:300]}  # fmt: skip
                        row.update(model=name, protocol=protocol, clients=c, server=label)
                        rows.append(row)
                        if row["throughput"] is not None:
                            print(f"{name:5} {protocol:4} clients {c:3} {label:22}: {row['throughput']:8,.0f} req/s "
                                  f"p50 {row['p50_ms']:.2f} ms p99 {row['p99_ms']:.2f} ms", flush=True)  # fmt: skip
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    summary = []
    for name in names:
        for protocol in ("http", "grpc"):
            for c in clients:
                key = (name, protocol, c)
                got = {r["server"]: r["throughput"] for r in rows if (r["model"], r["protocol"], r["clients"]) == key}
                if None in got.values():
                    continue
                summary.append({
                    "model": name, "protocol": protocol, "clients": c,
                    "on_over_kserve": got["edgecls, batching on"] / got[kserve],
                    "off_over_kserve": got["edgecls, batching off"] / got[kserve],
                })  # fmt: skip
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/serve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_name(),
        "client": "perf_analyzer",
        "perf_analyzer": os.environ.get("PA_VERSION", "2.60.0"),  # the wheel the tool runs (its binary says 0.0.0)
        "kserve": pa.KSERVE_VERSION,
        "threads": args.threads,
        "max_batch": args.max_batch,
        "max_delay_ms": args.max_delay_ms,
        "window_ms": args.window_ms,
        "edgecls_version": __version__,
    }
    text = pa.markdown(rows, summary, meta)
    write_report(out, "serve-perf_analyzer", text, {**meta, "rows": rows, "summary": summary})
    print(text)
    failed = sum(r["throughput"] is None for r in rows)
    if failed:
        print(f"{failed} measurements failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
