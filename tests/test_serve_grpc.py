"""`edgecls serve` as Triton's own clients see it: KServe v2 over gRPC next to HTTP (tritonclient.grpc
and tritonclient.http, raw and typed tensors), the model config Triton's image classification example
reads, the statistics extension, Triton's rule for NaN inputs, and gRPC status codes for refusals."""

import re
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as gc
import tritonclient.http as hc
from google.protobuf import json_format, text_format
from PIL import Image
from serving import free_port, model_inputs, request, running, shipped_classifiers
from test_shipped import SHIPPED
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from edgecls.commands.samples import sample_files
from edgecls.locations import shipped_onnx
from edgecls.registry import get_spec
from edgecls.serve.app import create_app
from edgecls.serve.triton import write_repository

MAX_BATCH = 16


@pytest.fixture(scope="module")
def classifiers():
    return shipped_classifiers(SHIPPED)


@pytest.fixture(scope="module")
def servers(classifiers):
    """(http 'host:port', grpc 'host:port', app): one app serving every shipped model on both."""
    grpc_address = f"127.0.0.1:{free_port()}"
    app = create_app(classifiers, max_batch=MAX_BATCH, max_delay_ms=2, grpc_address=grpc_address)
    with running(app) as url:
        yield url, grpc_address, app


def samples(name: str, count: int):
    return sample_files(get_spec(name).dataset)[:count]


def grpc_logits(address: str, name: str, x: np.ndarray) -> np.ndarray:
    inp = gc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = gc.InferenceServerClient(address).infer(name, [inp], outputs=[gc.InferRequestedOutput("logits")])
    return result.as_numpy("logits")


