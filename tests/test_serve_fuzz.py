"""No request makes `edgecls serve` answer 5xx (HTTP) or UNKNOWN/INTERNAL (gRPC): hypothesis throws
random JSON, binary bodies and headers at the HTTP routes and random messages and bytes at the gRPC
service, schemathesis runs the OpenAPI schema's operations; afterwards a good request is still answered
exactly."""

import json

import grpc
import hypothesis.strategies as st
import numpy as np
import pytest
import schemathesis
import tritonclient.http as hc
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from serving import free_port, request, running, shipped_classifiers
from tritonclient.grpc import service_pb2 as pb

from edgecls.runtime import Classifier
from edgecls.serve.app import create_app

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
BAD_GRPC = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
# uvicorn's own 400 for bytes that are not HTTP (a header value it cannot parse): before any application
UVICORN_REFUSAL = b"Invalid HTTP request received."


@pytest.fixture(scope="module")
def classifiers():
    return shipped_classifiers(("gru", "cnn"))


@pytest.fixture(scope="module")
def servers(classifiers):
    address = f"127.0.0.1:{free_port()}"
    app = create_app(classifiers, max_batch=8, max_body_mb=1, grpc_address=address)
    with running(app) as url:
        yield url, address


def still_exact(url: str, address: str, clf: Classifier) -> None:
    """A good request over each protocol gets the model's own logits."""
    x = np.random.default_rng(1).normal(size=(2, 1, 28, 28)).astype(np.float32)
    inp = hc.InferInput("input", [2, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(
        hc.InferenceServerClient(url).infer("gru", [inp]).as_numpy("logits"), clf.run(x), atol=1e-5, rtol=0
    )
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[2, 1, 28, 28])
    message = pb.ModelInferRequest(model_name="gru", inputs=[tensor], raw_input_contents=[x.tobytes()])
    answer = pb.ModelInferResponse.FromString(_infer_stub(address)(message))
    got = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(2, 10)
    np.testing.assert_allclose(got, clf.run(x), atol=1e-5, rtol=0)


def _infer_stub(address: str):
    """ModelInfer taking a message or raw bytes, answering the response's bytes."""
    channel = grpc.insecure_channel(address)
    return channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
        response_deserializer=None,
    )


EXTREMES = st.sampled_from([10**400, -(10**400), 2**64, 2**63, -(2**63) - 1, 1e39, float("nan"), float("inf"), -0.0])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | EXTREMES | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=40,
)
shapes = st.lists(st.integers(-2, 40), max_size=5) | st.just([1, 1, 28, 28]) | st.just([2, 3, 32, 32]) | json_values
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "logits", ""]) | json_values,
        "datatype": st.sampled_from(["FP32", "FP16", "BYTES"]) | json_values,
        "shape": shapes,
        "data": st.lists(st.floats(width=32), max_size=784) | json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-4, 7000) | json_values})
        | json_values,
    },
)
infer_bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(tensors, max_size=2) | json_values,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["logits", "x"]),
                    "parameters": st.fixed_dictionaries(
                        {}, optional={"classification": st.integers(-3, 60) | json_values, "binary_data": json_values}
                    ),
                },
            ),
            max_size=2,
        )
        | json_values,
        "id": json_values,
        "parameters": json_values,
    },
)
MUTABLE = [
    ("inputs",), ("inputs", 0), ("inputs", 0, "name"), ("inputs", 0, "datatype"), ("inputs", 0, "shape"),
    ("inputs", 0, "shape", 0), ("inputs", 0, "shape", 3), ("inputs", 0, "data"), ("inputs", 0, "data", 0),
    ("inputs", 0, "data", 783), ("inputs", 0, "parameters"), ("outputs",), ("outputs", 0, "name"),
    ("outputs", 0, "parameters"), ("outputs", 0, "parameters", "classification"), ("id",), ("parameters",),
]  # fmt: skip


@st.composite
def mutated_bodies(draw):
    """A valid gru request (one image, top-2 labels) with one to three places replaced by random JSON:
    the parser's deeper checks are reached far more often than by random structure alone."""
    body = {
        "id": "r",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.5] * 784}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}],
    }
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = draw(st.sampled_from(MUTABLE))
        node = body
        try:
            for key in parents:
                node = node[key]
            node[last] = draw(EXTREMES | json_values)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed the place
            pass
    return body


paths = st.sampled_from(
    [
        "/v2/models/gru/infer",
        "/v2/models/cnn/versions/1/infer",
        "/v2/models/gru/versions/x/infer",
        "/v2/repository/index",
        "/v2/repository/models/gru/load",
        "/v2/repository/models/nope/unload",
        "/v2/models/gru/classify",
    ]
)


