"""The docs: a short README, a MkDocs site that builds strictly, and results pages that are exactly what
their benchmarks' JSON gives (scripts/results_pages.py)."""

import importlib.util
import shutil
import subprocess
import sys

from conftest import REPO

spec = importlib.util.spec_from_file_location("results_pages", REPO / "scripts" / "results_pages.py")
results_pages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_pages)


def test_the_readme_stays_short_and_links_the_site():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 300
    for page in ("docs/guide/setup.md", "docs/cli.md", "docs/results/index.md", "docs/arm.md"):
        assert f"]({page})" in text and (REPO / page).is_file(), page


def test_every_results_page_is_what_its_json_gives(tmp_path, monkeypatch, capsys):
    assert results_pages.main(["--check"]) == 0, capsys.readouterr().err
    pages = tmp_path / "pages"  # the check itself: a page edited by hand is caught
    shutil.copytree(results_pages.PAGES, pages)
    monkeypatch.setattr(results_pages, "PAGES", pages)
    assert results_pages.main(["--check"]) == 0
    page = pages / "accuracy.md"
    page.write_text(page.read_text().replace("73.01", "75.00", 1))
    assert results_pages.main(["--check"]) == 1
    assert "accuracy.md does not match" in capsys.readouterr().err


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "edgecls infer" in cli and "--strict-input" in cli  # the reference is generated from click
