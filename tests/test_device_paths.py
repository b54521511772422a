"""The GPU levers of the ORT engine: IOBinding with device-resident buffers, a CUDA graph at batch 1 and the
graph form per provider (model.fused.onnx on CUDA). What does not need a GPU is tested on the CPU: the bound
path is the same code on the CPU device, the form choice is a file choice. The CUDA tests run where a GPU is
present (benchmarks/gpu_check.sh runs them on a lent one)."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, cuda_device_present, needs_gpu

from edgecls.errors import UsageError
from edgecls.locations import MODEL_CARD, shipped_onnx, shipped_root
from edgecls.metadata import read_props
from edgecls.registry import get_spec
from edgecls.runtime import Classifier
from edgecls.runtime.engine import form_file
from edgecls.runtime.iobinding import BoundSession
from edgecls.runtime.ort_engine import create_session


def batch(name: str, rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, *get_spec(name).input_shape)).astype(np.float32)


@pytest.mark.parametrize("name", ["gru", "rnn", "cnn"])
def test_bound_session_answers_like_session_run(name):
    """Bound buffers per batch size: the same logits as session.run at every size, each call's result its own
    array (the next call reuses the device buffer, not the returned one)."""
    session = create_session(str(shipped_onnx(name)), "cpu", 1)[0]
    bound = BoundSession(session, "cpu")
    for rows in (1, 7, 1, 256):
        x = batch(name, rows, seed=rows)
        np.testing.assert_array_equal(bound.run(x), session.run(None, {"input": x})[0])
    first, second = bound.run(batch(name, 3, 1)), bound.run(batch(name, 3, 2))
    np.testing.assert_array_equal(first, session.run(None, {"input": batch(name, 3, 1)})[0])
    assert not np.shares_memory(first, second)
    assert sorted(bound.buffers) == sorted({(r, *get_spec(name).input_shape) for r in (1, 3, 7, 256)})


def test_bound_session_keeps_only_the_latest_batch_sizes():
    session = create_session(str(shipped_onnx("gru")), "cpu", 1)[0]
    bound = BoundSession(session, "cpu", max_shapes=2)
    for rows in (1, 2, 3, 1):
        bound.run(batch("gru", rows))
    assert [shape[0] for shape in bound.buffers] == [3, 1]  # least recently used first, 2 dropped


def test_bound_session_with_a_batch_of_non_contiguous_rows():
    session = create_session(str(shipped_onnx("gru")), "cpu", 1)[0]
    x = batch("gru", 8)[::2]  # a strided view, as a caller's slicing makes
    expected = session.run(None, {"input": np.ascontiguousarray(x)})[0]
    np.testing.assert_array_equal(BoundSession(session, "cpu").run(x), expected)


def fused_shipped():
    return sorted(p.parent.name for p in shipped_root().glob("*/model.fused.onnx"))


def test_the_unrolled_shipped_models_ship_their_fused_form():
    """rnn and birnn ship the steps form (fastest on the CPU) and its fused form beside it (for CUDA); the
    others' model.onnx holds fused GRU/LSTM nodes already, or no recurrence."""
    assert fused_shipped() == ["birnn", "rnn"]
    for name in fused_shipped():
        steps, fused = shipped_onnx(name), shipped_onnx(name).with_name("model.fused.onnx")
        assert read_props(onnx.load(str(steps)))["exporter"] == "steps"
        assert "RNN" in {n.op_type for n in onnx.load(str(fused)).graph.node}
        card = json.loads((steps.parent / MODEL_CARD).read_text())
        assert card["fused_form"]["sha256"] == hashlib.sha256(fused.read_bytes()).hexdigest()
        assert read_props(onnx.load(str(fused)))["model"] == name


@pytest.mark.parametrize("name", ["rnn", "birnn"])
def test_the_fused_form_answers_like_model_onnx(name):
    """The fused file is the same model: within the model's parity atol of model.onnx on the CPU."""
    x = batch(name, 64)
    steps, fused = shipped_onnx(name), shipped_onnx(name).with_name("model.fused.onnx")
    diff = np.abs(Classifier(steps, "cpu").run(x) - Classifier(fused, "cpu").run(x)).max()
    assert diff <= get_spec(name).atol


