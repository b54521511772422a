"""`edgecls serve`: the KServe v2 protocol through tritonclient (JSON and binary), the image endpoint
against `edgecls infer`, dynamic batching, and every kind of bad input (4xx, a JSON error, and the
server still answering the next good request)."""

import asyncio
import gzip
import io
import json
import struct
import threading
import zlib

import numpy as np
import pytest
import tritonclient.http as tc
from conftest import assert_one_line_error, cuda_device_present
from PIL import Image
from serving import error_of, free_port, model_inputs, multipart, request, running, shipped_classifiers
from test_shipped import SHIPPED
from tritonclient.utils import InferenceServerException

from edgecls.commands.samples import sample_files
from edgecls.locations import shipped_onnx
from edgecls.registry import get_spec
from edgecls.runtime.infer import infer
from edgecls.serve.app import create_app

MAX_BATCH = 16


@pytest.fixture(scope="module")
def classifiers():
    return shipped_classifiers(SHIPPED)


@pytest.fixture(scope="module")
def server(classifiers):
    app = create_app(classifiers, max_batch=MAX_BATCH, max_delay_ms=5, max_body_mb=1)
    with running(app) as url:
        yield url, app


def samples_for(name: str, count: int | None = None):
    files = sample_files(get_spec(name).dataset)
    return files[:count] if count else files


def client(url: str, **kw) -> tc.InferenceServerClient:
    return tc.InferenceServerClient(url, **kw)


def infer_logits(url, name, x, binary=True, **kw):
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = tc.InferRequestedOutput("logits", binary_data=binary)
    return client(url).infer(name, [inp], outputs=[out], **kw).as_numpy("logits")


def test_health_server_and_model_metadata(server, classifiers):
    url, _ = server
    c = client(url)
    assert c.is_server_live() and c.is_server_ready()
    assert {"binary_tensor_data", "classification"} <= set(c.get_server_metadata()["extensions"])
    for name, clf in classifiers.items():
        assert c.is_model_ready(name) and c.is_model_ready(name, "1")
        meta = c.get_model_metadata(name)
        (inp,), (out,) = clf.engine.inputs(), clf.engine.outputs()
        assert meta["inputs"] == [{"name": inp.name, "datatype": "FP32", "shape": [-1, *inp.shape[1:]]}]
        assert meta["outputs"] == [{"name": out.name, "datatype": "FP32", "shape": [-1, len(clf.class_names)]}]
        assert c.get_model_config(name)["max_batch_size"] == MAX_BATCH
    assert request(url, "GET", "/v2/models/gru/versions/2/ready")[0] == 404


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("name", SHIPPED)
def test_tritonclient_gets_the_classifier_logits(server, classifiers, name, binary):
    """Real sample images, preprocessed as the runtime does, sent as tensors: the logits are
    Classifier.logits on the same input (atol 1e-5), in JSON and in binary mode."""
    url, _ = server
    clf = classifiers[name]
    files = samples_for(name, 9)
    x = model_inputs(clf, files)
    expected = clf.logits(np.stack([clf.to_uint8(f) for f in files]))
    for rows in (x[:1], x):  # one image, and a batch of nine
        got = infer_logits(url, name, rows, binary=binary)
        assert got.shape == (len(rows), len(clf.class_names))
        np.testing.assert_allclose(got, expected[: len(rows)], atol=1e-5, rtol=0)


def test_default_outputs_versions_ids_and_gzip(server, classifiers):
    url, _ = server
    clf = classifiers["gru"]
    x = model_inputs(clf, samples_for("gru", 3))
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    c = client(url)
    for kw in (
        {},
        {"model_version": "1"},
        {"request_compression_algorithm": "gzip"},
        {"request_compression_algorithm": "deflate"},
    ):
        result = c.infer("gru", [inp], request_id="abc", **kw)  # no outputs named: all, binary
        np.testing.assert_allclose(result.as_numpy("logits"), clf.run(x), atol=1e-5, rtol=0)
        assert result.get_response()["id"] == "abc"


