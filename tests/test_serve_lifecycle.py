"""`edgecls serve` as a process: model control (load, unload, a file added after start), graceful
SIGTERM with requests in flight over HTTP and gRPC, and the memory budget for image uploads (peak RSS
read from /proc)."""

import contextlib
import http.client
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as gc
import tritonclient.http as hc
from PIL import Image
from serving import error_of, free_port, multipart, request
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from edgecls.asgi import wait_until_up
from edgecls.locations import shipped_onnx


@contextlib.contextmanager
def serve_process(*args: str, timeout: float = 60):
    """`edgecls serve` on free HTTP and gRPC ports; yields (process, http 'host:port', grpc 'host:port').
    The process is always gone afterwards."""
    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "edgecls", "serve", "--port", str(port), "--grpc-port", str(grpc_port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v2/health/ready", proc, timeout=timeout)
        yield proc, f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_load_unload_and_a_model_file_added_after_start(tmp_path):
    """--artifacts DIR holds cnn at start; gru's file is copied in afterwards and loaded over gRPC;
    cnn is unloaded over HTTP and refused until loaded again; the index shows every state."""
    (tmp_path / "cnn").mkdir()
    shutil.copy(shipped_onnx("cnn"), tmp_path / "cnn" / "model.onnx")
    with serve_process("--model", "cnn", "--artifacts", str(tmp_path), "--threads", "1") as (_, url, address):
        http, g = hc.InferenceServerClient(url), gc.InferenceServerClient(address)
        assert http.get_model_repository_index() == [{"name": "cnn", "version": "1", "state": "READY", "reason": ""}]
        (tmp_path / "gru").mkdir()
        shutil.copy(shipped_onnx("gru"), tmp_path / "gru" / "model.onnx")
        index = {m["name"]: (m["state"], m["reason"]) for m in http.get_model_repository_index()}
        assert index == {"cnn": ("READY", ""), "gru": ("UNAVAILABLE", "not loaded")}
        assert not g.is_model_ready("gru")
        g.load_model("gru")
        assert g.is_model_ready("gru") and http.is_model_ready("gru")
        x = np.zeros((2, 1, 28, 28), np.float32)
        inp = gc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        assert g.infer("gru", [inp]).as_numpy("logits").shape == (2, 10)

        http.unload_model("cnn")
        assert not http.is_model_ready("cnn")
        answer = request(url, "POST", "/v2/models/cnn/infer", b'{"inputs": []}', {"Content-Type": "application/json"})
        assert answer[0] == 400 and "not ready (unloaded)" in error_of(answer)
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            g.get_model_metadata("cnn")
        assert g.get_model_repository_index(as_json=True)["models"][0] == {
            "name": "cnn",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        }
        http.load_model("cnn")
        assert http.is_model_ready("cnn")

        for name, needle in (("resnet", "unknown model 'resnet'"), ("lstm", "no ONNX model for lstm")):
            answer = request(url, "POST", f"/v2/repository/models/{name}/load")
            assert answer[0] == 400 and needle in error_of(answer)
        with pytest.raises(InferenceServerException, match="takes no config or files"):
            http.load_model("cnn", config='{"max_batch_size": 8}')
        answer = request(url, "POST", "/v2/repository/index", b'{"ready": true}')
        assert [m["name"] for m in json.loads(answer[2])] == ["cnn", "gru"]


def _big_images(total_bytes: int, size=(4000, 3990)) -> list[tuple[str, bytes]]:
    """Legal PNG and JPEG files just under the default 16 MP budget (noise in 8-pixel blocks: 1-2 MiB a
    file), each decoding to 48 MB of RGB, alternating, as many as fit in `total_bytes`."""
    rng = np.random.default_rng(0)
    w, h = size
    pixels = np.repeat(np.repeat(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8), 8, 0), 8, 1)[:h, :w]
    kinds = []
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        kinds.append((fmt.lower(), buf.getvalue()))
    files, used = [], 0
    while used + len(kinds[len(files) % 2][1]) <= total_bytes:
        ext, data = kinds[len(files) % 2]
        files.append((f"{len(files)}.{ext}", data))
        used += len(data)
    return files


def _peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_three_large_uploads_at_once_stay_within_the_memory_budget():
    """Three concurrent classify requests of about 16 MiB each, of legal images near the pixel cap: all
    answered, the server's peak RSS under 1.5 GiB, and /v2/health/live answering within 1 s throughout."""
    files = _big_images((16 << 20) - 4096)
    body, kind = multipart(files)
    assert 14 << 20 < len(body) <= 16 << 20 and len(files) >= 8, len(body)
    with serve_process("--model", "cnn", "--threads", "1") as (proc, url, _):
        answers, slowest_live = [], []

        def upload():
            answers.append(request(url, "POST", "/v2/models/cnn/classify", body, {"Content-Type": kind}))

        clients = [threading.Thread(target=upload) for _ in range(3)]
        for c in clients:
            c.start()
        while any(c.is_alive() for c in clients):
            started = time.monotonic()
            assert request(url, "GET", "/v2/health/live")[0] == 200
            slowest_live.append(time.monotonic() - started)
            time.sleep(0.1)
        peak = _peak_rss_mib(proc.pid)
    assert [a[0] for a in answers] == [200] * 3, [a[2][:200] for a in answers]
    assert max(slowest_live) < 1.0, max(slowest_live)
    assert peak < 1536, f"peak RSS {peak:.0f} MiB"


def test_sigterm_answers_every_request_in_flight_then_exits_0():
    """Classify uploads over HTTP (seconds of decoding) and gRPC infer requests are in flight when SIGTERM
    arrives: every one is answered with 200 / OK, new connections are refused, and the process exits 0."""
    files = _big_images(8 << 20, size=(1500, 1500))
    body, kind = multipart(files)
    x = np.zeros((8, 3, 32, 32), np.float32)
    with serve_process("--model", "cnn", "--threads", "1", "--decode-workers", "1") as (proc, url, address):
        host, port = url.split(":")
        sent, answers = threading.Barrier(4 + 1), []

        def classify():
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request("POST", "/v2/models/cnn/classify", body, {"Content-Type": kind})
            sent.wait()
            resp = conn.getresponse()
            answers.append((resp.status, len(json.loads(resp.read())["results"])))

        clients = [threading.Thread(target=classify) for _ in range(4)]
        for c in clients:
            c.start()
        sent.wait()  # all four bodies are on the wire
        infer = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address)).ModelInfer
        tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(x.shape))
        message = pb.ModelInferRequest(model_name="cnn", inputs=[tensor], raw_input_contents=[x.tobytes()])
        grpc_calls = [infer.future(message) for _ in range(4)]
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            http.client.HTTPConnection(host, int(port), timeout=5).request("GET", "/v2/health/live")
        for c in clients:
            c.join(60)
        results = [call.result(timeout=60) for call in grpc_calls]
        proc.wait(60)
        err = proc.stderr.read()
    assert answers == [(200, len(files))] * 4, answers
    assert all(r.model_name == "cnn" and len(r.raw_output_contents[0]) == 8 * 10 * 4 for r in results)
    assert proc.returncode == 0, err
    assert "stopped" in err
