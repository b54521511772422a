"""The ORT format: `edgecls export --ort` writes model.ort and required_operators.config only when the
.ort file gives model.onnx's logits on real test images; every shipped model converts with parity."""

import json

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error
from test_export import write_checkpoint
from test_shipped import SHIPPED

from edgecls.data import evenly_spaced, load_for_spec, normalize
from edgecls.errors import EdgeclsError
from edgecls.export.ort_format import OPS_FILE, ORT_FILE, ort_parity, write_ort
from edgecls.locations import shipped_onnx
from edgecls.registry import get_spec
from edgecls.runtime import Classifier

# Conversions checked on real test images.
pytestmark = pytest.mark.slow


def real_batch(name: str, count: int = 256) -> np.ndarray:
    spec = get_spec(name)
    test = load_for_spec(spec, "test", download=False)
    return normalize(test.images(evenly_spaced(len(test), count)), spec.preprocess).numpy()


def test_export_ort_writes_a_checked_ort_file_and_operator_list(cli, tmp_path):
    write_checkpoint(get_spec("gru"), tmp_path / "gru" / "checkpoint.pt", seed=1)
    result = cli("export", "--model", "gru", "--artifacts", tmp_path, "--exporter", "torchscript", "--ort")
    assert result.exit_code == 0, result.output
    out = tmp_path / "gru"
    assert "ORT format:" in result.output and (out / ORT_FILE).is_file() and (out / "model.onnx").is_file()
    report = json.loads((out / "export.json").read_text())["ort"]
    assert report["passed"] and report["max_abs_diff"] <= 1e-4 and report["rows"][0]["batch"] == 64
    ops = (out / OPS_FILE).read_text()
    graph_ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert all(op in ops for op in graph_ops - {"Constant"}), ops
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
    # The runtime reads the .ort file as it reads the .onnx one: its metadata travels along.
    ort_clf, onnx_clf = Classifier(out / ORT_FILE, "cpu"), Classifier(out / "model.onnx", "cpu")
    assert ort_clf.class_names == onnx_clf.class_names
    x = real_batch("gru", 64)
    assert np.abs(ort_clf.run(x) - onnx_clf.run(x)).max() <= 1e-4


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_converts_with_parity_on_real_images(tmp_path, name):
    src = tmp_path / "model.onnx"
    src.write_bytes(shipped_onnx(name).read_bytes())
    report = write_ort(src, [real_batch(name), real_batch(name, 7)], get_spec(name).atol)
    assert report["passed"] and report["max_abs_diff"] <= get_spec(name).atol
    assert sum(r["argmax_mismatches"] for r in report["rows"]) == 0
    assert (tmp_path / ORT_FILE).stat().st_size > 1000 and (tmp_path / OPS_FILE).is_file()


def test_a_failed_ort_parity_writes_nothing(tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(shipped_onnx("cnn").read_bytes())
    with pytest.raises(EdgeclsError, match="not written"):
        write_ort(src, [real_batch("cnn", 16)], atol=1e-12)  # a bar no float graph rewrite can meet
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_ort_parity_compares_logits(tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(shipped_onnx("cnn").read_bytes())
    report = ort_parity(src, src, [real_batch("cnn", 8)], 1e-6)
    assert report["passed"] and report["max_abs_diff"] == 0.0


def test_infer_runs_an_ort_file(cli, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(shipped_onnx("cnn").read_bytes())
    write_ort(src, [real_batch("cnn", 8)], 1e-4)
    a = cli("infer", "samples/cifar10", "--onnx", tmp_path / ORT_FILE, "--format", "csv")
    b = cli("infer", "samples/cifar10", "--onnx", src, "--format", "csv")
    assert a.exit_code == 0 and b.exit_code == 0
    rows_a, rows_b = ([line.split(",") for line in r.stdout.splitlines()[1:]] for r in (a, b))
    assert [r[:3] for r in rows_a] == [r[:3] for r in rows_b]  # file, status, label
    assert max(abs(float(x[3]) - float(y[3])) for x, y in zip(rows_a, rows_b)) <= 1e-5


def test_export_ort_without_checkpoint_is_one_line(cli, tmp_path):
    assert_one_line_error(cli("export", "--model", "gru", "--artifacts", tmp_path, "--ort"), "no checkpoint")
