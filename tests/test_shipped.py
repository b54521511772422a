"""The trained models shipped in artifacts/ and the real sample images in samples/: a fresh clone
classifies real images with no training and no data download."""

import hashlib
import json
import math
import shutil

import pytest
import torch
from conftest import REPO, assert_one_line_error

from edgecls.commands.samples import PER_DATASET, label_of, sample_files
from edgecls.locations import MODEL_CARD, shipped_onnx, shipped_root
from edgecls.metadata import read_props
from edgecls.registry import get_spec, model_names
from edgecls.runtime import Classifier

# The models that beat their report and therefore ship; benchmarks/results/accuracy.md lists all seven.
SHIPPED = ["cnn", "rnn", "birnn", "gru", "crnn", "lstm", "lstm-binary"]


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def load_card(name: str) -> dict:
    return json.loads((shipped_onnx(name).parent / MODEL_CARD).read_text())


def test_exactly_the_models_that_beat_their_report_ship():
    assert sorted(p.parent.name for p in shipped_root().glob("*/model.onnx")) == sorted(SHIPPED)
    rows = json.loads((REPO / "benchmarks" / "results" / "accuracy.json").read_text())["rows"]
    assert sorted(r["model"] for r in rows) == sorted(model_names())
    assert sorted(r["model"] for r in rows if r["beats_report"] and r["parity_passed"]) == sorted(SHIPPED)
    assert all(r["full_data_defaults"] for r in rows)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_complete_and_beats_its_report(name):
    spec = get_spec(name)
    path = shipped_onnx(name)
    assert path.is_file(), f"{path} is not shipped"
    assert path.stat().st_size < 4_000_000, "keep shipped models small"
    card = load_card(name)
    assert card["onnx"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), "card describes another file"
    assert card["model"] == name and card["dataset"] == spec.dataset
    assert card["training"]["command"] == f"edgecls train --model {name}"
    assert card["training"]["hparams"]["limit"] is None, "shipped models are trained on the full data"
    acc = card["accuracy"]
    assert acc["onnx_pct"] > spec.bar_pct and acc["eager_pct"] > spec.bar_pct, (acc, spec.report)
    assert abs(acc["onnx_pct"] - acc["eager_pct"]) <= 0.01
    assert card["parity"]["max_abs_logit_diff"] <= spec.atol

    info = Classifier(path, "cpu", threads=1).info
    assert info.model == name and info.class_names == spec.class_names
    assert info.input_shape == spec.input_shape and info.color_mode == spec.preprocess.color_mode
    assert info.mean == pytest.approx(spec.preprocess.mean) and info.std == pytest.approx(spec.preprocess.std)
    assert info.scale == pytest.approx(spec.preprocess.scale)
    assert info.validated
    assert 100 * info.test_accuracy == pytest.approx(acc["eager_pct"], abs=0.01)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_classifies_the_samples_at_its_accuracy(name):
    """Samples are evenly spaced test images (not picked for being easy): the count classified right
    must be plausible for the model's measured test accuracy (binomial lower tail >= 0.001)."""
    spec = get_spec(name)
    files = sample_files(spec.dataset)
    assert len(files) == PER_DATASET[spec.dataset]
    truth = [label_of(f, spec.class_names, spec.target) for f in files]
    classifier = Classifier(shipped_onnx(name), "cpu", threads=1)
    labels, probs = classifier.predict(files)
    correct = sum(spec.class_names.index(lab) == t for lab, t in zip(labels, truth))
    p = load_card(name)["accuracy"]["onnx_pct"] / 100
    tail = binom_cdf(correct, len(files), p)
    assert tail >= 1e-3, f"{name}: {correct}/{len(files)} right, unlikely at {100 * p:.2f} % (P={tail:.2g})"


def test_sample_labels_match_the_test_split(data_root):
    """The label in each sample's file name is the test split's label of that image index."""
    from edgecls.data import load_split

    for dataset, name in (("fashion-mnist", "gru"), ("emnist-bymerge", "lstm"), ("cifar10", "cnn")):
        spec = get_spec(name)
        test = load_split(dataset, "test", download=False)
        for f in sample_files(dataset):
            index = int(f.stem.split("_")[0])
            assert label_of(f, spec.class_names) == int(test.labels[index]), f
    binary = get_spec("lstm-binary")
    assert label_of("00001_7.png", binary.class_names, binary.target) == 0
    assert label_of("00001_q.png", binary.class_names, binary.target) == 1


