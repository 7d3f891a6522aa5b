"""The book's build script: offline checker, toc, caching keys, plotly rendering, config."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
bb = importlib.util.module_from_spec(_spec)
sys.modules["build_book"] = bb  # dataclasses look their module up there
_spec.loader.exec_module(bb)

TOC_NOTEBOOKS = ["01_data_selection", "02_pair_formation", "03_training", "04_results",
                 "05_recommendation", "06_acquisition"]


# --------------------------------------------------------------------------- offline checker


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_offline_checker_flags_every_kind_of_remote_load(tmp_path):
    _write(tmp_path / "page.html", """<!DOCTYPE html><html><head>
<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Lato">
<link rel="preconnect" href="//fonts.gstatic.com">
<style>body { background: url('https://example.org/bg.png'); }</style>
<script>import("https://cdn.plot.ly/plotly-3.0.1.min.js");</script>
</head><body>
<img srcset="local.png 1x, https://img.example.org/big.png 2x">
<iframe src="http://player.example.org/embed"></iframe>
<div style="background-image:url(https://example.org/div.png)"></div>
</body></html>""")
    _write(tmp_path / "_static" / "theme.css", "@import 'https://fonts.example.org/a.css';\n"
                                               "@font-face { src: url(https://fonts.example.org/f.woff2); }")
    found = {(r.file, r.url) for r in bb.find_remote_loads(tmp_path)}
    assert found == {
        ("page.html", "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"),
        ("page.html", "https://fonts.googleapis.com/css?family=Lato"),
        ("page.html", "//fonts.gstatic.com"),
        ("page.html", "https://example.org/bg.png"),
        ("page.html", "https://cdn.plot.ly/plotly-3.0.1.min.js"),
        ("page.html", "https://img.example.org/big.png"),
        ("page.html", "http://player.example.org/embed"),
        ("page.html", "https://example.org/div.png"),
        ("_static/theme.css", "https://fonts.example.org/a.css"),
        ("_static/theme.css", "https://fonts.example.org/f.woff2"),
    }
    with pytest.raises(bb.BuildError, match="10 remote resource load"):
        bb.check_offline(tmp_path)


def test_offline_checker_accepts_links_and_local_resources(tmp_path):
    _write(tmp_path / "index.html", """<html><head>
