"""The browser page in a real headless Chromium (Debian's, driven by Playwright): every shipped model on its
sample images gives `edgecls infer`'s top-1, and its logits where no resize is needed; the server sends the
isolation headers and serves nothing outside its table."""

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error
from PIL import Image
from serving import free_port

from edgecls.asgi import wait_until_up
from edgecls.commands.samples import label_of, sample_files
from edgecls.locations import shipped_names, shipped_onnx
from edgecls.registry import get_spec
from edgecls.runtime import Classifier

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def ort_web_installed() -> bool:
    from edgecls.web.server import ORT_DIST

    return (ORT_DIST / "ort.all.min.js").is_file()


needs_ort_web = pytest.mark.skipif(
    not ort_web_installed(),
    reason="onnxruntime-web is not installed (npm ci --prefix web; scripts/setup.sh does it where npm exists)",
)


@pytest.fixture(scope="module")
def site():
    if not ort_web_installed():
        pytest.skip("onnxruntime-web is not installed (npm ci --prefix web; scripts/setup.sh does it where npm exists)")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecls", "web", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(url, proc)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_isolation_headers_and_nothing_outside_the_table(site):
    status, headers, body = fetch(site)
    assert status == 200 and b"onnxruntime-web" in body
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert fetch(site + "models/gru.onnx")[2] == shipped_onnx("gru").read_bytes()
    for icon in ("favicon.svg", "favicon.ico"):  # no 404 in the browser's console
        status, headers, body = fetch(site + icon)
        assert status == 200 and headers["Content-Type"] == "image/svg+xml" and body.startswith(b"<svg")
    for bad in (
        "../pyproject.toml",
        "%2e%2e/pyproject.toml",
        "models/../../pyproject.toml",
        "static/app.js",
        "ort/../../package.json",
        "models/gru.onnx/..",
        "etc/passwd",
        "models.json/x",
    ):
        status, headers, _ = fetch(site + bad)
        assert status == 404, bad
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    req = urllib.request.Request(site + "models.json", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405


def resized_copies(files, folder: Path, factor: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        with Image.open(f) as im:
            target = folder / (f.stem + ".png")
            im.resize((im.width * factor, im.height * factor), Image.BICUBIC).save(target)
            out.append(target)
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (CI installs Debian's with apt-get; see .ci/run)")
@pytest.mark.slow
def test_every_shipped_model_in_chromium_answers_like_infer(site, tmp_path):
    from playwright.sync_api import sync_playwright

    report = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(site)
        page.wait_for_function("window.edgecls && window.edgecls.ready", timeout=60_000)
        assert page.evaluate("self.crossOriginIsolated")
        for name in shipped_names():
            page.select_option("#model", name)
            page.wait_for_function(f"window.edgecls.ready === {name!r}", timeout=60_000)
            files = sample_files(get_spec(name).dataset)
            resized = resized_copies(files[:20], tmp_path / name, 2)
            rows = []
            for batch in (files, resized):
                page.evaluate("window.edgecls.results = []; window.edgecls.done = 0")
                page.set_input_files("#files", [str(f) for f in batch])
                page.wait_for_function(f"window.edgecls.done === {len(batch)}", timeout=120_000)
                rows.append(page.evaluate("window.edgecls.results"))
            same, scaled = rows
            classifier = Classifier(shipped_onnx(name), "cpu", 1)
            labels, _ = classifier.predict(files)
            assert [r["top"][0][0] for r in same] == labels, name
            # the file names carry the true label: each row is marked right or wrong, as the labels say
            spec = get_spec(name)
            truth = [spec.class_names[label_of(f, spec.class_names, spec.target)] for f in files]
            if spec.target is None:
                assert [r["correct"] for r in same] == [a == b for a, b in zip(labels, truth)], name
                marks = page.locator("#results td.right, #results td.wrong").count()
                assert marks == len(files) + len(resized), name
            logits = classifier.run(classifier_inputs(classifier, files))
            diff = float(np.abs(np.asarray([r["logits"] for r in same]) - logits).max())
            assert diff <= 1e-4, (name, diff)
            scaled_labels, _ = classifier.predict(resized)
            agree = np.mean([r["top"][0][0] == lab for r, lab in zip(scaled, scaled_labels)])
            assert agree >= 0.85, (name, agree)  # browser resize is not Pillow's; measured, docs/guide/browser.md
            ms = float(np.median([r["ms"] for r in same]))
            run_ms = float(np.median([r["runMs"] for r in same]))
            report.append(
                f"{name}: {len(files)} samples, top-1 equal, max |dlogit| {diff:.1e}; resized x2 top-1 "
                f"agreement {100 * agree:.0f} %; browser median {ms:.2f} ms/img in the page, "
                f"{run_ms:.2f} ms in session.run, backend {same[0]['backend']}"
            )
        notes = tmp_path / "notes.txt"  # not an image: a plain sentence in the row, no raw exception, no broken icon
        notes.write_text("not a picture")
        page.evaluate("window.edgecls.results = []; window.edgecls.done = 0")
        page.set_input_files("#files", [str(notes)])
        page.wait_for_function("window.edgecls.done === 1", timeout=60_000)
        assert "error" in page.evaluate("window.edgecls.results")[0]
        row = page.locator("#results tbody tr").last
        assert "could not be read as an image" in row.inner_text() and row.locator("img").count() == 0
        assert "Error" not in row.inner_text() and "DOMException" not in row.inner_text()
        shot = Path(os.environ.get("EDGECLS_WEB_SCREENSHOT", tmp_path / "web.png"))
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert shot.stat().st_size > 10_000
    print("\n" + "\n".join(report))


def classifier_inputs(classifier, files):
    from edgecls.runtime.preprocess import normalize

    return normalize(np.stack([classifier.to_uint8(f) for f in files]), classifier.info)


@needs_ort_web
def test_export_site_is_self_contained(cli, tmp_path):
    result = cli("web", "--out", tmp_path / "site", "--model", "cnn")
    assert result.exit_code == 0, result.output
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "ort" / "ort.all.min.js").is_file()
    assert (site / "models" / "cnn.onnx").read_bytes() == shipped_onnx("cnn").read_bytes()
    assert "Cross-Origin-Embedder-Policy: require-corp" in (site / "_headers").read_text()
    assert_one_line_error(cli("web", "--out", site, "--model", "cnn"), "already exists")
    assert_one_line_error(cli("web", "--model", "nope"), "unknown model")


def test_without_onnxruntime_web_one_line_names_npm(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("edgecls.web.server.ORT_DIST", tmp_path / "missing")
    assert_one_line_error(cli("web", "--out", tmp_path / "site"), "npm ci --prefix web")
    assert not (tmp_path / "site").exists()
