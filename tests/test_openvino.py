"""`--provider openvino`: the OpenVINO engine behind the runtime's seam answers like ONNX Runtime on every
shipped model (fp32, within the export tolerance), through infer and serve, and says what to install
where OpenVINO is missing."""

import json
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error
from test_shipped import SHIPPED

from edgecls.commands.samples import sample_files
from edgecls.locations import shipped_onnx
from edgecls.registry import get_spec
from edgecls.runtime import Classifier

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgecls[openvino]')")
ATOL = 1e-4  # fp32 on both sides; the export's own parity bar is of this order


BF16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no bf16 instructions (AMX or AVX512-BF16)")


@needs_bf16
@pytest.mark.parametrize("name", SHIPPED)
def test_bf16_keeps_the_answers(name):
    """bf16 on OpenVINO: the engine computes in it, and on real samples it answers as fp32 does (argmax on
    at least 15 of 16; logits within 0.25): close, not equal, which is why it is gated on accuracy."""
    path = shipped_onnx(name)
    files = sample_files(get_spec(name).dataset)[:16]
    fp32, bf16 = Classifier(path, "cpu", threads=2), Classifier(path, "openvino", threads=2, precision="bf16")
    assert bf16.engine.arithmetic == "bf16" and "bf16" in bf16.providers[0]
    x = fp32.preprocess.normalize(np.stack([fp32.to_uint8(f) for f in files]))
    expected, got = fp32.run(x), bf16.run(x)
    assert (got.argmax(1) == expected.argmax(1)).sum() >= 15
    assert np.abs(got - expected).max() < 0.25


@needs_bf16
def test_infer_in_bf16(cli):
    folder = sample_files(get_spec("cnn").dataset)[0].parent
    result = cli("infer", folder, "--model", "cnn", "--provider", "openvino", "--precision", "bf16", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "OpenVINO CPU" in result.stderr and "bf16" in result.stderr
    assert len(json.loads(result.stdout)) == len(sample_files("cifar10"))


def test_bf16_on_onnx_runtime_is_one_line(cli):
    result = cli(
        "infer", sample_files("fashion-mnist")[0], "--model", "gru", "--provider", "cpu", "--precision", "bf16"
    )
    assert_one_line_error(result, "--precision bf16 runs on --provider openvino")
    assert result.exit_code == 2
    port = str(__import__("serving").free_port())
    result = cli("serve", "--model", "gru", "--port", port, "--precision", "bf16", "--provider", "cpu")
    assert_one_line_error(result, "--precision bf16 runs on --provider openvino")


def test_evaluate_bf16_is_held_to_the_accuracy_gate(tmp_path, data_root):
    """evaluate --provider openvino --precision bf16 on a real test split: passes on accuracy within 0.5
    points (its logits are not held to atol), and says which bar it used."""
    from test_export import write_checkpoint

    from edgecls.commands.evaluate import evaluate
    from edgecls.export import export_model

    write_checkpoint(get_spec("gru"), tmp_path / "gru" / "checkpoint.pt", seed=1)
    export_model("gru", artifacts=tmp_path, exporter="torchscript")
    fp32 = evaluate("gru", artifacts=tmp_path, provider="openvino", data_dir=str(data_root), limit=2000)
    assert fp32["passed"] and fp32["precision"] == "fp32" and "atol" in fp32["bar"]
    if BF16:
        bf16 = evaluate(
            "gru", artifacts=tmp_path, provider="openvino", precision="bf16", data_dir=str(data_root), limit=2000
        )
        assert bf16["passed"] and bf16["accuracy_diff_pp"] <= 0.5 and "0.5 pp" in bf16["bar"]
        assert bf16["max_abs_logit_diff"] > fp32["max_abs_logit_diff"]


@pytest.mark.parametrize("name", SHIPPED)
def test_openvino_gives_onnx_runtimes_logits(name):
    path = shipped_onnx(name)
    files = sample_files(get_spec(name).dataset)[:16]
    ort, ov = Classifier(path, "cpu", threads=2), Classifier(path, "openvino", threads=2)
    assert ov.provider == "openvino" and "OpenVINO" in ov.providers[0]
    assert ov.info == ort.info  # the metadata (classes, preprocessing) is read from the same file
    x = ort.preprocess.normalize(np.stack([ort.to_uint8(f) for f in files]))
    for rows in (x[:1], x):
        expected, got = ort.run(rows), ov.run(rows)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
        assert (got.argmax(1) == expected.argmax(1)).all()
    assert [i.name for i in ov.engine.inputs()] == ["input"] and [o.name for o in ov.engine.outputs()] == ["logits"]


def test_infer_with_openvino_labels_like_the_cpu(cli):
    """`edgecls infer --provider openvino` on the sample folder: every file, the CPU provider's labels and
    probabilities (within 1e-4)."""
    files = sample_files(get_spec("gru").dataset)
    runs = {
        p: cli("infer", files[0].parent, "--model", "gru", "--provider", p, "--format", "json")
        for p in ("cpu", "openvino")
    }
    assert all(r.exit_code == 0 for r in runs.values()), runs["openvino"].output
    cpu, ov = (json.loads(runs[p].stdout) for p in ("cpu", "openvino"))
    assert len(ov) == len(cpu) == len(files)
    for a, b in zip(cpu, ov):
        assert a["file"] == b["file"] and a["top_k"][0]["label"] == b["top_k"][0]["label"]
        assert abs(a["top_k"][0]["probability"] - b["top_k"][0]["probability"]) <= 1e-4
    assert "provider OpenVINO CPU" in runs["openvino"].stderr


def test_without_openvino_the_error_names_the_extra(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    result = cli("infer", sample_files("fashion-mnist")[0], "--model", "gru", "--provider", "openvino")
    assert_one_line_error(result, "pip install 'edgecls[openvino]'")
    assert result.exit_code == 2
