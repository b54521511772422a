"""`edgecls infer --engine ray` on a local Ray (this machine's CPUs): the plain engine's answers, its bad-file
reports, and one-line errors for what cannot run."""

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error

from edgecls.commands.samples import sample_files
from edgecls.locations import shipped_onnx
from edgecls.runtime import Classifier

# Starts a local Ray cluster.
pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    yield
    ray.shutdown()


def folder_with_bad_files(tmp_path, dataset: str):
    folder = tmp_path / "images"
    folder.mkdir()
    for f in sample_files(dataset):
        shutil.copyfile(f, folder / f.name)  # copies: tests never write through links to samples/
    (folder / "notes.txt").write_text("not an image\n")
    first = sample_files(dataset)[0]
    (folder / f"cut{first.suffix}").write_bytes(first.read_bytes()[:40])
    return folder


def plain_csv(cli, folder, model, out, top_k):
    result = cli("infer", folder, "--model", model, "--format", "csv", "--top-k", top_k, "--output", out)
    return result, {str(Path(row["file"]).resolve()): row for row in csv.DictReader(out.open())}


@pytest.mark.parametrize("model, dataset", [("gru", "fashion-mnist"), ("cnn", "cifar10"), ("lstm", "emnist-bymerge")])
def test_ray_engine_gives_the_plain_engines_answers_and_reports(cli, tmp_path, model, dataset):
    folder = folder_with_bad_files(tmp_path, dataset)
    plain, rows = plain_csv(cli, folder, model, tmp_path / "plain.csv", 3)
    assert plain.exit_code == 1  # two files skipped

    out = tmp_path / "ray-out"
    result = cli("infer", folder, "--model", model, "--engine", "ray", "--output", out, "--top-k", "3")
    assert result.exit_code == 1, result.output
    got = pd.read_parquet(out)
    assert sorted(got["file"]) == sorted(rows)  # absolute paths: a cluster's nodes read them
    skipped = sorted(line for line in result.output.splitlines() if line.startswith("skipped "))
    assert skipped == sorted(line for line in plain.output.splitlines() if line.startswith("skipped "))
    assert len(skipped) == 2 and f"skipped {folder / 'notes.txt'}: not an image" in skipped

    classifier = Classifier(shipped_onnx(model), "cpu")
    ok = got[got["status"] == "ok"]
    _, probs = classifier.predict(list(ok["file"]))
    assert np.abs(np.stack(ok["probabilities"]) - probs).max() <= 1e-6
    for _, r in got.iterrows():
        want = rows[r["file"]]
        assert r["status"] == want["status"]
        if r["status"] == "ok":
            assert [r[f"label{i}"] for i in (1, 2, 3)] == [want[f"label{i}"] for i in (1, 2, 3)]
            assert max(abs(r[f"prob{i}"] - float(want[f"prob{i}"])) for i in (1, 2, 3)) <= 1e-6


def test_ray_engine_writes_csv_without_the_tensor_column(cli, tmp_path):
    out = tmp_path / "csv-out"
    result = cli(
        "infer",
        "samples/fashion-mnist",
        "--model",
        "gru",
        "--engine",
        "ray",
        "--output",
        out,
        "--format",
        "csv",
        "--actors",
        "1",
    )
    assert result.exit_code == 0, result.output
    frame = pd.concat(pd.read_csv(f) for f in sorted(out.glob("*.csv")))
    assert len(frame) == len(sample_files("fashion-mnist")) and "probabilities" not in frame.columns
    assert set(frame.columns) == {"file", "status", "label1", "prob1"}
    assert "1 actors x 1 CPU" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "{existing}"], "already exists; --engine ray writes a new folder"),
        ([], "--engine ray needs --output DIR"),
        (["--output", "{new}", "--format", "jsonl"], "--engine ray writes --format parquet or csv"),
        (["--output", "{new}", "--workers", "2"], "--resume, --workers and --threads are for the local engine"),
        (["--output", "{new}", "--actors", "64"], "would take all"),
        (["--output", "{new}", "--cpus-per-actor", "0"], "must be at least 1"),
    ],
)
def test_ray_engine_bad_input_is_one_line(cli, tmp_path, args, message):
    (tmp_path / "existing").mkdir()
    args = [a.format(existing=tmp_path / "existing", new=tmp_path / "new") for a in args]
    result = cli("infer", "samples/fashion-mnist", "--model", "gru", "--engine", "ray", *args)
    assert result.exit_code == 2
    assert_one_line_error(result, message)
    assert not (tmp_path / "new").exists()


def test_parquet_is_refused_without_ray_engine(cli, tmp_path):
    assert_one_line_error(
        cli("infer", "samples/fashion-mnist", "--model", "gru", "--format", "parquet"),
        "--format parquet and --actors go with --engine ray",
    )


def test_without_the_extra_one_line_names_it(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    result = cli("infer", "samples/fashion-mnist", "--model", "gru", "--engine", "ray", "--output", tmp_path / "o")
    assert result.exit_code == 2
    assert_one_line_error(result, "pip install 'edgecls[ray]'")
