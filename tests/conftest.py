import os
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data sets (EDGECLS_DATA, else ../shared/datasets). Missing data fails, never skips."""
    root = Path(os.environ.get("EDGECLS_DATA") or REPO.parent / "shared" / "datasets")
    if not (root / "FashionMNIST").is_dir():
        pytest.fail(f"real data sets not found at {root}; set EDGECLS_DATA (see README)")
    os.environ["EDGECLS_DATA"] = str(root)
    return root


@pytest.fixture
def cli(data_root):
    """Invoke the edgecls CLI in-process; returns click's Result."""
    from edgecls.cli import main

    def invoke(*args: str, **env: str):
        return CliRunner().invoke(main, [str(a) for a in args], env=env or None, catch_exceptions=False)

    return invoke


def assert_one_line_error(result, *needles: str) -> str:
    """A user error: non-zero exit, exactly one 'Error: ...' line, no traceback."""
    assert result.exit_code != 0, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def quick_train(cli, name: str, artifacts, limit: int):
    """`edgecls train --epochs 1 --limit N`, after the model it starts from (spec init_from), if any."""
    from edgecls.registry import get_spec

    source = get_spec(name).hparams.get("init_from")
    if source:
        first = cli("train", "--model", source, "--epochs", "1", "--limit", str(limit), "--artifacts", artifacts)
        assert first.exit_code == 0, first.output
    return cli("train", "--model", name, "--epochs", "1", "--limit", str(limit), "--artifacts", artifacts)