def test_infer_uses_the_shipped_model_without_any_run(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    result = cli("infer", *map(str, sample_files("fashion-mnist")[:5]), "--model", "gru", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert f"model {shipped_onnx('gru')}" in result.stderr
    assert len(result.stdout.strip().splitlines()) == 6


def test_infer_prefers_the_users_own_export(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "gru").mkdir(parents=True)
    shutil.copy(shipped_onnx("gru"), tmp_path / "runs" / "gru" / "model.onnx")
    result = cli("infer", str(sample_files("fashion-mnist")[0]), "--model", "gru")
    assert result.exit_code == 0, result.output
    assert "model runs/gru/model.onnx" in result.stderr


def test_train_and_export_refuse_to_write_over_a_shipped_model(cli, tmp_path):
    shipped = tmp_path / "artifacts"
    (shipped / "gru").mkdir(parents=True)
    onnx_bytes = shipped_onnx("gru").read_bytes()
    (shipped / "gru" / "model.onnx").write_bytes(onnx_bytes)
    (shipped / "gru" / MODEL_CARD).write_text("{}")
    for args in (("train", "--model", "gru", "--epochs", "1", "--limit", "100"), ("export", "--model", "gru")):
        assert_one_line_error(cli(*args, "--artifacts", shipped), "holds a shipped model", "runs/")
    assert (shipped / "gru" / "model.onnx").read_bytes() == onnx_bytes
    assert sorted(p.name for p in (shipped / "gru").iterdir()) == sorted([MODEL_CARD, "model.onnx"])


@pytest.mark.parametrize("name", SHIPPED)
def test_full_test_split_through_the_runtime_keeps_the_cards_accuracy(data_root, name):
    """The whole real test split through Classifier.run, whose big batches are split over 1-thread
    sessions: the accuracy is the model card's ONNX accuracy (0.00 points apart), and every logit
    equals a single session's."""
    import numpy as np

    from edgecls.data import load_for_spec, normalize

    spec = get_spec(name)
    test = load_for_spec(spec, "test", download=False)
    split = Classifier(shipped_onnx(name), "cpu", threads=2)
    single = Classifier(shipped_onnx(name), "cpu", threads=2, split=False)
    assert split.execution(256) == "2 x 1-thread sessions"
    right, worst = 0, 0.0
    for start in range(0, len(test), 256):
        idx = torch.arange(start, min(start + 256, len(test)))
        x = normalize(test.images(idx), spec.preprocess).numpy()
        logits = split.run(x)
        worst = max(worst, float(np.abs(logits - single.run(x)).max()))
        right += int((logits.argmax(1) == test.labels[idx].numpy()).sum())
    acc_pct = 100 * right / len(test)
    assert worst <= 1e-5
    card = load_card(name)
    if card["test_images"] != len(test):  # e.g. the official EMNIST split of a torchvision download
        pytest.skip(
            f"the card's accuracy was measured on another copy of the test split ({card['test_images']} "
            f"images, here {len(test)}); logits checked, accuracy not comparable"
        )
    assert abs(acc_pct - card["accuracy"]["onnx_pct"]) < 0.005  # 0.00 points apart


INT8_SHIPPED = [n for n in SHIPPED if "variants" in load_card(n)]


def test_int8_files_are_shipped_only_where_they_are_faster():
    """A shipped int8 file is at least 1.2x its fp32 file at batch 256 on a CPU with int8 instructions, on
    some engine edgecls runs it on, in a committed `bench --peers` run that timed it (bench-peers-xeon.json,
    the guide's table, for cnn; a run per model for the LSTM files quantized later); rnn's and birnn's were
    not, and are no longer shipped."""
    assert sorted(INT8_SHIPPED) == ["cnn", "lstm", "lstm-binary"]
    runs = [json.loads(p.read_text()) for p in sorted((REPO / "benchmarks" / "results").glob("bench-peers-*xeon.json"))]
    for name in INT8_SHIPPED:
        (bench,) = [
            b for b in runs for m in b["models"] if m["model"] == name and "cpu-int8" in m["rows"][0]["offered"]
        ]
        assert {"avx512_vnni", "amx_int8"} <= set(bench["hardware"]["isa"])
        (row,) = [r for m in bench["models"] if m["model"] == name for r in m["rows"] if r["batch_size"] == 256]
        fp32 = {"onnxruntime": row["onnx"]["images_per_s"], "openvino": row["offered"]["openvino-fp32"]["images_per_s"]}
        int8 = {v["engine"]: v["images_per_s"] for v in row["offered"].values() if v["precision"] == "int8"}
        assert max(int8[e] / fp32[e] for e in int8) >= 1.2, (name, int8, fp32)


@pytest.mark.parametrize("name", INT8_SHIPPED)
def test_shipped_int8_variant_passes_the_gate_on_the_full_test_split(data_root, name):
    """The shipped int8 file is the one its card describes, and through the runtime its accuracy on the
    whole real test split is the card's, within 0.5 points of the fp32 file's."""
    import numpy as np
    import onnx

    from edgecls.data import load_for_spec, normalize

    card = load_card(name)
    variant = card["variants"]["int8"]
    path = shipped_onnx(name).parent / variant["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == variant["sha256"]
    assert read_props(onnx.load(str(path)))["precision"] == "int8"
    spec = get_spec(name)
    test = load_for_spec(spec, "test", download=False)
    x, y = normalize(test.images(), spec.preprocess).numpy(), test.labels.numpy()
    clf = Classifier(path, "cpu")
    acc = 100 * np.mean(np.concatenate([clf.run(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)]) == y)
    if card["test_images"] == len(y):
        assert abs(acc - variant["accuracy_pct"]) < 0.005
    assert card["accuracy"]["onnx_pct"] - acc <= 0.5
    assert path.stat().st_size < card["onnx"]["bytes"] / 2
