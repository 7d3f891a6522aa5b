#!/usr/bin/env python
"""Build the IMUSE Jupyter Book, offline: what `make book` runs.

1. verify the input data (checksums of every registered file);
2. fetch the book's JavaScript into ``book/_static/vendor`` (plotly.js from the installed
   plotly package, MathJax 3 from the npm registry, cached) so that no page loads
   anything from the internet;
3. execute the notebooks listed in ``_toc.yml`` in order with papermill into
   ``book/_executed/`` (a notebook is skipped while its executed copy is up to date: same
   notebook, parameters, library sources and results; ``--force`` re-executes);
4. present the executed copies reader-first (``present``): code folded or removed by a rule that
   cell tags override, a line on each chapter saying which profile and commit its numbers come
   from (with Colab/Binder links when the repository is set), and the landing page's build box;
5. build the HTML with Jupyter Book 1 (``execute_notebooks: off``; warnings are errors);
6. check that no page loads a resource from the internet, optionally in a real browser.

Usage: ``.venv/bin/python scripts/build_book.py --profile quick|full [--force] [--allow-missing]``

Repository link and launch buttons come from one setting: ``repository.url`` in ``_config.yml``,
or the environment variable ``IMUSE_REPOSITORY_URL`` (which wins; the CI workflow sets it). Unset,
the book has no repository button and no launch links.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "book" / "_executed"
VENDOR_DIR = ROOT / "book" / "_static" / "vendor"
HTML_DIR = ROOT / "_build" / "html"
TOC = ROOT / "_toc.yml"
PROFILES = ("quick", "full")
KERNEL_NAME = "imuse"

# MathJax 3 from the npm registry; the integrity string is npm's (dist.integrity), checked again here.
MATHJAX_VERSION = "3.2.2"
MATHJAX_LAYOUT = "1"  # bump when what is extracted changes
MATHJAX_INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
# Bump when the way executed notebooks are produced changes (invalidates every cached copy).
EXECUTOR_VERSION = "4"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
BUILD_BOX = EXECUTED_DIR / "build-box.md"  # included by book/intro.md
BUILD_CONFIG = ROOT / "_build" / "_config.build.yml"  # _config.yml plus the repository setting
REPOSITORY_ENV = "IMUSE_REPOSITORY_URL"
SETUP_STAMP = ".imuse-setup-stamp"  # in the virtual environment (the Makefile's STAMP)


class BuildError(Exception):
    """A build step failed; the message says which and why, in one line."""


def log(msg: str) -> None:
    print(f"[book] {msg}", flush=True)


def _rel(path: Path) -> str:
    """``path`` relative to the project when inside it (shorter messages)."""
    path = Path(path)
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


# --------------------------------------------------------------------------- the toc


def toc_notebooks(toc: Path = TOC) -> list[str]:
    """Names (``01_data_selection``...) of the executed notebooks the toc lists, in order."""
    import yaml

    entries: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            file = node.get("file") or node.get("root")
            if isinstance(file, str):
                entries.append(file)
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(toc.read_text(encoding="utf-8")))
    prefix = EXECUTED_DIR.relative_to(ROOT).as_posix() + "/"
    return [e[len(prefix):].removesuffix(".ipynb") for e in entries if e.startswith(prefix)]


# --------------------------------------------------------------------------- data


def verify_data() -> tuple[int, int]:
    from imuse_lib import data

    report = data.verify(progress=True)
    bad = report[report.verified < report.files]
    if len(bad):
        lines = "; ".join(f"{r.asset}: {r.verified}/{r.files} files ({r.problem})" for r in bad.itertuples())
        raise BuildError(f"input data incomplete - {lines}")
    log(f"data verified: {int(report.files.sum())} files of {len(report)} assets")
    return int(report.files.sum()), len(report)


# --------------------------------------------------------------------------- vendored JavaScript


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_integrity(path: Path, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, path.read_bytes()).digest()).decode()
    if digest != expected:
        raise BuildError(f"{path}: integrity mismatch (expected {integrity[:24]}..., got {algo}-{digest[:16]}...); "
                         f"delete it and build again")


def mathjax_tarball() -> Path:
    """The MathJax npm tarball, from the download cache or fetched with `npm pack`."""
    from imuse_lib import config

    dest = config.cache_dir() / "downloads" / "npm"
    tarball = dest / f"mathjax-{MATHJAX_VERSION}.tgz"
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(f"npm not found: it is needed once to fetch MathJax {MATHJAX_VERSION} for offline math "
                             f"(install Node.js/npm, e.g. `apt-get install -y npm`, or put mathjax-"
                             f"{MATHJAX_VERSION}.tgz from the npm registry at {tarball})")
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            log(f"fetching mathjax@{MATHJAX_VERSION} with npm pack")
            proc = subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--pack-destination", tmp,
                                   "--silent"], capture_output=True, text=True)
            got = Path(tmp) / tarball.name
            if proc.returncode or not got.exists():
                raise BuildError(f"`npm pack mathjax@{MATHJAX_VERSION}` failed: "
                                 f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']}")
            _check_integrity(got, MATHJAX_INTEGRITY)
            os.replace(got, tarball)
    _check_integrity(tarball, MATHJAX_INTEGRITY)
    return tarball


def install_mathjax(vendor: Path = VENDOR_DIR) -> Path:
    """MathJax's es5 bundle (tex-chtml.js, its fonts and lazily loaded parts) in ``vendor/mathjax``."""
    target = vendor / "mathjax"
    stamp = target / "VERSION"
    if stamp.exists() and stamp.read_text().split() == [MATHJAX_VERSION, MATHJAX_LAYOUT] and (target / "tex-chtml.js").exists():
        return target
    tarball = mathjax_tarball()
    tmp = Path(tempfile.mkdtemp(dir=vendor.parent if vendor.parent.exists() else None))
    try:
        with tarfile.open(tarball) as tar:
            # latest.js would fetch the newest MathJax from a CDN, node-main.js is for Node: left out
            members = [m for m in tar.getmembers() if m.name.startswith("package/es5/") and m.isfile()
                       and Path(m.name).name not in {"latest.js", "node-main.js"}]
            for m in members:  # only plain files under es5/, no absolute or parent paths
                if Path(m.name).is_absolute() or ".." in Path(m.name).parts:
                    raise BuildError(f"{tarball}: unsafe member {m.name}")
            tar.extractall(tmp, members=members, filter="data")
        (tmp / "package" / "es5" / "VERSION").write_text(f"{MATHJAX_VERSION} {MATHJAX_LAYOUT}\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp / "package" / "es5"), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"MathJax {MATHJAX_VERSION} installed in {_rel(target)}")
    return target


def install_plotly(vendor: Path = VENDOR_DIR) -> Path:
    """plotly.min.js of the installed plotly package (the version that made the figures)."""
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not source.exists():
        raise BuildError(f"{source}: missing; reinstall plotly (`pip install --force-reinstall plotly`)")
    target = vendor / "plotly.min.js"
    if not target.exists() or _sha256(target) != _sha256(source):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        log(f"plotly.js of plotly {plotly.__version__} copied to {_rel(target)}")
    return target


# --------------------------------------------------------------------------- the "Try it" page


def install_tryit(allow_missing: bool = False) -> dict | None:
    """The "Try it" page's assets in book/_static: the deployed model's image path as ONNX and the
    song file (``imuse export onnx``, checked against PyTorch; reused while model and index are
    unchanged), and onnxruntime-web from npm (pinned checksum). Returns their sizes in bytes."""
    from imuse_lib import export
    from imuse_lib.errors import ImuseError

    static = ROOT / "book" / "_static"
    try:
        manifest = export.write_page_assets(static / "tryit" / "model")
    except ImuseError as exc:
        if not allow_missing:
            raise
        log(f"try-it page left without its model (--allow-missing): {exc}")
        return None
    export.install_onnxruntime_web(VENDOR_DIR / "onnxruntime-web")
    sizes = export.page_asset_sizes(static)
    check = manifest["check"]
    log(f"try-it page assets {sizes['total'] / 1e6:.1f} MB (model {sizes['model'] / 1e6:.1f}, runtime "
        f"{sizes['runtime'] / 1e6:.1f}, songs {sizes['songs'] / 1e6:.2f}); ONNX vs PyTorch max |VA difference| "
        f"{check['max_abs_diff_onnx_vs_torch']:.1e} on {len(check['images'])} OASIS images")
    return sizes


# --------------------------------------------------------------------------- execution


def kernel_env(workdir: Path) -> dict[str, str]:
    """Environment whose `imuse` kernel is this very interpreter (the venv's), not whatever
    `python` is first on PATH."""
    spec = workdir / "kernels" / KERNEL_NAME / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (imuse)", "language": "python",
    }))
    env = {"JUPYTER_PATH": os.pathsep.join(filter(None, [str(workdir), os.environ.get("JUPYTER_PATH")])),
           # the standard plotly MIME bundle; render_plotly() turns it into offline HTML for the book
           "PLOTLY_RENDERER": "plotly_mimetype",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "PYTHONHASHSEED": "0"}
    return env


