"""The self-description an edgecls ONNX file carries in metadata_props: all the runtime needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgecls.errors import EdgeclsError

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
            "edgecls_format": FORMAT, "model": self.model, "class_names": json.dumps(list(self.class_names)),
            "input_shape": json.dumps(list(self.input_shape)), "color_mode": self.color_mode,
            "mean": json.dumps(list(self.mean)), "std": json.dumps(list(self.std)), "scale": repr(self.scale),
            "test_accuracy": "" if self.test_accuracy is None else repr(self.test_accuracy),
            "edgecls_version": self.edgecls_version, "exporter": self.exporter, "opset": str(self.opset),
            "validated": "true" if self.validated else "false",
        }
        props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelInfo":
        if props.get("edgecls_format") != FORMAT:
            raise EdgeclsError(f"{source} was not made by `edgecls export` (no edgecls metadata); "
                               f"export it with edgecls or pass another file")
        try:
            shape = tuple(int(v) for v in json.loads(props["input_shape"]))
            info = cls(
                model=props["model"], class_names=tuple(json.loads(props["class_names"])), input_shape=shape,
                color_mode=props["color_mode"], mean=tuple(json.loads(props["mean"])),
                std=tuple(json.loads(props["std"])), scale=float(props["scale"]),
                test_accuracy=float(props["test_accuracy"]) if props.get("test_accuracy") else None,
                edgecls_version=props["edgecls_version"], exporter=props["exporter"], opset=int(props["opset"]),
                validated=props.get("validated") == "true")
        except (KeyError, ValueError, TypeError) as exc:
            raise EdgeclsError(f"{source} has incomplete edgecls metadata ({exc!r}); re-export it") from None
        if len(shape) != 3 or info.color_mode not in ("L", "RGB") or len(info.mean) != shape[0] \
                or len(info.std) != shape[0] or shape[0] != (1 if info.color_mode == "L" else 3):
            raise EdgeclsError(f"{source} has inconsistent edgecls metadata; re-export it")
        return info
