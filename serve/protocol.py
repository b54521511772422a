"""The KServe v2 / Open Inference Protocol as Triton speaks it over HTTP: inference requests in JSON or
with Triton's binary tensor data extension, responses in the form the client asked for.

Pure functions over bytes and numpy arrays, so every malformed request is a ProtocolError with an HTTP
status and a message that says what was wrong, never an exception from deep inside numpy or json.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from edgecls.asgi import HttpError
from edgecls.metadata import INPUT_NAME, OUTPUT_NAME

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL_VERSION = "1"


class ProtocolError(HttpError):
    """A request the server refuses: `status` is the HTTP status, the message goes to the client."""


@dataclass
class InferRequest:
    inputs: np.ndarray  # float32 [N, C, H, W]
    request_id: str | None = None
    binary_output: bool = False  # logits as binary data (the extension) rather than a JSON list
    classification: int = 0  # >0: top-k "score:index:label" strings instead of logits (Triton's extension)


def model_metadata(name: str, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """GET /v2/models/{name}: names, datatypes and shapes; -1 is the batch axis."""
    return {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *input_shape]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, num_classes]}],
    }


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of a request (the whole body is JSON without the header)."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise ProtocolError(400, f"{HEADER_LENGTH} must be an integer (got {header_length[:40]!r})") from None
    if not 0 < n <= len(body):
        raise ProtocolError(
            400,
            f"{HEADER_LENGTH} is {n} but the body holds {len(body)} bytes; "
            "it must give the length of the JSON part, which comes first",
        )
    return body[:n], body[n:]


def parse_infer(body: bytes, header_length: str | None, input_shape: tuple[int, ...], max_batch: int) -> InferRequest:
    """An inference request for a model taking float32 [N, *input_shape] under the name 'input'."""
    head, tail = split_body(body, header_length)
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(400, f"malformed JSON in the request: {str(exc)[:160]}") from None
    if not isinstance(req, dict):
        raise ProtocolError(400, "the request must be a JSON object with an 'inputs' list")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, f"'inputs' must be a list holding one tensor, named '{INPUT_NAME}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise ProtocolError(
            400, f"unknown input {tensor.get('name')!r}; this model takes one input named '{INPUT_NAME}'"
        )
    if tensor.get("datatype") != "FP32":
        raise ProtocolError(400, f"input '{INPUT_NAME}' has datatype {tensor.get('datatype')!r}; the model takes FP32")
    shape = tensor.get("shape")
    if (
        not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape))
        or len(shape) != 1 + len(input_shape)
        or tuple(shape[1:]) != tuple(input_shape)
        or shape[0] < 1
    ):
        raise ProtocolError(
            400,
            f"input '{INPUT_NAME}' has shape {shape!r}; the model takes "
            f"[N, {', '.join(map(str, input_shape))}] with N >= 1",
        )
    if shape[0] > max_batch:
        raise ProtocolError(
            400, f"batch of {shape[0]} rows exceeds this server's --max-batch {max_batch}; split the request"
        )
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, "'parameters' must be a JSON object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or size != 4 * count:
            raise ProtocolError(
                400, f"binary_data_size {size!r} does not match shape {shape} of FP32 ({4 * count} bytes)"
            )
        if size > len(tail):
            raise ProtocolError(
                400,
                f"binary_data_size {size} goes beyond the body: only {len(tail)} bytes "
                f"follow the {HEADER_LENGTH} JSON header",
            )
        if len(tail) != size:
            raise ProtocolError(400, f"{len(tail) - size} unexpected bytes after the binary tensor data")
        array = np.frombuffer(tail, dtype="<f4", count=count).astype(np.float32, copy=False)
    else:
        if tail:
            raise ProtocolError(400, "binary data sent but input 'input' has no binary_data_size parameter")
        if "data" not in tensor:
            raise ProtocolError(400, f"input '{INPUT_NAME}' has neither 'data' nor a binary_data_size parameter")
        try:
            array = np.asarray(tensor["data"], dtype=np.float32).reshape(-1)
        except (ValueError, TypeError):
            raise ProtocolError(400, f"input '{INPUT_NAME}' data must be numbers (a flat or nested list)") from None
        if array.size != count:
            raise ProtocolError(400, f"input '{INPUT_NAME}' holds {array.size} values; shape {shape} needs {count}")
    if not np.isfinite(array).all():
        raise ProtocolError(400, f"input '{INPUT_NAME}' holds NaN or infinite values")
    return InferRequest(array.reshape(shape), request_id=_request_id(req), **_outputs(req))


def _request_id(req: dict) -> str | None:
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError(400, "'id' must be a string")
    return rid


def _outputs(req: dict) -> dict:
    """What the client asked to get back: binary or JSON logits, or top-k classification strings."""
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, "'parameters' must be a JSON object")
    outputs = req.get("outputs")
    if outputs is None:
        return {"binary_output": bool(params.get("binary_data_output", False))}
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        raise ProtocolError(400, f"'outputs' must be a list holding one output, named '{OUTPUT_NAME}'")
    out = outputs[0]
    if out.get("name") != OUTPUT_NAME:
        raise ProtocolError(400, f"unknown output {out.get('name')!r}; this model has one output named '{OUTPUT_NAME}'")
    oparams = out.get("parameters") or {}
    if not isinstance(oparams, dict):
        raise ProtocolError(400, "output 'parameters' must be a JSON object")
    k = oparams.get("classification", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ProtocolError(400, f"classification must be a non-negative integer (got {k!r})")
    binary = oparams.get("binary_data", params.get("binary_data_output", False))
    return {"binary_output": bool(binary), "classification": k}


def classification_strings(logits: np.ndarray, k: int, labels: tuple[str, ...]) -> list[list[str]]:
    """Triton's classification extension: per row the top k as "value:index:label", best first."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[f"{row[i]:f}:{i}:{labels[i]}" for i in idx] for row, idx in zip(logits, order)]


def encode_infer_response(
    name: str, req: InferRequest, logits: np.ndarray, labels: tuple[str, ...]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (Inference-Header-Content-Length when data is binary)."""
    out: dict = {"name": OUTPUT_NAME}
    binary = b""
    if req.classification:
        rows = classification_strings(logits, req.classification, labels)
        out.update(datatype="BYTES", shape=[len(rows), len(rows[0]) if rows else 0])
        if req.binary_output:
            binary = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for row in rows for s in row)
        else:
            out["data"] = [s for row in rows for s in row]
    else:
        logits = np.ascontiguousarray(logits, dtype="<f4")
        out.update(datatype="FP32", shape=list(logits.shape))
        if req.binary_output:
            binary = logits.tobytes()
        else:
            out["data"] = logits.reshape(-1).tolist()
    if req.binary_output:
        out["parameters"] = {"binary_data_size": len(binary)}
    response = {"model_name": name, "model_version": MODEL_VERSION, "outputs": [out]}
    if req.request_id is not None:
        response["id"] = req.request_id
    head = json.dumps(response, separators=(",", ":")).encode()
    if not req.binary_output:
        return head, {"Content-Type": "application/json"}
    return head + binary, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
