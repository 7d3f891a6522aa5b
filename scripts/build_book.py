#!/usr/bin/env python
"""Build the IMUSE Jupyter Book, offline: what `make book` runs.

1. verify the input data (checksums of every registered file);
2. fetch the book's JavaScript into ``book/_static/vendor`` (plotly.js from the installed
   plotly package, MathJax 3 from the npm registry, cached) so that no page loads
   anything from the internet;
3. execute the notebooks listed in ``_toc.yml`` in order with papermill into
   ``book/_executed/`` (a notebook is skipped while its executed copy is up to date: same
   notebook, parameters, library sources and results; ``--force`` re-executes);
4. build the HTML with Jupyter Book 1 (``execute_notebooks: off``; warnings are errors);
5. check that no page loads a resource from the internet, optionally in a real browser.

Usage: ``.venv/bin/python scripts/build_book.py --profile quick|full [--force] [--allow-missing]``
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
EXECUTOR_VERSION = "3"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


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


def verify_data() -> None:
    from imuse_lib import data

    report = data.verify(progress=True)
    bad = report[report.verified < report.files]
    if len(bad):
        lines = "; ".join(f"{r.asset}: {r.verified}/{r.files} files ({r.problem})" for r in bad.itertuples())
        raise BuildError(f"input data incomplete - {lines}")
    log(f"data verified: {int(report.files.sum())} files of {len(report)} assets")


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


def input_key(notebook: Path, params: dict) -> str:
    """Hash of everything an executed copy depends on besides the data (checksummed) and results."""
    h = hashlib.sha256()
    h.update(f"executor {EXECUTOR_VERSION}\n".encode())
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


def render_plotly(nb, name: str) -> int:
    """Replace every plotly figure output by its offline HTML rendering (a div and a Plotly.newPlot
    call; plotly.js itself is loaded once per page from _static). The figure's JSON is dropped
    from the book's copy: myst-nb has no renderer for it and would warn. Returns how many."""
    import plotly.io as pio

    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                fig = data.pop(PLOTLY_MIME)
                data["text/html"] = pio.to_html(
                    fig, include_plotlyjs=False, include_mathjax=False, full_html=False, validate=False,
                    config=fig.get("config") or {}, default_width="100%", default_height=500,
                    div_id=f"plotly-{name}-{count}")
                count += 1
    return count


def tidy_parameters(nb) -> None:
    """The page shows the parameters papermill injected (what this build used); the notebook's
    defaults cell is folded away behind a "show source" toggle."""
    tags = [set(c.metadata.get("tags", [])) for c in nb.cells]
    if any("injected-parameters" in t for t in tags):
        for cell, t in zip(nb.cells, tags):
            if "parameters" in t and "hide-input" not in t:
                cell.metadata["tags"] = sorted(t | {"hide-input"})


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