def test_classification_extension_returns_labels(server, classifiers):
    url, _ = server
    clf = classifiers["cnn"]
    x = model_inputs(clf, samples_for("cnn", 4))
    logits = clf.run(x)
    for binary in (True, False):
        inp = tc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = tc.InferRequestedOutput("logits", binary_data=binary, class_count=3)
        got = client(url).infer("cnn", [inp], outputs=[out]).as_numpy("logits")
        assert got.shape == (4, 3)
        for row, strings in zip(logits, got):
            parts = [(s.decode() if isinstance(s, bytes) else s).split(":", 2) for s in strings]
            assert [int(i) for _, i, _ in parts] == list(np.argsort(-row)[:3])
            assert [lab for _, _, lab in parts] == [clf.class_names[int(i)] for _, i, _ in parts]
            np.testing.assert_allclose([float(v) for v, _, _ in parts], np.sort(row)[::-1][:3], atol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "gru", "lstm-binary"])
def test_classify_endpoint_equals_edgecls_infer(server, tmp_path, name):
    """Image uploads (one model-sized sample set, plus resized and RGBA copies that need the runtime's
    conversion) get exactly the labels and probabilities of `edgecls infer` on the same files."""
    url, _ = server
    files = samples_for(name, 6)
    for i, f in enumerate(files[:3]):
        im = Image.open(f)
        im.resize((im.width * 3 + i, im.height * 2)).save(tmp_path / f"big{i}.png")
        im.convert("RGBA").save(tmp_path / f"rgba{i}.png")
    files += sorted(tmp_path.glob("*.png"))
    out = tmp_path / "infer.json"
    assert (
        infer(
            [str(f) for f in files],
            str(shipped_onnx(name)),
            "cpu",
            top_k=3,
            fmt="json",
            output=str(out),
            threads=1,
            err=io.StringIO(),
        )
        == 0
    )
    expected = json.loads(out.read_text())
    body, ctype = multipart([(f.name, f.read_bytes()) for f in files])
    status, _, data = request(url, "POST", f"/v2/models/{name}/classify?top_k=3", body, {"Content-Type": ctype})
    assert status == 200, data
    got = json.loads(data)["results"]
    assert [r["file"] for r in got] == [f.name for f in files]
    for g, e in zip(got, expected):
        assert [t["label"] for t in g["top_k"]] == [t["label"] for t in e["top_k"]], (g, e)
        np.testing.assert_allclose(
            [t["probability"] for t in g["top_k"]], [t["probability"] for t in e["top_k"]], atol=2e-6
        )


