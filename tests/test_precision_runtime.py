"""`--precision` as a runtime choice: where each precision runs (and the one line where it does not), the
int8 file beside model.onnx, the TensorRT engine's refusal on a machine without one, and `--precision
auto` choosing the fastest configuration that passes the accuracy gate, cached per machine."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error

from edgecls.commands.choose import CHOICE_FIELDS, cache_file, choose
from edgecls.commands.samples import sample_files
from edgecls.errors import UsageError
from edgecls.locations import shipped_onnx
from edgecls.runtime import Classifier
from edgecls.runtime.engine import PRECISION_CHOICES, PROVIDERS, open_engine


def _cuda_device() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def test_the_cli_offers_every_engine_and_precision():
    from edgecls.commands import cli

    for command in (cli.infer_cmd, cli.serve_cmd, cli.evaluate_cmd, cli.bench_cmd):
        options = {p.name: p for p in command.params}
        assert tuple(options["precision"].type.choices) == PRECISION_CHOICES and options["precision"].default == "fp32"
        if command is not cli.bench_cmd:  # bench times the eager model beside it, so no "auto" provider there
            assert tuple(options["provider"].type.choices) == PROVIDERS


@pytest.mark.parametrize(
    ("provider", "precision", "says"),
    [
        ("cpu", "bf16", "--precision bf16 runs on --provider openvino"),
        ("cpu", "fp16", "--precision fp16 runs on --provider cuda or tensorrt"),
        ("cuda", "int8", "--precision int8 runs on the CPU"),
        ("tensorrt", "int8", "--precision int8 runs on the CPU"),
        ("cpu", "fp64", "unknown precision 'fp64'"),
    ],
)
def test_a_precision_where_it_does_not_run_is_one_line(provider, precision, says):
    with pytest.raises(UsageError, match=says.replace("(", r"\(")):
        open_engine(shipped_onnx("cnn"), provider, precision=precision)


def test_int8_runs_the_file_beside_model_onnx():
    """--precision int8 on the CPU opens model.int8.onnx: the same logits as opening that file itself, and
    the engine says which file it runs."""
    path = shipped_onnx("cnn")
    int8 = Classifier(path, "cpu", threads=1, precision="int8")
    direct = Classifier(path.with_name("model.int8.onnx"), "cpu", threads=1)
    assert int8.engine.path == path.with_name("model.int8.onnx") and int8.engine.precision == "int8"
    assert int8.info.class_names == direct.info.class_names
    x = np.random.default_rng(0).standard_normal((5, *int8.info.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(int8.run(x), direct.run(x))


def test_int8_without_its_file_says_how_to_make_one(cli):
    result = cli("infer", sample_files("fashion-mnist")[0], "--model", "gru", "--precision", "int8")
    assert_one_line_error(result, "model.int8.onnx beside", "edgecls quantize --model NAME --precision int8")
    assert result.exit_code == 2


@pytest.mark.skipif(_cuda_device(), reason="an NVIDIA device is present: the GPU check runs TensorRT itself")
def test_tensorrt_without_a_gpu_is_one_line_and_stdout_stays_clean(cli):
    """ORT's Python layer prints an "EP Error" banner to stdout when TensorRT cannot load and falls back to
    another provider: edgecls refuses instead, in one line naming what is missing, with stdout left empty."""
    result = cli("infer", sample_files("fashion-mnist")[0], "--model", "gru", "--provider", "tensorrt")
    line = assert_one_line_error(result, "TensorRT execution provider unavailable", "edgecls[tensorrt]")
    assert "libnvinfer" in line or "no TensorRT provider" in line
    assert result.exit_code == 2 and result.stdout == ""


def _no_data(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGECLS_DATA", str(tmp_path / "no-data"))
    from edgecls.data import DEBIAN_DATASETS

    if (DEBIAN_DATASETS / "cifar10").exists():
        pytest.skip(f"CIFAR-10 is installed in {DEBIAN_DATASETS}, which the data locator always reads")


def test_auto_without_test_data_counts_only_fp32_and_caches_its_choice(tmp_path, monkeypatch):
    """No test split at hand: the int8 file is timed but cannot pass the gate unmeasured, so auto takes
    ONNX Runtime fp32; the choice is cached and the next call reads it; a damaged cache is measured again."""
    _no_data(monkeypatch, tmp_path)
    said = []
    first = choose(shipped_onnx("cnn"), "cpu", threads=1, batch=8, say=said.append)
    assert (first.provider, first.precision, first.cached) == ("cpu", "fp32", False)
    rows = {(r["provider"], r["precision"]): r for r in first.considered if "images_per_s" in r}
    assert set(rows) == {("cpu", "fp32"), ("cpu", "int8")}
    refused = {r["precision"]: r["unavailable"] for r in first.considered if "unavailable" in r}
    assert set(refused) == {"bf16", "fp16"} and "runs on --provider openvino" in refused["bf16"]
    assert rows["cpu", "int8"]["accuracy_delta_points"] is None and not rows["cpu", "int8"]["passed_gate"]
    assert any("accuracy not measured" in line for line in said)
    assert cache_file().is_relative_to(tmp_path)
    again = choose(shipped_onnx("cnn"), "cpu", threads=1, batch=8, say=said.append)
    assert again.cached and (again.provider, again.precision, again.images_per_s) == ("cpu", "fp32", first.images_per_s)
    other_batch = choose(shipped_onnx("cnn"), "cpu", threads=1, batch=16)  # a setting of its own
    assert not other_batch.cached
    cache_file().write_text("{not json")
    assert not choose(shipped_onnx("cnn"), "cpu", threads=1, batch=8).cached
    stored = json.loads(cache_file().read_text())
    assert all(set(CHOICE_FIELDS) <= set(entry) for entry in stored.values())


def test_auto_refuses_a_missing_file_in_one_line(cli, tmp_path):
    result = cli("infer", sample_files("cifar10")[0], "--onnx", tmp_path / "none.onnx", "--precision", "auto")
    assert_one_line_error(result, "no ONNX model at")


def test_infer_auto_prints_its_choice_on_stderr(cli, tmp_path, monkeypatch):
    _no_data(monkeypatch, tmp_path)
    folder = sample_files("cifar10")[0].parent
    result = cli("infer", folder, "--model", "cnn", "--provider", "cpu", "--precision", "auto", "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == len(sample_files("cifar10"))  # stdout is the results only
    assert "--precision auto: cpu fp32" in result.stderr


def test_auto_with_the_test_split_gates_int8_on_accuracy(tmp_path, monkeypatch, data_root):
    """With CIFAR-10's test split: int8's accuracy is measured on all 10,000 images, and the choice is the
    fastest configuration within 0.5 points."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    choice = choose(shipped_onnx("cnn"), "cpu", threads=2, batch=256, data_dir=str(data_root))
    rows = {(r["provider"], r["precision"]): r for r in choice.considered if "images_per_s" in r}
    int8 = rows["cpu", "int8"]
    assert int8["accuracy_delta_points"] is not None and abs(int8["accuracy_delta_points"]) <= 0.5  # the card's gate
    assert int8["passed_gate"]
    fastest = max((r for r in rows.values() if r["passed_gate"]), key=lambda r: r["images_per_s"])
    assert (choice.provider, choice.precision) == (fastest["provider"], fastest["precision"])