def _library_files() -> list[Path]:
    lib = ROOT / "imuse_lib"
    return sorted(p for p in lib.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix in {".py", ".tsv", ".json", ".csv", ".yaml"})


def input_key(notebook: Path, params: dict, static: bool = True) -> str:
    """Hash of everything an executed copy depends on besides the data (checksummed) and results;
    ``static``: whether its figures get static images (a browser was there)."""
    h = hashlib.sha256()
    h.update(f"executor {EXECUTOR_VERSION}\nstatic figures {static}\n".encode())
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    for var in ("IMUSE_DATA", "IMUSE_CACHE", "IMUSE_RESULTS"):
        h.update(f"{var}={os.environ.get(var, '')}\n".encode())
    for path in _library_files():
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def results_fingerprint(profile: str) -> str:
    """Cheap fingerprint of the results folder (names, sizes, times): a notebook reading results
    is re-executed when they changed behind its back (e.g. a manual `imuse train`). The folders
    of the other profiles (results/full/ for a quick build) are not looked at."""
    from imuse_lib import config

    root = config.results_dir()
    others = {root / p for p in PROFILES if p != profile}
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not others & set(p.parents)):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def render_plotly(nb, name: str, browser: str | None = None, no_browser_why: str = "no browser for kaleido") -> dict:
    """Replace every plotly figure output by its offline HTML rendering (a div and a Plotly.newPlot
    call; plotly.js itself is loaded once per page from _static) and, given a ``browser`` for
    kaleido, a PNG of it (shown when printing or with JavaScript off). A static image kaleido
    cannot make is left out, never fatal: the live figure is what a reader sees. The figure's JSON
    is dropped from the book's copy: myst-nb has no renderer for it and would warn.

    Returns ``{"figures": n, "static": how many got a PNG, "left_out_why": "" or the reason}``
    (``no_browser_why`` when there is no ``browser``)."""
    from imuse_lib import report
    from imuse_lib.errors import ImuseError

    count, static, why = 0, 0, "" if browser is not None else no_browser_why
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                fig = data.pop(PLOTLY_MIME)
                png = None
                if not why:  # after one failure the others would fail alike
                    try:
                        png = report.static_png(fig, browser=browser)
                        static += 1
                    except ImuseError as exc:
                        why = str(exc)
                        log(f"{name}: {why}; static images left out")
                data["text/html"] = report.plotly_html(fig, f"plotly-{name}-{count}", png)
                count += 1
    return {"figures": count, "static": static, "left_out_why": why if count > static else ""}