def typed_request(name: str, x: np.ndarray, **kw) -> pb.ModelInferRequest:
    """A ModelInferRequest with the tensor in typed contents (fp32_contents), as some clients send it."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    return pb.ModelInferRequest(model_name=name, inputs=[tensor], **kw)


def stub(address: str) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))


@pytest.mark.parametrize("name", SHIPPED)
def test_grpc_and_http_give_the_classifier_logits(servers, classifiers, name):
    """Real sample images as tensors: tritonclient.grpc (raw contents), a typed-contents request and
    tritonclient.http (binary and JSON) all get Classifier.logits within 1e-5, one image and a batch."""
    url, address, _ = servers
    clf = classifiers[name]
    x = model_inputs(clf, samples(name, 9))
    expected = clf.run(x)
    for rows in (x[:1], x):
        n = len(rows)
        np.testing.assert_allclose(grpc_logits(address, name, rows), expected[:n], atol=1e-5, rtol=0)
        response = stub(address).ModelInfer(typed_request(name, rows, id="typed"))
        assert response.id == "typed" and list(response.outputs[0].shape) == [n, len(clf.class_names)]
        got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(n, -1)
        np.testing.assert_allclose(got, expected[:n], atol=1e-5, rtol=0)
        for binary in (True, False):
            inp = hc.InferInput("input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows, binary_data=binary)
            out = hc.InferRequestedOutput("logits", binary_data=binary)
            got = hc.InferenceServerClient(url).infer(name, [inp], outputs=[out]).as_numpy("logits")
            np.testing.assert_allclose(got, expected[:n], atol=1e-5, rtol=0)


def _image_client_model(meta, config, grpc_form: bool):
    """What Triton's image_client example checks before it sends anything (its parse_model), read the way
    it reads it: one input and output, FP32 output, an image shape with a batch axis, a known format."""
    if grpc_form:
        inp_meta, out_meta, inp_config = meta.inputs[0], meta.outputs[0], config.input[0]
        fmt = inp_config.format
        max_batch, shape, in_name, out_name = config.max_batch_size, list(inp_meta.shape), inp_meta.name, out_meta.name
        datatype, out_datatype = inp_meta.datatype, out_meta.datatype
        n_in, n_out, n_config = len(meta.inputs), len(meta.outputs), len(config.input)
    else:
        inp_meta, out_meta, inp_config = meta["inputs"][0], meta["outputs"][0], config["input"][0]
        fmt = dict(mc.ModelInput.Format.items())[inp_config["format"]]  # the example maps the name so
        max_batch, shape, in_name, out_name = (
            config["max_batch_size"],
            inp_meta["shape"],
            inp_meta["name"],
            out_meta["name"],
        )
        datatype, out_datatype = inp_meta["datatype"], out_meta["datatype"]
        n_in, n_out, n_config = len(meta["inputs"]), len(meta["outputs"]), len(config["input"])
    assert (n_in, n_out, n_config) == (1, 1, 1) and out_datatype == "FP32"
    assert max_batch > 0 and len(shape) == 4
    assert fmt == mc.ModelInput.FORMAT_NCHW
    c, h, w = shape[1:]
    return max_batch, in_name, out_name, c, h, w, datatype


def _image_client_preprocess(path, c: int, h: int, w: int, scaling: str) -> np.ndarray:
    """The example's preprocessing: PIL resize to the model's size, then NONE, INCEPTION or VGG scaling, NCHW."""
    img = Image.open(path).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    typed = np.array(img).astype(np.float32)
    typed = typed[:, :, None] if typed.ndim == 2 else typed
    if scaling == "INCEPTION":
        typed = (typed / 127.5) - 1
    elif scaling == "VGG":
        typed = typed - (np.asarray((128,), np.float32) if c == 1 else np.asarray((123, 117, 104), np.float32))
    return np.transpose(typed, (2, 0, 1))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", ["cnn", "gru"])
def test_triton_image_client_flow_works_unchanged(servers, classifiers, name, protocol):
    """The calls Triton's image classification example makes, over HTTP and gRPC: metadata and config
    pass its checks, and batches of 1 and 3 in every scaling mode get the classification extension's
    top 3, which are the model's own top 3 for that tensor."""
    url, address, _ = servers
    client = hc.InferenceServerClient(url) if protocol == "http" else gc.InferenceServerClient(address)
    lib = hc if protocol == "http" else gc
    meta = client.get_model_metadata(name)
    config = client.get_model_config(name)
    config = config.config if protocol == "grpc" else config
    max_batch, in_name, out_name, c, h, w, datatype = _image_client_model(meta, config, protocol == "grpc")
    assert (max_batch, datatype) == (MAX_BATCH, "FP32")
    files = samples(name, 3)
    for scaling in ("NONE", "INCEPTION", "VGG"):
        batch = np.stack([_image_client_preprocess(f, c, h, w, scaling) for f in files])
        for rows in (batch[:1], batch):
            inp = lib.InferInput(in_name, list(rows.shape), datatype)
            inp.set_data_from_numpy(rows)
            out = lib.InferRequestedOutput(out_name, class_count=3)
            got = client.infer(name, [inp], outputs=[out], request_id="7").as_numpy(out_name)
            expected = classifiers[name].run(rows)
            assert got.shape == (len(rows), 3)
            for row, strings in zip(expected, got):
                parts = [s.decode().split(":") for s in strings]
                assert [int(i) for _, i, _ in parts] == list(np.argsort(-row, kind="stable")[:3])
                assert [label for _, i, label in parts] == [classifiers[name].class_names[int(i)] for _, i, _ in parts]


def test_the_config_is_one_over_http_grpc_and_the_written_repository(servers, classifiers, tmp_path):
    """For every shipped model, HTTP's JSON, gRPC's ModelConfig and the config.pbtxt `edgecls triton`
    writes are the same message, with the fields Triton's clients read."""
    url, address, _ = servers
    write_repository(tmp_path, {n: shipped_onnx(n) for n in SHIPPED}, max_batch=MAX_BATCH, max_delay_ms=2)
    for name, clf in classifiers.items():
        written = text_format.Parse((tmp_path / name / "config.pbtxt").read_text(), mc.ModelConfig())
        over_http = json_format.ParseDict(hc.InferenceServerClient(url).get_model_config(name), mc.ModelConfig())
        over_grpc = gc.InferenceServerClient(address).get_model_config(name).config
        assert over_http == over_grpc == written, name
        (inp,), (out,) = over_grpc.input, over_grpc.output
        assert inp.format == mc.ModelInput.FORMAT_NCHW and tuple(inp.dims) == clf.info.input_shape
        assert inp.data_type == out.data_type == mc.TYPE_FP32 and list(out.dims) == [len(clf.class_names)]
        assert over_grpc.max_batch_size == MAX_BATCH and over_grpc.dynamic_batching.max_queue_delay_microseconds == 2000


