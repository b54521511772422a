"""Checkpoints: plain-typed dicts loadable with torch.load(weights_only=True)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError
from .fileio import atomic_path
from .registry import ModelSpec, get_spec

FORMAT = "edgecls-checkpoint/1"


def save(obj: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | Path, expected_model: str | None = None, kind: str = "checkpoint") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; every failure is a one-line EdgeclsError."""
    path = Path(path)
    if not path.is_file():
        hint = f"; run `edgecls train --model {expected_model}` first" if expected_model else ""
        raise UsageError(f"no {kind} at {path}{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, wrong format: all mean "unusable file"
        raise UsageError(
            f"{path} is not a readable edgecls {kind} ({type(exc).__name__}); retrain or pass another file"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise UsageError(f"{path} is not an edgecls {kind}")
    if expected_model is not None and ckpt["model"] != expected_model:
        raise UsageError(f"{path} holds model {ckpt['model']!r}, not {expected_model!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[ModelSpec, torch.nn.Module]:
    spec = get_spec(ckpt["model"])
    model = spec.build()
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UsageError(f"checkpoint weights do not fit model {spec.name!r} ({str(exc).splitlines()[0]})") from None
    return spec, model.eval()


def preprocess_dict(spec: ModelSpec) -> dict[str, Any]:
    d = asdict(spec.preprocess)
    d["mean"], d["std"] = list(d["mean"]), list(d["std"])
    return d