# Tags with which a notebook says itself how a cell is shown; a cell carrying one is left alone.
# "show-input" is ours: keep the code visible (myst-nb ignores the tag itself).
VISIBILITY_TAGS = {"hide-input", "remove-input", "hide-cell", "remove-cell", "hide-output", "remove-output",
                   "show-input"}
GLUE_PREFIX = "application/papermill.record/"  # myst-nb's glue(display=False) records
AUTO_TAGS_KEY = "imuse_auto_tags"  # cell metadata: the tags the build added (re-derived every build)
PROVENANCE_KEY = "imuse_provenance"  # cell metadata marking the build's "numbers from" cell


def _visible_outputs(cell) -> list:
    """Outputs a reader sees: not glue records (display=False), not stderr (removed by the book)."""
    shown = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") != "stderr" and out.get("text", "").strip():
                shown.append(out)
        elif kind in {"display_data", "execute_result"}:
            if any(not k.startswith(GLUE_PREFIX) for k in out.get("data", {})):
                shown.append(out)
        elif kind == "error":
            shown.append(out)
    return shown


def _only_boxes(outputs: list) -> bool:
    from imuse_lib import report

    return bool(outputs) and all(report.BOX_CLASS in "".join(o.get("data", {}).get("text/html", ""))
                                 for o in outputs)


def reader_tag(cell) -> str | None:
    """How the build shows a code cell whose tags do not say (the rule every chapter inherits):

    * the papermill-injected parameters: removed (the chapter's "numbers from" line names the profile);
    * the notebook's own parameters cell: code folded (it documents the parameters);
    * a cell that shows nothing (imports, glue helpers, glue-only computations) or only a
      "what this shows" box: code removed, it is plumbing;
    * any other cell: code folded behind "Show code cell source", output shown.
    """
    tags = set(cell.metadata.get("tags", []))
    if cell.cell_type != "code" or tags & VISIBILITY_TAGS:
        return None
    if "injected-parameters" in tags:
        return "remove-cell"
    if "parameters" in tags:
        return "hide-input"
    outputs = _visible_outputs(cell)
    if not outputs or _only_boxes(outputs):
        return "remove-input"
    return "hide-input"


def reader_first(nb) -> None:
    """Apply :func:`reader_tag` to every code cell; tags a previous build added are re-derived."""
    for cell in nb.cells:
        auto = set(cell.metadata.pop(AUTO_TAGS_KEY, []))
        tags = [t for t in cell.metadata.get("tags", []) if t not in auto]
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        tag = reader_tag(cell)
        if tag:
            cell.metadata["tags"] = tags + [tag]
            cell.metadata[AUTO_TAGS_KEY] = [tag]


def profile_summary(profile: str) -> str:
    """'quick: 5 epochs, 1 seed, mobilenet_v2 + musicnn' - what a reader needs to weigh the numbers."""
    from imuse_lib import experiments

    prof = experiments.get_profile(profile)
    seeds = len(prof.seeds)
    if prof.image_backbones and prof.audio_backbones:
        pairs = ", ".join(f"{i} + {a}" for i in prof.image_backbones for a in prof.audio_backbones)
    else:
        pairs = "every backbone pair with weights"
    return f"{prof.epochs} epochs, {seeds} seed{'s' if seeds != 1 else ''}, {pairs}"