def test_statistics_count_every_request_over_both_protocols(classifiers):
    """After N HTTP and M gRPC requests: success N+M, the phases counted per request, inference and
    execution counts matching the batcher's runs, batch_stats adding up; all models at /v2/models/stats;
    the same numbers over gRPC."""
    address = f"127.0.0.1:{free_port()}"
    app = create_app({"gru": classifiers["gru"], "cnn": classifiers["cnn"]}, max_batch=8, grpc_address=address)
    x = model_inputs(classifiers["gru"], samples("gru", 3))
    with running(app) as url:
        http = hc.InferenceServerClient(url)
        for rows in (x[:1], x, x[:2]):
            inp = hc.InferInput("input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows)
            http.infer("gru", [inp])
        for rows in (x, x[:1]):
            grpc_logits(address, "gru", rows)
        bad = hc.InferInput("input", [1, 1, 28, 27], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 1, 28, 27), np.float32))
        with pytest.raises(InferenceServerException):
            http.infer("gru", [bad])
        stats = http.get_inference_statistics("gru")["model_stats"]
        everything = http.get_inference_statistics()["model_stats"]
        over_grpc = gc.InferenceServerClient(address).get_inference_statistics("gru", as_json=True)
    (gru,) = stats
    infer = gru["inference_stats"]
    assert (gru["name"], gru["version"]) == ("gru", "1")
    assert infer["success"]["count"] == 5 and infer["fail"]["count"] == 1
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert infer[phase]["count"] == 5 and infer[phase]["ns"] > 0 or phase == "compute_input", (phase, infer)
    assert gru["inference_count"] == 1 + 3 + 2 + 3 + 1
    assert gru["execution_count"] == sum(b["compute_infer"]["count"] for b in gru["batch_stats"])
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in gru["batch_stats"]) == gru["inference_count"]
    assert infer["success"]["ns"] >= infer["compute_infer"]["ns"] > 0
    assert [m["name"] for m in everything] == ["cnn", "gru"] and everything[1] == gru
    assert everything[0]["inference_count"] == 0
    grpc_gru = over_grpc["model_stats"][0]
    assert int(grpc_gru["inference_count"]) == gru["inference_count"]
    assert int(grpc_gru["inference_stats"]["success"]["count"]) == 5


@pytest.mark.parametrize("reject", [False, True], ids=["default", "reject-nonfinite"])
def test_nan_inputs_run_as_in_triton_unless_refused(classifiers, reject):
    """By default NaN and infinities are run (the answer is what the model computes, classification
    included); --reject-nonfinite refuses them with a 400 and INVALID_ARGUMENT."""
    clf = classifiers["cnn"]
    x = model_inputs(clf, samples("cnn", 3))
    x[0, 0, 0, 0], x[1, 1, 2, 3] = np.nan, np.inf
    address = f"127.0.0.1:{free_port()}"
    app = create_app({"cnn": clf}, reject_nonfinite=reject, grpc_address=address)
    with running(app) as url:
        inp = hc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        http = hc.InferenceServerClient(url)
        if reject:
            with pytest.raises(InferenceServerException, match="NaN or infinite.*--reject-nonfinite") as info:
                http.infer("cnn", [inp])
            assert info.value.status() == "400"
            with pytest.raises(grpc.RpcError) as info:
                stub(address).ModelInfer(typed_request("cnn", x))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "NaN" in info.value.details()
            return
        expected = clf.run(x)
        np.testing.assert_array_equal(http.infer("cnn", [inp]).as_numpy("logits"), expected)
        np.testing.assert_array_equal(grpc_logits(address, "cnn", x), expected)
        for client, lib in ((http, hc), (gc.InferenceServerClient(address), gc)):
            ginp = lib.InferInput("input", list(x.shape), "FP32")
            ginp.set_data_from_numpy(x)
            top = client.infer("cnn", [ginp], outputs=[lib.InferRequestedOutput("logits", class_count=2)])
            strings = top.as_numpy("logits")
            assert strings.shape == (3, 2) and strings[2][0].decode().split(":")[1] == str(int(np.argmax(expected[2])))


