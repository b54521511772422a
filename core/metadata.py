"""The self-description an edgecls ONNX file carries in metadata_props: all the runtime needs.

The one place that reads and writes those properties: export and quantize write them through
`write_props`, everything else reads them through `read_props` (from a file, an ONNX Runtime session or
an onnx ModelProto) and `ModelInfo.from_props`. Torch-free and onnx-free: files are read with ONNX
Runtime, which every install has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.errors import UsageError

FORMAT = "edgecls-onnx/1"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class ModelInfo:
    model: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # C, H, W
    color_mode: str  # Pillow mode the image is converted to: "L" or "RGB"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float  # multiplies uint8 pixels before normalization
    test_accuracy: float | None
    edgecls_version: str
    exporter: str
    opset: int
    validated: bool

    def to_props(self, **extra: Any) -> dict[str, str]:
        props = {
            "edgecls_format": FORMAT,
            "model": self.model,
            "class_names": json.dumps(list(self.class_names)),
            "input_shape": json.dumps(list(self.input_shape)),
            "color_mode": self.color_mode,
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "scale": repr(self.scale),
            "test_accuracy": "" if self.test_accuracy is None else repr(self.test_accuracy),
            "edgecls_version": self.edgecls_version,
            "exporter": self.exporter,
            "opset": str(self.opset),
            "validated": "true" if self.validated else "false",
        }
        props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelInfo:
        if props.get("edgecls_format") != FORMAT:
            raise UsageError(
                f"{source} was not made by `edgecls export` (no edgecls metadata); "
                f"export it with edgecls or pass another file"
            )
        try:
            shape = tuple(int(v) for v in json.loads(props["input_shape"]))
            info = cls(
                model=props["model"],
                class_names=tuple(json.loads(props["class_names"])),
                input_shape=shape,
                color_mode=props["color_mode"],
                mean=tuple(json.loads(props["mean"])),
                std=tuple(json.loads(props["std"])),
                scale=float(props["scale"]),
                test_accuracy=float(props["test_accuracy"]) if props.get("test_accuracy") else None,
                edgecls_version=props["edgecls_version"],
                exporter=props["exporter"],
                opset=int(props["opset"]),
                validated=props.get("validated") == "true",
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{source} has incomplete edgecls metadata ({exc!r}); re-export it") from None
        if (
            len(shape) != 3
            or info.color_mode not in ("L", "RGB")
            or len(info.mean) != shape[0]
            or len(info.std) != shape[0]
            or shape[0] != (1 if info.color_mode == "L" else 3)
        ):
            raise UsageError(f"{source} has inconsistent edgecls metadata; re-export it")
        return info


def read_props(source) -> dict[str, str]:
    """The metadata properties of an ONNX file (path), an onnxruntime InferenceSession, or an onnx
    ModelProto."""
    if hasattr(source, "get_modelmeta"):
        return dict(source.get_modelmeta().custom_metadata_map)
    if hasattr(source, "metadata_props"):
        return {p.key: p.value for p in source.metadata_props}
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"ONNX Runtime cannot load {source}: {first[:200]}") from None
    return read_props(session)


def read_info(path: str | Path) -> ModelInfo:
    """The ModelInfo of an edgecls ONNX file; a foreign or damaged file is a one-line EdgeclsError."""
    return ModelInfo.from_props(read_props(path), source=str(path))


def write_props(model, props: dict[str, str]) -> None:
    """Replace the metadata properties of an onnx ModelProto (saved by the caller)."""
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
