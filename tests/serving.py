"""Helpers for the server tests: an in-process server on 127.0.0.1 and raw HTTP requests."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np

from edgecls.runtime import Classifier
from edgecls.runtime.preprocess import normalize


def shipped_classifiers(names) -> dict[str, Classifier]:
    """The shipped models `names`, each on one CPU thread: what the serving tests serve."""
    from edgecls.locations import shipped_onnx

    return {name: Classifier(shipped_onnx(name), "cpu", threads=1) for name in names}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, port: int | None = None):
    """Run `app` with uvicorn in a thread; yields 'host:port' once it accepts requests."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None, chunked: bool = False
) -> tuple[int, dict, bytes]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        if chunked:
            conn.putrequest(method, path)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for i in range(0, len(body), 65536):
                part = body[i : i + 65536]
                conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def error_of(status_headers_body) -> str:
    status, headers, body = status_headers_body
    assert headers.get("content-type", "").startswith("application/json"), headers
    data = json.loads(body)
    assert set(data) == {"error"} and isinstance(data["error"], str) and data["error"], data
    assert "Traceback" not in data["error"]
    return data["error"]


def multipart(files: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, str]:
    boundary = "edgecls-test-boundary-7d1f"
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def model_inputs(clf: Classifier, files: list[Path]) -> np.ndarray:
    """What a tensor client sends: the runtime's preprocessing of real image files."""
    return normalize(np.stack([clf.to_uint8(f) for f in files]), clf.info)
