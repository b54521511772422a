"""`edgecls quantize`: INT8 and FP16 variants, kept only within 0.5 points of fp32 on the full test split."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_one_line_error, needs_gpu

from edgecls.data import evenly_spaced, load_for_spec, normalize
from edgecls.locations import shipped_onnx
from edgecls.metadata import read_props
from edgecls.registry import get_spec
from edgecls.runtime import Classifier

# Quantization calibrates on real training images and gates on the full test split.
pytestmark = pytest.mark.slow

FP16_ATOL = 0.05  # max |Δlogit| of the fp16 variant against fp32 on real images (CPU provider), documented


def real(name: str, count: int = 512) -> np.ndarray:
    spec = get_spec(name)
    test = load_for_spec(spec, "test", download=False)
    return normalize(test.images(evenly_spaced(len(test), count)), spec.preprocess).numpy()


def quantize(cli, name, precision, out, *extra):
    return cli(
        "quantize", "--model", name, "--precision", precision, "--onnx", shipped_onnx(name), "--artifacts", out, *extra
    )


def test_int8_cnn_is_kept_within_the_gate_and_describes_itself(cli, tmp_path):
    result = quantize(cli, "cnn", "int8", tmp_path)
    assert result.exit_code == 0, result.output
    target = tmp_path / "cnn" / "model.int8.onnx"
    report = json.loads((tmp_path / "cnn" / "precision.json").read_text())["int8"]
    assert report["kept"]["passed"] and report["fp32_accuracy_pct"] - report["kept"]["accuracy_pct"] <= 0.5
    assert report["test_images"] == 10_000 and report["bytes"] < report["fp32_bytes"] / 2
    props = read_props(onnx.load(str(target)))
    assert props["precision"] == "int8" and "calibration" in props["precision_method"]
    ops = {n.op_type for n in onnx.load(str(target)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    clf = Classifier(target, "cpu")
    assert clf.class_names == Classifier(shipped_onnx("cnn"), "cpu").class_names
    # the runtime's accuracy on the full split is the one the gate saw
    test = load_for_spec(get_spec("cnn"), "test", download=False)
    x = normalize(test.images(), get_spec("cnn").preprocess).numpy()
    acc = 100 * np.mean(
        np.concatenate([clf.run(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)]) == test.labels.numpy()
    )
    assert acc == pytest.approx(report["kept"]["accuracy_pct"], abs=1e-9)


def test_int8_lstm_runs_its_recurrence_on_int8_weights(cli, tmp_path):
    """An LSTM graph gets ORT's DynamicQuantizeLSTM first (static QDQ would leave the LSTM in float), from the
    dynamo export whose LSTM weights are Slice/Concat of initializers until folded: within the gate on the
    full test split, every LSTM node quantized, the file a third of fp32's size or less."""
    result = quantize(cli, "lstm-binary", "int8", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "lstm-binary" / "precision.json").read_text())["int8"]
    assert report["kept"]["recipe"] == "dynamic-lstm" and len(report["tried"]) == 1
    assert report["fp32_accuracy_pct"] - report["kept"]["accuracy_pct"] <= 0.5
    ops = [n.op_type for n in onnx.load(str(tmp_path / "lstm-binary" / "model.int8.onnx")).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
    assert report["bytes"] < report["fp32_bytes"] / 3
    assert (
        "DynamicQuantizeLSTM"
        in read_props(onnx.load(str(tmp_path / "lstm-binary" / "model.int8.onnx")))["precision_method"]
    )


def test_recipes_for_a_graph_without_lstm_are_the_static_ones():
    from edgecls.export.precision import INT8_RECIPES, LSTM_RECIPE, int8_recipes

    assert int8_recipes(shipped_onnx("cnn")) == int8_recipes(shipped_onnx("gru")) == INT8_RECIPES
    assert int8_recipes(shipped_onnx("lstm"))[0] == int8_recipes(shipped_onnx("crnn"))[0] == LSTM_RECIPE


def test_fp16_keeps_float32_io_and_stays_close_on_the_cpu(cli, tmp_path):
    result = quantize(cli, "gru", "fp16", tmp_path)
    assert result.exit_code == 0, result.output
    target = tmp_path / "gru" / "model.fp16.onnx"
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(target)).graph.initializer)
    x = real("gru")
    diff = np.abs(Classifier(target, "cpu").run(x) - Classifier(shipped_onnx("gru"), "cpu").run(x)).max()
    assert diff <= FP16_ATOL


def test_a_variant_below_the_gate_writes_nothing_and_fails(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("edgecls.export.precision.GATE_POINTS", -1.0)  # no variant can beat fp32 by a point
    result = quantize(cli, "cnn", "int8", tmp_path)
    assert_one_line_error(result, "no int8 variant of cnn within -1.0 points", "nothing written")
    assert not (tmp_path / "cnn" / "model.int8.onnx").exists()
    assert [p.name for p in (tmp_path / "cnn").iterdir()] == ["precision.json"]  # figures of every recipe tried
    tried = json.loads((tmp_path / "cnn" / "precision.json").read_text())["int8"]["tried"]
    assert len(tried) == 3 and all("accuracy_pct" in t for t in tried)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--onnx", "nope.onnx"], "no ONNX model at nope.onnx"),
        (["--calibration", "3"], "--calibration must be at least 16"),
        (["--onnx", str(shipped_onnx("gru"))], "holds model 'gru', not 'cnn'"),
        (["--artifacts", "artifacts"], "holds a shipped model"),
    ],
)
def test_bad_input_is_one_line(cli, tmp_path, args, message):
    base = ["quantize", "--model", "cnn", "--precision", "int8"]
    if "--onnx" not in args:
        base += ["--onnx", shipped_onnx("cnn")]
    if "--artifacts" not in args:
        base += ["--artifacts", tmp_path]
    assert_one_line_error(cli(*base, *args), message)


@needs_gpu
def test_fp16_on_cuda(cli, data_root, tmp_path):
    cuda = Classifier(shipped_onnx("cnn"), "cuda")
    assert quantize(cli, "cnn", "fp16", tmp_path).exit_code == 0
    x = real("cnn")
    half = Classifier(tmp_path / "cnn" / "model.fp16.onnx", "cuda")
    assert np.abs(half.run(x) - cuda.run(x)).max() <= FP16_ATOL
