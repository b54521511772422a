import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, cifar_test_images, cuda_device_present, needs_gpu, quick_train
from PIL import Image
from test_export import write_checkpoint

from edgecls.data import load_for_spec, normalize
from edgecls.export import export_model
from edgecls.registry import get_spec, model_names
from edgecls.runtime import Classifier, convert_mode

N_REAL = 24


@pytest.fixture(scope="module")
def exported_zoo(tmp_path_factory, data_root):
    """Every model, randomly initialised and exported (torchscript: the quicker export)."""
    art = tmp_path_factory.mktemp("zoo")
    models = {}
    for name in model_names():
        models[name] = write_checkpoint(get_spec(name), art / name / "checkpoint.pt", seed=1)
        export_model(name, artifacts=art, exporter="torchscript")
    return art, models


@pytest.mark.parametrize("name", model_names())
def test_runtime_matches_training_transforms_on_real_image_files(exported_zoo, tmp_path, name):
    """Real test images saved as PNG files -> runtime (Pillow + numpy) gives the logits the eager model
    gives on the training pipeline's tensors."""
    art, models = exported_zoo
    spec = get_spec(name)
    test = load_for_spec(spec, "test")
    idx = torch.linspace(0, len(test) - 1, N_REAL).round().long()
    pixels = test.images(idx)
    files = []
    for i, img in enumerate(pixels.numpy()):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(arr).save(files[-1])
    clf = Classifier(art / name / "model.onnx", provider="cpu")
    runtime_logits = clf.logits(np.stack([clf.to_uint8(f) for f in files]))
    with torch.inference_mode():
        eager = models[name](normalize(pixels, spec.preprocess)).numpy()
    np.testing.assert_allclose(runtime_logits, eager, atol=spec.atol, rtol=0)
    labels, probs = clf.predict(files, batch_size=5)
    assert labels == [spec.class_names[i] for i in eager.argmax(1)]
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_every_input_mode_and_size(exported_zoo, data_root):
    art, _ = exported_zoo
    gray, rgb = Classifier(art / "gru" / "model.onnx", "cpu"), Classifier(art / "cnn" / "model.onnx", "cpu")
    digit = load_for_spec(get_spec("gru"), "test").images(torch.tensor([0]))[0, 0].numpy()
    base = Image.fromarray(digit, "L")
    ref = gray.to_uint8(base)
    # lossless re-encodings of the same grey picture must give the same model input
    same = {
        "RGB": base.convert("RGB"),
        "RGBA": base.convert("RGBA"),
        "LA": base.convert("LA"),
        "P": base.convert("P"),
        "I;16": Image.fromarray(digit.astype(np.uint16) * 257),
        "I": base.convert("I"),
        "F": Image.fromarray(digit.astype(np.float32) / 255),
        "array-HW": digit,
    }
    for mode, im in same.items():
        assert np.array_equal(gray.to_uint8(im), ref), mode
    # transparent pixels become black (the MNIST background)
    clear = base.convert("RGBA")
    clear.putalpha(0)
    assert gray.to_uint8(clear).max() == 0
    # other sizes are resized to the model's; CMYK and grey inputs become RGB for the CIFAR model
    assert gray.to_uint8(base.resize((100, 60))).shape == (1, 28, 28)
    assert rgb.to_uint8(base).shape == (3, 32, 32)
    assert rgb.to_uint8(Image.new("CMYK", (50, 50), (0, 255, 255, 0))).tolist()[0][0][0] == 255  # red
    assert convert_mode(Image.new("1", (4, 4), 1), "L").getpixel((0, 0)) == 255
    labels, probs = rgb.predict([Image.new("RGBA", (64, 48), (10, 200, 30, 128)), np.zeros((3, 32, 32), np.uint8)])
    assert len(labels) == 2 and probs.shape == (2, 10)


