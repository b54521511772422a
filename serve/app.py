"""The HTTP application: the KServe v2 routes Triton serves, plus an image endpoint for people without a
tensor client, on the shared ASGI stack (edgecls.asgi: body limit, JSON errors, the infer fast route).
Every refusal is a 4xx with {"error": "..."}; nothing a client sends can take the server down or make
it print a traceback to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import zlib
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

import edgecls
from edgecls.asgi import FastRoute, Stack
from edgecls.asgi import create_app as create_stack
from edgecls.runtime import Classifier, softmax

from .batcher import Batcher
from .protocol import HEADER_LENGTH, MODEL_VERSION, ProtocolError, encode_infer_response, model_metadata, parse_infer
from .triton import model_config

log = logging.getLogger(__name__)
MAX_FILES = 256  # images in one classify request
INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


@dataclass
class ServedModel:
    name: str
    classifier: Classifier
    batcher: Batcher
    config: dict


def find_model(models: dict, name: str, version: str | None = None) -> ServedModel:
    if name not in models:
        raise ProtocolError(404, f"unknown model {name!r}; this server has: {', '.join(models)}")
    if version not in (None, MODEL_VERSION):
        raise ProtocolError(404, f"model {name!r} has no version {version!r} (it has {MODEL_VERSION})")
    return models[name]


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a gzip/deflate Content-Encoding (tritonclient can compress requests), bounded by `limit`."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(415, f"unsupported Content-Encoding {encoding!r}; send identity, gzip or deflate")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(400, f"body is not valid {encoding} data ({exc})") from None
    if len(out) > limit:
        raise ProtocolError(413, f"decompressed body over the server's limit of {limit / 2**20:g} MiB (--max-body-mb)")
    if not inflater.eof:
        raise ProtocolError(400, f"{encoding} body is truncated")
    return out


def infer_route(models: dict[str, ServedModel], limit: int, max_batch: int) -> FastRoute:
    """POST /v2/models/{name}[/versions/{v}]/infer: the route a load sends thousands of times a second."""

    async def infer(scope, body: bytes, match: re.Match):
        name, version = unquote(match.group(1)), match.group(2) and unquote(match.group(2))
        m = find_model(models, name, version)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = decode_content(body, headers.get("content-encoding"), limit)
        req = parse_infer(body, headers.get(HEADER_LENGTH.lower()), m.classifier.info.input_shape, max_batch)
        logits = await m.batcher.submit(req.inputs)
        return (200, *encode_infer_response(name, req, logits, m.classifier.class_names))

    return FastRoute(INFER_PATH, "POST", infer)


def create_app(
    classifiers: dict[str, Classifier],
    max_batch: int = 64,
    max_delay_ms: float = 0.0,
    dynamic_batching: bool = True,
    max_body_mb: float = 16.0,
    strict_input: bool = False,
) -> Stack:
    """The ASGI application; `.state.models` holds each served model with its batcher."""
    limit = int(max_body_mb * 2**20)
    models = {
        name: ServedModel(
            name,
            clf,
            Batcher(clf.run, max_batch, max_delay_ms / 1000, dynamic_batching, name),
            model_config(clf, name, max_batch, max_delay_ms, dynamic_batching=dynamic_batching),
        )
        for name, clf in classifiers.items()
    }
    state = {"ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for m in models.values():
            await m.batcher.start()
            m.classifier.run(np.zeros((1, *m.classifier.info.input_shape), np.float32))  # warm-up
        state["ready"] = True
        yield
        state["ready"] = False
        for m in models.values():
            await m.batcher.stop()

    stack = create_stack(
        title="edgecls serve",
        version=edgecls.__version__,
        lifespan=lifespan,
        body_limit=limit,
        description="KServe v2 (Triton) inference protocol over edgecls ONNX models.",
        fast_routes=(infer_route(models, limit, max_batch),),
    )
    stack.state.models = models
    _add_kserve_routes(stack.app, models, state)
    _add_classify_route(stack.app, models, max_batch, strict_input)
    return stack


def _add_kserve_routes(app, models: dict[str, ServedModel], state: dict) -> None:
    """Health, metadata, config, statistics and the repository index (infer is the fast route)."""

    def model(name: str, version: str | None = None) -> ServedModel:
        return find_model(models, name, version)

    @app.get("/v2")
    async def server_metadata():
        return {
            "name": "edgecls",
            "version": edgecls.__version__,
            "extensions": ["binary_tensor_data", "classification", "model_repository", "statistics"],
        }

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.post("/v2/repository/index")
    async def repository_index():
        return [
            {"name": n, "version": MODEL_VERSION, "state": "READY" if state["ready"] else "UNAVAILABLE"} for n in models
        ]

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None):
        info = model(name, version).classifier.info
        return model_metadata(name, info.input_shape, len(info.class_names))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        model(name, version)
        return JSONResponse({"name": name, "ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def config(name: str, version: str | None = None):
        return model(name, version).config

    @app.get("/v2/models/{name}/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def stats(name: str, version: str | None = None):
        """Triton's statistics extension, in part: rows inferred and ONNX Runtime runs (batches)."""
        b = model(name, version).batcher
        return {
            "model_stats": [
                {"name": name, "version": MODEL_VERSION, "inference_count": b.rows, "execution_count": b.batches}
            ]
        }


