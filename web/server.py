"""`edgecls web`: serve the browser page with the models `edgecls infer --model` would use, or write it as
a self-contained folder for any static host (`--out DIR`).

Only a fixed table of files is served: the page, onnxruntime-web's own files, models.json and one ONNX
file per model. Request paths are looked up in that table, never joined onto a folder, so no path
leads outside it. Every response carries the COOP/COEP headers that make the page cross-origin
isolated, which onnxruntime-web needs to run its wasm on several threads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from edgecls.errors import EdgeclsError
from edgecls.fileio import atomic_path

STATIC = Path(__file__).resolve().parent / "static"
ORT_DIST = Path(__file__).resolve().parent / "node_modules" / "onnxruntime-web" / "dist"
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "same-origin"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
         ".wasm": "application/wasm", ".json": "application/json", ".onnx": "application/octet-stream"}


def ort_files() -> dict[str, Path]:
    """onnxruntime-web's browser files (from `npm ci --prefix web`)."""
    if not (ORT_DIST / "ort.all.min.js").is_file():
        raise EdgeclsError(f"onnxruntime-web is not installed in {ORT_DIST.parent}; run `npm ci --prefix web` "
                           "(part of scripts/setup.sh)")
    return {p.name: p for p in ORT_DIST.iterdir()
            if p.suffix in (".js", ".mjs", ".wasm") and p.name.startswith("ort") and not p.name.startswith("ort.node")}


def site_table(sources: dict[str, Path]) -> tuple[dict[str, Path], bytes]:
    """URL path -> file, and the models.json body (metadata_props of every model, read with ORT)."""
    from edgecls.runtime import Classifier

    table = {"/": STATIC / "index.html", "/index.html": STATIC / "index.html", "/app.js": STATIC / "app.js"}
    table.update({f"/ort/{name}": path for name, path in ort_files().items()})
    models = []
    for name, path in sources.items():
        props = Classifier(path, "cpu", 1, split=False).session.get_modelmeta().custom_metadata_map
        table[f"/models/{name}.onnx"] = path
        models.append({"name": name, "url": f"models/{name}.onnx", "metadata": dict(props)})
    return table, json.dumps({"models": models}, indent=1).encode()


def build_site(out_dir: str | Path, sources: dict[str, Path], echo: Callable[[str], None] = print) -> Path:
    """Write the page, onnxruntime-web and the models into a new folder (renamed into place when complete)."""
    out = Path(out_dir)
    if out.exists():
        raise EdgeclsError(f"--out {out} already exists; name a new folder")
    if not out.parent.is_dir():
        raise EdgeclsError(f"--out {out}: folder {out.parent} does not exist")
    table, models_json = site_table(sources)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for url, path in table.items():
        if url == "/":
            continue
        target = partial / url.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (partial / "models.json").write_bytes(models_json)
    with atomic_path(partial / "_headers") as tmp:  # Netlify/Cloudflare Pages style; other hosts: set them
        tmp.write_text("/*\n" + "".join(f"  {k}: {v}\n" for k, v in ISOLATION.items()))
    partial.rename(out)
    echo(f"wrote {out}: the page, onnxruntime-web and {len(sources)} model(s). Serve it with the headers "
         f"{', '.join(f'{k}: {v}' for k, v in list(ISOLATION.items())[:2])} (listed in {out / '_headers'}).")
    return out


def web_app(sources: dict[str, Path]):
    """A plain ASGI app serving the fixed table."""
    table, models_json = site_table(sources)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            status, body, kind = 405, b"method not allowed\n", "text/plain"
        elif path == "/models.json":
            status, body, kind = 200, models_json, TYPES[".json"]
        elif path in table:
            file = table[path]
            status, body, kind = 200, file.read_bytes(), TYPES.get(file.suffix, "application/octet-stream")
        else:
            status, body, kind = 404, b"not found\n", "text/plain"
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-cache")]
        headers += [(k.lower().encode(), v.encode()) for k, v in ISOLATION.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})

    return app


def serve_web(sources: dict[str, Path], host: str, port: int, echo: Callable[[str], None] = print) -> None:
    import uvicorn

    from edgecls.serve.server import check_address

    check_address(host, port)
    app = web_app(sources)
    echo(f"edgecls web: http://{host}:{port}/ with {', '.join(sources)} (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
