"""Data-parallel training under torchrun (DistributedDataParallel); one process without it.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE (and OMP_NUM_THREADS=1); with them the
trainer joins a process group (gloo on CPU, nccl on GPUs), wraps its model in DDP and reads its own
shard of every epoch through a DistributedSampler. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgecls.errors import EdgeclsError


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    local_world: int = 1
    restarts: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT: > 0 after --max-restarts restarted us
    run_id: str | None = None  # torchrun's TORCHELASTIC_RUN_ID (--rdzv-id; a fresh one per --standalone run)

    @property
    def writer(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def from_environment() -> Workers:
    """The launch as torchrun describes it in the environment (a plain process: rank 0 of 1)."""
    env = os.environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return Workers()
    try:
        return Workers(
            int(env["RANK"]),
            int(env.get("LOCAL_RANK", 0)),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
            int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
            env.get("TORCHELASTIC_RUN_ID"),
        )
    except ValueError:
        raise EdgeclsError("RANK/WORLD_SIZE in the environment are not integers; launch with torchrun") from None


def default_threads(workers: Workers) -> int:
    """Intra-op threads when --threads is not given: the cores shared among this machine's processes.

    torchrun's OMP_NUM_THREADS=1 is a blanket guard against oversubscription; we set the count ourselves.
    """
    if not workers.distributed:
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers.local_world)


def device_for(workers: Workers, device: torch.device) -> torch.device:
    """On CUDA each local rank takes its own GPU."""
    if device.type != "cuda" or not workers.distributed:
        return device
    if workers.local_rank >= torch.cuda.device_count():
        raise EdgeclsError(
            f"local rank {workers.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
            f"start at most that many processes per node or use --device cpu"
        )
    torch.cuda.set_device(workers.local_rank)
    return torch.device("cuda", workers.local_rank)


def join(workers: Workers, device: torch.device) -> None:
    if workers.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def leave(workers: Workers) -> None:
    if workers.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(workers: Workers, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all processes (epoch totals: loss, correct, seen)."""
    if not workers.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def gather(workers: Workers, obj):
    """Every process's `obj`, in rank order (on every rank)."""
    if not workers.distributed:
        return [obj]
    out = [None] * workers.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(workers: Workers, obj):
    """Rank 0's `obj` on every rank (so an error found by rank 0 stops all of them alike)."""
    if not workers.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