def _add_classify_route(app, models: dict[str, ServedModel], max_batch: int, strict_input: bool) -> None:
    warned: set[str] = set()  # models whose unfit uploads were logged: once each

    @app.post("/v2/models/{name}/classify")
    async def classify(name: str, request: Request, top_k: int = 1):
        """Image files (multipart/form-data, any field name) -> top-k labels and probabilities, with the
        preprocessing of `edgecls infer`."""
        m = find_model(models, name)
        if top_k < 1:
            raise ProtocolError(400, f"top_k must be at least 1 (got {top_k})")
        uploads = await _uploads(request)
        loop = asyncio.get_running_loop()
        pre = m.classifier.preprocess
        decode = functools.partial(pre.decode, [d for _, d in uploads], strict_size=True, with_fit=True)
        fitted = await loop.run_in_executor(None, decode)
        decoded = [d for d, _ in fitted]
        bad = [f"{fname}: {why}" for (fname, _), why in zip(uploads, decoded) if isinstance(why, str)]
        if bad:
            raise ProtocolError(400, f"{len(bad)} of {len(uploads)} uploads are not usable images: " + "; ".join(bad))
        unfit = [f"{fname}: {note}" for (fname, _), (_, note) in zip(uploads, fitted) if note]
        if unfit and strict_input:
            raise ProtocolError(400, f"{len(unfit)} of {len(uploads)} uploads do not fit {name} (--strict-input): "
                                + "; ".join(unfit))  # fmt: skip
        if unfit and name not in warned:
            warned.add(name)
            log.warning(f"warning: an upload for {name} does not fit it ({unfit[0]}); answers for such images mean "
                        "little (said once per model; --strict-input refuses them)")  # fmt: skip
        x = pre.normalize(np.stack(decoded))
        parts = await asyncio.gather(*(m.batcher.submit(x[i : i + max_batch]) for i in range(0, len(x), max_batch)))
        tops = m.classifier.top_k(softmax(np.concatenate(parts)), min(top_k, len(m.classifier.class_names)))
        return {
            "model": name,
            "results": [
                {"file": fname, "top_k": [{"label": label, "probability": round(p, 6)} for label, p in top]}
                for (fname, _), top in zip(uploads, tops)
            ],
        }


async def _uploads(request: Request) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file part of a multipart/form-data body."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ProtocolError(415, "send the images as multipart/form-data, e.g. curl -F files=@shoe.png URL")
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except (StarletteHTTPException, ValueError) as exc:
        raise ProtocolError(400, f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    try:
        uploads = [(v.filename or key, await v.read()) for key, v in form.multi_items() if isinstance(v, UploadFile)]
    finally:
        await form.close()
    if not uploads:
        raise ProtocolError(400, "no image files in the upload; send one or more file parts")
    return uploads