def test_each_provider_runs_its_form(tmp_path):
    """CUDA runs model.fused.onnx where it lies beside model.onnx; the CPU and TensorRT run model.onnx; with
    none beside it, CUDA runs model.onnx too. A fused file of another model is refused in one line."""
    rnn = shipped_onnx("rnn")
    assert form_file(rnn, "cuda") == rnn.with_name("model.fused.onnx")
    assert form_file(rnn, "cpu") == form_file(rnn, "tensorrt") == form_file(rnn, "openvino") == rnn
    assert form_file(shipped_onnx("gru"), "cuda") == shipped_onnx("gru")
    assert form_file(rnn.with_name("model.fused.onnx"), "cuda") == rnn.with_name("model.fused.onnx")
    shutil.copy(rnn, tmp_path / "model.onnx")
    shutil.copy(shipped_onnx("gru"), tmp_path / "model.fused.onnx")
    with pytest.raises(UsageError) as err:
        form_file(tmp_path / "model.onnx", "cuda")
    assert "holds model 'gru', not 'rnn'" in str(err.value) and "export the model again" in str(err.value)
    assert form_file(tmp_path / "model.onnx", "cpu") == tmp_path / "model.onnx"
    (tmp_path / "model.fused.onnx").write_bytes(b"not an onnx file")  # damaged: one line, not a traceback
    with pytest.raises(UsageError, match="ONNX Runtime cannot load .*model.fused.onnx"):
        form_file(tmp_path / "model.onnx", "cuda")


@pytest.mark.parametrize("name", ["rnn", "birnn"])
def test_shipped_fused_form_keeps_the_cards_accuracy(data_root, name):
    """On the whole real test split, the fused file classifies exactly as model.onnx does (the card's
    accuracy), its logits within the model's atol."""
    from edgecls.data import load_for_spec, normalize

    spec = get_spec(name)
    test = load_for_spec(spec, "test", download=False)
    x, y = normalize(test.images(), spec.preprocess).numpy(), test.labels.numpy()
    path = shipped_onnx(name)
    steps, fused = Classifier(path, "cpu"), Classifier(path.with_name("model.fused.onnx"), "cpu")
    a = np.concatenate([steps.run(x[i : i + 512]) for i in range(0, len(x), 512)])
    b = np.concatenate([fused.run(x[i : i + 512]) for i in range(0, len(x), 512)])
    assert np.abs(a - b).max() <= spec.atol
    assert (a.argmax(1) == y).mean() == (b.argmax(1) == y).mean()


@needs_gpu
@pytest.mark.parametrize("name", ["rnn", "gru", "lstm", "cnn"])
def test_cuda_runs_bound_and_graph_captured_like_the_cpu(name):
    """On CUDA: rnn runs its fused file; batch 1 replays a CUDA graph (or says why not), other sizes run
    bound; every size within the model's atol of the CPU provider, fresh inputs giving fresh answers."""
    cpu = Classifier(shipped_onnx(name), "cpu")
    cuda = Classifier(shipped_onnx(name), "cuda")
    engine = cuda.engine
    assert engine.path.name == ("model.fused.onnx" if name == "rnn" else "model.onnx")
    assert engine.execution(1).startswith("CUDA") and engine.execution(256).endswith("IOBinding")
    for rows, seed in ((1, 0), (1, 1), (7, 2), (256, 3), (1, 4)):
        x = batch(name, rows, seed)
        np.testing.assert_allclose(cuda.run(x), cpu.run(x), atol=get_spec(name).atol, rtol=0)
    print(name, engine.execution(1))


@needs_gpu
def test_infer_on_cuda_prints_results_only(cli):
    from edgecls.commands.samples import sample_files

    result = cli("infer", sample_files("fashion-mnist")[0], "--model", "rnn", "--provider", "cuda", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device")
def test_cuda_on_a_machine_without_one_is_still_one_line(cli):
    """Opening the fused file on CUDA happens after CUDA loads; without a GPU the refusal is unchanged."""
    from edgecls.commands.samples import sample_files

    result = cli("infer", sample_files("fashion-mnist")[0], "--model", "rnn", "--provider", "cuda")
    assert_one_line_error(result, "CUDA execution provider unavailable", "--provider cpu")
