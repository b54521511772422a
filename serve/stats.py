"""Triton's statistics extension: per model, what its requests cost and where the time went, in the
message Triton answers at /v2/models/{name}/stats (ModelStatistics; the same fields over gRPC).

Per request (`inference_stats`): success and fail (request duration, from the request parsed to its
response encoded), queue (waiting in the dynamic batcher), compute_input (gathering the batch),
compute_infer (the ONNX Runtime run), compute_output (splitting the batch and encoding the answer).
Per batch size (`batch_stats`): what each ONNX Runtime run of that many rows cost. perf_analyzer reads
these to report the server-side split of its latencies.

Everything is updated on the event loop's thread, so plain integers suffice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStat:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    phases: dict[str, Duration] = field(default_factory=lambda: {p: Duration() for p in PHASES})
    batches: dict[int, BatchStat] = field(default_factory=dict)
    inference_count: int = 0  # rows inferred
    execution_count: int = 0  # ONNX Runtime runs
    last_inference_ms: int = 0  # wall clock, ms since the epoch

    def ran(self, rows: int, requests: int, queued_ns: list[int], input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One ONNX Runtime run of `rows` rows for `requests` requests (`queued_ns`: each one's wait)."""
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.phases["queue"].add(sum(queued_ns), len(queued_ns))
        for phase, ns in (("compute_input", input_ns), ("compute_infer", infer_ns), ("compute_output", output_ns)):
            self.phases[phase].add(ns * requests, requests)  # every request in the batch waited for all of it
        batch = self.batches.setdefault(rows, BatchStat())
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def answered(self, ok: bool, total_ns: int, encode_ns: int = 0) -> None:
        """A request that reached this model has its answer: `ok` or not, after `total_ns`."""
        self.phases["success" if ok else "fail"].add(total_ns)
        if encode_ns:
            self.phases["compute_output"].add(encode_ns, 0)  # the request was counted with its batch

    def as_dict(self, name: str, version: str) -> dict:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                **{p: d.as_dict() for p, d in self.phases.items()},
                "cache_hit": Duration().as_dict(),  # no response cache
                "cache_miss": Duration().as_dict(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.as_dict(),
                    "compute_infer": b.compute_infer.as_dict(),
                    "compute_output": b.compute_output.as_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
        }
