"""`edgecls bench` and benchmarks/accuracy.py on tiny configurations (no timing assertions)."""

import importlib.util
import json

import pytest
from conftest import REPO, assert_one_line_error, cifar_test_images, cuda_device_present
from test_export import write_checkpoint

from edgecls.data import DEBIAN_DATASETS
from edgecls.export import export_model
from edgecls.registry import get_spec, model_names


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory, data_root):
    """A cnn checkpoint with its export, so eager and ONNX are the same model."""
    art = tmp_path_factory.mktemp("bench")
    write_checkpoint(get_spec("cnn"), art / "cnn" / "checkpoint.pt", seed=3)
    export_model("cnn", artifacts=art, exporter="torchscript")
    return art


def test_bench_same_model_side_by_side_with_end_to_end(cli, trained_cnn, tmp_path):
    out = tmp_path / "b"
    from edgecls.data import load_split

    # The end-to-end part reads JPEG files: the data's own, or (pickled CIFAR-10) a tree written from it.
    tree = (
        []
        if load_split("cifar10", "test").files
        else ["--data-dir", cifar_test_images(tmp_path / "c" / "test", 4).parent]
    )
    result = cli(
        "bench",
        "--model",
        "cnn",
        "--batch-sizes",
        "1,3",
        "--seconds",
        "0.05",
        "--threads",
        "1",
        "--e2e-images",
        "40",
        "--artifacts",
        trained_cnn,
        "--out",
        out,
        *tree,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    assert report["hardware"]["threads"] == 1 and report["gemm_gflops"] > 0
    (model,) = report["models"]
    assert model["model"] == "cnn" and model["eager_weights"].endswith("checkpoint.pt")
    assert model["flops_per_image"] > 1e5
    assert [r["batch_size"] for r in model["rows"]] == [1, 3]
    for row in model["rows"]:
        assert row["max_abs_logit_diff"] <= get_spec("cnn").atol
        for side in ("eager", "onnx"):
            assert row[side]["runs"] >= 3 and row[side]["p90_ms"] >= row[side]["median_ms"] > 0
            assert row[side]["images_per_s"] == pytest.approx(row["batch_size"] / row[side]["median_ms"] * 1e3)
        assert row["speedup"] == pytest.approx(row["onnx"]["images_per_s"] / row["eager"]["images_per_s"])
        for side in ("eager", "onnx"):  # min of rounds beside the median
            assert (
                0 < row[side]["min_round_ms"]
                and row[side]["images_per_s_best_round"] >= row[side]["images_per_s"] * 0.5
            )
        assert row["onnx_execution"] == "1 session, 1 thread"  # --threads 1: nothing to split
    assert set(report["hardware"]["isa"]) <= set(__import__("edgecls.machine").machine.ISA_FLAGS)
    assert report["hardware"]["cpu"] and model["onnx_nodes"] > 5
    # every missed aim names what bounds it; a met aim names nothing
    rows = {r["batch_size"]: r for r in model["rows"]}
    assert any(b.startswith("batch 1:") for b in model["bounds"]) == (rows[1]["speedup"] < 4)
    e2e = report["end_to_end"]
    assert e2e["images"] == 40
    # the same weights on the same JPEGs: both paths decode with Pillow, so they agree up to near-ties
    assert abs(e2e["edgecls_infer"]["accuracy_pct"] - e2e["pytorch_baseline"]["accuracy_pct"]) <= 100 / 40
    assert e2e["pytorch_baseline_2_workers"]["accuracy_pct"] == e2e["pytorch_baseline"]["accuracy_pct"]
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_shipped_models_without_checkpoints(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/: shipped ONNX files, fresh eager weights
    result = cli(
        "bench",
        "--model",
        "all",
        "--batch-sizes",
        "2",
        "--seconds",
        "0.02",
        "--threads",
        "1",
        "--e2e-images",
        "0",
        "--out",
        tmp_path / "b",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    from test_shipped import SHIPPED

    assert sorted(m["model"] for m in report["models"]) == sorted(SHIPPED)
    assert sorted(report["skipped"] + SHIPPED) == sorted(model_names())
    assert all(m["rows"][0]["max_abs_logit_diff"] is None for m in report["models"])
    assert "end_to_end" not in report


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--batch-sizes", "1,x"), "comma-separated"),
        (("--batch-sizes", "0"), "positive"),
        (("--threads", "0"), "--threads"),
        (("--seconds", "0"), "--seconds"),
        (("--model", "grux"), "Did you mean 'gru'"),
        (("--e2e-images", "-1"), "--e2e-images"),
    ],
)
def test_bench_bad_input(cli, tmp_path, args, needle):
    assert_one_line_error(cli("bench", "--model", "gru", *args, "--out", tmp_path), needle)
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device")
def test_bench_cuda_without_a_gpu_is_one_line(cli, tmp_path):
    assert_one_line_error(cli("bench", "--model", "gru", "--provider", "cuda", "--out", tmp_path), "--provider cpu")


def test_bench_damaged_model_file_fails_before_timing(cli, tmp_path):
    (tmp_path / "gru").mkdir()
    (tmp_path / "gru" / "model.onnx").write_bytes(b"not an onnx file")
    result = cli("bench", "--model", "gru", "--artifacts", tmp_path, "--out", tmp_path / "b")
    assert_one_line_error(result, "ONNX Runtime cannot load")
    assert "GEMM" not in result.output and not (tmp_path / "b" / "bench.json").exists()


def test_bench_missing_model_file(cli, tmp_path):
    assert_one_line_error(
        cli("bench", "--model", "gru", "--artifacts", tmp_path, "--out", tmp_path / "b"), "no ONNX model at"
    )


def _accuracy_script():
    spec = importlib.util.spec_from_file_location("accuracy_bench", REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accuracy_benchmark_quick_run_writes_the_table(tmp_path, data_root, capsys):
    """Train, export and evaluate through the script; a quick run misses the report bar, so it exits 1
    and cannot ship."""
    script = _accuracy_script()
    code = script.main(
        [
            "--models",
            "gru",
            "--epochs",
            "1",
            "--limit",
            "300",
            "--runs",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path / "res"),
            "--threads",
            "1",
        ]
    )
    assert code == 1
    rows = json.loads((tmp_path / "res" / "accuracy.json").read_text())["rows"]
    (row,) = rows
    assert row["model"] == "gru" and row["test_images"] == 10_000 and row["epochs"] == 1
    assert row["parity_passed"] and row["accuracy_diff_pp"] <= 0.01 and not row["beats_report"]
    assert not row["full_data_defaults"]
    md = (tmp_path / "res" / "accuracy.md").read_text()
    assert "| `gru` |" in md and "Quick run" in md
    assert "missed the bar" in capsys.readouterr().err
    assert script.main(["--models", "gru", "--epochs", "1", "--ship", "--runs", str(tmp_path / "runs")]) == 2


def _peers_run(tmp_path, **env):
    """`edgecls bench --peers` in its own process: OpenVINO's thread pools stay out of the test process
    (loaded there, they were followed by a crash of a later torchrun test in the same process)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "edgecls", "bench", "--model", "gru", "--batch-sizes", "1,64", "--seconds", "0.05",
           "--threads", "1", "--e2e-images", "0", "--peers", "--out", str(tmp_path / "b")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((tmp_path / "b" / "bench.json").read_text())["models"][0], done.stdout + done.stderr


def _check_peer_rows(model: dict) -> None:
    """Each row: OpenVINO at its default precision and in fp32 with their rates; every configuration edgecls
    offers here with its own rate; and as `best` the fastest of those that count: ONNX Runtime fp32, the
    fp32 ones, and a reduced precision once its measured accuracy is within 0.5 points."""
    acc = model.get("accuracy_points", {})
    for row in model["rows"]:
        peers = row["peers"]
        assert set(peers) == {"openvino", "openvino-fp32"} and peers["openvino-fp32"]["precision"] == "fp32"
        assert all(p["engine"] == "openvino" and p["images_per_s"] > 0 for p in peers.values())
        assert "openvino-fp32" in row["offered"]  # offered (--provider openvino) as well as a peer
        counted = {("onnxruntime", "fp32"): row["onnx"]["images_per_s"]}
        for name, stats in row["offered"].items():
            assert name == f"{'cpu' if stats['engine'] == 'onnxruntime' else stats['engine']}-{stats['precision']}"
            delta = acc.get(name, {}).get("delta_points")
            if stats["precision"] == "fp32" or (delta is not None and abs(delta) <= 0.5):
                counted[stats["engine"], stats["precision"]] = stats["images_per_s"]
        best = row["best"]
        assert best["images_per_s"] == max(counted.values()) == counted[(best["engine"], best["precision"])]
        faster = [n for n, p in peers.items() if p["images_per_s"] > best["images_per_s"]]
        said = [b for b in model["bounds"] if b.startswith(f"batch {row['batch_size']}: OpenVINO (")]
        assert len(said) == len(faster)  # a peer that outruns the best is explained


def test_bench_peers_without_test_data(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgecls[openvino]')")
    if (DEBIAN_DATASETS / "fashion-mnist").exists():
        pytest.skip(f"Fashion-MNIST is installed in {DEBIAN_DATASETS}, which the data locator always reads")
    # $EDGECLS_DATA set (to an empty place) keeps the locator from ../shared/datasets; the cache is empty
    model, output = _peers_run(tmp_path, EDGECLS_DATA=str(tmp_path / "none"), XDG_CACHE_HOME=str(tmp_path))
    _check_peer_rows(model)
    assert "accuracy_points" not in model and all(r["best"]["accuracy_delta_points"] is None for r in model["rows"])
    assert "accuracy not measured" in output


def test_bench_peers_measures_accuracy_on_the_full_test_split(tmp_path, data_root):
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgecls[openvino]')")
    model, _ = _peers_run(tmp_path, EDGECLS_DATA=str(data_root.resolve()))
    _check_peer_rows(model)
    acc = model["accuracy_points"]
    assert acc["images"] == 10_000 and acc["onnx"]["delta_points"] == 0
    assert abs(acc["onnx"]["accuracy_pct"] - 91.16) < 0.01  # the shipped gru's card
    assert abs(acc["openvino-fp32"]["delta_points"]) <= 0.02  # fp32 against fp32: at most a tie flipped
    assert all(r["best"]["accuracy_delta_points"] is not None for r in model["rows"])
    offered = model["rows"][0]["offered"]
    assert set(offered) <= set(acc)  # every configuration edgecls offers here is measured on the split
    reduced = {n: acc[n]["delta_points"] for n, v in offered.items() if v["precision"] != "fp32"}
    assert all(abs(d) <= 0.5 for d in reduced.values()), reduced  # gru in bf16/fp16 passes the gate here
    if model["rows"][-1]["peers"]["openvino"]["precision"] == "bf16":  # a CPU with AMX or AVX512-BF16
        assert abs(acc["openvino"]["delta_points"]) <= 0.5  # gru in bf16 passes the gate...
        assert model["rows"][-1]["best"]["images_per_s"] >= model["rows"][-1]["peers"]["openvino"]["images_per_s"]


def test_bench_runs_the_onnx_side_in_the_precision_asked_for(tmp_path, monkeypatch):
    """--precision int8: the shipped cnn's int8 file is the ONNX side (no logit comparison: it is gated on
    accuracy); --precision auto: each batch size's choice, here with no test data so fp32 (cached after)."""
    from edgecls.commands.bench import bench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGECLS_DATA", str(tmp_path / "no-data"))
    if (DEBIAN_DATASETS / "cifar10").exists():
        pytest.skip(f"CIFAR-10 is installed in {DEBIAN_DATASETS}, which the data locator always reads")
    common = dict(provider="cpu", batch_sizes=(1, 16), threads=2, seconds=0.05, e2e_images=0)
    int8 = bench("cnn", **common, out=tmp_path / "int8", precision="int8")
    rows = int8["models"][0]["rows"]
    assert [r["onnx_precision"] for r in rows] == ["int8", "int8"] and int8["precision"] == "int8"
    assert all(r["max_abs_logit_diff"] is None for r in rows)
    auto = bench("cnn", **common, out=tmp_path / "auto", precision="auto")
    assert [r["onnx_precision"] for r in auto["models"][0]["rows"]] == ["fp32", "fp32"]
    cached = json.loads((tmp_path / "cache" / "edgecls" / "choices.json").read_text())
    assert sorted(entry["batch_size"] for entry in cached.values()) == [1, 16]