<link rel="canonical" href="https://example.org/book/">
<link rel="stylesheet" href="_static/theme.css">
<script src="_static/vendor/plotly.min.js"></script>
<script>var doc = "see https://plotly.com/javascript/ for the docs";</script>
</head><body>
<a href="https://papermill.readthedocs.io">papermill</a>
<img src="data:image/png;base64,iVBORw0KGgo=">
<img src="_images/fig.png">
</body></html>""")
    _write(tmp_path / "_static" / "theme.css", "body { background: url(../_images/bg.png); }")
    assert bb.find_remote_loads(tmp_path) == []
    bb.check_offline(tmp_path)  # does not raise


# --------------------------------------------------------------------------- toc and config


def test_toc_lists_every_chapter_in_order():
    assert bb.toc_notebooks() == TOC_NOTEBOOKS


def test_every_toc_notebook_exists_with_a_parameters_cell():
    for name in TOC_NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        assert path.exists(), f"{path} missing"
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and "parameters" in code[0].metadata.get("tags", []), f"{path}: first code cell not tagged"
        assert "profile" in code[0].source, f"{path}: no profile parameter"


def test_book_config_is_offline_and_never_executes():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    sphinx = config["sphinx"]["config"]
    assert not bb.REMOTE.match(sphinx["mathjax_path"])
    assert sphinx["mathjax_path"].startswith("vendor/") and "vendor/plotly.min.js" in sphinx["html_js_files"]
    assert sphinx["nb_ipywidgets_js"] == {}


def test_build_toc_without_missing_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(bb, "ROOT", tmp_path)
    monkeypatch.setattr(bb, "EXECUTED_DIR", tmp_path / "book" / "_executed")
    toc = yaml.safe_load(bb.write_build_toc(["03_training", "06_acquisition"]).read_text())
    files = [c["file"] for c in toc["chapters"]]
    assert "book/_executed/03_training" not in files and "book/_executed/06_acquisition" not in files
    assert "book/_executed/01_data_selection" in files and toc["root"] == "book/intro"


# --------------------------------------------------------------------------- execution pieces


def test_input_key_follows_notebook_and_parameters(tmp_path):
    nb = _write(tmp_path / "n.ipynb", json.dumps({"cells": [], "metadata": {}}))
    key = bb.input_key(nb, {"profile": "quick"})
    assert key == bb.input_key(nb, {"profile": "quick"})
    assert key != bb.input_key(nb, {"profile": "full"})
    _write(nb, json.dumps({"cells": [], "metadata": {"x": 1}}))
    assert key != bb.input_key(nb, {"profile": "quick"})


def test_plotly_outputs_get_offline_html():
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig.show()", outputs=[
        nbformat.v4.new_output("display_data", data={bb.PLOTLY_MIME: json.loads(fig.to_json()),
                                                     "text/plain": ["Figure"]})])])
    assert bb.render_plotly(nb, "t") == 1
    html = nb.cells[0].outputs[0]["data"]["text/html"]
    assert "Plotly.newPlot" in html and 'id="plotly-t-0"' in html
    assert "cdn" not in html.lower() and "<script src" not in html
    assert len(html) < 100_000  # plotly.js itself is not inlined: pages load it from _static
    assert bb.PLOTLY_MIME not in nb.cells[0].outputs[0]["data"]  # myst-nb would warn about it
    assert bb.render_plotly(nb, "t") == 0  # already rendered


def test_parameters_cell_folded_when_papermill_injected():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("profile = 'quick'"),
                                         nbformat.v4.new_code_cell("profile = 'full'")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells[1].metadata["tags"] = ["injected-parameters"]
    bb.tidy_parameters(nb)
    assert "hide-input" in nb.cells[0].metadata["tags"]
    assert "hide-input" not in nb.cells[1].metadata["tags"]


def test_integrity_check(tmp_path):
    import base64
    import hashlib

    blob = _write(tmp_path / "x.tgz", "content")
    good = "sha512-" + base64.b64encode(hashlib.sha512(b"content").digest()).decode()
    bb._check_integrity(blob, good)
    with pytest.raises(bb.BuildError, match="integrity mismatch"):
        bb._check_integrity(blob, "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode())


def test_missing_notebook_is_an_error_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(bb, "NOTEBOOK_DIR", tmp_path)
    with pytest.raises(bb.BuildError, match="notebooks/99_missing.ipynb"):
        bb.execute_all(["99_missing"], "quick", force=False, allow_missing=False)
    assert bb.execute_all(["99_missing"], "quick", force=False, allow_missing=True) == {}


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_book_builds_offline():
    """`make book` in the quick profile: every page built, glued numbers present, nothing remote."""
    from imuse_lib import data

    assert bb.main(["--profile", "quick"]) == 0
    html = bb.HTML_DIR
    assert (html / "index.html").exists()
    for name in TOC_NOTEBOOKS:
        assert (html / "book" / "_executed" / f"{name}.html").exists(), name
    assert bb.find_remote_loads(html) == []
    page = (html / "book" / "_executed" / "01_data_selection.html").read_text()
    agreement = data.quadrant_agreement(data.load_catalog())
    assert f"{agreement:.1%}" in page  # the glued number, computed by the library
    assert "Plotly.newPlot" in page
    assert (html / "_static" / "vendor" / "mathjax" / "tex-chtml.js").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_browser_sees_no_remote_request(tmp_path):
    """Headless Chromium: a CDN script is caught; the built pages request nothing remote."""
    page = _write(tmp_path / "cdn.html", '<html><head><script src="https://cdn.example.org/x.js"></script>'
                                         '</head><body>x</body></html>')
    assert bb.browser_check([page], tmp_path / "shots") == ["cdn.html: https://cdn.example.org/x.js"]
    built = sorted((bb.HTML_DIR / "book").rglob("*.html"))
    if not built:
        pytest.skip("no built book (run the quick build first)")
    assert bb.browser_check(built, tmp_path / "shots") == []


def test_failing_notebook_names_itself_and_leaves_no_page(tmp_path, monkeypatch):
    """A real kernel runs a two-cell notebook whose second cell raises."""
    monkeypatch.setattr(bb, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(bb, "EXECUTED_DIR", tmp_path / "executed")
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('profile = "quick"'),
                                             nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")])
    source.cells[0].metadata["tags"] = ["parameters"]
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(source, tmp_path / "notebooks" / "99_broken.ipynb")
    (tmp_path / "executed").mkdir()
    (tmp_path / "executed" / "99_broken.ipynb").write_text("{}")  # a stale page from an earlier run
    with pytest.raises(bb.BuildError, match=r"99_broken\.ipynb failed in cell \[\d+\]: ValueError: broken on purpose"):
        bb.execute_all(["99_broken"], "quick", force=True, allow_missing=False)
    assert not (tmp_path / "executed" / "99_broken.ipynb").exists()
    failed = nbformat.read(tmp_path / "executed" / "99_broken.failed.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in failed.cells for o in c.get("outputs", []))


def test_build_lock_is_exclusive(tmp_path):
    import subprocess

    lock = tmp_path / "lock"
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a+')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n")
    with bb.build_lock(lock):
        assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 3
        assert lock.read_text().strip() == str(__import__("os").getpid())
    assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 0


def test_results_fingerprint_ignores_the_other_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path))
    before = bb.results_fingerprint("quick")
    _write(tmp_path / "full" / "runs" / "checkpoint.pt", "a full-profile run in progress")
    assert bb.results_fingerprint("quick") == before
    assert bb.results_fingerprint("full") != before
    _write(tmp_path / "quick" / "table2.csv", "x")
    assert bb.results_fingerprint("quick") != before
