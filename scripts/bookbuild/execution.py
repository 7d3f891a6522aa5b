"""Executing the notebooks with papermill, and the execution cache: a notebook is re-run only when
it, its parameters, the library, the results it reads or the static-figure setting change.
Plotly outputs become offline HTML, with a static PNG made by kaleido when a browser is there."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from imuse_lib import provenance

from . import common
from .common import BuildError, PROFILES, log, short_path


KERNEL_NAME = "imuse"
# Bump when the way executed notebooks are produced changes (invalidates every cached copy).
EXECUTOR_VERSION = "4"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
MATPLOTLIBRC = Path(__file__).with_name("matplotlibrc")  # the figures' light background, in every kernel


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
           "MATPLOTLIBRC": str(MATPLOTLIBRC),
           "PYTHONHASHSEED": "0"}
    return env


def _library_files() -> list[Path]:
    lib = common.ROOT / "imuse_lib"
    return sorted(p for p in lib.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix in {".py", ".tsv", ".json", ".csv", ".yaml"})


def input_key(notebook: Path, params: dict, static: bool = True) -> str:
    """Hash of everything an executed copy depends on besides the data (checksummed) and results;
    ``static``: whether its figures get static images (a browser was there)."""
    h = hashlib.sha256()
    h.update(f"executor {EXECUTOR_VERSION}\nstatic figures {static}\n".encode())
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(MATPLOTLIBRC.read_bytes())
    for var in ("IMUSE_DATA", "IMUSE_CACHE", "IMUSE_RESULTS"):
        h.update(f"{var}={os.environ.get(var, '')}\n".encode())
    for path in _library_files():
        h.update(path.relative_to(common.ROOT).as_posix().encode() + b"\0" + path.read_bytes())
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


def stamp_path(name: str) -> Path:
    return common.EXECUTED_DIR / f"{name}.stamp.json"


def is_fresh(name: str, key: str, fingerprint: str) -> bool:
    from imuse_lib import io

    out, stamp = common.EXECUTED_DIR / f"{name}.ipynb", stamp_path(name)
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

    source = common.NOTEBOOK_DIR / f"{name}.ipynb"
    target = common.EXECUTED_DIR / f"{name}.ipynb"
    failed = common.EXECUTED_DIR / f"{name}.failed.ipynb"
    running = common.EXECUTED_DIR / f".{name}.running.ipynb"
    common.EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # never leave a stale page beside a failed run
    start = time.perf_counter()
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits papermill's environment
    try:
        pm.execute_notebook(str(source), str(running), parameters=params, kernel_name=KERNEL_NAME,
                            language="python", cwd=str(common.NOTEBOOK_DIR), progress_bar=True,
                            request_save_on_cell_execute=False)
        nb = nbformat.read(running, as_version=4)
        figures = render_plotly(nb, name, browser, no_browser_why)
        with io.atomic_path(target) as tmp:
            nbformat.write(nb, tmp)
    except PapermillExecutionError as exc:
        if running.exists():
            os.replace(running, failed)
        first = exc.evalue.strip().splitlines()[0] if exc.evalue and exc.evalue.strip() else ""
        raise BuildError(f"notebook {short_path(source)} failed in cell [{exc.exec_count}]: "
                         f"{exc.ename}: {first} (the executed copy with the traceback: "
                         f"{short_path(failed)})") from None
    except BuildError:
        raise
    except Exception as exc:  # kernel death, unreadable notebook, missing kernel...
        raise BuildError(f"notebook {short_path(source)} could not be executed: "
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

    missing = [n for n in names if not (common.NOTEBOOK_DIR / f"{n}.ipynb").exists()]
    if missing and not allow_missing:
        raise BuildError(f"notebook(s) listed in _toc.yml but missing: "
                         f"{', '.join(f'notebooks/{n}.ipynb' for n in missing)}")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="imuse-kernel-") as kdir, static_image_server(browser):
        env = kernel_env(Path(kdir))
        for name in names:
            if name in missing:
                log(f"WARNING: notebooks/{name}.ipynb does not exist yet; its page is left out (--allow-missing)")
                continue
            params = {"profile": profile}
            key = input_key(common.NOTEBOOK_DIR / f"{name}.ipynb", params, static=browser is not None)
            if not force and is_fresh(name, key, results_fingerprint(profile)):
                log(f"{name}: up to date, not re-executed")
                times[name] = 0.0
                continue
            times[name], figures = execute(name, params, env, browser, no_browser_why)
            io.write_json(stamp_path(name), {"input": key, "results": results_fingerprint(profile), "profile": profile,
                                             "seconds": round(times[name], 1), "executed_at": provenance.utc_now(),
                                             "commit": provenance.git_commit(), "figures": figures})
    # Every notebook ran against the results as they are now: record that state in each stamp.
    fingerprint = results_fingerprint(profile)
    for name in times:
        stamp = io.read_json(stamp_path(name))
        stamp["results"] = fingerprint
        io.write_json(stamp_path(name), stamp)
    return times


@contextlib.contextmanager
def static_image_server(browser: str | None):
    """One browser for every static image of the build: kaleido otherwise starts one per figure
    (about 5 s each on two busy cores, for images only print and readers without JavaScript see).
    Where it cannot start, each figure starts its own, as without it."""
    if browser is None:
        yield
        return
    import kaleido

    saved = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = browser  # how kaleido's choreographer is told which browser
    try:
        kaleido.start_sync_server(silence_warnings=True)
    except Exception as exc:  # noqa: BLE001 - the one-shot path reports its own errors per figure
        log(f"kaleido's shared browser did not start ({type(exc).__name__}); one per figure")
    try:
        yield
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
        if saved is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = saved


def static_figure_browser(no_static: bool) -> tuple[str | None, str]:
    """(the browser kaleido uses for the figures' static images, "") or (None, why there is none).
    The browser is the one set-up installs (``setup_system.browser``)."""
    if no_static:
        return None, "left out on request (--no-static-figures)"
    import setup_system  # scripts/setup_system.py: the packages set-up installs

    browser = setup_system.browser()
    if browser is None:
        return None, ("no Chrome/Chromium on PATH for kaleido (`make setup` installs Debian's chromium where it "
                      "can; see its line)")
    return browser, ""