@st.composite
def http_requests(draw):
    if draw(st.booleans()):  # half: a valid gru request, mutated, sent cleanly
        return "/v2/models/gru/infer", json.dumps(draw(mutated_bodies())).encode(), {"Content-Type": "application/json"}
    path, head = draw(paths), json.dumps(draw(infer_bodies | json_values)).encode()
    tail = draw(st.just(b"") | st.binary(max_size=6000) | st.just(b"\0" * 3136))
    body = draw(st.just(head + tail) | st.binary(max_size=3000))
    headers = {}
    length = draw(st.none() | st.just(str(len(head))) | st.integers(-3, 8000).map(str) | st.text(max_size=6))
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    encoding = draw(st.sampled_from([None, "identity", "gzip", "deflate", "br", "GZIP "]))
    if encoding:
        headers["Content-Encoding"] = encoding
    kind = draw(
        st.sampled_from(["application/json", "application/octet-stream", "multipart/form-data; boundary=b", ""])
    )
    headers["Content-Type"] = kind
    return path, body, {k: v.encode("latin-1", "replace").decode("latin-1") for k, v in headers.items()}


def test_random_http_requests_never_get_a_5xx(servers, classifiers):
    url, address = servers

    @SETTINGS
    @given(http_requests())
    def fuzz(req):
        path, body, headers = req
        try:
            status, got_headers, content = request(url, "POST", path, body, headers)
        except ValueError:  # http.client refuses a header value before sending (e.g. a newline in it)
            return
        assert status < 500, (status, content[:300])
        if status >= 400 and content != UVICORN_REFUSAL:
            assert got_headers.get("content-type") == "application/json", (status, got_headers, content[:300])
            error = json.loads(content)["error"]
            assert error and "\n" not in error and "Traceback" not in error

    fuzz()
    still_exact(url, address, classifiers["gru"])


fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x", ""]),
        "datatype": st.sampled_from(["FP32", "INT8", "BYTES", ""]),
        "shape": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5)
        | st.sampled_from([[1, 1, 28, 28], [3, 1, 28, 28], [1, 3, 32, 32]]),
    },
)


@st.composite
def grpc_requests(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=4000))
    inputs = []
    for f in draw(st.lists(fields, max_size=2)):
        tensor = pb.ModelInferRequest.InferInputTensor(**f)
        tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=800)))
        inputs.append(tensor)
    outputs = []
    for name in draw(st.lists(st.sampled_from(["logits", "x"]), max_size=2)):
        out = pb.ModelInferRequest.InferRequestedOutputTensor(name=name)
        choice = draw(st.sampled_from([None, "int64_param", "bool_param", "string_param", "double_param"]))
        if choice == "int64_param":
            out.parameters["classification"].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
        elif choice == "bool_param":
            out.parameters["classification"].bool_param = draw(st.booleans())
        elif choice == "string_param":
            out.parameters["classification"].string_param = draw(st.text(max_size=4))
        elif choice == "double_param":
            out.parameters["classification"].double_param = draw(st.floats())
        outputs.append(out)
    raw = draw(st.lists(st.binary(max_size=4000) | st.just(b"\0" * 3136), max_size=2))
    return pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["gru", "cnn", "nope", ""])),
        model_version=draw(st.sampled_from(["", "1", "2"])),
        id=draw(st.text(max_size=5)),
        inputs=inputs,
        outputs=outputs,
        raw_input_contents=raw,
    )


def test_random_grpc_requests_get_a_status_not_an_internal_error(servers, classifiers):
    url, address = servers
    infer = _infer_stub(address)

    @SETTINGS
    @given(grpc_requests())
    def fuzz(message):
        try:
            infer(message, timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() not in BAD_GRPC, (exc.code(), exc.details())
            assert exc.details() and "Traceback" not in exc.details()

    fuzz()
    still_exact(url, address, classifiers["gru"])


def test_every_operation_in_the_openapi_schema_answers_below_500(servers, classifiers):
    """schemathesis against /openapi.json, which describes the infer and classify bodies too: for every
    operation, cases that follow the schema and cases that break it."""
    url, address = servers
    schema = schemathesis.openapi.from_url(f"http://{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    described = {(op.method.upper(), op.path) for op in operations}
    assert {("POST", "/v2/models/{name}/infer"), ("POST", "/v2/models/{name}/classify")} <= described
    calls = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
            @given(op.as_strategy(mode))
            def fuzz(case):
                response = case.call(base_url=f"http://{url}", timeout=30)
                calls.append(response.status_code)
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
                if response.status_code >= 400 and response.content != UVICORN_REFUSAL:
                    assert response.json()["error"], response.text

            try:
                fuzz()
            except Unsatisfiable:  # a negative case needs something to break: a typed parameter or a body
                assert mode == GenerationMode.NEGATIVE, (op.method, op.path)
    assert (
        len(calls) > 10 * len(operations) and any(code == 200 for code in calls) and any(code >= 400 for code in calls)
    )
    still_exact(url, address, classifiers["gru"])