def _tensorrt_here() -> bool:
    try:
        import tensorrt_libs  # noqa: F401
    except ImportError:
        return False
    return _cuda_device()


@pytest.mark.skipif(not _tensorrt_here(), reason="needs an NVIDIA GPU and TensorRT's libraries (edgecls[tensorrt])")
@pytest.mark.parametrize("name", ["cnn", "gru"])
def test_tensorrt_answers_like_the_cpu(name, tmp_path, monkeypatch):
    """fp32 on TensorRT within the model's parity atol of the CPU provider, one image and a batch beyond
    the engine's tuned size; the engine is cached, so a second open finds it."""
    from edgecls.registry import get_spec

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = shipped_onnx(name)
    cpu, trt = Classifier(path, "cpu"), Classifier(path, "tensorrt")
    assert trt.provider == "tensorrt" and trt.providers[0] == "TensorrtExecutionProvider"
    x = np.random.default_rng(0).standard_normal((300, *cpu.info.input_shape)).astype(np.float32)
    for rows in (x[:1], x):
        np.testing.assert_allclose(trt.run(rows), cpu.run(rows), atol=get_spec(name).atol, rtol=0)
    assert any((tmp_path / "edgecls" / "tensorrt").iterdir())


def test_small_batches_run_on_the_faster_session_with_the_same_answers():
    """The engine picks, by timing, a 1-thread or the multi-thread session for batches too small to split;
    either way batch 1 gives the multi-thread session's logits (the same kernels, fp32)."""
    from edgecls.runtime.ort_engine import OrtEngine

    engine = OrtEngine(shipped_onnx("rnn"), "cpu", threads=2)
    assert engine.small_batch_threads in (1, 2)
    assert engine.execution(1) == f"1 session, {engine.small_batch_threads} thread" + (
        "s" if engine.small_batch_threads == 2 else ""
    )
    assert engine.execution(64) == "2 x 1-thread sessions"
    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), engine.session.run(None, {"input": x})[0], atol=1e-6, rtol=0)
    engine.close()


