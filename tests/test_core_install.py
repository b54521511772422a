"""The runtime-only install: a real virtual environment holding `pip install .` (no extras), as an edge box
would have it. infer, serve and triton work there; the commands that need PyTorch say which extra to
install, in one line, with exit code 2.

The venv lives in .venv-core (or $EDGECLS_CORE_VENV). Its dependencies are kept between sessions while
pyproject.toml is unchanged; edgecls itself is reinstalled from this checkout every session."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.http as tc
from conftest import REPO
from serving import free_port, model_inputs, multipart, request
from test_shipped import SHIPPED

from edgecls.commands.samples import sample_files
from edgecls.locations import shipped_onnx
from edgecls.runtime import Classifier
from edgecls.runtime.infer import infer

# Builds a real virtual environment with pip (needs the package registry).
pytestmark = pytest.mark.slow

TRAIN_ONLY = ("torch", "torchvision", "onnx", "onnxscript", "matplotlib")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="session")
def core_venv() -> dict:
    venv = REPO / os.environ.get("EDGECLS_CORE_VENV", ".venv-core")
    stamp = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if (venv / "stamp").is_file() and (venv / "stamp").read_text() == stamp:
        cmd = pip + ["--no-deps", "--force-reinstall", str(REPO)]
    else:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env())
        cmd = pip + [str(REPO)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    (venv / "stamp").write_text(stamp)
    return {"python": str(venv / "bin" / "python"), "edgecls": str(venv / "bin" / "edgecls"), "root": venv}


def test_the_installed_package_is_imported_from_the_checkout_root(core_venv):
    """Python started in the checkout (a non-editable install) imports the installed edgecls whole: no
    folder of the checkout shadows it with a partial package."""
    probe = "import edgecls, edgecls.runtime, edgecls.commands.cli; print(edgecls.__file__, edgecls.runtime.__file__)"
    done = subprocess.run([core_venv["python"], "-c", probe], cwd=REPO, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all("site-packages" in path for path in done.stdout.split()), done.stdout


def run(core, *args, timeout=120):
    return subprocess.run(
        [core["edgecls"], *map(str, args)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def test_the_core_install_has_no_torch(core_venv):
    probe = (
        "import importlib.util as u, json, edgecls.runtime, edgecls.serve, edgecls.commands.cli;"
        f"print(json.dumps([m for m in {TRAIN_ONLY!r} if u.find_spec(m)]))"
    )
    done = subprocess.run([core_venv["python"], "-c", probe], cwd="/", env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert (
        "site-packages"
        in subprocess.run(
            [core_venv["python"], "-c", "import edgecls; print(edgecls.__file__)"],
            cwd="/",
            env=_env(),
            capture_output=True,
            text=True,
        ).stdout
    )


def test_infer_works_and_equals_the_full_install(core_venv, tmp_path):
    files = sample_files("cifar10")
    done = run(core_venv, "infer", "samples/cifar10", "--model", "cnn", "--format", "json", "--top-k", "2")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "full.json"
    assert infer([str(f) for f in files], str(shipped_onnx("cnn")), "cpu", top_k=2, fmt="json", output=str(out)) == 0
    core, full = json.loads(done.stdout), json.loads(out.read_text())
    assert [r["file"] for r in core] == [str(f.relative_to(REPO)) for f in files]
    assert [r["top_k"] for r in core] == [r["top_k"] for r in full]


def test_the_wheel_carries_the_shipped_models_to_any_folder(core_venv, tmp_path):
    """Installed from the wheel and run from a folder that is not the checkout: `--model NAME` finds every
    shipped model inside the package and answers like the checkout; `edgecls models` says so, and
    $EDGECLS_MODELS points it at other trained models."""
    from edgecls.commands.samples import DATASET_FOLDERS
    from edgecls.registry import get_spec

    away = tmp_path / "elsewhere"
    away.mkdir()
    for name in SHIPPED:
        folder = REPO / "samples" / DATASET_FOLDERS[get_spec(name).dataset]
        done = subprocess.run([core_venv["edgecls"], "infer", str(folder), "--model", name, "--format", "jsonl",
                               "--top-k", "2"], cwd=away, env=_env(), capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, (name, done.stderr)
        assert "site-packages" in done.stderr.splitlines()[-1]  # the summary names the model file it used
        ours = tmp_path / f"{name}.jsonl"
        infer([str(folder)], str(shipped_onnx(name)), "cpu", top_k=2, fmt="jsonl", output=str(ours))
        got = [json.loads(line) for line in done.stdout.splitlines()]
        assert [r["top_k"] for r in got] == [json.loads(line)["top_k"] for line in ours.read_text().splitlines()]
    listing = subprocess.run([core_venv["edgecls"], "models"], cwd=away, env=_env(), capture_output=True, text=True)
    assert listing.stdout.count("shipped (") == len(SHIPPED) and "site-packages" in listing.stdout
    other = tmp_path / "mine"
    shutil.copytree(REPO / "artifacts" / "gru", other / "gru")
    env = {**_env(), "EDGECLS_MODELS": str(other)}
    listing = subprocess.run([core_venv["edgecls"], "models"], cwd=away, env=env, capture_output=True, text=True)
    assert f"$EDGECLS_MODELS ({other / 'gru' / 'model.onnx'})" in listing.stdout
    assert "none: train and export it" in listing.stdout  # cnn and the rest are not in that folder


@pytest.mark.parametrize(
    "command", [["train", "--model", "gru"], ["export", "--model", "gru"], ["evaluate", "--model", "gru"], ["bench"]]
)
def test_torch_commands_name_the_extra_in_one_line(core_venv, command):
    done = run(core_venv, *command)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert f"`edgecls {command[0]}` needs the training extra" in lines[0]
    assert "pip install 'edgecls[train]'" in lines[0] and "torch" in lines[0]


def test_ray_engine_without_the_extra_names_it_in_one_line(core_venv, tmp_path):
    done = run(
        core_venv, "infer", "samples/fashion-mnist", "--model", "gru", "--engine", "ray", "--output", tmp_path / "out"
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --engine ray needs the ray extra"), done.stderr
    assert "pip install 'edgecls[ray]'" in lines[0] and not (tmp_path / "out").exists()


def test_models_lists_the_zoo_without_torch(core_venv):
    done = run(core_venv, "models")
    assert done.returncode == 0, done.stderr
    assert "gru" in done.stdout and "161,034" in done.stdout  # the registry's counts, no torch needed


def start_server(core, port: int, *models: str) -> subprocess.Popen:
    """`edgecls serve` from the core venv, once /v2/health/ready answers 200."""
    args = [a for m in models for a in ("--model", m)]
    proc = subprocess.Popen(
        [core["edgecls"], "serve", *args, "--port", str(port), "--threads", "1", "--provider", "cpu"],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if request(f"127.0.0.1:{port}", "GET", "/v2/health/ready")[0] == 200:
                return proc
        except OSError:
            pass
        assert time.monotonic() < deadline, "server did not get ready in 60 s"
        time.sleep(0.2)


def test_serve_and_triton_work_in_the_core_install(core_venv, tmp_path):
    assert run(core_venv, "triton", tmp_path / "repo", "--model", "gru").returncode == 0
    assert (tmp_path / "repo" / "gru" / "1" / "model.onnx").is_file()

    port = free_port()
    proc = start_server(core_venv, port, "gru", "cnn")
    url = f"127.0.0.1:{port}"
    try:
        for name in ("gru", "cnn"):
            clf = Classifier(shipped_onnx(name), "cpu", threads=1)
            files = sample_files("cifar10" if name == "cnn" else "fashion-mnist")[:5]
            x = model_inputs(clf, files)
            for binary in (True, False):
                inp = tc.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                got = (
                    tc.InferenceServerClient(url)
                    .infer(name, [inp], outputs=[tc.InferRequestedOutput("logits", binary_data=binary)])
                    .as_numpy("logits")
                )
                np.testing.assert_allclose(got, clf.run(x), atol=1e-5, rtol=0)
            body, ctype = multipart([(f.name, f.read_bytes()) for f in files])
            status, _, data = request(url, "POST", f"/v2/models/{name}/classify", body, {"Content-Type": ctype})
            assert status == 200, data
            labels, _ = clf.predict(files)
            assert [r["top_k"][0]["label"] for r in json.loads(data)["results"]] == labels
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and f"listening on http://127.0.0.1:{port}" in err
    assert err.strip().endswith("stopped")


def test_sigterm_stops_the_server_gracefully(core_venv):
    port = free_port()
    proc = start_server(core_venv, port, "gru")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err  # a graceful stop, as an orchestrator expects (uvicorn alone re-raised it)
    assert "Traceback" not in err and err.rstrip().endswith("stopped")
