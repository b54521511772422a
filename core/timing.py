"""The one way edgecls times code: `edgecls bench`, the scripts in benchmarks/ and export's choice
between exporters all measure through these helpers, so a figure means the same thing everywhere.

Every path is warmed up before it is timed, and a figure is never one cold pass.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def time_calls(
    fn: Callable[[], object], seconds: float, min_reps: int = 3, max_reps: int = 2000, warmup: int = 0
) -> list[float]:
    """Seconds of each call of `fn`, after `warmup` untimed calls: at least `min_reps` calls, then more
    until `seconds` have passed or `max_reps` calls were made."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < min_reps or (time.perf_counter() < end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def best_round(fn: Callable[[], object], seconds: float, rounds: int = 3, warmup: int = 1, min_reps: int = 2) -> float:
    """Seconds per call: the lowest of `rounds` round medians (the machine's least disturbed moment), the
    rounds sharing `seconds` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return min(statistics.median(time_calls(fn, seconds / rounds, min_reps=min_reps)) for _ in range(rounds))


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of one call: for whole passes over a data set, each of which is long and
    warmed up by the caller."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result
