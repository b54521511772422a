"""Where models live. A user's own runs go to `runs/` (train, export and evaluate write there by
default); the trained models that ship with edgecls live in the repository's `artifacts/` and carry a
model card, which marks a folder that train and export refuse to write into."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .metadata import read_info

RUNS = "runs"


def user_cache(*parts: str) -> Path:
    """edgecls's folder in the user's cache ($XDG_CACHE_HOME or ~/.cache): downloaded data sets, TensorRT
    engines, --precision auto's choices. Nothing there is needed again after deleting it."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "edgecls", *parts)


MODEL_CARD = "model_card.json"


def shipped_root() -> Path:
    """Where the trained models that ship with edgecls are: $EDGECLS_MODELS when set (other trained
    models, laid out the same way), else the installed package's own (a wheel carries them), else the
    repository's artifacts/ (a checkout or an editable install), else ./artifacts."""
    if os.environ.get("EDGECLS_MODELS"):
        return Path(os.environ["EDGECLS_MODELS"])
    here = Path(__file__).resolve().parent
    for root in (here / "artifacts", here.parent / "artifacts"):
        if root.is_dir() and any(root.glob("*/model.onnx")):
            return root
    return Path("artifacts")


def model_origin(name: str) -> str:
    """Where `edgecls infer --model NAME` takes its file from, in words (`edgecls models`)."""
    own = Path(RUNS) / name / "model.onnx"
    if own.is_file():
        return f"your export ({own})"
    shipped = shipped_onnx(name)
    if not shipped.is_file():
        return "none: train and export it"
    return f"{'$EDGECLS_MODELS' if os.environ.get('EDGECLS_MODELS') else 'shipped'} ({shipped})"


def shipped_names() -> list[str]:
    return sorted(p.parent.name for p in shipped_root().glob("*/model.onnx"))


def shipped_onnx(name: str) -> Path:
    return shipped_root() / name / "model.onnx"


def find_onnx(name: str, artifacts: str | Path | None = None) -> Path:
    """The model.onnx `edgecls infer --model NAME` uses: <artifacts>/NAME when given, else the user's
    own runs/NAME when it exists, else the shipped one."""
    if artifacts is not None:
        return Path(artifacts) / name / "model.onnx"
    own = Path(RUNS) / name / "model.onnx"
    return own if own.is_file() else shipped_onnx(name)


def refuse_shipped(folder: str | Path) -> None:
    """Keep train and export from replacing a shipped model (a folder with a model card)."""
    if (Path(folder) / MODEL_CARD).is_file():
        raise UsageError(
            f"{folder} holds a shipped model ({MODEL_CARD}); write your own runs elsewhere "
            f"(the default --artifacts is {RUNS}/)"
        )


def model_sources(
    models: list[str] | None = None, onnx_files: list[str] | None = None, artifacts: str | None = None
) -> dict[str, Path]:
    """Model name -> ONNX file, for the commands that take several (serve, web, triton). Names resolve
    as `edgecls infer --model` does (your runs/ export, else the shipped file); --onnx files go under the
    model name in their metadata; neither given: every shipped model."""
    from .registry import get_spec

    sources: dict[str, Path] = {}
    names = list(models or [])
    if not names and not onnx_files:
        names = shipped_names()
        if not names:
            raise UsageError(f"no shipped models in {shipped_root()}; name models with --model or files with --onnx")
    for name in names:
        get_spec(name)  # unknown names fail here, with the list of known ones
        path = find_onnx(name, artifacts)
        if not path.is_file():
            raise UsageError(f"no ONNX model for {name} at {path}; run `edgecls export --model {name}` or pass --onnx")
        if name in sources:
            raise UsageError(f"model {name} named twice")
        sources[name] = path
    for f in onnx_files or []:
        path = Path(f)
        if not path.is_file():
            raise UsageError(f"--onnx {path}: no such file")
        name = read_info(path).model
        if name in sources:
            raise UsageError(f"two models named {name} ({sources[name]} and {path}); serve one of them")
        sources[name] = path
    return sources