def launch_links(name: str, repo_url: str, branch: str) -> list[tuple[str, str]]:
    """(label, URL) of the places a reader can run ``notebooks/<name>.ipynb``: Colab and Binder for
    a GitHub repository, the source file otherwise. None without a repository."""
    from urllib.parse import quote

    if not repo_url:
        return []
    path = f"notebooks/{name}.ipynb"
    m = re.match(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", repo_url)
    if not m:
        return [("notebook source", f"{repo_url.rstrip('/')}/blob/{branch}/{path}")]
    owner, repo = m.groups()
    return [("Open in Colab", f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{path}"),
            ("Launch on Binder", f"https://mybinder.org/v2/gh/{owner}/{repo}/{quote(branch, safe='')}"
                                 f"?labpath={quote(path, safe='')}"),
            ("notebook source", f"{repo_url.rstrip('/')}/blob/{branch}/{path}")]


def provenance_html(profile: str, stamp: dict, links: list[tuple[str, str]]) -> str:
    """The line under a chapter's title: which profile, when and at which commit it was executed."""
    import html

    when = stamp.get("executed_at", "?")
    commit = stamp.get("commit", "?")
    seconds = stamp.get("seconds")
    took = f" in {_fmt_seconds(seconds)}" if isinstance(seconds, (int, float)) else ""
    text = (f'Numbers on this page: <strong>{html.escape(profile)}</strong> profile '
            f'({html.escape(profile_summary(profile))}); executed {html.escape(when)}{took} at commit '
            f'<code>{html.escape(commit)}</code>.')
    if links:
        text += " " + " &middot; ".join(f'<a href="{html.escape(url)}">{html.escape(label)}</a>'
                                        for label, url in links)
    return f'<p class="imuse-provenance">{text}</p>'


def add_provenance(nb, markup: str) -> None:
    """Put ``markup`` in a markdown cell right after the chapter's title cell (replacing the one a
    previous build put there)."""
    import nbformat

    nb.cells = [c for c in nb.cells if not c.metadata.get(PROVENANCE_KEY)]
    cell = nbformat.v4.new_markdown_cell(markup)
    cell.id = "imuse-provenance"  # a fixed id: an unchanged line leaves the page unchanged (no rebuild)
    cell.metadata[PROVENANCE_KEY] = True
    first = nb.cells[0] if nb.cells else None
    at = 1 if first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("# ") else 0
    nb.cells.insert(at, cell)


def present(name: str, profile: str, repo_url: str, branch: str) -> bool:
    """Reader-first presentation of ``book/_executed/<name>.ipynb``; True when it changed."""
    import nbformat

    from imuse_lib import io

    path = EXECUTED_DIR / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    stamp = io.read_json(stamp_path(name)) if stamp_path(name).exists() else {}
    reader_first(nb)
    add_provenance(nb, provenance_html(stamp.get("profile", profile), stamp, launch_links(name, repo_url, branch)))
    after = nbformat.writes(nb)
    if after == before:
        return False
    with io.atomic_path(path) as tmp:
        Path(tmp).write_text(after, encoding="utf-8")
    return True


def _fmt_seconds(seconds: float) -> str:
    from imuse_lib import report

    return report.fmt_seconds(seconds)


def stamp_path(name: str) -> Path:
    return EXECUTED_DIR / f"{name}.stamp.json"


def is_fresh(name: str, key: str, fingerprint: str) -> bool:
    from imuse_lib import io

    out, stamp = EXECUTED_DIR / f"{name}.ipynb", stamp_path(name)
    if not (out.exists() and stamp.exists()):
        return False
    try:
        saved = io.read_json(stamp)
    except (ValueError, OSError):
        return False
    return saved.get("input") == key and saved.get("results") == fingerprint


def execute(name: str, params: dict, env: dict[str, str], browser: str | None = None,
            no_browser_why: str = "no browser for kaleido") -> tuple[float, dict]:
    """Run notebooks/<name>.ipynb with papermill into book/_executed/<name>.ipynb; seconds taken
    and :func:`render_plotly`'s count of figures.

    The output appears only when the run succeeded; a failed run leaves <name>.failed.ipynb
    (with the traceback) and no executed copy, so the book never shows a broken page."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from imuse_lib import io

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    target = EXECUTED_DIR / f"{name}.ipynb"
    failed = EXECUTED_DIR / f"{name}.failed.ipynb"
    running = EXECUTED_DIR / f".{name}.running.ipynb"
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # never leave a stale page beside a failed run
    start = time.perf_counter()
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits papermill's environment
    try:
        pm.execute_notebook(str(source), str(running), parameters=params, kernel_name=KERNEL_NAME,
                            language="python", cwd=str(NOTEBOOK_DIR), progress_bar=True,
                            request_save_on_cell_execute=False)
        nb = nbformat.read(running, as_version=4)
        figures = render_plotly(nb, name, browser, no_browser_why)
        with io.atomic_path(target) as tmp:
            nbformat.write(nb, tmp)
    except PapermillExecutionError as exc:
        if running.exists():
            os.replace(running, failed)
        first = exc.evalue.strip().splitlines()[0] if exc.evalue and exc.evalue.strip() else ""
        raise BuildError(f"notebook {_rel(source)} failed in cell [{exc.exec_count}]: "
                         f"{exc.ename}: {first} (the executed copy with the traceback: "
                         f"{_rel(failed)})") from None
    except BuildError:
        raise
    except Exception as exc:  # kernel death, unreadable notebook, missing kernel...
        raise BuildError(f"notebook {_rel(source)} could not be executed: "
                         f"{type(exc).__name__}: {exc}") from None
    finally:
        running.unlink(missing_ok=True)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    failed.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    log(f"{name}: executed in {seconds:.1f} s ({figures['figures']} plotly figure(s), "
        f"{figures['static']} with a static image)")
    return seconds, figures


def execute_all(names: list[str], profile: str, force: bool, allow_missing: bool,
                browser: str | None = None, no_browser_why: str = "no browser for kaleido") -> dict[str, float]:
    """Execute the notebooks that are not up to date; seconds each (0: from the cache). With no
    ``browser`` the figures get no static image, and a copy made so is re-executed once a
    browser is there."""
    from imuse_lib import io

    missing = [n for n in names if not (NOTEBOOK_DIR / f"{n}.ipynb").exists()]
    if missing and not allow_missing:
        raise BuildError(f"notebook(s) listed in _toc.yml but missing: "
                         f"{', '.join(f'notebooks/{n}.ipynb' for n in missing)}")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="imuse-kernel-") as kdir:
        env = kernel_env(Path(kdir))
        for name in names:
            if name in missing:
                log(f"WARNING: notebooks/{name}.ipynb does not exist yet; its page is left out (--allow-missing)")
                continue
            params = {"profile": profile}
            key = input_key(NOTEBOOK_DIR / f"{name}.ipynb", params, static=browser is not None)
            if not force and is_fresh(name, key, results_fingerprint(profile)):
                log(f"{name}: up to date, not re-executed")
                times[name] = 0.0
                continue
            times[name], figures = execute(name, params, env, browser, no_browser_why)
            io.write_json(stamp_path(name), {"input": key, "results": results_fingerprint(profile), "profile": profile,
                                             "seconds": round(times[name], 1), "executed_at": utc_now(),
                                             "commit": git_commit(), "figures": figures})
    # Every notebook ran against the results as they are now: record that state in each stamp.
    fingerprint = results_fingerprint(profile)
    for name in times:
        stamp = io.read_json(stamp_path(name))
        stamp["results"] = fingerprint
        io.write_json(stamp_path(name), stamp)
    return times


# --------------------------------------------------------------------------- provenance


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def git_commit(root: Path = ROOT) -> str:
    """Short commit of the working tree, "+changes" when it differs from it; "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=30)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")


def repository_setting(config_path: Path | None = None) -> tuple[str, str]:
    """(repository URL, branch): ``$IMUSE_REPOSITORY_URL`` or ``repository.url`` of _config.yml,
    the one setting behind the repository button and the launch links ("" when unset)."""
    import yaml

    config = yaml.safe_load((config_path or ROOT / "_config.yml").read_text(encoding="utf-8")) or {}
    repo = config.get("repository") or {}
    url = (os.environ.get(REPOSITORY_ENV) or repo.get("url") or "").strip()
    if url and not re.match(r"https://[^\s/]+/\S+$", url):
        raise BuildError(f"repository URL {url!r} (from {REPOSITORY_ENV} or _config.yml repository.url) is not "
                         f"an https:// address of a repository, e.g. https://github.com/OWNER/NAME")
    return url.rstrip("/"), str(repo.get("branch") or "main")


def write_build_config(repo_url: str, out: Path = BUILD_CONFIG, source: Path | None = None) -> Path:
    """_config.yml with the repository setting applied: the repository button when a URL is set,
    none otherwise (a button to nowhere is worse than none)."""
    import yaml

    source = source or ROOT / "_config.yml"
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    config.setdefault("repository", {})["url"] = repo_url
    # Jupyter Book finds local extensions relative to the config file, which moves to _build/
    extensions = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, folder in extensions.items():
        extensions[name] = str((source.parent / folder).resolve())
    html = config.setdefault("html", {})
    html["use_repository_button"] = bool(repo_url)
    html["use_issues_button"] = bool(repo_url) and "github.com/" in repo_url
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Generated by scripts/build_book.py from _config.yml: do not edit.\n"
                   + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


def device_label() -> str:
    from imuse_lib import training

    return training.device_name(training.resolve_device("auto"))


def chapter_title(name: str) -> str:
    """The chapter's first heading, from its source notebook (the name when it has none)."""
    import nbformat

    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if path.exists():
        for cell in nbformat.read(path, as_version=4).cells:
            m = re.search(r"^#\s+(.+)$", cell.source, re.M) if cell.cell_type == "markdown" else None
            if m:
                return m.group(1).strip()
    return name


def build_time(info: dict) -> str:
    """This build's wall time up to the pages, and what it covered."""
    from imuse_lib import report

    took = report.fmt_seconds(info["wall_s"])
    if not any(info["executed"].values()):
        return f"{took} (every notebook from the execution cache: their own times are below)"
    return f"{took} (data check and notebooks; the pages follow)"


def time_breakdown(setup: tuple, steps: dict[str, float], times: dict[str, float],
                   inside: dict[str, float]) -> list[str]:
    """One line per step of the build, in order: set-up (from its stamp), the builder's steps, each
    notebook executed and, within them, what the library recorded (feature stores, training runs,
    evaluation)."""
    from imuse_lib import report

    fmt = report.fmt_seconds
    seconds, when = setup
    lines = [f"set-up (make setup, {when}): {fmt(seconds)}" if seconds is not None else "set-up: not recorded"]
    for step, took in steps.items():
        lines.append(f"{step}: {fmt(took)}")
        if step == "notebooks":
            lines += [f"- {name}: {fmt(t) if t else 'cached'}" for name, t in times.items()]
            lines += [f"- within them, {part}: {fmt(t)}" for part, t in inside.items()]
    return lines


def static_left_out(names: list[str]) -> str:
    """Which figures have no static image and why ("" when every figure has one), from the stamps."""
    from imuse_lib import io

    counts, whys = [], set()
    for name in names:
        figures = (io.read_json(stamp_path(name)) if stamp_path(name).exists() else {}).get("figures") or {}
        lost = int(figures.get("figures", 0)) - int(figures.get("static", 0))
        if lost > 0:
            counts.append(f"{name} {lost}")
            whys.add(figures.get("left_out_why") or "?")
    if not counts:
        return ""
    return f"{', '.join(counts)} figure(s): {'; '.join(sorted(whys))}"


def static_row(names: list[str]) -> str:
    """The build box's line on the figures' static images (print, no JavaScript)."""
    left_out = static_left_out(names)
    if not left_out:
        return "| static images | every plotly figure has one (for print and readers without JavaScript) |\n"
    return (f"| static images | left out for {left_out}. The live figures are all there; the static ones "
            f"serve print and readers without JavaScript |\n")


def breakdown_row(info: dict) -> str:
    """The build box's line on where this build's time went, up to the pages."""
    if "steps" not in info:
        return ""
    lines = time_breakdown(info["setup"], info["steps"], {n: t for n, t in info.get("times", {}).items()},
                           info.get("inside", {}))
    return f"| time by step | {'<br>'.join(lines)} |\n"


def tryit_row(sizes: dict | None) -> str:
    """The build box's line on the "Try it" page: its assets' sizes, and its times in the browser
    when this model's page has been measured (``--browser-check``)."""
    from imuse_lib import io, report

    if not sizes:
        return "| Try it page | not built (no deployed model) |\n"
    size = report.fmt_bytes
    text = (f"{size(sizes['total'])} of assets (model {size(sizes['model'])}, runtime {size(sizes['runtime'])} "
            f"gzipped, songs {size(sizes['songs'])})")
    try:
        times = io.read_json(TRYIT_TIMES)
        fingerprint = io.read_json(ROOT / "book" / "_static" / "tryit" / "model" / "manifest.json")["fingerprint"]
    except (OSError, ValueError, KeyError):
        times, fingerprint = None, None
    if times and times.get("fingerprint") == fingerprint:
        text += (f"; in headless Chromium on this machine: first result {report.fmt_seconds(times['first_ms'] / 1000)}"
                 f" (model load included), later pictures {report.fmt_seconds(times['later_median_ms'] / 1000)} (median of "
                 f"{times['images'] - 1})")
    else:
        text += "; its times in the browser are measured by `make book-check`"
    return f"| Try it page | {text} |\n"


def write_build_box(info: dict, names: list[str], out: Path = BUILD_BOX) -> Path:
    """The landing page's build box (MyST, included by book/intro.md): profile, commit, date,
    device, verified data and each chapter's execution time, all from this build."""
    from imuse_lib import io, report

    rows = []
    for name in names:
        stamp = io.read_json(stamp_path(name)) if stamp_path(name).exists() else {}
        seconds = stamp.get("seconds")
        took = report.fmt_seconds(seconds) if isinstance(seconds, (int, float)) else "?"
        when = "in this build" if info["executed"].get(name) else f"earlier (cached): {stamp.get('executed_at', '?')}"
        rows.append(f"| {{doc}}`{chapter_title(name)} <_executed/{name}>` | {took} | {when} |")
    text = f"""```{{admonition}} This edition
:class: note imuse-build-box

| | this edition |
|---|---|
| profile | **{info['profile']}**: {profile_summary(info['profile'])} |
| commit | `{info['commit']}` |
| built | {info['built']} |
| device | {info['device']} |
| data | {report.fmt_count(info['data_files'])} files of {info['data_assets']} data sets, SHA-256 checksums verified |
| build time | {build_time(info)} |
{breakdown_row(info)}{static_row(names)}{tryit_row(info.get('tryit'))}
| chapter | execution time | executed |
|---|---|---|
{chr(10).join(rows)}

`make book` builds the quick profile (minutes on a CPU); `make book PROFILE=full` builds the full edition.
```
"""
    with io.atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return out


# --------------------------------------------------------------------------- Jupyter Book


def write_build_toc(names_missing: list[str]) -> Path:
    """A copy of _toc.yml without the pages whose notebooks are missing (--allow-missing only)."""
    import yaml

    toc = yaml.safe_load(TOC.read_text(encoding="utf-8"))
    drop = {f"{EXECUTED_DIR.relative_to(ROOT).as_posix()}/{n}" for n in names_missing}

    def prune(node):
        if isinstance(node, dict):
            return {k: prune(v) for k, v in node.items()}
        if isinstance(node, list):
            return [prune(x) for x in node if not (isinstance(x, dict) and x.get("file") in drop)]
        return node

    out = ROOT / "_build" / "_toc.partial.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(prune(toc), sort_keys=False))
    return out


def jupyter_book(strict: bool, toc: Path | None = None, all_files: bool = False, config: Path | None = None,
                 root: Path | None = None) -> None:
    exe = Path(sys.executable).parent / "jupyter-book"
    root = root or ROOT
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--builder", "html"]
    if config is not None:
        cmd += ["--config", str(config)]
    if strict:
        cmd.append("--warningiserror")
    if toc is not None:
        cmd += ["--toc", str(toc)]
    if all_files:
        cmd.append("--all")
    log("jupyter-book build" + (" (warnings are errors)" if strict else ""))
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode:
        raise BuildError(f"jupyter-book build failed (exit {proc.returncode}); see the messages above")


# --------------------------------------------------------------------------- offline check


@dataclass(frozen=True)
class RemoteLoad:
    file: str
    what: str  # e.g. "script src", "css url()", "link rel=stylesheet"
    url: str


REMOTE = re.compile(r"^\s*(?:https?:)?//", re.I)
CSS_URL = re.compile(r"""url\(\s*['"]?\s*((?:https?:)?//[^'")\s]+)""", re.I)
CSS_IMPORT = re.compile(r"""@import\s+['"]\s*((?:https?:)?//[^'"\s]+)""", re.I)
JS_LOAD = re.compile(r"""(?:\bimport\s*\(?\s*|\.src\s*=\s*|\bfetch\s*\(\s*|importScripts\s*\(\s*)['"`]"""
                     r"""((?:https?:)?//[^'"`\s]+)""", re.I)
# <link rel=...> values that make the browser fetch or connect; canonical, alternate, next... do not.
LINK_LOADS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "preload", "modulepreload", "prefetch",
              "preconnect", "dns-prefetch", "manifest", "mask-icon", "prerender"}
