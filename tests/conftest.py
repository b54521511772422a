"""Two tiers: the fast one (`scripts/test.sh --fast`: no data sets, no network, no browser, synthetic
inputs and the shipped models) and the full one (everything). A test is in the full tier only when it is
marked `slow`: explicitly, or because it asks for the real data (`data_root`)."""

import functools
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "data_root" in item.fixturenames:
            item.add_marker(pytest.mark.slow)


def _child_servers() -> list[str]:
    """Command lines of this process's live children that serve (edgecls serve or web, or a peer server)."""
    me, found = str(os.getpid()), []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmd = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended while being read
            continue
        if fields.get("PPid", "").strip() == me and fields.get("State", "").strip()[:1] != "Z" and " serve" in cmd:
            found.append(cmd.strip())
    return found


@pytest.fixture(autouse=True, scope="module")
def no_server_left_behind(request):
    """The serving tests start servers as processes; each module must leave none running."""
    yield
    if request.module.__name__.startswith(("test_serve", "test_web")):
        deadline = time.monotonic() + 10
        while _child_servers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _child_servers(), f"{request.module.__name__} left servers running: {_child_servers()}"


@functools.cache
def cuda_device_present() -> bool:
    """A CUDA GPU on this machine, as its driver reports it. Only its absence skips a GPU test: where one
    is present, any error on the CUDA path fails the test."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


needs_gpu = pytest.mark.skipif(not cuda_device_present(), reason="no CUDA device on this machine")


def find_test_data(shared: Path | None = None) -> Path | None:
    """Where the tests read the real data sets from, by the CLI's own lookup: $EDGECLS_DATA, else `shared`
    (edgecls.data.SHARED_SIBLING: ../shared/datasets beside the checkout), else (None) wherever the locator
    finds or fetches each one: Debian's /usr/share/datasets, the user cache, then a torchvision download
    into the cache. Raises the locator's one-line EdgeclsError when a data set is nowhere."""
    from edgecls.data import DATASETS, SHARED_SIBLING, load_split
    from edgecls.errors import EdgeclsError

    shared = SHARED_SIBLING if shared is None else shared

    root = Path(os.environ["EDGECLS_DATA"]) if os.environ.get("EDGECLS_DATA") else shared if shared.is_dir() else None
    if root is not None:
        os.environ["EDGECLS_DATA"] = str(root)
        if not (root / "FashionMNIST").is_dir():
            raise EdgeclsError(
                f"real data sets not found at {root}; set EDGECLS_DATA to a torchvision root (see docs/guide/data.md)"
            )
        return root  # a named root is read as it is; loading every split here would add seconds to each session
    for dataset in DATASETS:
        for split in ("train", "test"):
            load_split(dataset, split)
    return root


@pytest.fixture(scope="session")
def data_root() -> Path | None:
    """The real data (find_test_data). Missing data fails with the locator's message; it never skips."""
    from edgecls.errors import EdgeclsError

    try:
        return find_test_data()
    except EdgeclsError as exc:
        pytest.fail(f"real data for the tests: {exc}", pytrace=False)


def cifar_test_images(folder: Path, per_class: int) -> Path:
    """A CIFAR-10 test ImageFolder tree <folder>/<class>/ of `per_class` real images each: the JPEG files
    themselves where the data is an image tree, else PNGs of the pixels (torchvision's pickled copy)."""
    import numpy as np
    from PIL import Image

    from edgecls.data import load_split

    test = load_split("cifar10", "test")
    for label, name in enumerate(test.classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in (test.labels == label).nonzero().flatten()[:per_class].tolist():
            if test.files is not None:
                src = Path(test.files[i])
                (folder / name / src.name).write_bytes(src.read_bytes())
            else:
                Image.fromarray(np.ascontiguousarray(test.images()[i].permute(1, 2, 0).numpy())).save(
                    folder / name / f"{i:05d}.png"
                )
    return folder


@pytest.fixture
def cli():
    """Invoke the edgecls CLI in-process; returns click's Result. Tests that read the real data sets ask
    for `data_root` too."""
    from edgecls.commands.cli import main

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