def test_concurrent_requests_are_batched_and_each_client_gets_its_rows(server, classifiers):
    url, app = server
    clf = classifiers["gru"]
    x = model_inputs(clf, samples_for("gru", 40))
    expected = clf.run(x)
    batcher = app.state.repository.models["gru"].batcher
    before = (batcher.batches, batcher.rows)
    release, started = threading.Event(), threading.Event()
    run = batcher.run

    def held_run(rows):  # the first batch waits, so the other requests queue up behind it
        started.set()
        release.wait(30)
        return run(rows)

    batcher.run = held_run
    results, errors = {}, []

    def one(i):
        try:
            results[i] = infer_logits(url, "gru", x[i : i + 1], binary=i % 2 == 0)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(x))]
    try:
        threads[0].start()
        assert started.wait(30)
        for t in threads[1:]:
            t.start()
        # ORT runs off the event loop: health checks answer while a batch is held
        assert request(url, "GET", "/v2/health/ready")[0] == 200
        assert request(url, "GET", "/v2/models/gru/ready")[0] == 200
        for _ in range(3000):  # up to 30 s for the other requests to reach the queue
            if len(batcher.waiting) >= len(x) - 1:
                break
            threading.Event().wait(0.01)
        assert len(batcher.waiting) == len(x) - 1
    finally:
        release.set()
        for t in threads:
            t.join(60)
        batcher.run = run
    assert not errors, errors
    got = np.concatenate([results[i] for i in range(len(x))])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    batches, rows = batcher.batches - before[0], batcher.rows - before[1]
    assert rows == len(x)
    (stats,) = client(url).get_inference_statistics("gru")["model_stats"]
    assert (stats["execution_count"], stats["inference_count"]) == (batcher.batches, batcher.rows)
    # 1 held request, then 39 queued ones in batches of at most MAX_BATCH rows
    assert batches == 1 + -(-(len(x) - 1) // MAX_BATCH), batches


def test_without_dynamic_batching_each_request_runs_alone(classifiers):
    clf = classifiers["gru"]
    app = create_app({"gru": clf}, max_batch=8, dynamic_batching=False)
    x = model_inputs(clf, samples_for("gru", 12))
    with running(app) as url:
        out = {}
        threads = [
            threading.Thread(target=lambda i=i: out.__setitem__(i, infer_logits(url, "gru", x[i : i + 1])))
            for i in range(len(x))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        np.testing.assert_allclose(np.concatenate([out[i] for i in range(len(x))]), clf.run(x), atol=1e-5, rtol=0)
        batcher = app.state.repository.models["gru"].batcher
        assert (batcher.batches, batcher.rows) == (len(x), len(x))


def _infer_json(shape, data=None, name="input", datatype="FP32", **extra) -> bytes:
    tensor = {"name": name, "shape": shape, "datatype": datatype, **extra}
    if data is not None:
        tensor["data"] = data
    return json.dumps({"inputs": [tensor]}).encode()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's calling card)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


GOOD = [0.0] * 784
JSON = {"Content-Type": "application/json"}


def _bad_cases():
    png = sample_files("fashion-mnist")[0].read_bytes()
    jpg = sample_files("cifar10")[0].read_bytes()
    binary_head = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}
            ]
        }
    ).encode()
    infer = "/v2/models/gru/infer"
    classify = "/v2/models/gru/classify"
    up = lambda *files: multipart(list(files))  # noqa: E731
    return {
        "malformed JSON": (infer, b'{"inputs": [', JSON, 400, "malformed JSON"),
        "not an object": (infer, b"[1, 2]", JSON, 400, "JSON object"),
        "wrong datatype": (infer, _infer_json([1, 1, 28, 28], GOOD, datatype="INT32"), JSON, 400, "datatype 'INT32'"),
        "wrong shape": (infer, _infer_json([1, 3, 28, 28], GOOD * 3), JSON, 400, "shape [1, 3, 28, 28]"),
        "wrong rank": (infer, _infer_json([784], GOOD), JSON, 400, "[N, 1, 28, 28]"),
        "zero rows": (infer, _infer_json([0, 1, 28, 28], []), JSON, 400, "N >= 1"),
        "too many rows": (
            infer,
            _infer_json([MAX_BATCH + 1, 1, 28, 28], GOOD * (MAX_BATCH + 1)),
            JSON,
            400,
            "--max-batch",
        ),
        "wrong input name": (
            infer,
            _infer_json([1, 1, 28, 28], GOOD, name="image"),
            JSON,
            400,
            "unknown input 'image'",
        ),
        "wrong output name": (
            infer,
            json.dumps(
                {"inputs": json.loads(_infer_json([1, 1, 28, 28], GOOD))["inputs"], "outputs": [{"name": "probs"}]}
            ).encode(),
            JSON,
            400,
            "unknown output 'probs'",
        ),
        "data length": (infer, _infer_json([1, 1, 28, 28], GOOD[:-1]), JSON, 400, "783 values"),
        "data not numbers": (infer, _infer_json([1, 1, 28, 28], ["x"] * 784), JSON, 400, "must be float32 numbers"),
        "integer beyond float": (
            infer,
            _infer_json([1, 1, 28, 28], GOOD).replace(b"[0.0,", b"[" + b"1" * 401 + b","),
            JSON,
            400,
            "must be float32 numbers",
        ),
        "JSON nested 50,000 deep": (infer, b"[" * 50_000 + b"]" * 50_000, JSON, 400, "nested too deeply"),
        "no data": (infer, _infer_json([1, 1, 28, 28]), JSON, 400, "neither 'data'"),
        "binary size vs shape": (
            infer,
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 1, 28, 28],
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": 100},
                        }
                    ]
                }
            ).encode(),
            JSON,
            400,
            "does not match shape",
        ),
        "binary header beyond body": (
            infer,
            binary_head,
            {"Inference-Header-Content-Length": str(len(binary_head) + 50)},
            400,
            "Inference-Header-Content-Length",
        ),
        "binary data short": (
            infer,
            binary_head + b"\0" * 100,
            {"Inference-Header-Content-Length": str(len(binary_head))},
            400,
            "goes beyond the body",
        ),
        "binary data long": (
            infer,
            binary_head + b"\0" * 3140,
            {"Inference-Header-Content-Length": str(len(binary_head))},
            400,
            "unexpected bytes",
        ),
        "header length not a number": (infer, binary_head, {"Inference-Header-Content-Length": "ten"}, 400, "integer"),
        "unsupported encoding": (infer, _infer_json([1, 1, 28, 28], GOOD), {"Content-Encoding": "br"}, 415, "br"),
        "gzip that is not": (infer, b"plain", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        "gzip bomb": (infer, gzip.compress(b" " * (3 << 20)), {"Content-Encoding": "gzip"}, 413, "decompressed"),
        "unknown model": (
            "/v2/models/resnet/infer",
            _infer_json([1, 1, 28, 28], GOOD),
            JSON,
            404,
            "unknown model 'resnet'",
        ),
        "unknown version": (
            "/v2/models/gru/versions/7/infer",
            _infer_json([1, 1, 28, 28], GOOD),
            JSON,
            404,
            "no version '7'",
        ),
        "unknown route": ("/v2/models/gru/explain", b"{}", JSON, 404, "no such endpoint"),
        "body over the limit": (infer, b"[" + b"0.0," * 300_000 + b"0.0]", JSON, 413, "--max-body-mb"),
        "non-image upload": (classify, *up(("notes.txt", b"hello, not an image")), 400, "notes.txt: not an image"),
        "truncated PNG": (classify, *up(("cut.png", png[: len(png) // 2])), 400, "cut.png: unreadable image"),
        "truncated JPEG": (classify, *up(("cut.jpg", jpg[: len(jpg) // 2])), 400, "cut.jpg: unreadable image"),
        "decompression bomb": (classify, *up(("bomb.png", _png_claiming(20_000, 20_000))), 400, "decompression bomb"),
        "over the pixel budget": (
            classify,
            *up(("big.png", _png_claiming(4001, 4000))),
            400,
            "big.png: image of 4001x4000 pixels is over this server's budget of 16,000,000 pixels",
        ),
        "one bad file of two": (classify, *up(("ok.png", png), ("bad.png", b"\x89PNG junk")), 400, "1 of 2 uploads"),
        "no files": (
            classify,
            b"--b--\r\n",
            {"Content-Type": "multipart/form-data; boundary=b"},
            400,
            "no image files",
        ),
        "not multipart": (classify, png, {"Content-Type": "image/png"}, 415, "multipart/form-data"),
        "top_k zero": (classify + "?top_k=0", *up(("ok.png", png)), 400, "top_k"),
        "top_k not a number": (classify + "?top_k=many", *up(("ok.png", png)), 400, "top_k"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_json_4xx_and_the_server_keeps_answering(server, classifiers, case):
    url, _ = server
    path, body, headers, status, needle = BAD[case]
    if isinstance(headers, str):  # multipart content type
        headers = {"Content-Type": headers}
    answer = request(url, "POST", path, body, headers)
    assert answer[0] == status, (answer[0], answer[2][:300])
    assert needle in error_of(answer)
    x = model_inputs(classifiers["gru"], samples_for("gru", 2))
    np.testing.assert_allclose(infer_logits(url, "gru", x), classifiers["gru"].run(x), atol=1e-5, rtol=0)


def test_body_limit_holds_for_streamed_bodies_and_other_methods(server):
    url, _ = server
    answer = request(url, "POST", "/v2/models/gru/infer", b"0" * (2 << 20), JSON, chunked=True)
    assert answer[0] == 413 and "--max-body-mb" in error_of(answer)
    answer = request(url, "DELETE", "/v2/models/gru/infer")
    assert answer[0] == 405 and error_of(answer)
    assert request(url, "GET", "/v2/health/live")[0] == 200


def test_tritonclient_sees_the_error_message(server, classifiers):
    url, _ = server
    inp = tc.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    same = client(url)  # one keep-alive connection: an error must leave it usable
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        same.infer("nope", [inp])
    np.testing.assert_allclose(
        same.infer("gru", [inp]).as_numpy("logits"),
        classifiers["gru"].run(np.zeros((1, 1, 28, 28), np.float32)),
        atol=1e-5,
        rtol=0,
    )
    inp = tc.InferInput("input", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InferenceServerException, match=r"\[N, 1, 28, 28\]"):
        client(url).infer("gru", [inp])


def test_serve_command_refuses_bad_options_in_one_line(cli, tmp_path):
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        assert_one_line_error(cli("serve", "--port", busy.getsockname()[1]), "cannot listen", "--port")
    finally:
        busy.close()
    port = str(free_port())
    assert_one_line_error(cli("serve", "--model", "resnet", "--port", port), "unknown model 'resnet'")
    assert_one_line_error(cli("serve", "--max-batch", "0", "--port", port), "--max-batch")
    assert_one_line_error(cli("serve", "--max-delay-ms", "-1", "--port", port), "--max-delay-ms")
    assert_one_line_error(cli("serve", "--max-body-mb", "0", "--port", port), "--max-body-mb")
    assert_one_line_error(cli("serve", "--threads", "0", "--port", port), "--threads")
    assert_one_line_error(cli("serve", "--max-image-pixels", "0", "--port", port), "--max-image-pixels")
    assert_one_line_error(cli("serve", "--decode-workers", "0", "--port", port), "--decode-workers")
    assert_one_line_error(cli("serve", "--shutdown-timeout", "-1", "--port", port), "--shutdown-timeout")
    assert_one_line_error(cli("serve", "--port", port, "--grpc-port", port), "--grpc-port", "the HTTP --port too")
    assert_one_line_error(cli("serve", "--port", port, "--grpc-port", "70000"), "--grpc-port 70000 is not a TCP port")
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        result = cli("serve", "--port", port, "--grpc-port", busy.getsockname()[1])
        assert_one_line_error(result, "cannot listen", "--grpc-port")
    finally:
        busy.close()
    assert_one_line_error(cli("serve", "--port", "70000"), "not a TCP port")
    assert_one_line_error(cli("serve", "--onnx", tmp_path / "none.onnx", "--port", port), "no such file")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    assert_one_line_error(cli("serve", "--onnx", tmp_path / "junk.onnx", "--port", port), "cannot load")
    assert_one_line_error(
        cli("serve", "--model", "gru", "--onnx", shipped_onnx("gru"), "--port", port), "two models named gru"
    )
    result = cli("serve", "--model", "gru", "--artifacts", tmp_path, "--port", port)
    assert_one_line_error(result, "no ONNX model for gru")
    assert result.exit_code == 2


def test_grpc_without_its_extra_names_the_install(cli, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "grpc", None)  # as on a core install without edgecls[grpc]
    result = cli("serve", "--port", str(free_port()), "--grpc-port", "0")
    assert_one_line_error(result, "--grpc-port needs grpcio", "grpc is missing", "pip install 'edgecls[grpc]'")
    assert result.exit_code == 2


def test_batcher_takes_whole_requests_up_to_max_batch_and_survives_errors():
    from edgecls.serve.batcher import Batcher

    calls = []

    def run(x):
        calls.append(len(x))
        return x.sum(1, keepdims=True)

    async def scenario():
        b = Batcher(run, max_batch=5, max_delay_s=0.05)
        await b.start()
        reqs = [np.full((n, 2), i, np.float32) for i, n in enumerate([2, 2, 3, 1, 5])]
        outs = await asyncio.gather(*(b.submit(r) for r in reqs))
        for r, o in zip(reqs, outs):
            np.testing.assert_array_equal(o, r.sum(1, keepdims=True))
        assert calls == [4, 4, 5]  # [2+2], [3+1], [5]: a request never splits, a batch never passes 5 rows

        def broken(x):
            raise RuntimeError("ORT failed")

        b.run = broken
        with pytest.raises(RuntimeError, match="ORT failed"):
            await b.submit(reqs[0])
        b.run = run
        np.testing.assert_array_equal(await b.submit(reqs[1]), reqs[1].sum(1, keepdims=True))
        await b.stop()

    asyncio.run(scenario())

    async def lone_client():  # one request at a time: never waits for company that cannot come
        b = Batcher(run, max_batch=5, max_delay_s=5.0)
        await b.start()
        t0 = asyncio.get_running_loop().time()
        for i in range(4):
            np.testing.assert_array_equal(await b.submit(np.full((1, 2), i, np.float32)), [[2.0 * i]])
        waited = asyncio.get_running_loop().time() - t0
        await b.stop()
        return waited

    assert asyncio.run(lone_client()) < 5.0  # four 5-second delays would be 20 s
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(run, max_batch=0)
    with pytest.raises(ValueError, match="max_delay"):
        Batcher(run, max_delay_s=-1)


def test_a_failing_model_run_is_a_json_500_and_the_server_goes_on(server, classifiers):
    url, app = server
    batcher = app.state.repository.models["gru"].batcher
    run = batcher.run

    def broken(x):
        raise RuntimeError("simulated ONNX Runtime failure")

    batcher.run = broken
    try:
        answer = request(url, "POST", "/v2/models/gru/infer", _infer_json([1, 1, 28, 28], GOOD), JSON)
    finally:
        batcher.run = run
    assert answer[0] == 500 and "RuntimeError" in error_of(answer)
    x = model_inputs(classifiers["gru"], samples_for("gru", 2))
    np.testing.assert_allclose(infer_logits(url, "gru", x), classifiers["gru"].run(x), atol=1e-5, rtol=0)


def test_serve_says_the_provider_fallback_once_and_stops_on_sigterm():
    """Every shipped model under --provider auto on a machine without a usable GPU: the CUDA reason is one
    line, not one per model; SIGTERM stops the server with nothing left running."""
    import signal
    import subprocess
    import sys

    from edgecls.asgi import wait_until_up

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgecls", "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v2/health/ready", proc, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
    serving = [line for line in err.splitlines() if line.startswith("serving ")]
    assert len(serving) == len(SHIPPED), err
    assert err.count("CUDA not available") == (0 if cuda_device_present() else 1), err
    assert proc.returncode is not None


def test_uploads_that_do_not_fit_the_model_are_answered_with_one_warning_or_refused(classifiers, caplog):
    """Colour CIFAR-10 photos sent to the grey gru: answered, with one warning in the server's log; with
    --strict-input a 400 that names the file."""
    colour = sample_files("cifar10")[:2]
    body, kind = multipart([(f.name, f.read_bytes()) for f in colour])
    for strict in (False, True):
        app = create_app({"gru": classifiers["gru"]}, strict_input=strict)
        with running(app) as url, caplog.at_level("WARNING", logger="edgecls.serve"):
            answers = [request(url, "POST", "/v2/models/gru/classify", body, {"Content-Type": kind}) for _ in range(2)]
        if strict:
            assert all(a[0] == 400 for a in answers)
            assert colour[0].name in error_of(answers[0]) and "--strict-input" in error_of(answers[0])
        else:
            assert all(a[0] == 200 for a in answers)
            said = [r.getMessage() for r in caplog.records if "does not fit" in r.getMessage()]
            assert len(said) == 1 and "a colour image, but gru takes grey 28x28 images" in said[0], said
