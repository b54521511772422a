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
    """A request the server refuses: `status` is the HTTP status, the message goes to the client;
    `grpc_code` the gRPC status name where it is not the one the HTTP status maps to (grpc_service.py)."""

    def __init__(self, status: int, message: str, grpc_code: str | None = None):
        super().__init__(status, message)
        self.grpc_code = grpc_code


# the protocol extensions the server metadata names, over HTTP and gRPC alike
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "statistics"]


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


def load_json(data: bytes, what: str = "the request"):
    """JSON from a client: malformed, too deeply nested or not UTF-8 is a 400, never a 500."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(400, f"malformed JSON in {what}: {str(exc)[:160]}") from None
    except RecursionError:
        raise ProtocolError(400, f"JSON in {what} is nested too deeply") from None


def check_input(name, datatype, shape, input_shape: tuple[int, ...], max_batch: int) -> list[int]:
    """The one input tensor's name, datatype and shape against the model's; the shape, checked."""
    if name != INPUT_NAME:
        raise ProtocolError(400, f"unknown input {name!r}; this model takes one input named '{INPUT_NAME}'")
    if datatype != "FP32":
        raise ProtocolError(400, f"input '{INPUT_NAME}' has datatype {datatype!r}; the model takes FP32")
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
    return shape


def from_bytes(raw: bytes, shape: list[int]) -> np.ndarray:
    """FP32 tensor data sent as raw little-endian bytes (HTTP's binary extension, gRPC's raw contents)."""
    count = math.prod(shape)
    if len(raw) != 4 * count:
        raise ProtocolError(
            400, f"input '{INPUT_NAME}' has {len(raw)} bytes of data; shape {shape} of FP32 needs {4 * count}"
        )
    return np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32, copy=False).reshape(shape)


def from_values(values, shape: list[int]) -> np.ndarray:
    """FP32 tensor data sent as numbers (a JSON list, flat or nested; gRPC's typed contents)."""
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, as in Triton; beyond float64: 400
            array = np.asarray(values, dtype=np.float32).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(400, f"input '{INPUT_NAME}' data must be float32 numbers (a flat or nested list)") from None
    count = math.prod(shape)
    if array.size != count:
        raise ProtocolError(400, f"input '{INPUT_NAME}' holds {array.size} values; shape {shape} needs {count}")
    return array.reshape(shape)


def check_values(array: np.ndarray, reject_nonfinite: bool) -> np.ndarray:
    """Triton runs NaN and infinities through the model (the answer is what it computes); a server
    started with --reject-nonfinite refuses them."""
    if reject_nonfinite and not np.isfinite(array).all():
        raise ProtocolError(400, f"input '{INPUT_NAME}' holds NaN or infinite values (--reject-nonfinite)")
    return array


def check_classification(k) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ProtocolError(400, f"classification must be a non-negative integer (got {k!r})")
    return k


def parse_infer(
    body: bytes, header_length: str | None, input_shape: tuple[int, ...], max_batch: int, reject_nonfinite=False
) -> InferRequest:
    """An HTTP inference request for a model taking float32 [N, *input_shape] under the name 'input'."""
    head, tail = split_body(body, header_length)
    req = load_json(head)
    if not isinstance(req, dict):
        raise ProtocolError(400, "the request must be a JSON object with an 'inputs' list")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, f"'inputs' must be a list holding one tensor, named '{INPUT_NAME}'")
    tensor = inputs[0]
    shape = check_input(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), input_shape, max_batch)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, "'parameters' must be a JSON object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size != 4 * math.prod(shape):
            raise ProtocolError(
                400, f"binary_data_size {size!r} does not match shape {shape} of FP32 ({4 * math.prod(shape)} bytes)"
            )
        if size > len(tail):
            raise ProtocolError(
                400,
                f"binary_data_size {size} goes beyond the body: only {len(tail)} bytes "
                f"follow the {HEADER_LENGTH} JSON header",
            )
        if len(tail) != size:
            raise ProtocolError(400, f"{len(tail) - size} unexpected bytes after the binary tensor data")
        array = from_bytes(tail, shape)
    else:
        if tail:
            raise ProtocolError(400, "binary data sent but input 'input' has no binary_data_size parameter")
        if "data" not in tensor:
            raise ProtocolError(400, f"input '{INPUT_NAME}' has neither 'data' nor a binary_data_size parameter")
        array = from_values(tensor["data"], shape)
    return InferRequest(check_values(array, reject_nonfinite), request_id=_request_id(req), **_outputs(req))


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
    k = check_classification(oparams.get("classification", 0))
    binary = oparams.get("binary_data", params.get("binary_data_output", False))
    return {"binary_output": bool(binary), "classification": k}


def classification_strings(logits: np.ndarray, k: int, labels: tuple[str, ...]) -> list[list[str]]:
    """Triton's classification extension: per row the top k as "value:index:label", best first."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[f"{row[i]:f}:{i}:{labels[i]}" for i in idx] for row, idx in zip(logits, order)]


def output_tensor(req: InferRequest, logits: np.ndarray, labels: tuple[str, ...]) -> tuple[str, list[int], object]:
    """(datatype, shape, values) of the answer: float32 logits, or the classification strings."""
    if req.classification:
        rows = classification_strings(logits, req.classification, labels)
        return "BYTES", [len(rows), len(rows[0]) if rows else 0], [s for row in rows for s in row]
    logits = np.ascontiguousarray(logits, dtype="<f4")
    return "FP32", list(logits.shape), logits


def raw_contents(datatype: str, values) -> bytes:
    """Values as the binary extension and gRPC's raw contents carry them (BYTES: 4-byte length + bytes)."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in values)
    return values.tobytes()


def encode_infer_response(
    name: str, req: InferRequest, logits: np.ndarray, labels: tuple[str, ...]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (Inference-Header-Content-Length when data is binary)."""
    datatype, shape, values = output_tensor(req, logits, labels)
    out: dict = {"name": OUTPUT_NAME, "datatype": datatype, "shape": shape}
    binary = b""
    if req.binary_output:
        binary = raw_contents(datatype, values)
        out["parameters"] = {"binary_data_size": len(binary)}
    else:
        out["data"] = values if datatype == "BYTES" else values.reshape(-1).tolist()
    response = {"model_name": name, "model_version": MODEL_VERSION, "outputs": [out]}
    if req.request_id is not None:
        response["id"] = req.request_id
    head = json.dumps(response, separators=(",", ":")).encode()
    if not req.binary_output:
        return head, {"Content-Type": "application/json"}
    return head + binary, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