SRC_ATTRS = {"src", "data", "poster", "background", "srcset", "imagesrcset"}


def _css_loads(text: str) -> list[str]:
    return CSS_URL.findall(text) + CSS_IMPORT.findall(text)


class _LoadFinder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k.lower(): (v or "") for k, v in attrs}
        for attr in SRC_ATTRS & a.keys():
            urls = [u.strip().split()[0] for u in a[attr].split(",") if u.strip()] if "srcset" in attr else [a[attr]]
            self.found += [(f"{tag} {attr}", u.strip()) for u in urls if REMOTE.match(u)]
        if tag == "link" and REMOTE.match(a.get("href", "")):
            rels = set(a.get("rel", "").lower().split())
            if rels & LINK_LOADS or not rels:
                self.found.append((f"link rel={a.get('rel', '')}", a["href"].strip()))
        for attr in ("href", "xlink:href"):
            if tag in {"image", "use", "feimage"} and REMOTE.match(a.get(attr, "")):
                self.found.append((f"{tag} {attr}", a[attr].strip()))
        if "style" in a:
            self.found += [(f"{tag} style url()", u) for u in _css_loads(a["style"])]
        if tag in {"script", "style"}:
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.found += [("inline style url()", u) for u in _css_loads(data)]
        elif self._in == "script":
            self.found += [("inline script load", u) for u in JS_LOAD.findall(data)]


