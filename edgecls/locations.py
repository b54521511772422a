"""Where models live. A user's own runs go to `runs/` (train, export and evaluate write there by
default); the trained models that ship with edgecls live in the repository's `artifacts/` and carry a
model card, which marks a folder that train and export refuse to write into."""

from __future__ import annotations

from pathlib import Path

from .errors import EdgeclsError

RUNS = "runs"
MODEL_CARD = "model_card.json"


def shipped_root() -> Path:
    """The repository's artifacts/ (an editable install or a checkout); else ./artifacts."""
    repo = Path(__file__).resolve().parents[1] / "artifacts"
    return repo if repo.is_dir() else Path("artifacts")


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
        raise EdgeclsError(f"{folder} holds a shipped model ({MODEL_CARD}); write your own runs elsewhere "
                           f"(the default --artifacts is {RUNS}/)")