def test_runtime_never_imports_torch(exported_zoo, tmp_path):
    art, _ = exported_zoo
    img = tmp_path / "x.png"
    Image.new("L", (28, 28), 128).save(img)
    code = (
        f"import sys\nfrom edgecls.runtime import Classifier\nfrom edgecls.runtime.infer import infer\n"
        f"c = Classifier({str(art / 'gru' / 'model.onnx')!r}, 'cpu')\nprint(c.predict([{str(img)!r}])[0])\n"
        f"infer([{str(img)!r}], {str(art / 'gru' / 'model.onnx')!r}, 'cpu')\n"
        f"assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_infer_cli_formats_and_exit_codes(cli, exported_zoo, tmp_path, data_root):
    art, _ = exported_zoo
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    src = sorted((cifar_test_images(tmp_path / "cifar", 3) / "ship").iterdir())
    for i, f in enumerate(src):
        (folder / ("sub" if i else "") / f.name).write_bytes(f.read_bytes())
    ok = cli("infer", folder, "--model", "cnn", "--artifacts", art, "--format", "json", "--top-k", "3")
    assert ok.exit_code == 0, ok.output
    rows = json.loads(ok.stdout)
    assert [r["file"] for r in rows] == sorted(r["file"] for r in rows) and len(rows) == 3
    assert all(len(r["top_k"]) == 3 and r["status"] == "ok" for r in rows)
    assert "classified 3 of 3 files" in ok.stderr and "CPUExecutionProvider" in ok.stderr
    # corrupt and non-image files: reported, marked, the rest classified, exit 1
    (folder / "broken.jpg").write_bytes(src[0].read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out.csv"
    some = cli("infer", folder, "--onnx", art / "cnn" / "model.onnx", "--format", "csv", "--output", out)
    assert some.exit_code == 1
    assert "skipped" in some.stderr and "broken.jpg" in some.stderr and "notes.txt" in some.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "file,status,label1,prob1" and len(lines) == 6
    assert sum("error:" in line for line in lines) == 2 and sum(",ok," in line for line in lines) == 3
    table = cli("infer", src[0], "--model", "cnn", "--artifacts", art)
    assert table.exit_code == 0 and table.stdout.splitlines()[0].startswith("file")


def test_infer_usage_errors_exit_2(cli, exported_zoo, tmp_path):
    art, _ = exported_zoo
    img = tmp_path / "a.png"
    Image.new("L", (28, 28)).save(img)
    (tmp_path / "empty").mkdir()
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"definitely not onnx")
    import onnx

    from edgecls.metadata import write_props

    plain = onnx.load(str(art / "gru" / "model.onnx"))
    write_props(plain, {})
    foreign = tmp_path / "foreign.onnx"
    onnx.save(plain, str(foreign))
    cases = [
        ((tmp_path / "missing.png", "--model", "gru"), "does not exist"),
        ((tmp_path / "empty", "--model", "gru"), "holds no files"),
        ((img, "--onnx", fake), "cannot load"),
        ((img, "--onnx", foreign), "not made by `edgecls export`"),
        ((img, "--onnx", tmp_path / "none.onnx"), "no ONNX model"),
        ((img,), "exactly one of --model"),
        ((img, "--model", "gruu"), "unknown model"),
        ((img, "--model", "gru", "--top-k", "0"), "--top-k"),
        ((img, "--model", "gru", "--output", tmp_path / "no" / "dir.csv"), "does not exist"),
    ]
    for args, needle in cases:
        result = cli("infer", *args, "--artifacts", art)
        assert result.exit_code == 2, (args, result.output)
        assert_one_line_error(result, needle)


@pytest.mark.skipif(cuda_device_present(), reason="this machine has a CUDA device: the no-GPU path cannot be shown")
def test_cuda_provider_without_gpu_is_one_line_and_auto_says_cpu(cli, exported_zoo, tmp_path):
    import onnxruntime as ort

    art, _ = exported_zoo
    img = tmp_path / "a.png"
    Image.new("L", (28, 28)).save(img)
    clf = Classifier(art / "gru" / "model.onnx", "auto")
    result = cli("infer", img, "--model", "gru", "--artifacts", art, "--provider", "cuda")
    assert_one_line_error(result, "CUDA execution provider unavailable", "--provider cpu")
    auto = cli("infer", img, "--model", "gru", "--artifacts", art, "--provider", "auto")
    assert auto.exit_code == 0 and "provider auto: using CPU" in auto.stderr
    assert clf.providers == ["CPUExecutionProvider"] and "CUDAExecutionProvider" in ort.get_available_providers()


@needs_gpu
def test_cuda_provider_runs_on_a_gpu(exported_zoo, data_root):
    art, models = exported_zoo
    clf = Classifier(art / "gru" / "model.onnx", "cuda")
    assert clf.providers[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    with torch.inference_mode():
        eager = models["gru"](normalize(torch.from_numpy(x), get_spec("gru").preprocess)).numpy()
    np.testing.assert_allclose(clf.logits(x), eager, atol=get_spec("gru").atol, rtol=0)


@needs_gpu
@pytest.mark.parametrize("name", model_names())
def test_cuda_provider_gives_the_cpu_logits_on_shipped_models(name):
    """fp32 on the GPU answers like fp32 on the CPU within the parity bar: ORT's default TF32 math on
    Ampere+ GPUs moved logits by up to 9e-3 (H100), so the runtime turns it off."""
    from edgecls.commands.samples import sample_files
    from edgecls.locations import shipped_onnx

    cpu, gpu = Classifier(shipped_onnx(name), "cpu"), Classifier(shipped_onnx(name), "cuda")
    x = np.stack([cpu.to_uint8(f) for f in sample_files(get_spec(name).dataset)])
    a, b = cpu.logits(x), gpu.logits(x)
    assert gpu.providers[0] == "CUDAExecutionProvider"
    assert np.abs(a - b).max() <= get_spec(name).atol and (a.argmax(1) == b.argmax(1)).all()


@needs_gpu
def test_evaluate_on_cuda_meets_parity_bar(cli, data_root, tmp_path):
    assert quick_train(cli, "gru", tmp_path, 300).exit_code == 0
    assert cli("export", "--model", "gru", "--artifacts", tmp_path).exit_code == 0
    result = cli("evaluate", "--model", "gru", "--provider", "cuda", "--artifacts", tmp_path)
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / "gru" / "parity.json").read_text())
    assert parity["images"] == 10000 and parity["max_abs_logit_diff"] <= get_spec("gru").atol


