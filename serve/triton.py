"""`edgecls triton DIR`: a Triton Inference Server model repository from edgecls ONNX files, in the
layout Triton's onnxruntime backend expects:

    DIR/<name>/config.pbtxt      max_batch_size, dims without the batch axis, the input's format
                                 (FORMAT_NCHW), dynamic_batching, instance_group, the class names
                                 as label_filename
    DIR/<name>/1/model.onnx      the ONNX file, byte for byte; with --kind gpu the graph form CUDA runs
                                 (model.fused.onnx where export wrote one: runtime.engine.PREFERRED_FORMS)
    DIR/<name>/labels.txt        one class name per line (Triton's classification extension)

Names, datatypes and dims are read from the ONNX graph itself (ONNX Runtime, no torch, no onnx).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from edgecls.errors import UsageError
from edgecls.runtime import Classifier
from edgecls.runtime.engine import form_file

log = logging.getLogger(__name__)
LABELS_FILE = "labels.txt"
ONNX_TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(double)": "TYPE_FP64",
}
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
ENUM_KEYS = {"data_type", "kind", "format"}  # printed bare in text format


def model_config(
    classifier: Classifier,
    name: str,
    max_batch: int = 64,
    max_delay_ms: float = 0.0,
    instances: int = 1,
    kind: str = "auto",
    dynamic_batching: bool = True,
) -> dict:
    """Triton's ModelConfig for `classifier`'s ONNX file, as a dict in the message's field names."""
    if max_batch < 1:
        raise UsageError(f"--max-batch must be at least 1 (got {max_batch})")
    if instances < 1:
        raise UsageError(f"--instances must be at least 1 (got {instances})")
    if kind not in KINDS:
        raise UsageError(f"unknown instance kind {kind!r}; use {', '.join(KINDS)}")

    def tensors(values) -> list[dict]:
        out = []
        for v in values:
            if not v.shape or isinstance(v.shape[0], int):
                raise UsageError(f"{classifier.path}: {v.name} has no symbolic batch axis ({v.shape}); re-export it")
            if v.type not in ONNX_TYPES or not all(isinstance(d, int) for d in v.shape[1:]):
                raise UsageError(f"{classifier.path}: {v.name} ({v.type}, {v.shape}) cannot be described to Triton")
            out.append({"name": v.name, "data_type": ONNX_TYPES[v.type], "dims": list(v.shape[1:])})
        return out

    inputs, outputs = tensors(classifier.engine.inputs()), tensors(classifier.engine.outputs())
    for tensor in inputs:
        if len(tensor["dims"]) == 3:  # an image, [C, H, W] as the preprocessing writes it; image clients read this
            tensor["format"] = "FORMAT_NCHW"
    outputs[0]["label_filename"] = LABELS_FILE
    config = {
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": max_batch,
        "input": inputs,
        "output": outputs,
    }
    if dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(round(max_delay_ms * 1000))}
    config["instance_group"] = [{"count": instances, "kind": KINDS[kind]}]
    return config


def to_pbtxt(message: dict, indent: int = 0) -> str:
    """Protobuf text format for a dict of scalars, lists and nested dicts (repeated fields as lists)."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines += [f"{pad}{key} {{", to_pbtxt(item, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}")
    return "\n".join(line for line in lines if line)


def _scalar(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) or key in ENUM_KEYS:
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_repository(
    out_dir: str | Path,
    sources: dict[str, Path],
    max_batch: int = 64,
    max_delay_ms: float = 0.0,
    instances: int = 1,
    kind: str = "auto",
) -> list[Path]:
    """Write DIR/<name>/ for each name -> ONNX file. Each model folder is built aside and renamed into
    place, so an interrupted run leaves the previous folder whole."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a folder for the model repository")
    # Triton's onnxruntime backend on a GPU is ORT's CUDA provider: it gets the form that provider runs best
    if kind == "gpu":
        sources = {name: form_file(path, "cuda") for name, path in sources.items()}
    classifiers = {name: Classifier(path, "cpu", threads=1) for name, path in sources.items()}  # all load first
    configs = {
        name: model_config(clf, name, max_batch, max_delay_ms, instances, kind) for name, clf in classifiers.items()
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror or exc}") from None
    for name in sources:
        target = out / name
        if target.exists() and not (target / "config.pbtxt").is_file():
            raise UsageError(
                f"{target} exists and is not a model folder (no config.pbtxt); remove it or choose another DIR"
            )
    written = []
    for name, clf in classifiers.items():
        target = out / name
        build = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
        try:
            (build / "1").mkdir()
            shutil.copyfile(clf.path, build / "1" / "model.onnx")
            (build / LABELS_FILE).write_text("".join(f"{c}\n" for c in clf.class_names))
            (build / "config.pbtxt").write_text(to_pbtxt(configs[name]) + "\n")
            os.chmod(build, 0o755)
            old = None
            if target.exists():
                old = out / f".{name}.old.{os.getpid()}"
                os.replace(target, old)
            os.replace(build, target)
            if old is not None:
                shutil.rmtree(old)
        finally:
            if build.exists():
                shutil.rmtree(build)
        log.info(
            f"{name}: {target}/config.pbtxt, 1/model.onnx (from {clf.path}), {LABELS_FILE} "
            f"({len(clf.class_names)} classes)"
        )
        written.append(target)
    return written
