"""`edgecls web`: serve the browser page with the models `edgecls infer --model` would use, or write it as
a self-contained folder for any static host (`--out DIR`).

Only a fixed table of files is served: the page, onnxruntime-web's own files, models.json and one ONNX
file per model. Request paths are looked up in that table, never joined onto a folder, so no path
leads outside it. Every response carries the COOP/COEP headers that make the page cross-origin
isolated, which onnxruntime-web needs to run its wasm on several threads. It runs on the same ASGI
stack as `edgecls serve` (edgecls.asgi).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import edgecls
from edgecls import asgi
from edgecls.errors import UsageError
from edgecls.fileio import atomic_path
from edgecls.metadata import ModelInfo, read_props

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
ORT_DIST = Path(__file__).resolve().parent / "node_modules" / "onnxruntime-web" / "dist"
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".svg": "image/svg+xml",
}


def ort_files() -> dict[str, Path]:
    """onnxruntime-web's browser files (from `npm ci --prefix web`)."""
    if not (ORT_DIST / "ort.all.min.js").is_file():
        raise UsageError(
            f"onnxruntime-web is not installed in {ORT_DIST.parent}; run `npm ci --prefix web` "
            "(part of scripts/setup.sh)"
        )
    return {
        p.name: p
        for p in ORT_DIST.iterdir()
        if p.suffix in (".js", ".mjs", ".wasm") and p.name.startswith("ort") and not p.name.startswith("ort.node")
    }


def site_table(sources: dict[str, Path]) -> tuple[dict[str, Path], bytes]:
    """URL path -> file, and the models.json body (the metadata of every model)."""
    table = {"/": STATIC / "index.html", "/index.html": STATIC / "index.html", "/app.js": STATIC / "app.js",
             "/favicon.svg": STATIC / "favicon.svg", "/favicon.ico": STATIC / "favicon.svg"}  # fmt: skip
    table.update({f"/ort/{name}": path for name, path in ort_files().items()})
    models = []
    for name, path in sources.items():
        props = read_props(path)
        ModelInfo.from_props(props, source=str(path))  # a foreign or damaged file fails here, in one line
        table[f"/models/{name}.onnx"] = path
        models.append({"name": name, "url": f"models/{name}.onnx", "metadata": props})
    return table, json.dumps({"models": models}, indent=1).encode()


def build_site(out_dir: str | Path, sources: dict[str, Path]) -> Path:
    """Write the page, onnxruntime-web and the models into a new folder (renamed into place when complete)."""
    out = Path(out_dir)
    if out.exists():
        raise UsageError(f"--out {out} already exists; name a new folder")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    table, models_json = site_table(sources)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for url, path in table.items():
        if url in ("/", "/favicon.ico"):  # the page links favicon.svg; /favicon.ico is for servers' sake
            continue
        target = partial / url.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (partial / "models.json").write_bytes(models_json)
    with atomic_path(partial / "_headers") as tmp:  # Netlify/Cloudflare Pages style; other hosts: set them
        tmp.write_text("/*\n" + "".join(f"  {k}: {v}\n" for k, v in ISOLATION.items()))
    partial.rename(out)
    log.info(
        f"wrote {out}: the page, onnxruntime-web and {len(sources)} model(s). Serve it with the headers "
        f"{', '.join(f'{k}: {v}' for k, v in list(ISOLATION.items())[:2])} (listed in {out / '_headers'})."
    )
    return out


def web_app(sources: dict[str, Path]) -> asgi.Stack:
    """The fixed table, GET and HEAD only, every response with the isolation headers."""
    from fastapi.responses import Response

    table, models_json = site_table(sources)
    stack = asgi.create_app(
        title="edgecls web", version=edgecls.__version__, body_limit=2**20, headers=ISOLATION, docs=False
    )

    @stack.app.get("/{path:path}")
    async def page(path: str):
        path = "/" + path
        if path == "/models.json":
            body, kind = models_json, TYPES[".json"]
        elif path in table:
            body, kind = table[path].read_bytes(), TYPES.get(table[path].suffix, "application/octet-stream")
        else:
            raise asgi.HttpError(404, f"not found: {path}")
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    return stack


def serve_web(sources: dict[str, Path], host: str, port: int) -> None:
    asgi.check_address(host, port)
    app = web_app(sources)
    log.info(f"edgecls web: http://{host}:{port}/ with {', '.join(sources)} (Ctrl-C stops)")
    asgi.run(app, host, port)
