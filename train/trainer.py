"""The training loop: seeded split, cosine schedule, best-on-validation checkpoint, resumable."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

import edgecls
from edgecls import checkpoint as ckpt_io
from edgecls.data import ImageSet, augment, load_for_spec, normalize
from edgecls.errors import UsageError
from edgecls.fileio import ensure_writable_dir, write_json
from edgecls.locations import RUNS, refuse_shipped
from edgecls.registry import ModelSpec, get_spec

from . import distributed
from .curves import plot_curves

# Settings a resumed run must keep: changing them mid-run would make a different model.
FIXED_ON_RESUME = (
    "batch_size",
    "lr",
    "weight_decay",
    "label_smoothing",
    "augment",
    "grad_clip",
    "limit",
    "seed",
    "val_fraction",
    "select",
)
SELECT_METRICS = ("val_loss", "val_acc")
log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30.0


@dataclass
class TrainConfig:
    model: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    label_smoothing: float
    augment: list[str]
    grad_clip: float
    limit: int | None = None
    seed: int = 0
    val_fraction: float = 0.1
    warmup_epochs: float = 1.0
    init_from: str | None = None  # start from this model's checkpoint in the same artifacts folder
    # Which epoch the checkpoint keeps: lowest validation loss, or highest validation accuracy (ties: lower loss).
    select: str = "val_loss"

    @classmethod
    def from_spec(cls, spec: ModelSpec, **overrides: Any) -> TrainConfig:
        values = {**spec.hparams, **{k: v for k, v in overrides.items() if v is not None}}
        names = {f.name for f in fields(cls)}
        return cls(model=spec.name, **{k: v for k, v in values.items() if k in names})

    def check(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive (got {self.lr})")
        if self.limit is not None and self.limit < 20:
            raise UsageError(f"--limit must be at least 20 images (got {self.limit})")
        if self.select not in SELECT_METRICS:
            raise UsageError(f"--select must be one of {', '.join(SELECT_METRICS)} (got {self.select!r})")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"validation fraction must lie between 0 and 1 (got {self.val_fraction})")


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    test_accuracy: float
    history: list[dict] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA GPU here; use --device cpu or auto")
    return torch.device(device)


def split_indices(n: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) index split of the training set, after the optional --limit."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.limit is not None:
        order = order[: cfg.limit]
    n_val = max(1, round(len(order) * cfg.val_fraction))
    return order[n_val:], order[:n_val]


def is_better(row: dict, best: dict, select: str) -> bool:
    """Does this epoch's validation beat the best so far under `select`?"""
    if select == "val_acc":
        return (row["val_acc"], -row["val_loss"]) > (best.get("val_acc", -1.0), -best["val_loss"])
    return row["val_loss"] < best["val_loss"]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero; a pure function of the step, so resuming is exact."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.inference_mode()
