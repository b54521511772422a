"""The models a server holds, with Triton's model repository extension: an index with each model's
state, load (a model named later, a file exported or copied in after start, or a new file for a loaded
name) and unload. HTTP and gRPC share one repository, so both see the same models, batchers and
statistics.

A load builds the new model aside (read, warm-up, batcher) and swaps it in; requests in flight finish
on the old one, whose batcher then stops. An unload refuses new requests at once and lets the ones in
flight finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.runtime import Classifier

from .batcher import Batcher
from .protocol import MODEL_VERSION, InferRequest, ProtocolError
from .triton import model_config

log = logging.getLogger(__name__)
T = TypeVar("T")
READY, UNAVAILABLE = "READY", "UNAVAILABLE"


@dataclass
class ServedModel:
    name: str
    classifier: Classifier
    batcher: Batcher
    config: dict
    in_flight: int = field(default=0)

    async def infer(self, parse: Callable[[], InferRequest], encode: Callable[[InferRequest, np.ndarray], T]) -> T:
        """One inference request, whatever its protocol: parse it, run it through the batcher, encode the
        answer; counted in the statistics (success or fail) and in `in_flight` (unload waits for it)."""
        begun = time.perf_counter_ns()
        self.in_flight += 1
        ok, encode_ns = False, 0
        try:
            req = parse()
            logits = await self.batcher.submit(req.inputs)
            encoding = time.perf_counter_ns()
            answer = encode(req, logits)
            encode_ns, ok = time.perf_counter_ns() - encoding, True
            return answer
        finally:
            self.in_flight -= 1
            self.batcher.stats.answered(ok, time.perf_counter_ns() - begun, encode_ns)


@dataclass
class ModelState:
    state: str
    reason: str = ""


def check_load_parameters(names) -> None:
    """Triton's load can carry a config or model files to use instead of the repository's; this server
    reads its files from their place, so those are refused rather than ignored (others, such as
    unload_dependents, change nothing here)."""
    overrides = [n for n in names if n == "config" or str(n).startswith("file:")]
    if overrides:
        raise ProtocolError(
            400, f"this server takes no config or files with a load ({', '.join(overrides)}); it reads the model "
            "file from its place (runs/<name>/, --artifacts or --onnx): put the file there and load again",
        )  # fmt: skip


class Repository:
    """`loader(name)`: a Classifier for the model file `name` resolves to now (None: this server loads
    nothing after start). `listing()`: the names it could load, for the index."""

    def __init__(
        self,
        classifiers: dict[str, Classifier],
        max_batch: int,
        max_delay_ms: float,
        dynamic_batching: bool,
        loader: Callable[[str], Classifier] | None = None,
        listing: Callable[[], list[str]] | None = None,
    ):
        self.max_batch, self.max_delay_ms, self.dynamic_batching = max_batch, max_delay_ms, dynamic_batching
        self.loader, self.listing = loader, listing
        self.models: dict[str, ServedModel] = {name: self._served(name, clf) for name, clf in classifiers.items()}
        self.states: dict[str, ModelState] = {name: ModelState(UNAVAILABLE, "starting") for name in self.models}
        self.started = False
        self.lock = asyncio.Lock()  # one load or unload at a time

    def _served(self, name: str, clf: Classifier) -> ServedModel:
        batcher = Batcher(clf.run, self.max_batch, self.max_delay_ms / 1000, self.dynamic_batching, name)
        config = model_config(clf, name, self.max_batch, self.max_delay_ms, dynamic_batching=self.dynamic_batching)
        return ServedModel(name, clf, batcher, config)

    async def start(self) -> None:
        for m in self.models.values():
            await self._start(m)
            self.states[m.name] = ModelState(READY)
        self.started = True

    async def stop(self) -> None:
        self.started = False
        for m in self.models.values():
            await m.batcher.stop()

    @staticmethod
    async def _start(m: ServedModel) -> None:
        await m.batcher.start()
        x = np.zeros((1, *m.classifier.info.input_shape), np.float32)
        await asyncio.get_running_loop().run_in_executor(m.batcher.executor, m.classifier.run, x)  # warm-up

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model a request names, ready to answer; 404 or 400 (gRPC UNAVAILABLE) otherwise."""
        m = self.models.get(name)
        if m is None:
            state = self.states.get(name)
            if state is None and self.listing and name in self.listing():
                state = ModelState(UNAVAILABLE, "not loaded")
            if state is not None:
                raise ProtocolError(
                    400, f"model {name!r} is not ready ({state.reason or state.state.lower()}); "
                    f"load it with POST /v2/repository/models/{name}/load", grpc_code="UNAVAILABLE",
                )  # fmt: skip
            have = ", ".join(self.models) or "none loaded"
            raise ProtocolError(404, f"unknown model {name!r}; this server has: {have}")
        if version not in (None, "", MODEL_VERSION):
            raise ProtocolError(404, f"model {name!r} has no version {version!r} (it has {MODEL_VERSION})")
        if not self.started:
            raise ProtocolError(400, f"model {name!r} is not ready (the server is starting)", grpc_code="UNAVAILABLE")
        return m

    def ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.get(name, version)
        except ProtocolError as exc:
            if exc.status == 404:
                raise
            return False
        return True

    def index(self, ready_only: bool = False) -> list[dict]:
        names = set(self.states) | set(self.listing() if self.listing else ())
        rows = []
        for name in sorted(names):
            state = self.states.get(name, ModelState(UNAVAILABLE, "not loaded"))
            if state.state == READY and not self.started:
                state = ModelState(UNAVAILABLE, "starting")
            if ready_only and state.state != READY:
                continue
            rows.append({"name": name, "version": MODEL_VERSION, "state": state.state, "reason": state.reason})
        return rows

    async def load(self, name: str) -> None:
        """Read `name`'s model file as it is now and serve it (again)."""
        if self.loader is None:
            raise ProtocolError(400, "this server loads no models after start (it was given none to find)")
        async with self.lock:
            loop = asyncio.get_running_loop()
            try:
                clf = await loop.run_in_executor(None, self.loader, name)
                new = self._served(name, clf)
            except EdgeclsError as exc:
                raise ProtocolError(400, f"failed to load {name!r}: {exc}") from None
            await self._start(new)
            old = self.models.get(name)
            self.models[name] = new
            self.states[name] = ModelState(READY)
            if old is not None:
                await self._retire(old)
            log.info(f"loaded {name}: {clf.path}")

    async def unload(self, name: str) -> None:
        async with self.lock:
            m = self.models.pop(name, None)
            if m is None:
                if name in self.states or (self.listing and name in self.listing()):
                    return  # unloading what is not loaded is a no-op, as in Triton
                raise ProtocolError(404, f"unknown model {name!r}")
            self.states[name] = ModelState(UNAVAILABLE, "unloaded")
            await self._retire(m)
            log.info(f"unloaded {name}")

    @staticmethod
    async def _retire(m: ServedModel, timeout_s: float = 60.0) -> None:
        """Stop a model's batcher once the requests it holds are answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while m.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await m.batcher.stop()