@pytest.mark.parametrize("name", model_names())
def test_evaluate_meets_parity_bar_on_real_images(cli, data_root, tmp_path, name):
    assert quick_train(cli, name, tmp_path, 300).exit_code == 0
    assert cli("export", "--model", name, "--exporter", "torchscript", "--artifacts", tmp_path).exit_code == 0
    result = cli("evaluate", "--model", name, "--limit", "300", "--provider", "cpu", "--artifacts", tmp_path)
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / name / "parity.json").read_text())
    assert parity["images"] == 300 and parity["passed"] and parity["accuracy_diff_pp"] <= 0.01
    assert parity["max_abs_logit_diff"] <= get_spec(name).atol and parity["argmax_agreement_pct"] == 100.0
    assert "pytorch" in result.output and "onnx" in result.output


def test_evaluate_bad_input(cli, tmp_path):
    assert_one_line_error(cli("evaluate", "--model", "gru", "--artifacts", tmp_path), "no checkpoint")


@pytest.mark.parametrize("name", ["gru", "birnn", "cnn"])
def test_batch_split_gives_the_single_session_logits(name):
    """Large batches run split over 1-thread sessions; every row's logits equal one session's."""
    from edgecls.locations import shipped_onnx
    from edgecls.runtime.parallel import SPLIT_MIN_ROWS, split_count

    single = Classifier(shipped_onnx(name), "cpu", threads=2, split=False)
    x = np.random.default_rng(0).standard_normal((257, *single.info.input_shape)).astype(np.float32)
    for threads in (2, 3):
        split = Classifier(shipped_onnx(name), "cpu", threads=threads)
        for batch in (1, 2, 7, 257):
            np.testing.assert_allclose(split.run(x[:batch]), single.run(x[:batch]), atol=1e-5, rtol=0)
        assert split.execution(257) == f"{threads} x 1-thread sessions"
        small = split.engine.small_batch_threads  # the faster of 1 and `threads` at one row, timed at open
        assert small in (1, threads) and split.execution(7) == f"1 session, {small} thread{'s' if small > 1 else ''}"
        assert len(split.engine.parallel.sessions) == threads  # made on first need
    assert split_count(2 * SPLIT_MIN_ROWS - 1, 2) == 1 and split_count(2 * SPLIT_MIN_ROWS, 2) == 2
    assert split_count(10_000, 3) == 3 and split_count(10_000, 1) == 1
    assert Classifier(shipped_onnx(name), "cpu", threads=1).engine.parallel is None  # one thread: nothing to split


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_bad_thread_counts_are_refused(threads):
    from edgecls.errors import EdgeclsError
    from edgecls.locations import shipped_onnx

    with pytest.raises(EdgeclsError, match="--threads must be a whole number of at least 1"):
        Classifier(shipped_onnx("gru"), "cpu", threads=threads)


def test_infer_refuses_bad_threads_in_one_line(cli):
    from edgecls.commands.samples import sample_files

    result = cli("infer", sample_files("fashion-mnist")[0], "--model", "gru", "--threads", "0")
    assert_one_line_error(result, "--threads must be a whole number of at least 1")
    assert result.exit_code == 2