def find_remote_loads(html_dir: Path) -> list[RemoteLoad]:
    """Every resource an HTML page or stylesheet under ``html_dir`` would load from another host.

    Looks at src/srcset/data of any tag, <link> that fetches (stylesheet, icon, preload...),
    url() and @import in CSS files, <style> and style= attributes, and imports/fetches in
    inline scripts. Plain <a href> links are not loads and are not reported.
    """
    html_dir = Path(html_dir)
    out: list[RemoteLoad] = []
    for path in sorted(html_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(html_dir).as_posix()
        if path.suffix in {".html", ".htm"}:
            finder = _LoadFinder()
            finder.feed(path.read_text(encoding="utf-8", errors="replace"))
            finder.close()
            out += [RemoteLoad(rel, what, url) for what, url in finder.found]
        elif path.suffix == ".css":
            out += [RemoteLoad(rel, "css url()", u) for u in _css_loads(path.read_text(encoding="utf-8", errors="replace"))]
    return out


def check_offline(html_dir: Path = HTML_DIR) -> None:
    loads = find_remote_loads(html_dir)
    if loads:
        shown = "; ".join(f"{r.file}: {r.what} {r.url}" for r in loads[:5])
        raise BuildError(f"{len(loads)} remote resource load(s) in {html_dir} (the book must work offline): "
                         f"{shown}{' ...' if len(loads) > 5 else ''}")
    log(f"offline check passed: no page or stylesheet under {_rel(html_dir)} loads anything remote")


# --------------------------------------------------------------------------- browser check


def _sibling(name: str):
    """A module of scripts/, beside this file (this script is run, not installed)."""
    import importlib

    scripts = str(Path(__file__).resolve().parent)
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module(name)


def _book_browser():
    """scripts/book_browser.py (Playwright driving the system Chromium), beside this file."""
    return _sibling("book_browser")


TRYIT_TIMES = ROOT / "_build" / "browser-check" / "tryit-times.json"


def browser_check(html_dir: Path = HTML_DIR, out_dir: Path | None = None) -> dict:
    """Every page of the built book in headless Chromium at a laptop's and a phone's width
    (``book_browser.check_pages``): screenshots and ``browser-check.json`` in ``out_dir``.
    Raises BuildError on a request that leaves the machine, a console error, a plotly figure
    that does not draw, anything cut off past the main column's edge at either width, or a
    sideways scroller at a laptop's width (at a phone's, a wide table scrolls inside its own
    box, as it should). Returns the summary."""
    bb = _book_browser()
    out_dir = out_dir or ROOT / "_build" / "browser-check"
    pages = sorted(p.relative_to(html_dir).as_posix() for p in (html_dir / "book").rglob("*.html"))
    try:
        measured = bb.check_pages(html_dir, pages, out_dir)
    except RuntimeError as exc:
        raise BuildError(str(exc)) from None
    summary = bb.summarise(measured)
    log(f"browser: {summary['pages']} pages x {len(bb.WIDTHS)} widths -> {_rel(out_dir)}; sideways scrollers "
        f"{summary['scroll']}, cut off {summary['cut']}, plotly drawn {summary['plotly_drawn']}/{summary['plotly']}, "
        f"images without alt text {summary['img_without_alt']}")
    laptop = max(bb.WIDTHS)

    def problems(key: str, v: dict) -> list:
        found = v["remote"] + v["console"] + [f"cut off: {c}" for c in v["cut"]]
        if key.endswith(f"@{laptop}"):  # on a phone a wide table scrolls in its own box
            found += [f"scrolls sideways: {c}" for c in v["scroll"]]
        if v["plotly_drawn"] < v["plotly"]:
            found.append("a plotly figure did not draw")
        return found

    bad = {k: found for k, v in measured.items() if (found := problems(k, v))}
    if bad:
        shown = "; ".join(f"{k}: {found[:2]}" for k, found in list(bad.items())[:4])
        raise BuildError(f"browser check: {len(bad)} page-width(s) with a remote request, a console error, an "
                         f"undrawn figure or a layout a reader would have to scroll: {shown} (screenshots in "
                         f"{_rel(out_dir)})")
    return summary


def tryit_times(html_dir: Path = HTML_DIR) -> dict:
    """The "Try it" page timed on real OASIS pictures in the browser, saved with the model's
    fingerprint for the build box (:data:`TRYIT_TIMES`)."""
    from imuse_lib import export, io

    manifest = io.read_json(ROOT / "book" / "_static" / "tryit" / "model" / "manifest.json")
    times = _book_browser().measure_tryit(html_dir, export.check_images(4))
    times.update(fingerprint=manifest["fingerprint"], measured=utc_now())
    if times["remote"] or times["console"]:
        raise BuildError(f"Try-it page: {(times['remote'] + times['console'])[:3]}")
    io.write_json(TRYIT_TIMES, times)
    log(f"try-it page in the browser: first result {times['first_ms']:.0f} ms (model load "
        f"{times['model_load_ms']:.0f} ms), later {times['later_median_ms']:.0f} ms (median)")
    return times


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def build_lock(path: Path | None = None):
    """One build at a time: two builds would execute into the same book/_executed and _build.
    A second build waits for the first (the lock goes with its process, never stale)."""
    import fcntl

    path = path or ROOT / "_build" / ".build_book.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            log(f"another book build is running (pid {fh.read().strip() or '?'}); waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="quick",
                        help="notebook parameter: quick (minutes on a CPU) or full (the paper's settings)")
    parser.add_argument("--force", action="store_true", help="re-execute every notebook and rebuild all pages")
    parser.add_argument("--allow-missing", action="store_true",
                        help="development only: leave out toc pages whose notebook does not exist yet")
    parser.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    parser.add_argument("--skip-execute", action="store_true", help="build from the executed copies as they are")
    parser.add_argument("--no-static-figures", action="store_true",
                        help="leave out the static PNG of each plotly figure (kaleido needs Chrome/Chromium)")
    parser.add_argument("--browser-check", action="store_true",
                        help="also open every page in headless Chromium: screenshots and network log in "
                             "_build/browser-check, fails on any remote request")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    with build_lock():
        return _build(args)