def test_grpc_refusals_are_status_codes_with_the_http_message(servers, classifiers):
    url, address, _ = servers
    s = stub(address)
    x = np.zeros((1, 1, 28, 28), np.float32)
    bad, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases = [
        (typed_request("resnet", x), missing, "unknown model 'resnet'"),
        (typed_request("gru", x, model_version="7"), missing, "no version '7'"),
        (typed_request("gru", np.zeros((1, 1, 28, 27), np.float32)), bad, "[N, 1, 28, 28]"),
        (typed_request("gru", np.zeros((MAX_BATCH + 1, 1, 28, 28), np.float32)), bad, "--max-batch"),
        (pb.ModelInferRequest(model_name="gru"), bad, "0 inputs"),
    ]
    short = typed_request("gru", x)
    short.inputs[0].ClearField("contents")
    short.raw_input_contents.append(b"\0" * 100)
    cases.append((short, grpc.StatusCode.INVALID_ARGUMENT, "100 bytes of data"))
    wrong_out = typed_request("gru", x, outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="probs")])
    cases.append((wrong_out, grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'probs'"))
    for req, code, needle in cases:
        with pytest.raises(grpc.RpcError) as info:
            s.ModelInfer(req)
        assert info.value.code() == code and needle in info.value.details(), (code, info.value.details())
    too_big = pb.ModelInferRequest(model_name="cnn", raw_input_contents=[b"\0" * (17 << 20)])  # over --max-body-mb
    with pytest.raises(grpc.RpcError) as info:
        s.ModelInfer(too_big)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    np.testing.assert_allclose(grpc_logits(address, "gru", x), classifiers["gru"].run(x), atol=1e-5, rtol=0)
    assert request(url, "GET", "/v2/health/live")[0] == 200


PERF_ANALYZER = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "perf-analyzer"


@pytest.mark.slow
@pytest.mark.skipif(not PERF_ANALYZER.is_file(), reason=f"Triton's perf_analyzer is not at {PERF_ANALYZER}")
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_runs_with_its_defaults(servers, protocol):
    """Triton's own load generator, unchanged options (random data, NaN included; no -x): it runs, and it
    reads the server's statistics to split the latency."""
    url, address, _ = servers
    done = subprocess.run(
        [str(PERF_ANALYZER), "-m", "gru", "-u", url if protocol == "http" else address, "-i", protocol,
         "--concurrency-range", "2:2", "--measurement-interval", "1000", "--stability-percentage", "100"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert re.search(r"Throughput: [\d.]+ infer/sec", done.stdout), done.stdout
    assert re.search(r"Avg request latency: \d+ usec \(overhead \d+ usec \+ queue \d+ usec", done.stdout), done.stdout


def test_streaming_infer_answers_each_request_in_order(servers, classifiers):
    """ModelStreamInfer (tritonclient's start_stream): one response per request, in order, with its id and
    the model's logits; a bad request is an error on the stream, and the stream goes on."""
    import queue

    _, address, _ = servers
    clf = classifiers["gru"]
    x = model_inputs(clf, samples("gru", 3))
    answers: queue.Queue = queue.Queue()
    client = gc.InferenceServerClient(address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, rows in enumerate((x[:1], np.zeros((1, 1, 28, 27), np.float32), x)):
            inp = gc.InferInput("input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows)
            client.async_stream_infer("gru", [inp], request_id=str(i))
        got = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    (first, e0), (_, e1), (last, e2) = got
    assert e0 is None and e2 is None and e1 is not None and "[N, 1, 28, 28]" in str(e1)
    assert first.get_response().id == "0" and last.get_response().id == "2"
    np.testing.assert_allclose(first.as_numpy("logits"), clf.run(x[:1]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(last.as_numpy("logits"), clf.run(x), atol=1e-5, rtol=0)