def predict_logits(
    model: nn.Module, data: ImageSet, spec: ModelSpec, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    model.eval()
    images = data.images()
    out = [
        model(normalize(images[i : i + batch_size], spec.preprocess).to(device)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def evaluate_split(model, data: ImageSet, spec, device) -> tuple[float, float]:
    logits = predict_logits(model, data, spec, device)
    loss = nn.functional.cross_entropy(logits, data.labels).item()
    acc = (logits.argmax(1) == data.labels).float().mean().item()
    return loss, acc


def run_dir(artifacts: str | Path, model: str) -> Path:
    return Path(artifacts) / model


def train(
    spec_name: str,
    *,
    artifacts: str | Path = RUNS,
    data_dir: str | None = None,
    device: str = "auto",
    resume: bool = False,
    threads: int | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train `spec_name` with the spec's defaults, overridden by `overrides` (TrainConfig fields).

    Under torchrun every process runs this; they share the work and rank 0 alone writes and logs.
    """
    workers = distributed.from_environment()
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {threads})")
    torch.set_num_threads(threads or distributed.default_threads(workers))
    dev = distributed.device_for(workers, resolve_device(device))
    distributed.join(workers, dev)
    try:
        return _train(spec_name, workers, dev, artifacts, data_dir, resume, overrides)
    finally:
        distributed.leave(workers)


@dataclass
class _Run:
    """One training run as it goes: what every epoch reads and updates."""

    spec: ModelSpec
    cfg: TrainConfig
    out: Path
    workers: distributed.Workers
    dev: torch.device
    say: Callable[[str], None]  # rank 0 logs; the other ranks say nothing
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_loss": math.inf, "val_acc": -1.0, "epoch": 0})


def _train(
    spec_name: str,
    workers: distributed.Workers,
    dev: torch.device,
    artifacts,
    data_dir,
    resume: bool,
    overrides: dict[str, Any],
) -> TrainResult:
    spec = get_spec(spec_name)
    out = run_dir(artifacts, spec.name)
    refuse_shipped(out)
    say = log.info if workers.writer else _silent
    if workers.restarts and not resume and _saved_run_id(out / "resume.pt") == workers.run_id:
        # torchrun --max-restarts started us again after a worker died: carry on from our last epoch.
        resume = True
        say(f"restart {workers.restarts} by torchrun: resuming from {out / 'resume.pt'}")
    try:
        cfg, state = _config(spec, out, resume, overrides)
    except _Finished as done:  # re-running a finished job script is not an error
        say(f"note: {done}")
        final = ckpt_io.load(out / "checkpoint.pt", spec.name)
        return TrainResult(out / "checkpoint.pt", final["best_epoch"], final.get("test_accuracy"), final["history"])
    if cfg.batch_size % workers.world:
        raise UsageError(
            f"--batch-size {cfg.batch_size} is the global batch and must split evenly over "
            f"{workers.world} processes; pick a multiple of {workers.world}"
        )
    init_path = run_dir(artifacts, cfg.init_from) / "checkpoint.pt" if cfg.init_from and state is None else None
    if init_path is not None and not init_path.is_file():
        raise UsageError(
            f"{spec.name} starts from the trained {cfg.init_from} model, but there is no checkpoint "
            f"at {init_path}; run `edgecls train --model {cfg.init_from}` first (same --artifacts)"
        )
    full_train = load_for_spec(spec, "train", data_dir)
    test = load_for_spec(spec, "test", data_dir)
    if workers.writer:  # only once the data is there: a run that cannot start leaves no empty folder
        ensure_writable_dir(out)
    train_idx, val_idx = split_indices(len(full_train), cfg)
    train_set, val_set = full_train.subset(train_idx), full_train.subset(val_idx)
    say(
        f"{spec.name}: {len(train_set)} train / {len(val_set)} validation / {len(test)} test images "
        f"from {full_train.source}; device {dev}, {torch.get_num_threads()} thread(s)"
        + (f" x {workers.world} processes ({dist_backend()})" if workers.distributed else "")
    )

    run = _Run(spec, cfg, out, workers, dev, say)
    net = _initial_model(run, init_path)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch = 1
    if state is not None:
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        rng_states = state.get("rng_states") or [state["rng_state"]]
        if workers.rank < len(rng_states):
            torch.set_rng_state(rng_states[workers.rank])
        run.history, run.best = state["history"], state["best"]
        start_epoch = state["epoch"] + 1
        say(f"resuming after epoch {state['epoch']} of {cfg.epochs}")
    # net: the plain module; evaluation and saving never go through DDP's hooks
    model = (
        DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        if workers.distributed
        else net
    )
    base_ckpt = {
        "format": ckpt_io.FORMAT,
        "model": spec.name,
        "dataset": spec.dataset,
        "data_source": full_train.source,
        "preprocess": ckpt_io.preprocess_dict(spec),
        "class_names": list(spec.class_names),
        "hparams": asdict(cfg),
        "builder_kwargs": dict(spec.builder_kwargs),
        "edgecls_version": edgecls.__version__,
        "init_from": str(init_path) if init_path else None,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "world_size": workers.world,
    }
    epochs = _Epochs(run, model, net, optimizer, train_set)
    for epoch in range(start_epoch, cfg.epochs + 1):
        seen, loss_sum, correct, seconds = epochs.train(epoch)
        rng_states = distributed.gather(workers, torch.get_rng_state())
        if workers.writer:
            _after_epoch(run, net, optimizer, val_set, base_ckpt, epoch, (seen, loss_sum, correct, seconds), rng_states)
    return _finish(run, test, base_ckpt)


def _config(spec: ModelSpec, out: Path, resume: bool, overrides: dict[str, Any]) -> tuple[TrainConfig, dict | None]:
    """The run's settings: the spec's defaults with `overrides`, or the interrupted run's (and its state)."""
    if not resume:
        cfg = TrainConfig.from_spec(spec, **overrides)
        cfg.check()
        return cfg, None
    state = ckpt_io.load(out / "resume.pt", spec.name, kind="resume state")
    cfg = TrainConfig(**state["config"])
    changed = [k for k in FIXED_ON_RESUME if overrides.get(k) is not None and overrides[k] != getattr(cfg, k)]
    if changed:
        raise UsageError(
            f"cannot change {', '.join('--' + c.replace('_', '-') for c in changed)} "
            f"when resuming; start a new run without --resume instead"
        )
    if overrides.get("epochs") is not None:
        cfg.epochs = overrides["epochs"]
    if state["epoch"] >= cfg.epochs:
        raise _Finished(
            f"{out / 'resume.pt'} has finished all {state['epoch']} epochs: nothing to resume "
            f"(pass --epochs N with N > {state['epoch']} to train further)"
        )
    cfg.check()
    return cfg, state


class _Finished(Exception):
    """--resume of a run that has done all its epochs: nothing to do."""


def _initial_model(run: _Run, init_path: Path | None) -> nn.Module:
    """The same initial weights on every rank: seeded, or taken from the model `init_from` names."""
    torch.manual_seed(run.cfg.seed)
    model = run.spec.build().to(run.dev)
    if init_path is not None:
        own = model.state_dict()
        init = ckpt_io.load(init_path, run.cfg.init_from)["state_dict"]
        shared = {k: v for k, v in init.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(shared, strict=False)
        run.say(
            f"initialised {len(shared)} of {len(own)} tensors from {init_path}; "
            f"fresh: {', '.join(k for k in own if k not in shared)}"
        )
    if run.workers.rank:
        torch.manual_seed(run.cfg.seed + 1_000_003 * run.workers.rank)  # each rank its own dropout masks
    return model


class _Epochs:
    """The training passes. The global batch is split over the processes; every epoch each reads its own
    shard of one seeded permutation (with one process: that permutation, as before DDP existed)."""

    def __init__(self, run: _Run, model: nn.Module, net: nn.Module, optimizer, train_set: ImageSet):
        self.run, self.model, self.net, self.optimizer, self.train_set = run, model, net, optimizer, train_set
        cfg, workers = run.cfg, run.workers
        self.local_batch = cfg.batch_size // workers.world
        self.sampler = DistributedSampler(
            range(len(train_set)), num_replicas=workers.world, rank=workers.rank, shuffle=True, seed=cfg.seed * 100_003
        )
        self.steps = math.ceil(len(self.sampler) / self.local_batch)
        self.total_steps = self.steps * cfg.epochs
        self.warmup = min(self.total_steps // 2, round(cfg.warmup_epochs * self.steps))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def train(self, epoch: int) -> tuple[int, float, int, float]:
        """One pass: (images seen, loss sum, correct, seconds), summed over the processes."""
        cfg, spec, dev, workers = self.run.cfg, self.run.spec, self.run.dev, self.run.workers
        self.model.train()
        # Per-epoch order and augmentation: epoch e does not depend on earlier epochs (exact resume).
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler))
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 7_919 * workers.rank)
        images, labels = self.train_set.images(), self.train_set.labels
        t0 = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        progress = _ProgressLines(self.run.say, cfg.epochs, self.steps, t0)
        bar = tqdm(
            total=self.steps,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
            leave=False,
            file=sys.stderr,
            disable=None if workers.writer else True,
            dynamic_ncols=True,
        )
        for b in range(self.steps):
            idx = order[b * self.local_batch : (b + 1) * self.local_batch]
            x = normalize(augment(images[idx], cfg.augment, gen), spec.preprocess).to(dev)
            y = labels[idx].to(dev)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at((epoch - 1) * self.steps + b, self.total_steps, self.warmup, cfg.lr)
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.optimizer.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            bar.update()
            if bar.disable and workers.writer:  # no terminal (a log file, CI): a line now and then instead
                progress.tick(epoch, b + 1, seen, loss_sum)
        bar.close()
        seen, loss_sum, correct = distributed.all_sum(workers, [seen, loss_sum, correct])
        return seen, loss_sum, correct, time.perf_counter() - t0


class _ProgressLines:
    """Progress inside an epoch where no bar can be drawn: a line every PROGRESS_EVERY_S seconds with the
    images done, img/s and the time left (an epoch on a busy 2-core machine took 265 s before its line)."""

    def __init__(self, say, epochs: int, steps: int, t0: float):
        self.say, self.epochs, self.steps, self.t0, self.next = say, epochs, steps, t0, t0 + PROGRESS_EVERY_S

    def tick(self, epoch: int, step: int, seen: int, loss_sum: float) -> None:
        now = time.perf_counter()
        if now < self.next or step == self.steps:
            return
        self.next = now + PROGRESS_EVERY_S
        elapsed = now - self.t0
        left = elapsed * (self.steps - step) / step
        self.say(f"  epoch {epoch}/{self.epochs}: batch {step}/{self.steps}, {seen / elapsed:.0f} img/s, "
                 f"loss {loss_sum / seen:.4f}, about {left:.0f} s left in this epoch")  # fmt: skip


def _after_epoch(
    run: _Run,
    net: nn.Module,
    optimizer,
    val_set: ImageSet,
    base_ckpt: dict,
    epoch: int,
    figures: tuple[int, float, int, float],
    rng_states: list,
) -> None:
    """Rank 0: validate, keep the checkpoint when the epoch is the best, write the resume state and curves."""
    seen, loss_sum, correct, seconds = figures
    cfg, out = run.cfg, run.out
    val_loss, val_acc = evaluate_split(net, val_set, run.spec, run.dev)
    row = {
        "epoch": epoch,
        "train_loss": loss_sum / seen,
        "train_acc": correct / seen,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "images_per_s": seen / seconds,
    }
    run.history.append(row)
    improved = is_better(row, run.best, cfg.select)
    if improved:
        run.best = {"val_loss": val_loss, "val_acc": val_acc, "epoch": epoch}
        ckpt_io.save(
            {
                **base_ckpt,
                "state_dict": _cpu_state(net),
                "best_epoch": epoch,
                "val_accuracy": val_acc,
                "history": run.history,
                "test_accuracy": None,
            },
            out / "checkpoint.pt",
        )
    ckpt_io.save(
        {
            "format": ckpt_io.FORMAT,
            "model": run.spec.name,
            "config": asdict(cfg),
            "epoch": epoch,
            "state_dict": _cpu_state(net),
            "optimizer": optimizer.state_dict(),
            "rng_state": rng_states[0],
            "rng_states": rng_states,
            "history": run.history,
            "best": run.best,
            "run_id": run.workers.run_id,
        },
        out / "resume.pt",
    )
    write_json(
        out / "history.json",
        {
            "model": run.spec.name,
            "config": asdict(cfg),
            "history": run.history,
            "torch_threads": base_ckpt["torch_threads"],
            "world_size": run.workers.world,
        },
    )
    plot_curves(run.history, run.spec.name, out / "curves.png")
    run.say(
        f"epoch {epoch:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%  "
        f"val loss {val_loss:.4f} acc {100 * val_acc:6.2f}%  {row['images_per_s']:.0f} img/s  "
        f"{seconds:.1f}s{'  *best' if improved else ''}"
    )


def _finish(run: _Run, test: ImageSet, base_ckpt: dict) -> TrainResult:
    """Rank 0 tests the best checkpoint and records the result; the other ranks return its figures."""
    out = run.out
    if not run.workers.writer:
        best_epoch, test_acc = distributed.broadcast(run.workers, None)
        return TrainResult(out / "checkpoint.pt", best_epoch, test_acc, [])
    final = ckpt_io.load(out / "checkpoint.pt", run.spec.name)
    _, best_model = ckpt_io.model_from_checkpoint(final)
    best_model.to(run.dev)
    _, test_acc = evaluate_split(best_model, test, run.spec, run.dev)
    final.update(
        history=run.history,
        test_accuracy=test_acc,
        test_images=len(test),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    ckpt_io.save(final, out / "checkpoint.pt")
    write_json(
        out / "history.json",
        {
            "model": run.spec.name,
            "config": asdict(run.cfg),
            "history": run.history,
            "best_epoch": final["best_epoch"],
            "test_accuracy": test_acc,
            "device": base_ckpt["device"],
            "torch_threads": base_ckpt["torch_threads"],
            "world_size": run.workers.world,
        },
    )
    run.say(
        f"test accuracy {100 * test_acc:.2f}% ({len(test)} images, best epoch {final['best_epoch']}); "
        f"checkpoint {out / 'checkpoint.pt'}"
    )
    distributed.broadcast(run.workers, (final["best_epoch"], test_acc))
    return TrainResult(out / "checkpoint.pt", final["best_epoch"], test_acc, run.history)


def _silent(message: str) -> None:
    pass


def _saved_run_id(path: Path) -> str | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("run_id") if path.is_file() else None
    except Exception:  # unreadable: not ours to resume; a fresh start rewrites it
        return None


def dist_backend() -> str:
    return torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