def test_serve_resolves_auto_per_model_and_caches_it(tmp_path, monkeypatch):
    """`edgecls serve --precision auto`: each model's configuration is chosen at --max-batch when the server
    starts (said on stderr), cached, and the served logits are that configuration's."""
    import tritonclient.http as hc
    from test_serve_lifecycle import serve_process

    _no_data(monkeypatch, tmp_path)
    args = ("--model", "cnn", "--provider", "cpu", "--precision", "auto", "--max-batch", "8", "--threads", "1")
    with serve_process(*args) as (proc, url, _):
        x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
        inp = hc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = hc.InferenceServerClient(url).infer("cnn", [inp]).as_numpy("logits")
        proc.terminate()
        err = proc.communicate(timeout=30)[1]
    assert "--precision auto: cpu fp32" in err  # no test data here: only fp32 counts
    np.testing.assert_allclose(got, Classifier(shipped_onnx("cnn"), "cpu", threads=1).run(x), atol=1e-5, rtol=0)
    (entry,) = json.loads(cache_file().read_text()).values()
    assert (entry["provider"], entry["precision"], entry["batch_size"]) == ("cpu", "fp32", 8)


@pytest.mark.skipif(_cuda_device(), reason="an NVIDIA device is present, so CUDA runs here")
def test_auto_with_a_provider_that_cannot_run_here_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = cli("infer", sample_files("cifar10")[0], "--model", "cnn", "--provider", "cuda", "--precision", "auto")
    assert_one_line_error(result, "--precision auto: nothing to choose from", "--provider cuda", "CUDA")
    assert result.exit_code == 2 and not (tmp_path / "edgecls" / "choices.json").exists()


def test_an_int8_file_of_another_model_beside_it_is_refused(cli, tmp_path):
    """gru's folder with cnn's int8 file copied in: --precision int8 refuses it in one line instead of
    answering with cnn's classes."""
    import shutil

    shutil.copy(shipped_onnx("gru"), tmp_path / "model.onnx")
    shutil.copy(shipped_onnx("cnn").with_name("model.int8.onnx"), tmp_path / "model.int8.onnx")
    result = cli("infer", sample_files("cifar10")[0], "--onnx", tmp_path / "model.onnx", "--precision", "int8")
    assert_one_line_error(result, "holds model 'cnn', not 'gru'", "edgecls quantize --model gru --precision int8")
    assert result.exit_code == 2 and result.stdout == ""
