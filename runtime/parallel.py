"""Batch-parallel ONNX Runtime on the CPU: a large batch is cut into chunks that run at the same time on
several 1-thread sessions (ORT releases the GIL), instead of one session spreading each operator over
its intra-op threads.

Why: the recurrent kernels (ONNX RNN/GRU/LSTM nodes and unrolled steps) are chains of small matrix
products that one operator's threads barely speed up, while whole rows are independent. Measured
on 2 cores (docs/guide/results.md): at batch 64-256, two 1-thread sessions beat one 2-thread
session by 1.4-1.5x for gru, 1.8x for birnn and 1.25x for rnn, and stay within 2 % of it for the
conv models, which threads well already. Below about 8 rows per session the per-call overhead wins,
so smaller batches keep the single multi-thread session.
"""

from __future__ import annotations

import os
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgecls.timing import time_calls

SPLIT_MIN_ROWS = 8  # rows per session below which splitting stops paying
SMALL_BATCH_PROBE_S, SMALL_BATCH_ROUNDS = 0.08, 4  # per session, choosing the small-batch session at open


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_count(rows: int, threads: int) -> int:
    """How many 1-thread sessions a batch of `rows` runs on: 1 (no split) unless every chunk gets at
    least SPLIT_MIN_ROWS rows; never more than `threads`."""
    return max(1, min(threads, rows // SPLIT_MIN_ROWS))


class BatchParallel:
    """Up to `threads` 1-thread sessions of one model, made when a batch first needs them; batches too
    small to split run on `whole`, the model's multi-thread session."""

    def __init__(self, make_session, input_name: str, threads: int, whole):
        if threads < 2:
            raise ValueError(f"batch-parallel execution needs at least 2 threads (got {threads})")
        self.make_session, self.input_name, self.threads, self.whole = make_session, input_name, threads, whole
        self.small_batch_threads = threads  # what `whole` uses, until choose_small_batch_session says otherwise
        self.sessions: list = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="ort-split")

    def choose_small_batch_session(self, input_shape) -> int:
        """Batches too small to split run on `whole` or on a 1-thread session, whichever is faster at one row
        on this machine; returns (and keeps in small_batch_threads) its thread count. The recurrent models'
        steps are too small to share between threads, so there the extra threads only add a hand-off per
        step: measured on 2 Xeon cores, a 1-thread session ran batch 1 of lstm in 0.45 ms against 0.52 ms on
        two, rnn in 0.19 against 0.22 (benchmarks/results/recurrent_forms.json), while gru and the conv
        models gain from the second thread. Timed once, warmed up, the best of alternating rounds (a busy
        moment of a shared machine hits both alike)."""
        one = self._sessions(1)[0]
        shape = [d if isinstance(d, int) else 1 for d in input_shape[1:]]
        x = {self.input_name: np.random.default_rng(0).standard_normal([1, *shape]).astype(np.float32)}
        runs = {"whole": (self.whole, self.threads), "one": (one, 1)}
        best = {name: float("inf") for name in runs}
        for session, _ in runs.values():
            time_calls(lambda s=session: s.run(None, x), 0, min_reps=3)  # warm-up
        for _ in range(SMALL_BATCH_ROUNDS):
            for name, (session, _) in runs.items():
                seconds = SMALL_BATCH_PROBE_S / SMALL_BATCH_ROUNDS
                best[name] = min(best[name], statistics.median(time_calls(lambda s=session: s.run(None, x), seconds)))
        self.whole, self.small_batch_threads = runs[min(best, key=best.get)]
        return self.small_batch_threads

    def _sessions(self, count: int) -> list:
        with self.lock:
            while len(self.sessions) < count:
                self.sessions.append(self.make_session())
            return self.sessions[:count]

    def run(self, x: np.ndarray, count: int | None = None) -> np.ndarray:
        """Logits of `x`: split when split_count says so, else on the whole session. `count` forces a
        split into that many chunks (benchmarks)."""
        if count is None:
            count = split_count(len(x), self.threads)
            if count == 1:
                return self.whole.run(None, {self.input_name: x})[0]
        count = max(1, min(count, self.threads, len(x)))
        sessions = self._sessions(count)
        chunks = np.array_split(x, count)
        futures = [self.pool.submit(s.run, None, {self.input_name: c}) for s, c in zip(sessions[1:], chunks[1:])]
        first = sessions[0].run(None, {self.input_name: chunks[0]})[0]  # this thread takes a chunk too
        return np.concatenate([first] + [f.result()[0] for f in futures])