def execute(name: str, params: dict, env: dict[str, str]) -> float:
    """Run notebooks/<name>.ipynb with papermill into book/_executed/<name>.ipynb; seconds taken.

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
        n_fig = render_plotly(nb, name)
        tidy_parameters(nb)
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
    log(f"{name}: executed in {seconds:.1f} s ({n_fig} plotly figure(s))")
    return seconds


def execute_all(names: list[str], profile: str, force: bool, allow_missing: bool) -> dict[str, float]:
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
            key = input_key(NOTEBOOK_DIR / f"{name}.ipynb", params)
            if not force and is_fresh(name, key, results_fingerprint(profile)):
                log(f"{name}: up to date, not re-executed")
                times[name] = 0.0
                continue
            times[name] = execute(name, params, env)
            io.write_json(stamp_path(name), {"input": key, "results": results_fingerprint(profile), "profile": profile,
                                             "seconds": round(times[name], 1)})
    # Every notebook ran against the results as they are now: record that state in each stamp.
    fingerprint = results_fingerprint(profile)
    for name in times:
        stamp = io.read_json(stamp_path(name))
        stamp["results"] = fingerprint
        io.write_json(stamp_path(name), stamp)
    return times


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


def jupyter_book(strict: bool, toc: Path | None = None, all_files: bool = False) -> None:
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(ROOT), "--builder", "html"]
    if strict:
        cmd.append("--warningiserror")
    if toc is not None:
        cmd += ["--toc", str(toc)]
    if all_files:
        cmd.append("--all")
    log("jupyter-book build" + (" (warnings are errors)" if strict else ""))
    proc = subprocess.run(cmd, cwd=ROOT)
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


def page_requests(netlog: Path) -> list[str]:
    """Remote URLs that pages asked for in a Chromium net log. Chromium's own background
    traffic (update checks, network time, account probes) has no initiating origin
    ('not an origin') and is left out; a request from a file:// page has initiator 'null'."""
    try:
        log_ = json.loads(netlog.read_text(errors="replace"))
    except (OSError, ValueError):
        # Chromium was killed before closing the JSON: fall back to any remote URL in it
        text = netlog.read_text(errors="replace") if netlog.exists() else ""
        return sorted(set(re.findall(r'"url":"((?:https?|wss?)://[^"]+)"', text)))
    start_job = log_["constants"]["logEventTypes"].get("URL_REQUEST_START_JOB")
    urls = set()
    for event in log_.get("events", []):
        params = event.get("params") or {}
        url = params.get("url", "")
        if (event.get("type") == start_job and re.match(r"(?:https?|wss?)://", url)
                and params.get("initiator") != "not an origin"):
            urls.add(url)
    return sorted(urls)


def browser_check(pages: list[Path], out_dir: Path, chromium: str | None = None) -> list[str]:
    """Open each page in headless Chromium with name resolution disabled; save a screenshot and
    the network log; return every non-file URL the browser tried to fetch."""
    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise BuildError("chromium not found (apt-get install -y chromium) - needed for --browser-check")
    out_dir.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    for page in pages:
        shot = out_dir / f"{page.stem}.png"
        netlog = out_dir / f"{page.stem}.netlog.json"
        with tempfile.TemporaryDirectory(prefix="imuse-chromium-") as profile:
            cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND",
                   f"--user-data-dir={profile}", f"--log-net-log={netlog}", "--virtual-time-budget=20000",
                   "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,1600", page.resolve().as_uri()]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode or not shot.exists():
            raise BuildError(f"chromium could not render {page}: {proc.stderr.strip()[-300:]}")
        urls = page_requests(netlog)
        requested += [f"{page.name}: {u}" for u in urls]
        log(f"browser: {_rel(page)} -> {_rel(shot)} "
            f"({len(urls)} remote request(s))")
    return requested


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
    parser.add_argument("--browser-check", action="store_true",
                        help="also open every page in headless Chromium: screenshots and network log in "
                             "_build/browser-check, fails on any remote request")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    with build_lock():
        return _build(args)


def _build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        names = toc_notebooks()
        verify_data()
        install_plotly()
        install_mathjax()
        if not args.skip_execute:
            times = execute_all(names, args.profile, args.force, args.allow_missing)
        else:
            times = {}
        missing = [n for n in names if not (EXECUTED_DIR / f"{n}.ipynb").exists()]
        if missing and not args.allow_missing:
            raise BuildError(f"no executed copy of: {', '.join(missing)} (run without --skip-execute)")
        toc = write_build_toc(missing) if missing else None
        strict = not args.no_strict
        if missing and strict:
            log("pages are missing (--allow-missing): links to them will warn, so warnings are not errors")
            strict = False
        jupyter_book(strict=strict, toc=toc, all_files=args.force)
        check_offline(HTML_DIR)
        if args.browser_check:
            pages = sorted((HTML_DIR / "book").rglob("*.html"))
            requested = browser_check(pages, ROOT / "_build" / "browser-check")
            if requested:
                raise BuildError(f"the browser requested {len(requested)} remote URL(s): {'; '.join(requested[:5])}")
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
    for name, seconds in times.items():
        log(f"  {name}: {'cached' if seconds == 0 else f'{seconds:.1f} s'}")
    log(f"book built in {total:.1f} s: {(HTML_DIR / 'index.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
