import importlib.metadata

import click
import pytest
import torch
from conftest import assert_one_line_error

from edgecls.errors import EdgeclsError
from edgecls.registry import get_spec, model_names

NAMES = model_names()


def test_zoo_is_the_five_report_systems():
    assert NAMES == ["cnn", "rnn", "birnn", "gru", "crnn", "lstm", "lstm-binary"]
    assert get_spec("lstm").num_classes == 47 and get_spec("lstm-binary").class_names == ("digit", "letter")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 5])
def test_forward_shape(name, batch):
    spec = get_spec(name)
    model = spec.build().eval()
    out = model(torch.randn(batch, *spec.input_shape))
    assert out.shape == (batch, spec.num_classes) and out.dtype == torch.float32
    # logits, not probabilities: rows are not constrained to sum to one
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_lowers_the_loss(name):
    spec = get_spec(name)
    torch.manual_seed(0)
    model = spec.build().train()
    x, y = torch.randn(16, *spec.input_shape), torch.randint(0, spec.num_classes, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss():
        torch.manual_seed(1)  # same dropout masks before and after the step
        return torch.nn.functional.cross_entropy(model(x), y)

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    assert loss().item() < before.item()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "cnn"])
def test_recurrent_models_accept_any_batch_after_another(name):
    """No hidden state sized by an earlier batch (the frozen-batch export bug)."""
    spec = get_spec(name)
    model = spec.build().eval()
    for batch in (3, 1, 8):
        assert model(torch.randn(batch, *spec.input_shape)).shape[0] == batch


def test_unknown_model_lists_names_and_hint():
    with pytest.raises(EdgeclsError) as err:
        get_spec("gr")
    assert "gru" in str(err.value) and "Did you mean 'gru'" in str(err.value)
    assert all(n in str(err.value) for n in NAMES)


def test_models_command_prints_table(cli):
    result = cli("models")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:5] == ["name", "dataset", "input", "classes", "params"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(NAMES)
    assert rows["lstm"][3] == "47" and rows["cnn"][2] == "3x32x32"
    assert rows["gru"][4] == f"{sum(p.numel() for p in get_spec('gru').build().parameters()):,}"


@pytest.mark.parametrize("name", NAMES)
def test_the_registry_parameter_count_is_the_built_models(name):
    spec = get_spec(name)
    assert spec.params == sum(p.numel() for p in spec.build().parameters())


def torch_imported(*args: str) -> list[str]:
    """Modules of torch that `python -X importtime -m edgecls ARGS` imported."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgecls", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    names = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return [n for n in names if n.split(".")[0] in ("torch", "torchvision")]


def test_models_and_every_help_never_import_torch():
    """The metadata commands answer at once in the full install too: torch alone took 2-9 s to import."""
    from edgecls.commands.cli import main

    assert torch_imported("models") == []
    for args in [("--help",), *((name, "--help") for name in main.commands)]:
        assert torch_imported(*args) == [], args


def test_every_option_has_help_and_the_top_level_help_is_whole(cli):
    from edgecls.commands.cli import main

    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"edgecls {name} {param.opts[0]} has no help text"
    listing = " ".join(cli("--help").output.split())
    for name, command in main.commands.items():
        first = command.get_short_help_str(limit=10_000)  # the first sentence of its help
        assert not first.endswith("...") and " ".join(first.split()) in listing, name


def test_cli_unknown_model(cli):
    assert_one_line_error(cli("train", "--model", "gruu"), "unknown model 'gruu'", "Did you mean 'gru'")


def test_no_top_level_stage_packages():
    """The design's train/, export/, runtime/ folders install as edgecls.* sub-packages only."""
    import edgecls.export
    import edgecls.runtime
    import edgecls.train

    assert edgecls.train.__file__.replace("\\", "/").endswith("/train/__init__.py")
    assert edgecls.runtime.__file__.replace("\\", "/").endswith("/runtime/__init__.py")
    assert edgecls.export.__file__.replace("\\", "/").endswith("/export/__init__.py")
    top_level = importlib.metadata.distribution("edgecls").read_text("top_level.txt").split()
    assert top_level == ["edgecls"]


def test_rnn_starts_with_orthogonal_recurrent_weights():
    torch.manual_seed(0)
    rnn = get_spec("rnn").build().rnn
    for name in ("weight_hh_l0", "weight_hh_l1"):
        w = getattr(rnn, name).detach()
        assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-5), name
    torch.manual_seed(0)
    gru = get_spec("gru").build().rnn.weight_hh_l0.detach()[:128]  # the others keep PyTorch's uniform init
    assert not torch.allclose(gru @ gru.T, torch.eye(128), atol=1e-2)


def test_birnn_head_reads_each_directions_final_state_per_image():
    """Forward direction at the last row, backward at the first (its own final state), image by image:
    unlike the source report's reshape, no image's features mix with another's."""
    from edgecls.models import rows_as_sequence

    torch.manual_seed(0)
    model = get_spec("birnn").build().eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.inference_mode():
        _, h_n = model.rnn(rows_as_sequence(x))  # [2 directions, N, hidden] for one layer
        assert torch.allclose(model.head(torch.cat([h_n[0], h_n[1]], dim=1)), model(x), atol=1e-6)
        alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
        assert torch.allclose(alone, model(x), atol=1e-5)
    assert model.rnn.bidirectional and model.rnn.nonlinearity == "tanh"
    w = model.rnn.weight_hh_l0_reverse.detach()
    assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-5)  # orthogonal start, both directions
