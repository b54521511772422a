"""Streaming `edgecls infer`: worker processes, results written in input order as they come, --resume
after a SIGKILL, and JPEG draft decoding."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error
from PIL import Image

from edgecls.commands.samples import sample_files
from edgecls.locations import shipped_onnx
from edgecls.runtime import Classifier
from edgecls.runtime.infer import infer
from edgecls.runtime.preprocess import load_image


def linked_folder(folder: Path, count: int, dataset: str = "fashion-mnist") -> Path:
    """`count` real sample images under distinct names (hard links to samples/: no copies, so never
    write into them)."""
    folder.mkdir()
    sources = sample_files(dataset)
    for i in range(count):
        src = sources[i % len(sources)]
        os.link(src, folder / f"{i:05d}{src.suffix}")
    return folder


def rows_of(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def test_worker_processes_give_the_inline_answers_in_order(tmp_path):
    folder = linked_folder(tmp_path / "imgs", 300, "cifar10")
    bad = folder / "00007.jpg"
    bad.unlink()  # a hard link to a shipped sample: replace it, never write through it
    bad.write_bytes(b"broken")  # a bad file in the middle stays in its place
    outputs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}.csv"
        code = infer(
            [str(folder)],
            str(shipped_onnx("cnn")),
            "cpu",
            batch_size=16,
            top_k=2,
            fmt="csv",
            output=str(out),
            threads=1,
            workers=workers,
        )
        assert code == 1  # one file skipped
        outputs[workers] = rows_of(out)
        assert not Path(f"{out}.partial").exists()
    assert outputs[0] == outputs[2]
    rows = outputs[2]
    assert rows[0] == ["file", "status", "label1", "prob1", "label2", "prob2"] and len(rows) == 301
    assert [r[0] for r in rows[1:]] == [str(f) for f in sorted(folder.iterdir())]
    assert rows[8][1].startswith("error:")


def test_auto_workers_decide_by_the_first_batch_decode_time():
    from edgecls.runtime.infer import AUTO_MIN_DECODE_S, AUTO_MIN_IMAGE_S, pool_pays

    assert not pool_pays(0.1e-3, 100_000, cpus=2)  # CIFAR-size JPEGs: 10 s of decoding, but cheap files
    assert not pool_pays(3e-3, 300, cpus=16)  # 0.9 s in all: start-up would eat the gain
    assert pool_pays(9e-3, 200, cpus=2)  # 4000x3000 photos
    assert not pool_pays(9e-3, 200, cpus=1)  # no second core to decode on
    assert pool_pays(AUTO_MIN_IMAGE_S, round(AUTO_MIN_DECODE_S / AUTO_MIN_IMAGE_S), cpus=2)


@pytest.mark.parametrize("forced_pool", [False, True])
def test_auto_workers_say_what_they_chose_and_answer_alike(tmp_path, monkeypatch, forced_pool):
    """Real CIFAR-10 JPEGs decode in about 0.1 ms: auto keeps them in the main process. With the
    thresholds at zero auto starts the pool after the first batch; the answers are the same."""
    from edgecls.runtime import infer as infer_mod

    folder = linked_folder(tmp_path / "imgs", 300, "cifar10")
    if forced_pool:
        monkeypatch.setattr(infer_mod, "AUTO_MIN_IMAGE_S", 0.0)
        monkeypatch.setattr(infer_mod, "AUTO_MIN_DECODE_S", 0.0)
        monkeypatch.setattr(infer_mod, "available_cpus", lambda: 2)
    outputs, errors = {}, {}
    for workers in (None, 0):
        out, err = tmp_path / f"{workers}.csv", tmp_path / f"{workers}.err"
        with open(err, "w") as stream:
            assert (
                infer(
                    [str(folder)],
                    str(shipped_onnx("cnn")),
                    "cpu",
                    batch_size=16,
                    fmt="csv",
                    output=str(out),
                    threads=1,
                    workers=workers,
                    err=stream,
                )
                == 0
            )
        outputs[workers], errors[workers] = rows_of(out), err.read_text()
    assert outputs[None] == outputs[0] and len(outputs[0]) == 301
    said = "2 decode worker processes" if forced_pool else "decoding in the main process"
    assert f"img/s, {said}, provider" in errors[None]


def test_jsonl_streams_one_object_per_line(cli, tmp_path):
    files = sample_files("fashion-mnist")[:5]
    result = cli("infer", *files, "--model", "gru", "--format", "jsonl", "--top-k", "2")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert all(r["status"] == "ok" and len(r["top_k"]) == 2 for r in records)


def infer_csv(folder: Path, model: str, out: Path, *options: str) -> list[str]:
    """The command line of `edgecls infer FOLDER --model MODEL --format csv --output OUT OPTIONS...`."""
    return [sys.executable, "-m", "edgecls", "infer", str(folder), "--model", model, "--format", "csv",
            "--output", str(out), *options]  # fmt: skip


def test_sigkill_then_resume_gives_every_file_once(tmp_path):
    """Killed in the middle: the earlier result is untouched and FILE.partial holds a prefix; --resume
    cuts any half-written line and finishes, with no file missing or repeated."""
    folder = linked_folder(tmp_path / "many", 4000)
    out = tmp_path / "out.csv"
    out.write_text("an earlier result\n")
    partial = Path(f"{out}.partial")
    cmd = infer_csv(folder, "gru", out, "--batch-size", "4", "--threads", "1")
    proc = subprocess.Popen(cmd + ["--workers", "0"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (partial.is_file() and partial.read_bytes().count(b"\n") >= 200):
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-300:]}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert out.read_text() == "an earlier result\n"
    done_before = partial.read_bytes().count(b"\n") - 1
    assert 0 < done_before < 4000
    with open(partial, "a") as fh:  # the kill may land between lines; make sure a half line is there
        fh.write(str(folder / "00001.png") + ",ok,Trou")

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "files already done" in resumed.stderr and not partial.exists()
    rows = rows_of(out)
    assert rows[0] == ["file", "status", "label1", "prob1"]
    assert [r[0] for r in rows[1:]] == [str(f) for f in sorted(folder.iterdir())]  # each file once, in order
    whole = tmp_path / "whole.csv"
    assert infer([str(folder)], str(shipped_onnx("gru")), "cpu", fmt="csv", output=str(whole), threads=1) == 0
    reference = rows_of(whole)
    assert [r[2] for r in rows[1:]] == [r[2] for r in reference[1:]]
    np.testing.assert_allclose([float(r[3]) for r in rows[1:]], [float(r[3]) for r in reference[1:]], atol=1e-5)


def test_resume_refuses_what_it_cannot_continue(cli, tmp_path):
    folder = linked_folder(tmp_path / "imgs", 10)
    other = linked_folder(tmp_path / "other", 12)
    out = tmp_path / "out.jsonl"
    base = ("infer", folder, "--model", "gru", "--output", out)
    assert_one_line_error(cli(*base, "--format", "jsonl", "--resume"), "no interrupted run")
    assert_one_line_error(cli(*base, "--format", "json", "--resume"), "csv or jsonl")
    assert_one_line_error(cli("infer", folder, "--model", "gru", "--resume"), "--output")
    assert_one_line_error(cli(*base, "--workers", "-1"), "--workers")
    assert_one_line_error(cli(*base, "--workers", "many"), "neither a number nor auto")
    # a .partial from other inputs is not continued
    Path(f"{out}.partial").write_text(json.dumps({"file": str(other / "00000.png"), "status": "ok"}) + "\n")
    result = cli(*base, "--format", "jsonl", "--resume")
    assert_one_line_error(result, "the inputs changed")
    assert result.exit_code == 2
    # a csv .partial with another --top-k's header
    csv_out = tmp_path / "out.csv"
    Path(f"{csv_out}.partial").write_text("file,status,label1,prob1,label2,prob2\n")
    assert_one_line_error(
        cli("infer", folder, "--model", "gru", "--output", csv_out, "--format", "csv", "--resume"), "header"
    )


def test_jpeg_draft_decodes_big_photos_small_with_the_same_answers(tmp_path):
    """A 4000x3000 JPEG (a CIFAR-10 test image upscaled) decodes at 1/8 scale for a 32x32 model and is
    classified as with full decoding."""
    photos = []
    for f in sample_files("cifar10")[:6]:
        photo = tmp_path / f"{f.stem}.jpg"
        Image.open(f).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(photo, quality=92)
        photos.append(photo)
    assert load_image(str(photos[0]), draft=(64, 64)).size == (500, 375)
    assert load_image(str(photos[0])).size == (4000, 3000)
    fast = Classifier(shipped_onnx("cnn"), "cpu", threads=1)
    exact = Classifier(shipped_onnx("cnn"), "cpu", threads=1, draft=False)
    assert fast.predict(photos)[0] == exact.predict(photos)[0]
    small = sample_files("cifar10")[0]  # at the model's size draft changes nothing
    assert np.array_equal(fast.to_uint8(small), exact.to_uint8(small))


@pytest.mark.parametrize("flag", ["--draft", "--no-draft"])
def test_draft_flag(cli, tmp_path, flag):
    photo = tmp_path / "p.jpg"
    Image.open(sample_files("cifar10")[0]).convert("RGB").resize((1600, 1200)).save(photo)
    result = cli("infer", photo, "--model", "cnn", "--format", "jsonl", flag)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "ok"


def test_decode_workers_end_when_infer_is_killed(tmp_path):
    """SIGKILL gives a process no chance to stop its workers; they notice and exit by themselves."""
    import uuid

    folder = linked_folder(tmp_path / "many", 20000, "cifar10")
    out = tmp_path / "out.csv"
    mark = f"edgecls-test-{uuid.uuid4()}"
    env = {**os.environ, "EDGECLS_TEST_MARK": mark}
    proc = subprocess.Popen(
        infer_csv(folder, "cnn", out, "--workers", "2"),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = Path(f"{out}.partial")
    deadline = time.monotonic() + 120
    while not (partial.is_file() and partial.read_bytes().count(b"\n") >= 1000):  # workers are running
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    assert len(marked(mark)) >= 3  # infer, the forkserver and its workers
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 20
    while marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marked(mark) == [], "decode workers outlived the killed infer"


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries `mark` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if mark.encode() in (proc / "environ").read_bytes():
                    status = (proc / "status").read_text()
                    if "\nState:\tZ" not in status:  # zombies are gone already
                        found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_resume_of_a_complete_output_is_a_no_op(cli, tmp_path):
    """A finished job script run again: --resume on a whole output exits 0 with a note, and writes nothing."""
    folder = linked_folder(tmp_path / "imgs", 10)
    out = tmp_path / "out.jsonl"
    first = cli("infer", folder, "--model", "gru", "--format", "jsonl", "--output", out)
    assert first.exit_code == 0, first.output
    before = out.read_bytes()
    again = cli("infer", folder, "--model", "gru", "--format", "jsonl", "--output", out, "--resume")
    assert again.exit_code == 0, again.output
    assert f"--resume: {out} is complete (10 files); nothing to do" in again.stderr
    assert out.read_bytes() == before and not Path(f"{out}.partial").exists()
    fewer = linked_folder(tmp_path / "more", 12)  # other inputs: that output is not theirs to skip
    assert_one_line_error(cli("infer", fewer, "--model", "gru", "--format", "jsonl", "--output", out, "--resume"))


def test_images_that_do_not_fit_the_model_are_warned_about_once_or_refused(cli, tmp_path):
    """Colour photos into the grey gru, grey images into the colour cnn: one warning on stderr, exit 0;
    with --strict-input exit 2 at the first, one Error line. Images that fit say nothing."""
    fitting = cli("infer", REPO / "samples" / "fashion-mnist", "--model", "gru")
    assert fitting.exit_code == 0 and "warning" not in fitting.stderr
    cases = [("cifar10", "gru", "a colour image, but gru takes grey 28x28 images"),
             ("fashion-mnist", "cnn", "a grey image, but cnn takes colour 32x32 images")]  # fmt: skip
    for folder, model, note in cases:
        result = cli("infer", REPO / "samples" / folder, "--model", model)
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and note in warnings[0] and "--strict-input" in warnings[0], result.stderr
        strict = cli("infer", REPO / "samples" / folder, "--model", model, "--strict-input")
        assert strict.exit_code == 2
        assert_one_line_error(strict, note, "--strict-input")
    tiny = tmp_path / "tiny.png"
    Image.new("L", (8, 8)).save(tiny)
    result = cli("infer", tiny, "--model", "gru")
    assert "8x8 pixels, under half of gru's 28x28 input" in result.stderr
