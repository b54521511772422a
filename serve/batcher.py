"""Dynamic batching as Triton's `dynamic_batching` does it: requests for one model that arrive while it
is busy, or within `max_delay` of the first, are run as one ONNX Runtime call of at most `max_batch`
rows, and each caller gets its own rows back.

The delay is paid only where there is company to wait for: when several requests are already waiting
or the previous batch held more than one. A lone client's request runs at once (with a fixed delay
it would pay the whole delay on every request, for no batching at all).

ONNX Runtime runs on a worker thread (it releases the GIL), so the event loop keeps answering health
checks and reading requests while a batch runs. One model runs one batch at a time, like one Triton
model instance; with batching off, requests run one by one on that same worker.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .stats import ModelStats

Run = Callable[[np.ndarray], np.ndarray]


class Batcher:
    def __init__(
        self, run: Run, max_batch: int = 64, max_delay_s: float = 0.002, enabled: bool = True, name: str = "model"
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1 (got {max_batch})")
        if max_delay_s < 0:
            raise ValueError(f"max_delay must not be negative (got {max_delay_s})")
        self.run, self.max_batch, self.max_delay_s, self.enabled = run, max_batch, max_delay_s, enabled
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")
        self.waiting: collections.deque = collections.deque()  # (rows, future, arrival ns) in arrival order
        self.waiting_rows = 0
        self.task: asyncio.Task | None = None
        self.stats = ModelStats()  # Triton's statistics extension (stats.py)
        self.last_requests = 0  # requests in the previous batch

    @property
    def batches(self) -> int:
        """ONNX Runtime calls made."""
        return self.stats.execution_count

    @property
    def rows(self) -> int:
        """Rows those calls held."""
        return self.stats.inference_count

    async def start(self) -> None:
        if self.enabled and self.task is None:
            self.arrived, self.full = asyncio.Event(), asyncio.Event()
            self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        self.executor.shutdown(wait=True)

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Logits for `rows` (at most max_batch of them), computed alone or in a batch with others."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            arrived = time.perf_counter_ns()
            out, started, ran = await loop.run_in_executor(self.executor, self._timed_run, rows)
            self.stats.ran(len(rows), 1, [started - arrived], 0, ran - started, 0)
            return out
        if self.task is None:
            raise RuntimeError("batcher not started")
        future = loop.create_future()
        self.waiting.append((rows, future, time.perf_counter_ns()))
        self.waiting_rows += len(rows)
        self.arrived.set()
        if self.waiting_rows >= self.max_batch:
            self.full.set()
        return await future

    def _timed_run(self, rows: np.ndarray) -> tuple[np.ndarray, int, int]:
        """The run, with when it started and ended (on the worker: the queue ends when the worker is free)."""
        started = time.perf_counter_ns()
        out = self.run(rows)
        return out, started, time.perf_counter_ns()

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future, int]]:
        """Whole requests from the front of the queue, at most max_batch rows (always at least one)."""
        items, count = [], 0
        while self.waiting and (not items or count + len(self.waiting[0][0]) <= self.max_batch):
            item = self.waiting.popleft()
            self.waiting_rows -= len(item[0])
            count += len(item[0])
            items.append(item)
        if self.waiting_rows < self.max_batch:
            self.full.clear()
        if not self.waiting:
            self.arrived.clear()
        return items

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.arrived.wait()
            # One wait per batch, not per request: until the queue holds a full batch or max_delay passes.
            company = len(self.waiting) > 1 or self.last_requests > 1
            if self.max_delay_s > 0 and self.waiting_rows < self.max_batch and company:
                try:
                    await asyncio.wait_for(self.full.wait(), self.max_delay_s)
                except asyncio.TimeoutError:
                    pass
            live = [item for item in self._take() if not item[1].cancelled()]  # callers that went away
            self.last_requests = len(live)
            if not live:
                continue
            taken = time.perf_counter_ns()
            batch = live[0][0] if len(live) == 1 else np.concatenate([rows for rows, _, _ in live])
            gathered = time.perf_counter_ns()
            try:
                out, started, ran = await loop.run_in_executor(self.executor, self._timed_run, batch)
            except Exception as exc:  # every caller of this batch hears about it; the loop goes on
                for _, fut, _ in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            start = 0
            for rows, fut, _ in live:
                if not fut.done():
                    fut.set_result(out[start : start + len(rows)])
                start += len(rows)
            queued = [taken - arrived for _, _, arrived in live]
            self.stats.ran(len(batch), len(live), queued, gathered - taken, ran - started, time.perf_counter_ns() - ran)
