"""`edgecls triton DIR`: the repository parses into Triton's own ModelConfig message and describes
the ONNX graph it holds."""

import hashlib

import onnx
from conftest import assert_one_line_error
from google.protobuf import text_format
from test_shipped import SHIPPED
from tritonclient.grpc import model_config_pb2

from edgecls.locations import shipped_onnx
from edgecls.runtime import Classifier

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32}


def parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_of_every_shipped_model_matches_its_onnx_graph(cli, tmp_path):
    repo = tmp_path / "repo"
    result = cli("triton", repo)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in repo.iterdir()) == sorted(SHIPPED)
    for name in SHIPPED:
        folder = repo / name
        assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
        source = shipped_onnx(name).read_bytes()
        assert hashlib.sha256((folder / "1" / "model.onnx").read_bytes()).digest() == hashlib.sha256(source).digest()

        config = parse(folder / "config.pbtxt")
        graph = onnx.load(str(folder / "1" / "model.onnx")).graph
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 64
        for tensors, values in ((config.input, graph.input), (config.output, graph.output)):
            assert [t.name for t in tensors] == [v.name for v in values]
            for t, v in zip(tensors, values):
                shape = v.type.tensor_type.shape.dim
                assert shape[0].dim_param == "batch"  # Triton's dims leave the batch axis out
                assert list(t.dims) == [d.dim_value for d in shape[1:]]
                assert t.data_type == ONNX_TO_TRITON[v.type.tensor_type.elem_type]
        assert config.output[0].label_filename == "labels.txt"
        labels = (folder / "labels.txt").read_text().splitlines()
        assert tuple(labels) == Classifier(shipped_onnx(name), "cpu", threads=1).class_names
        assert config.HasField("dynamic_batching")
        assert config.dynamic_batching.max_queue_delay_microseconds == 0  # Triton's default too
        (group,) = config.instance_group
        assert group.count == 1 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO


def test_options_and_rewrite(cli, tmp_path):
    repo = tmp_path / "repo"
    assert cli("triton", repo, "--model", "gru").exit_code == 0
    (repo / "gru" / "stale.txt").write_text("from an earlier export")
    result = cli(
        "triton",
        repo,
        "--model",
        "gru",
        "--model",
        "cnn",
        "--max-batch",
        "8",
        "--max-delay-ms",
        "0.5",
        "--instances",
        "2",
        "--kind",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in repo.iterdir()) == ["cnn", "gru"]  # built aside, no temporary folders left
    assert not (repo / "gru" / "stale.txt").exists()  # the folder was replaced whole
    config = parse(repo / "cnn" / "config.pbtxt")
    assert config.max_batch_size == 8 and config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert list(config.input[0].dims) == [3, 32, 32] and list(config.output[0].dims) == [10]


def test_a_gpu_repository_holds_the_form_cuda_runs(cli, tmp_path):
    """With --kind gpu, rnn's folder holds its fused form (ONNX RNN nodes, cuDNN on Triton's CUDA provider),
    gru's the file it has (fused GRU nodes already); for the CPU, the steps form edgecls runs there."""
    from edgecls.locations import shipped_onnx

    for kind, rnn_file in (("gpu", "model.fused.onnx"), ("cpu", "model.onnx")):
        result = cli("triton", tmp_path / kind, "--model", "rnn", "--model", "gru", "--kind", kind)
        assert result.exit_code == 0, result.output
        assert (tmp_path / kind / "rnn" / "1" / "model.onnx").read_bytes() == shipped_onnx("rnn").with_name(
            rnn_file
        ).read_bytes()
        assert (tmp_path / kind / "gru" / "1" / "model.onnx").read_bytes() == shipped_onnx("gru").read_bytes()


def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path):
    assert_one_line_error(cli("triton", tmp_path / "r", "--model", "resnet"), "unknown model 'resnet'")
    assert not (tmp_path / "r").exists()
    assert_one_line_error(cli("triton", tmp_path / "r", "--model", "gru", "--artifacts", tmp_path), "no ONNX model")
    assert_one_line_error(cli("triton", tmp_path / "r", "--max-batch", "0"), "--max-batch")
    assert_one_line_error(cli("triton", tmp_path / "r", "--instances", "0"), "--instances")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(cli("triton", tmp_path / "file"), "is a file")
    (tmp_path / "r" / "gru").mkdir(parents=True)
    (tmp_path / "r" / "gru" / "mine.txt").write_text("a user's own folder")
    result = cli("triton", tmp_path / "r", "--model", "gru")
    assert_one_line_error(result, "not a model folder")
    assert result.exit_code == 2
    assert (tmp_path / "r" / "gru" / "mine.txt").read_text() == "a user's own folder"


def test_pbtxt_writer_round_trips():
    from edgecls.serve.triton import to_pbtxt

    config = {
        "name": 'we"ird\\name',
        "max_batch_size": 4,
        "input": [{"name": "a", "data_type": "TYPE_FP32", "dims": [1, 2]}],
        "dynamic_batching": {"max_queue_delay_microseconds": 7},
    }
    parsed = text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())
    assert parsed.name == 'we"ird\\name' and list(parsed.input[0].dims) == [1, 2]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 7 and parsed.max_batch_size == 4
