"""`edgecls serve`: load the models, check the address, run uvicorn."""

from __future__ import annotations

import socket
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.locations import find_onnx, shipped_root
from edgecls.registry import get_spec
from edgecls.runtime import Classifier
from edgecls.runtime.metadata import ModelInfo


def shipped_names() -> list[str]:
    return sorted(p.parent.name for p in shipped_root().glob("*/model.onnx"))


def model_sources(models: list[str] | None = None, onnx_files: list[str] | None = None,
                  artifacts: str | None = None) -> dict[str, Path]:
    """Model name -> ONNX file. Names resolve as `edgecls infer --model` does (your runs/ export, else the
    shipped file); --onnx files are served under the model name in their metadata; neither given: every
    shipped model."""
    sources: dict[str, Path] = {}
    names = list(models or [])
    if not names and not onnx_files:
        names = shipped_names()
        if not names:
            raise EdgeclsError(f"no shipped models in {shipped_root()}; name models with --model or files with --onnx")
    for name in names:
        get_spec(name)  # unknown names fail here, with the list of known ones
        path = find_onnx(name, artifacts)
        if not path.is_file():
            raise EdgeclsError(f"no ONNX model for {name} at {path}; run `edgecls export --model {name}` or pass --onnx")
        if name in sources:
            raise EdgeclsError(f"model {name} named twice")
        sources[name] = path
    for f in onnx_files or []:
        path = Path(f)
        if not path.is_file():
            raise EdgeclsError(f"--onnx {path}: no such file")
        import onnxruntime as ort  # metadata only; the session proper is made by Classifier

        try:
            props = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        except Exception as exc:
            raise EdgeclsError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
        name = ModelInfo.from_props(props, source=str(path)).model
        if name in sources:
            raise EdgeclsError(f"two models named {name} ({sources[name]} and {path}); serve one of them")
        sources[name] = path
    return sources


def check_address(host: str, port: int) -> None:
    """Fail with one line before loading anything if the address cannot be listened on."""
    if not 0 <= port <= 65535:
        raise EdgeclsError(f"--port {port} is not a TCP port (0..65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EdgeclsError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise EdgeclsError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None


def serve(models: list[str] | None = None, onnx_files: list[str] | None = None, host: str = "127.0.0.1",
          port: int = 8000, provider: str = "auto", threads: int | None = None, max_batch: int = 64,
          max_delay_ms: float = 0.0, dynamic_batching: bool = True, max_body_mb: float = 16.0,
          artifacts: str | None = None, echo=print) -> None:
    if max_batch < 1:
        raise EdgeclsError(f"--max-batch must be at least 1 (got {max_batch})")
    if not 0 <= max_delay_ms <= 10_000:
        raise EdgeclsError(f"--max-delay-ms must be between 0 and 10000 (got {max_delay_ms:g})")
    if not max_body_mb > 0:
        raise EdgeclsError(f"--max-body-mb must be positive (got {max_body_mb:g})")
    if threads is not None and threads < 1:
        raise EdgeclsError(f"--threads must be at least 1 (got {threads})")
    check_address(host, port)
    sources = model_sources(models, onnx_files, artifacts)
    classifiers = {name: Classifier(path, provider, threads) for name, path in sources.items()}

    import uvicorn

    from .app import create_app

    app = create_app(classifiers, max_batch, max_delay_ms, dynamic_batching, max_body_mb)
    for name, clf in classifiers.items():
        note = f" (CUDA not available: {clf.fallback_reason})" if clf.fallback_reason else ""
        echo(f"serving {name}: {clf.path}, {clf.providers[0]}{note}")
    batching = (f"dynamic batching up to {max_batch} rows, max delay {max_delay_ms:g} ms" if dynamic_batching
                else "no batching")
    echo(f"listening on http://{host}:{port} ({batching}); KServe v2: /v2/models/<name>/infer, "
         f"images: /v2/models/<name>/classify; Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False)
    echo("stopped")
