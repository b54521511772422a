"""The HTTP application: the KServe v2 routes Triton serves, plus an image endpoint for people without a
tensor client, on the shared ASGI stack (edgecls.asgi: body limit, JSON errors, the infer fast route).
Every refusal is a 4xx with {"error": "..."}; nothing a client sends can take the server down or make
it print a traceback to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
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

from .openapi import CLASSIFY_BODY, INDEX_BODY, LOAD_BODY, describe_fast_routes
from .protocol import (
    EXTENSIONS,
    HEADER_LENGTH,
    MODEL_VERSION,
    ProtocolError,
    encode_infer_response,
    load_json,
    model_metadata,
    parse_infer,
)
from .repository import Repository, check_load_parameters

log = logging.getLogger(__name__)
MAX_FILES = 256  # images in one classify request
# The classify budget: files over this many pixels are refused before decoding. The models take 28x28 or
# 32x32 images; 16 MP (a 12 MP phone photo fits) keeps one decode near 50-200 MB, where Pillow's own
# bomb limit (89 MP) lets one PNG cost 265 MB and most of a second.
MAX_IMAGE_PIXELS = 16_000_000
DECODE_WORKERS = 2  # files decoded at once, across all classify requests; the rest queue
INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


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


def infer_route(repo: Repository, limit: int, reject_nonfinite: bool) -> FastRoute:
    """POST /v2/models/{name}[/versions/{v}]/infer: the route a load sends thousands of times a second."""

    async def infer(scope, body: bytes, match: re.Match):
        name, version = unquote(match.group(1)), match.group(2) and unquote(match.group(2))
        m = repo.get(name, version)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        shape = m.classifier.info.input_shape

        def parse():
            raw = decode_content(body, headers.get("content-encoding"), limit)
            return parse_infer(raw, headers.get(HEADER_LENGTH.lower()), shape, repo.max_batch, reject_nonfinite)

        def encode(req, logits):
            return encode_infer_response(name, req, logits, m.classifier.class_names)

        return (200, *await m.infer(parse, encode))

    return FastRoute(INFER_PATH, "POST", infer)


def create_app(
    classifiers: dict[str, Classifier],
    max_batch: int = 64,
    max_delay_ms: float = 0.0,
    dynamic_batching: bool = True,
    max_body_mb: float = 16.0,
    strict_input: bool = False,
    reject_nonfinite: bool = False,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    decode_workers: int = DECODE_WORKERS,
    loader=None,
    listing=None,
    grpc_address: str | None = None,
) -> Stack:
    """The ASGI application; `.state.repository` holds the served models with their batchers.
    `loader`/`listing`: the repository extension's load and index (repository.py). `grpc_address`
    ("host:port"): the same models over KServe v2 gRPC too, started and stopped with the app."""
    limit = int(max_body_mb * 2**20)
    repo = Repository(classifiers, max_batch, max_delay_ms, dynamic_batching, loader, listing)
    decoder = ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode")
    state = {"ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await repo.start()
        grpc = None
        if grpc_address is not None:
            from .grpc_service import start_grpc

            grpc = await start_grpc(repo, grpc_address, limit, reject_nonfinite, state)
            stack.on_signal.append(lambda: asyncio.ensure_future(grpc.stop(stack.grace_s)))
        state["ready"] = True
        yield
        state["ready"] = False
        if grpc is not None:
            await grpc.stop(stack.grace_s)  # answers the RPCs in flight (already stopping after a signal)
        await repo.stop()
        decoder.shutdown(wait=True)

    stack = create_stack(
        title="edgecls serve",
        version=edgecls.__version__,
        lifespan=lifespan,
        body_limit=limit,
        description="KServe v2 (Triton) inference protocol over edgecls ONNX models.",
        fast_routes=(infer_route(repo, limit, reject_nonfinite),),
    )
    stack.state.repository = repo
    _add_kserve_routes(stack.app, repo, state)
    _add_classify_route(stack.app, repo, strict_input, max_image_pixels, decoder)
    describe_fast_routes(stack.app)
    return stack


def _add_kserve_routes(app, repo: Repository, state: dict) -> None:
    """Health, metadata, config, statistics and the repository extension (infer is the fast route)."""

    @app.get("/v2")
    async def server_metadata():
        return {"name": "edgecls", "version": edgecls.__version__, "extensions": EXTENSIONS}

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.post("/v2/repository/index", openapi_extra=INDEX_BODY)
    async def repository_index(request: Request):
        """Every model this server has or could load, with its state; {"ready": true}: the ready ones."""
        body = await request.body()
        options = load_json(body, "the index request") if body.strip() else {}
        if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
            raise ProtocolError(400, 'the index request is a JSON object such as {"ready": true}')
        return repo.index(ready_only=options.get("ready", False))

    @app.post("/v2/repository/models/{name}/load", openapi_extra=LOAD_BODY)
    async def load(name: str, request: Request):
        """Read the model's file as it is now (a file exported or copied in after start) and serve it."""
        await _no_overrides(request)
        await repo.load(name)
        return {}

    @app.post("/v2/repository/models/{name}/unload", openapi_extra=LOAD_BODY)
    async def unload(name: str, request: Request):
        await _no_overrides(request)
        await repo.unload(name)
        return {}

    @app.get("/v2/models/stats")
    async def all_stats():
        """Triton's statistics extension for every loaded model."""
        return {"model_stats": [m.batcher.stats.as_dict(n, MODEL_VERSION) for n, m in sorted(repo.models.items())]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None):
        info = repo.get(name, version).classifier.info
        return model_metadata(name, info.input_shape, len(info.class_names))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        ok = repo.ready(name, version)
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 400)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def config(name: str, version: str | None = None):
        return repo.get(name, version).config

    @app.get("/v2/models/{name}/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def stats(name: str, version: str | None = None):
        m = repo.get(name, version)
        return {"model_stats": [m.batcher.stats.as_dict(name, MODEL_VERSION)]}


async def _no_overrides(request: Request) -> None:
    """A load/unload body: nothing, or {"parameters": {...}} without a config or files."""
    body = await request.body()
    options = load_json(body, "the request") if body.strip() else {}
    params = options.get("parameters") if isinstance(options, dict) else None
    if not isinstance(options, dict) or (params is not None and not isinstance(params, dict)):
        raise ProtocolError(400, 'the request is a JSON object such as {"parameters": {}}')
    check_load_parameters(params or {})


def _add_classify_route(app, repo: Repository, strict_input: bool, max_pixels: int, decoder) -> None:
    warned: set[str] = set()  # models whose unfit uploads were logged: once each

    @app.post("/v2/models/{name}/classify", openapi_extra=CLASSIFY_BODY)
    async def classify(name: str, request: Request, top_k: int = 1):
        """Image files (multipart/form-data, any field name) -> top-k labels and probabilities, with the
        preprocessing of `edgecls infer`."""
        m = repo.get(name)
        if top_k < 1:
            raise ProtocolError(400, f"top_k must be at least 1 (got {top_k})")
        uploads = await _uploads(request)
        loop = asyncio.get_running_loop()
        pre = m.classifier.preprocess
        # one file per job on a small pool: a bounded number of large decodes in memory at once
        jobs = [loop.run_in_executor(decoder, pre.decode, [data], max_pixels, True) for _, data in uploads]
        fitted = [job[0] for job in await asyncio.gather(*jobs)]
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
        step = repo.max_batch
        m.in_flight += 1
        try:
            parts = await asyncio.gather(*(m.batcher.submit(x[i : i + step]) for i in range(0, len(x), step)))
        finally:
            m.in_flight -= 1
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
