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
from edgecls.runtime.engine import PROVIDERS

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgecls[openvino]')")
ATOL = 1e-4  # fp32 on both sides; the export's own parity bar is of this order


def test_the_cli_offers_every_engine():
    from edgecls.commands import cli

    offered = next(p for p in cli.infer_cmd.params if p.name == "provider").type.choices
    assert tuple(offered) == PROVIDERS


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
