"""The HTTP application: the KServe v2 routes Triton serves, plus an image endpoint for people without a
tensor client. Every refusal is a 4xx with {"error": "..."}; nothing a client sends can take the server
down or make it print a traceback to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import zlib
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

import edgecls
from edgecls.runtime import Classifier, ImageError, softmax
from edgecls.runtime.preprocess import normalize

from .batcher import Batcher
from .protocol import HEADER_LENGTH, MODEL_VERSION, ProtocolError, encode_infer_response, model_metadata, parse_infer
from .triton import model_config

log = logging.getLogger("edgecls.serve")
MAX_FILES = 256  # images in one classify request


@dataclass
class ServedModel:
    name: str
    classifier: Classifier
    batcher: Batcher
    config: dict


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Disconnected(Exception):
    """The client went away before its request body arrived."""


async def read_body(scope, receive, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it is known to pass `limit` bytes, whether the
    client declared its length or streams it in chunks; at most `limit` bytes are held."""
    too_big = ProtocolError(413, f"request body over the server's limit of {limit / 2**20:g} MiB (--max-body-mb)")
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_bytes(send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status,
                "headers": raw + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, status: int, message: str) -> None:
    await send_bytes(send, status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json"})


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any route sees it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        try:
            body = await read_body(scope, receive, self.limit)
        except Disconnected:
            return
        except ProtocolError as exc:
            return await send_error(send, exc.status, str(exc))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class InferFastPath:
    """POST /v2/models/{name}[/versions/{v}]/infer in plain ASGI, in front of FastAPI.

    This is the route a load sends thousands of times a second. Under load, a profile put most of the
    server's time in FastAPI's middleware and routing layers, and little in the handler, so this route
    skips them. Everything else (health, metadata, classify, the docs) stays in FastAPI."""

    def __init__(self, app: FastAPI, models: dict, limit: int, max_batch: int):
        self.app, self.models, self.limit, self.max_batch = app, models, limit, max_batch

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope, receive, send):
        match = INFER_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await send_error(send, 405, f"{scope['method']} is not allowed here; inference requests are POSTs")
        try:
            body = await read_body(scope, receive, self.limit)  # first: a keep-alive connection stays in step
            name, version = unquote(match.group(1)), match.group(2) and unquote(match.group(2))
            m = find_model(self.models, name, version)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            body = decode_content(body, headers.get("content-encoding"), self.limit)
            req = parse_infer(body, headers.get(HEADER_LENGTH.lower()), m.classifier.info.input_shape, self.max_batch)
            logits = await m.batcher.submit(req.inputs)
            content, out_headers = encode_infer_response(name, req, logits, m.classifier.class_names)
        except Disconnected:
            return
        except ProtocolError as exc:
            return await send_error(send, exc.status, str(exc))
        except Exception as exc:
            log.exception("unexpected error on POST %s", scope["path"])
            return await send_error(send, 500, f"internal server error ({type(exc).__name__}); the server logged it")
        await send_bytes(send, 200, content, out_headers)


def find_model(models: dict, name: str, version: str | None = None) -> "ServedModel":
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


def create_app(classifiers: dict[str, Classifier], max_batch: int = 64, max_delay_ms: float = 0.0,
               dynamic_batching: bool = True, max_body_mb: float = 16.0) -> InferFastPath:
    """The ASGI application: the infer fast path in front of the FastAPI app (`.app`), whose `.state.models`
    holds each served model with its batcher."""
    limit = int(max_body_mb * 2**20)
    models = {
        name: ServedModel(name, clf, Batcher(clf.run, max_batch, max_delay_ms / 1000, dynamic_batching, name),
                          model_config(clf, name, max_batch, max_delay_ms, dynamic_batching=dynamic_batching))
        for name, clf in classifiers.items()}
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

    app = FastAPI(title="edgecls serve", version=edgecls.__version__, lifespan=lifespan,
                  description="KServe v2 (Triton) inference protocol over edgecls ONNX models.")
    app.state.models = models
    app.add_middleware(BodyLimit, limit=limit)

    @app.exception_handler(ProtocolError)
    async def _protocol(request, exc: ProtocolError):
        return error(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else \
            f"no such endpoint: {request.method} {request.url.path}"
        return error(exc.status_code, str(message))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"bad request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, f"internal server error ({type(exc).__name__}); the server logged it")

    def model(name: str, version: str | None = None) -> ServedModel:
        return find_model(models, name, version)

    @app.get("/v2")
    async def server_metadata():
        return {"name": "edgecls", "version": edgecls.__version__,
                "extensions": ["binary_tensor_data", "classification", "model_repository", "statistics"]}

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.post("/v2/repository/index")
    async def repository_index():
        return [{"name": n, "version": MODEL_VERSION, "state": "READY" if state["ready"] else "UNAVAILABLE"}
                for n in models]

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None):
        m = model(name, version)
        info = m.classifier.info
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
        return {"model_stats": [{"name": name, "version": MODEL_VERSION, "inference_count": b.rows,
                                 "execution_count": b.batches}]}

    @app.post("/v2/models/{name}/classify")
    async def classify(name: str, request: Request, top_k: int = 1):
        """Image files (multipart/form-data, any field name) -> top-k labels and probabilities, with the
        preprocessing of `edgecls infer`."""
        m = model(name)
        if top_k < 1:
            raise ProtocolError(400, f"top_k must be at least 1 (got {top_k})")
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
        loop = asyncio.get_running_loop()
        decoded = await loop.run_in_executor(None, _decode_all, m.classifier, uploads)
        bad = [f"{fname}: {why}" for fname, why in decoded if isinstance(why, str)]
        if bad:
            raise ProtocolError(400, f"{len(bad)} of {len(uploads)} uploads are not usable images: " + "; ".join(bad))
        x = normalize(np.stack([arr for _, arr in decoded]), m.classifier.info)
        parts = await asyncio.gather(*(m.batcher.submit(x[i:i + max_batch]) for i in range(0, len(x), max_batch)))
        tops = m.classifier.top_k(softmax(np.concatenate(parts)), min(top_k, len(m.classifier.class_names)))
        return {"model": name, "results": [
            {"file": fname, "top_k": [{"label": label, "probability": round(p, 6)} for label, p in top]}
            for (fname, _), top in zip(uploads, tops)]}

    return InferFastPath(app, models, limit, max_batch)


def _decode_all(classifier: Classifier, uploads: list[tuple[str, bytes]]) -> list[tuple[str, object]]:
    """(file name, uint8 [C, H, W]) per upload, or (file name, reason) where it is no usable image."""
    out = []
    for fname, data in uploads:
        try:
            out.append((fname, classifier.to_uint8(io.BytesIO(data), strict_size=True)))
        except ImageError as exc:
            out.append((fname, str(exc)))
    return out