class StepTimes:
    """Wall time of each build step, in order: the breakdown in the log and the build box."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def static_figure_browser(no_static: bool) -> tuple[str | None, str]:
    """(the browser kaleido uses for the figures' static images, "") or (None, why there is none).
    The browser is the one set-up installs (``setup_system.browser``)."""
    if no_static:
        return None, "left out on request (--no-static-figures)"
    browser = _sibling("setup_system").browser()
    if browser is None:
        return None, ("no Chrome/Chromium on PATH for kaleido (`make setup` installs Debian's chromium where it "
                      "can; see its line)")
    return browser, ""


def setup_seconds() -> tuple[float | None, str]:
    """Set-up's wall time and date from the virtual environment's set-up stamp (make setup)."""
    got = _sibling("setup_system").read_stamp(str(Path(sys.prefix) / SETUP_STAMP))
    return got["seconds"], got["when"]


def inside_notebooks(profile: str, since: float) -> dict[str, float]:
    """What the notebooks computed in this build (written after ``since``, a time.time()), as the
    library recorded it: each feature store computed, the training runs, the evaluation."""
    import pandas as pd

    from imuse_lib import config, features, io

    parts: dict[str, float] = {}
    for row in features.list_store():
        meta = features.store_root() / str(row["key"]) / "meta.json"
        if meta.exists() and meta.stat().st_mtime >= since and row.get("seconds"):
            parts[f"feature store {row['backbone']}"] = float(row["seconds"])
    results = config.results_dir() / profile
    runs_csv = results / "training_runs.csv"
    if runs_csv.exists() and runs_csv.stat().st_mtime >= since:
        runs = pd.read_csv(runs_csv)
        processes = int(runs.parallel_processes.max()) if "parallel_processes" in runs else 1
        parts[f"training runs ({len(runs)} on {processes} processes)"] = float(
            (runs.train_s_total + runs.val_s_total).sum() / max(processes, 1))
    results_json = results / "results.json"
    if results_json.exists() and results_json.stat().st_mtime >= since:
        parts["evaluation"] = float(io.read_json(results_json).get("seconds") or 0.0)
    return parts


def _build(args: argparse.Namespace) -> int:
    start, started_at = time.perf_counter(), time.time()
    steps = StepTimes()
    times: dict[str, float] = {}
    try:
        if args.browser_check and _book_browser().any_browser() is None:
            raise BuildError("`make book-check` opens every page in a browser and none is installed: "
                             "`apt-get install -y chromium` (which `make setup` does on Debian as root)")
        browser, no_static_why = static_figure_browser(args.no_static_figures)
        if browser is None:
            log(f"static images of the figures: {no_static_why}; the live figures are there")
        names = toc_notebooks()
        repo_url, branch = repository_setting()
        with steps.step("data check"):
            data_files, data_assets = verify_data()
        with steps.step("JavaScript (plotly.js, MathJax)"):
            install_plotly()
            install_mathjax()
        with steps.step("notebooks"):
            if not args.skip_execute:
                times = execute_all(names, args.profile, args.force, args.allow_missing, browser, no_static_why)
        missing = [n for n in names if not (EXECUTED_DIR / f"{n}.ipynb").exists()]
        if missing and not args.allow_missing:
            raise BuildError(f"no executed copy of: {', '.join(missing)} (run without --skip-execute)")
        present_names = [n for n in names if n not in missing]
        with steps.step("Try it page (ONNX export, onnxruntime-web)"):
            tryit_sizes = install_tryit(args.allow_missing)  # needs the default model and index: after execution
        with steps.step("presentation"):
            changed = [n for n in present_names if present(n, args.profile, repo_url, branch)]
        if changed:
            log(f"reader-first presentation applied to {', '.join(changed)}")
        box_info = {"profile": args.profile, "commit": git_commit(), "built": utc_now(),
                    "device": device_label(), "data_files": data_files, "data_assets": data_assets,
                    "wall_s": time.perf_counter() - start, "executed": {n: t > 0 for n, t in times.items()},
                    "tryit": tryit_sizes, "setup": setup_seconds(), "steps": dict(steps.seconds), "times": times,
                    "inside": inside_notebooks(args.profile, started_at)}
        write_build_box(box_info, present_names)
        toc = write_build_toc(missing) if missing else None
        strict = not args.no_strict
        if missing and strict:
            log("pages are missing (--allow-missing): links to them will warn, so warnings are not errors")
            strict = False
        with steps.step("HTML (jupyter-book) and offline check"):
            jupyter_book(strict=strict, toc=toc, all_files=args.force, config=write_build_config(repo_url))
            check_offline(HTML_DIR)
        if args.browser_check:
            with steps.step("browser check"):
                browser_check(HTML_DIR)
                if tryit_sizes is not None:  # the box shows the page's times: measured now, box rebuilt
                    tryit_times(HTML_DIR)
                    write_build_box(box_info, present_names)
                    jupyter_book(strict=strict, toc=toc, config=write_build_config(repo_url))
    except BuildError as exc:
        print(f"build_book: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # data errors from the library: one line, no traceback
        from imuse_lib.errors import ImuseError

        if isinstance(exc, ImuseError):
            print(f"build_book: error: {exc}", file=sys.stderr)
            return 1
        raise
    total = time.perf_counter() - start
    for line in time_breakdown(box_info["setup"], steps.seconds, times, box_info["inside"]):
        log(f"  {line}")
    left_out = static_left_out(present_names)
    if left_out:
        log(f"static images left out: {left_out}")
    log(f"book built in {total:.1f} s: {(HTML_DIR / 'index.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
