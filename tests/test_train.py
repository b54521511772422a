import json

import pytest
import torch
from conftest import assert_one_line_error, cuda_device_present, quick_train

from edgecls import checkpoint as ckpt_io
from edgecls.fileio import atomic_path
from edgecls.registry import model_names

# Every test here trains on the real data sets.
pytestmark = pytest.mark.slow


def _state(path):
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", model_names())
def test_train_cli_writes_all_three_artifacts(cli, tmp_path, name):
    result = quick_train(cli, name, tmp_path, 512)
    assert result.exit_code == 0, result.output
    out = tmp_path / name
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # plain types only
    assert ckpt["model"] == name and ckpt["best_epoch"] == 1 and len(ckpt["history"]) == 1
    assert 0.0 <= ckpt["test_accuracy"] <= 1.0 and ckpt["test_images"] > 1000
    assert ckpt["class_names"] and ckpt["preprocess"]["color_mode"] in ("L", "RGB")
    assert ckpt["hparams"]["limit"] == 512
    hist = json.loads((out / "history.json").read_text())
    assert hist["history"][0]["epoch"] == 1 and hist["test_accuracy"] == ckpt["test_accuracy"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in result.output and "epoch   1/1" in result.output


def test_gru_short_real_run_is_well_above_chance(cli, tmp_path):
    result = cli("train", "--model", "gru", "--epochs", "3", "--limit", "6000", "--artifacts", tmp_path)
    assert result.exit_code == 0, result.output
    acc = _state(tmp_path / "gru" / "checkpoint.pt")["test_accuracy"]
    assert acc >= 0.60, f"gru reached only {acc:.3f} on the 10,000 test images"


def test_same_seed_same_checkpoint(cli, tmp_path):
    for run in ("a", "b"):
        assert (
            cli(
                "train",
                "--model",
                "rnn",
                "--epochs",
                "1",
                "--limit",
                "300",
                "--seed",
                "7",
                "--artifacts",
                tmp_path / run,
            ).exit_code
            == 0
        )
    a, b = _state(tmp_path / "a/rnn/checkpoint.pt"), _state(tmp_path / "b/rnn/checkpoint.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    c = tmp_path / "c"
    assert (
        cli("train", "--model", "rnn", "--epochs", "1", "--limit", "300", "--seed", "8", "--artifacts", c).exit_code
        == 0
    )
    assert not torch.equal(a["state_dict"]["head.weight"], _state(c / "rnn/checkpoint.pt")["state_dict"]["head.weight"])


def test_interrupted_run_resumes_to_the_same_model(cli, tmp_path, monkeypatch):
    args = ("train", "--model", "gru", "--epochs", "2", "--limit", "400")
    assert cli(*args, "--artifacts", tmp_path / "whole").exit_code == 0

    import edgecls.train.trainer as trainer

    real_eval, calls = trainer.evaluate_split, []

    def interrupt_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(trainer, "evaluate_split", interrupt_in_epoch_two)
    stopped = cli(*args, "--artifacts", tmp_path / "cut")
    assert stopped.exit_code == 130 and "--resume" in stopped.output
    partial = ckpt_io.load(tmp_path / "cut/gru/resume.pt", "gru")
    assert partial["epoch"] == 1  # the finished epoch survived intact
    monkeypatch.setattr(trainer, "evaluate_split", real_eval)

    resumed = cli(*args, "--artifacts", tmp_path / "cut", "--resume")
    assert resumed.exit_code == 0 and "resuming after epoch 1 of 2" in resumed.output
    whole, cut = _state(tmp_path / "whole/gru/checkpoint.pt"), _state(tmp_path / "cut/gru/checkpoint.pt")
    assert whole["best_epoch"] == cut["best_epoch"]
    assert all(torch.equal(whole["state_dict"][k], cut["state_dict"][k]) for k in whole["state_dict"])
    assert [h["val_loss"] for h in whole["history"]] == [h["val_loss"] for h in cut["history"]]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"good" and list(tmp_path.iterdir()) == [target]


# ------------------------------------------------------------------------------------- bad input


@pytest.fixture
def trained(cli, tmp_path):
    """A finished one-epoch gru run; returns (artifacts dir, checkpoint bytes)."""
    assert cli("train", "--model", "gru", "--epochs", "1", "--limit", "200", "--artifacts", tmp_path).exit_code == 0
    return tmp_path, (tmp_path / "gru/checkpoint.pt").read_bytes()


def test_bad_epochs(cli, trained):
    art, before = trained
    assert_one_line_error(cli("train", "--model", "gru", "--epochs", "0", "--artifacts", art), "--epochs", "at least 1")
    assert (art / "gru/checkpoint.pt").read_bytes() == before


def test_unwritable_artifacts_dir(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(
        cli("train", "--model", "gru", "--epochs", "1", "--limit", "100", "--artifacts", blocker / "sub"),
        "cannot create folder",
    )


def test_missing_data(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("edgecls.data.SHARED_SIBLING", tmp_path / "no-shared")  # no data beside the checkout
    monkeypatch.setattr("edgecls.data.DEBIAN_DATASETS", tmp_path / "no-debian")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli(
        "train",
        "--model",
        "lstm",
        "--epochs",
        "1",
        "--data-dir",
        empty,
        "--artifacts",
        tmp_path,
        EDGECLS_DATA="",
        EDGECLS_NO_DOWNLOAD="1",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    assert_one_line_error(result, "EMNIST bymerge not found", "--data-dir", "EDGECLS_DATA")
    assert result.exit_code == 2 and not (tmp_path / "lstm").exists()  # a run that cannot start leaves no folder


def test_data_dir_that_is_not_a_folder(cli, tmp_path):
    assert_one_line_error(
        cli("train", "--model", "gru", "--data-dir", tmp_path / "nope", "--artifacts", tmp_path), "is not a folder"
    )


def test_resume_without_checkpoint(cli, tmp_path):
    assert_one_line_error(
        cli("train", "--model", "rnn", "--resume", "--artifacts", tmp_path),
        "no resume state",
        "edgecls train --model rnn",
    )


def test_resume_with_another_models_checkpoint(cli, trained):
    art, before = trained
    (art / "rnn").mkdir()
    (art / "rnn/resume.pt").write_bytes((art / "gru/resume.pt").read_bytes())
    assert_one_line_error(cli("train", "--model", "rnn", "--resume", "--artifacts", art), "holds model 'gru'")
    assert (art / "gru/checkpoint.pt").read_bytes() == before


def test_resume_of_a_finished_run_and_changed_settings(cli, trained):
    art, before = trained
    again = cli("train", "--model", "gru", "--resume", "--artifacts", art)  # a finished job script run again
    assert again.exit_code == 0, again.output
    assert "nothing to resume" in again.output and "--epochs N with N > 1" in again.output
    assert_one_line_error(
        cli("train", "--model", "gru", "--resume", "--epochs", "2", "--lr", "0.5", "--artifacts", art),
        "cannot change --lr",
    )
    assert (art / "gru/checkpoint.pt").read_bytes() == before


def test_corrupt_resume_file(cli, trained):
    art, _ = trained
    data = (art / "gru/resume.pt").read_bytes()
    (art / "gru/resume.pt").write_bytes(data[: len(data) // 2])
    assert_one_line_error(
        cli("train", "--model", "gru", "--resume", "--epochs", "2", "--artifacts", art),
        "not a readable edgecls resume state",
    )


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device")
def test_cuda_asked_without_gpu(cli, tmp_path):
    assert_one_line_error(cli("train", "--model", "gru", "--device", "cuda", "--artifacts", tmp_path), "--device cuda")


def test_lstm_binary_starts_from_the_trained_lstm(cli, tmp_path):
    """lstm-binary's default starts from the lstm checkpoint in the same artifacts folder (same LSTM
    layers, fresh 2-class head); without it, one line says what to run first."""
    args = ("train", "--model", "lstm-binary", "--epochs", "1", "--limit", "100", "--artifacts", tmp_path)
    assert_one_line_error(cli(*args), "no checkpoint at", "run `edgecls train --model lstm` first")
    assert not (tmp_path / "lstm-binary").exists()

    assert cli("train", "--model", "lstm", "--epochs", "1", "--limit", "100", "--artifacts", tmp_path).exit_code == 0
    result = cli(*args, "--lr", "1e-12")
    assert result.exit_code == 0, result.output
    assert "initialised 8 of 10 tensors" in result.output and "fresh: head.weight, head.bias" in result.output
    source = _state(tmp_path / "lstm" / "checkpoint.pt")
    binary = _state(tmp_path / "lstm-binary" / "checkpoint.pt")
    assert binary["init_from"] == str(tmp_path / "lstm" / "checkpoint.pt")
    for key in source["state_dict"]:
        if key.startswith("rnn."):  # copied, and a 1e-12 learning rate leaves them in place
            assert torch.allclose(binary["state_dict"][key], source["state_dict"][key], atol=1e-6), key
    assert binary["state_dict"]["head.weight"].shape[0] == 2 and source["state_dict"]["head.weight"].shape[0] == 47


def test_select_keeps_the_epoch_its_metric_names(cli, tmp_path):
    # One seed, so both runs see the same validation figures and differ only in the epoch they keep.
    for metric in ("val_loss", "val_acc"):
        result = cli(
            "train",
            "--model",
            "rnn",
            "--epochs",
            "4",
            "--limit",
            "600",
            "--select",
            metric,
            "--artifacts",
            tmp_path / metric,
        )
        assert result.exit_code == 0, result.output
    by_loss, by_acc = _state(tmp_path / "val_loss/rnn/checkpoint.pt"), _state(tmp_path / "val_acc/rnn/checkpoint.pt")
    hist = by_loss["history"]
    assert [h["val_loss"] for h in hist] == [h["val_loss"] for h in by_acc["history"]]
    assert by_loss["best_epoch"] == min(hist, key=lambda h: h["val_loss"])["epoch"]
    assert by_acc["best_epoch"] == max(hist, key=lambda h: (h["val_acc"], -h["val_loss"]))["epoch"]
    assert by_acc["hparams"]["select"] == "val_acc" and by_acc["val_accuracy"] == max(h["val_acc"] for h in hist)
    assert_one_line_error(
        cli(
            "train",
            "--model",
            "rnn",
            "--resume",
            "--epochs",
            "5",
            "--select",
            "val_loss",
            "--artifacts",
            tmp_path / "val_acc",
        ),
        "cannot change --select",
    )
    assert_one_line_error(
        cli("train", "--model", "rnn", "--epochs", "1", "--select", "accuracy", "--artifacts", tmp_path / "bad"),
        "--select",
        "val_loss",
    )
    assert not (tmp_path / "bad").exists()


def test_is_better_breaks_accuracy_ties_by_loss():
    from edgecls.train.trainer import is_better

    best = {"val_loss": 0.30, "val_acc": 0.90, "epoch": 3}
    assert is_better({"val_loss": 0.35, "val_acc": 0.91}, best, "val_acc")
    assert not is_better({"val_loss": 0.35, "val_acc": 0.91}, best, "val_loss")
    assert is_better({"val_loss": 0.29, "val_acc": 0.90}, best, "val_acc")
    assert not is_better({"val_loss": 0.31, "val_acc": 0.90}, best, "val_acc")
    # a resume state written before --select existed has no val_acc in its best: any accuracy beats it
    assert is_better({"val_loss": 0.5, "val_acc": 0.1}, {"val_loss": 0.3, "epoch": 2}, "val_acc")


def test_without_a_terminal_training_says_its_progress_inside_an_epoch(cli, tmp_path, monkeypatch):
    """No bar can be drawn into a log file: lines with the batch, img/s and the time left come instead."""
    import edgecls.train.trainer as trainer

    monkeypatch.setattr(trainer, "PROGRESS_EVERY_S", 0.0)
    result = cli("train", "--model", "gru", "--epochs", "1", "--limit", "600", "--artifacts", tmp_path)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("  epoch 1/1: batch ")]
    assert lines and all("img/s" in line and "s left in this epoch" in line for line in lines)
