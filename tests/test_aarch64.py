"""The gates of scripts/check-aarch64.sh (scripts/aarch64.py), on synthetic answers: the emulated run
itself is CI's step (.ci/run), with a perturbed model that must fail it."""

import importlib.util
import json

import numpy as np
import pytest
from conftest import REPO

from edgecls.locations import shipped_onnx

spec = importlib.util.spec_from_file_location("aarch64", REPO / "scripts" / "aarch64.py")
aarch64 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(aarch64)

REF = np.array([[5.0, 1.0, 0.0], [2.0, 1.9, 0.0], [0.0, 3.0, 1.0]])


def test_fp32_passes_within_atol_and_fails_beyond_or_on_any_flip():
    assert aarch64.gate("gru", "fp32", REF, REF + 5e-5, 0.0, 1e-4)["passed"]
    assert not aarch64.gate("gru", "fp32", REF, REF + 2e-4, 0.0, 1e-4)["passed"]
    flipped = REF.copy()
    flipped[1] = [1.9, 2.0, 0.0]  # within no atol anyway, but a flip alone must fail too
    assert not aarch64.gate("gru", "fp32", REF, flipped, 0.0, 1.0)["passed"]


def test_reduced_precision_allows_one_step_and_flips_only_within_two():
    step = 0.1
    one_step = REF.copy()
    one_step[0, 1] += step  # a single logit moved by exactly one step: passes
    assert aarch64.gate("cnn", "int8", REF, one_step, step, 1e-4)["passed"]
    assert not aarch64.gate("cnn", "int8", REF, REF + 1.5 * step, step, 1e-4)["passed"]
    near_tie = REF.copy()
    near_tie[1] = [1.9, 2.0, 0.0]  # x86 margin 0.1 < 2 steps: a one-step move may flip it
    result = aarch64.gate("cnn", "int8", REF, near_tie, step, 1e-4)
    assert result["passed"] and result["top1_required"] == 2


def test_output_step_is_the_logits_dequantize_scale():
    assert aarch64.output_step(shipped_onnx("gru")) == 0.0
    assert 0 < aarch64.output_step(shipped_onnx("cnn").with_name("model.int8.onnx")) < 1


def test_compare_fails_on_a_perturbed_answer_and_passes_on_equal_ones(tmp_path, capsys):
    rows = [{"model": "gru", "precision": "fp32", "file": "gru/model.onnx", "images": 3, "logits": REF.tolist(),
             "ms_per_image": 1.0, "cli_top1": ["a", "b", "c"]}]  # fmt: skip
    (tmp_path / "x86.json").write_text(json.dumps({"machine": "x86_64", "rows": rows}))
    (tmp_path / "arm-cortex-a72.json").write_text(json.dumps({"machine": "aarch64", "rows": rows}))
    args = [str(tmp_path / "x86.json"), str(tmp_path / "arm-cortex-a72.json"), "--artifacts", str(REPO / "artifacts")]
    assert aarch64.main(["compare", *args]) == 0
    rows[0]["logits"] = (REF * 1.01).tolist()
    (tmp_path / "arm-cortex-a72.json").write_text(json.dumps({"machine": "aarch64", "rows": rows}))
    assert aarch64.main(["compare", *args]) == 1
    assert "| `gru` | gru/model.onnx | cortex-a72 |" in capsys.readouterr().out


def test_a_file_missing_on_arm_fails_and_an_x86_file_is_refused_as_arm(tmp_path):
    row = {"model": "gru", "precision": "fp32", "file": "gru/model.onnx", "images": 3, "logits": REF.tolist(),
           "ms_per_image": 1.0}  # fmt: skip
    (tmp_path / "x86.json").write_text(json.dumps({"machine": "x86_64", "rows": [row]}))
    (tmp_path / "arm-a.json").write_text(json.dumps({"machine": "aarch64", "rows": []}))
    assert aarch64.main(["compare", str(tmp_path / "x86.json"), str(tmp_path / "arm-a.json"),
                         "--artifacts", str(REPO / "artifacts")]) == 1  # fmt: skip
    with pytest.raises(SystemExit, match="not made on aarch64"):
        aarch64.main(["compare", str(tmp_path / "x86.json"), str(tmp_path / "x86.json"),
                      "--artifacts", str(REPO / "artifacts")])  # fmt: skip


def test_a_float_output_int8_file_is_held_to_its_own_error_against_fp32(tmp_path, capsys):
    """lstm's dynamic int8 file has no output DequantizeLinear: its bar is its x86 error against the fp32 file
    on the same images (here 0.2), not a step of 0 that no rounding difference could pass."""
    assert aarch64.output_step(shipped_onnx("lstm").with_name("model.int8.onnx")) == 0.0
    int8 = REF + np.array([[0.2, 0, 0], [0, 0, 0], [0, 0, 0]])  # the int8 file's x86 answers: 0.2 from fp32

    def run(machine, int8_logits):
        rows = [
            {"model": "lstm", "precision": "fp32", "file": "lstm/model.onnx", "logits": REF.tolist()},
            {"model": "lstm", "precision": "int8", "file": "lstm/model.int8.onnx", "logits": int8_logits},
        ]
        return {"machine": machine, "rows": [{**r, "images": 3, "ms_per_image": 1.0} for r in rows]}  # fmt: skip

    args = [str(tmp_path / "x86.json"), str(tmp_path / "arm-a.json"), "--artifacts", str(REPO / "artifacts")]
    (tmp_path / "x86.json").write_text(json.dumps(run("x86_64", int8.tolist())))
    (tmp_path / "arm-a.json").write_text(json.dumps(run("aarch64", (int8 + 0.15).tolist())))
    assert aarch64.main(["compare", *args]) == 0
    assert "its x86 error vs fp32 (0.2)" in capsys.readouterr().out
    (tmp_path / "arm-a.json").write_text(json.dumps(run("aarch64", (int8 + 0.25).tolist())))
    assert aarch64.main(["compare", *args]) == 1
