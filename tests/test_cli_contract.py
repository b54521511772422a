"""One exit-code contract for every command: success 0, partial results 1, and a usage error (unknown
model, bad option, missing path, wrong file) 2 with one `Error:` line that names the fix, no traceback,
and nothing written."""

import pytest
from conftest import REPO, assert_one_line_error
from serving import free_port

TRAINING = ["train", "export", "evaluate", "bench"]


def commands_with_model(tmp_path, model: str) -> list[tuple]:
    """Every command, naming `model` the way it takes one."""
    port = str(free_port())
    return [
        ("train", "--model", model, "--artifacts", tmp_path / "runs"),
        ("export", "--model", model, "--artifacts", tmp_path / "runs"),
        ("evaluate", "--model", model, "--artifacts", tmp_path / "runs"),
        ("quantize", "--model", model, "--precision", "int8", "--artifacts", tmp_path / "runs"),
        ("bench", "--model", model, "--out", tmp_path / "bench"),
        ("infer", tmp_path, "--model", model),
        ("serve", "--model", model, "--port", port),
        ("web", "--model", model, "--port", port),
        ("triton", tmp_path / "repo", "--model", model),
    ]


def test_an_unknown_model_is_a_usage_error_everywhere(cli, tmp_path):
    for args in commands_with_model(tmp_path, "nope"):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert_one_line_error(result, "unknown model 'nope'", "choose one of")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere


def test_an_unknown_option_is_a_usage_error_everywhere(cli, tmp_path):
    from edgecls.commands.cli import main

    for name in main.commands:
        result = cli(name, "--no-such-option")
        assert result.exit_code == 2, (name, result.output)
        assert_one_line_error(result, "--no-such-option")


@pytest.mark.parametrize(
    "args, needle",
    [
        (("infer", "{tmp}/missing.png", "--model", "gru"), "does not exist"),
        (("infer", "{samples}", "--onnx", "{tmp}/missing.onnx"), "no ONNX model"),
        (
            ("export", "--model", "gru", "--checkpoint", "{tmp}/missing.pt", "--artifacts", "{tmp}/runs"),
            "no checkpoint",
        ),  # fmt: skip
        (("evaluate", "--model", "gru", "--artifacts", "{tmp}/runs"), "run `edgecls train --model gru`"),
        (("quantize", "--model", "gru", "--precision", "int8", "--onnx", "{tmp}/missing.onnx"), "no ONNX model"),
        (("train", "--model", "gru", "--data-dir", "{tmp}/missing", "--artifacts", "{tmp}/runs"), "--data-dir"),
        (("serve", "--onnx", "{tmp}/missing.onnx", "--port", "{port}"), "no such file"),
        (("triton", "{tmp}/repo", "--model", "gru", "--artifacts", "{tmp}/runs"), "run `edgecls export"),
        (("bench", "--model", "gru", "--artifacts", "{tmp}/runs", "--out", "{tmp}/bench"), "no ONNX model"),
    ],
)
def test_a_missing_path_is_a_usage_error(cli, tmp_path, args, needle):
    filled = [a.format(tmp=tmp_path, port=free_port(), samples=REPO / "samples" / "fashion-mnist") for a in args]
    result = cli(*filled)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result, needle)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("infer", "{tmp}", "--onnx", "{bad}"),
        ("export", "--model", "gru", "--checkpoint", "{bad}", "--artifacts", "{tmp}/runs"),
        ("quantize", "--model", "gru", "--precision", "fp16", "--onnx", "{bad}", "--artifacts", "{tmp}/runs"),
        ("serve", "--onnx", "{bad}", "--port", "{port}"),
    ],
)
def test_a_wrong_file_is_a_usage_error(cli, tmp_path, args):
    bad = tmp_path / "not-a-model.onnx"
    bad.write_bytes(b"this is no model")
    result = cli(*[a.format(tmp=tmp_path, bad=bad, port=free_port()) for a in args])
    assert result.exit_code == 2, result.output
    assert_one_line_error(result, str(bad))
    assert not (tmp_path / "runs").exists()
