"""The one ASGI stack `edgecls serve` and `edgecls web` run on: one app factory with a request-body
limit, fast routes, JSON error handlers and fixed response headers, on FastAPI and uvicorn.

Every refusal is a 4xx with {"error": "..."}; an unexpected exception is logged and answered with a
JSON 500, never a traceback to the client.

Fast routes: under load a profile of `edgecls serve` put most of the server's time in FastAPI's
middleware and routing layers, little in the handler, so the route a load sends thousands of times a
second (KServe's infer) is matched here, in plain ASGI, before FastAPI. Every other route is FastAPI's,
with the same body limit and error format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edgecls.errors import UsageError

log = logging.getLogger("edgecls.asgi")
BODY_METHODS = ("POST", "PUT", "PATCH")


class HttpError(Exception):
    """A request the server refuses: `status` is the HTTP status, the message goes to the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Disconnected(Exception):
    """The client went away before its request body arrived."""


Response = tuple[int, bytes, dict[str, str]]  # status, body, headers


@dataclass(frozen=True)
class FastRoute:
    """A path pattern answered in plain ASGI: `handler(scope, body, match)` returns the response."""

    pattern: re.Pattern
    method: str
    handler: Callable[[dict, bytes, re.Match], Awaitable[Response]]


def error_body(message: str) -> tuple[bytes, dict[str, str]]:
    return json.dumps({"error": message}).encode(), {"Content-Type": "application/json"}


async def read_body(scope, receive, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it is known to pass `limit` bytes, whether the
    client declared its length or streams it in chunks; at most `limit` bytes are held."""
    too_big = HttpError(413, f"request body over the server's limit of {limit / 2**20:g} MiB (--max-body-mb)")
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


async def send_response(send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": raw + [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Stack:
    """The ASGI application: body limit and fast routes in front of a FastAPI app (`.app`), and
    `headers` added to every response, errors included."""

    def __init__(
        self, app, body_limit: int, fast_routes: tuple[FastRoute, ...] = (), headers: dict[str, str] | None = None
    ):
        self.app, self.limit, self.fast_routes = app, body_limit, fast_routes
        self.extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.on_signal: list[Callable[[], object]] = []  # called on the event loop when SIGTERM/Ctrl-C arrives
        self.grace_s = 30.0  # how long the requests in flight get to finish at shutdown

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan (startup, shutdown) and anything else: FastAPI's
            return await self.app(scope, receive, send)
        if self.extra:
            send = self._with_headers(send)
        route = match = None
        for route in self.fast_routes:
            match = route.pattern.match(scope["path"])
            if match:
                break
        try:
            # read first, whatever the answer: a keep-alive connection stays in step
            body = await read_body(scope, receive, self.limit) if scope["method"] in BODY_METHODS else b""
            if match is None:
                return await self.app(scope, _replay(body, receive), send)
            if scope["method"] != route.method:
                raise HttpError(405, f"{scope['method']} is not allowed here; send a {route.method}")
            status, content, headers = await route.handler(scope, body, match)
        except Disconnected:
            return
        except HttpError as exc:
            status, (content, headers) = exc.status, error_body(str(exc))
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            status, (content, headers) = (
                500,
                error_body(f"internal server error ({type(exc).__name__}); the server logged it"),
            )
        await send_response(send, status, content, headers)

    def _with_headers(self, send):
        async def wrapped(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + self.extra}
            await send(message)

        return wrapped


def _replay(body: bytes, receive):
    """The request as FastAPI reads it, from the body already read."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def create_app(
    *,
    title: str,
    version: str,
    description: str = "",
    body_limit: int = 16 * 2**20,
    lifespan=None,
    fast_routes: tuple[FastRoute, ...] = (),
    headers: dict[str, str] | None = None,
    docs: bool = True,
) -> Stack:
    """A FastAPI app (add routes to `.app`) inside the stack, with the shared error handlers."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    kwargs = {} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan, **kwargs)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HttpError)
    async def _refused(request, exc: HttpError):
        return error(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        message = (
            exc.detail
            if exc.status_code != 404 or exc.detail != "Not Found"
            else f"no such endpoint: {request.method} {request.url.path}"
        )
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

    return Stack(app, body_limit, fast_routes, headers)


def check_address(host: str, port: int, option: str = "--port") -> None:
    """Fail with one line before loading anything if the address cannot be listened on."""
    if not 0 <= port <= 65535:
        raise UsageError(f"{option} {port} is not a TCP port (0..65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another {option}") from None


def run(app, host: str, port: int, grace_s: float = 30.0) -> None:
    """Serve `app` with uvicorn until Ctrl-C or SIGTERM. Either stops accepting at once, answers the
    requests in flight (up to `grace_s`, then they are cancelled), runs the app's shutdown and returns:
    the process then exits 0, as an orchestrator's graceful stop expects."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # uvicorn's re-raises the signal after shutdown: the process dies by it
            loop = asyncio.get_running_loop()

            def stop(sig, frame):
                if self.should_exit:
                    self.force_exit = True  # a second signal: stop waiting
                self.should_exit = True
                for hook in getattr(app, "on_signal", ()):
                    loop.call_soon_threadsafe(hook)

            originals = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    if isinstance(app, Stack):
        app.grace_s = grace_s
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=grace_s,
    )
    Server(config).run()


def wait_until_up(url: str, process, timeout: float = 20.0) -> None:
    """Poll `url` until the server `process` (a subprocess.Popen) started answers; raise RuntimeError
    with the end of its stderr if it exits first, or when `timeout` passes."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if process.poll() is not None:
                err = process.stderr.read()[-500:] if process.stderr else ""
                raise RuntimeError(f"the server exited with code {process.returncode}: {err}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer {url} within {timeout:g} s") from None
            time.sleep(0.1)
