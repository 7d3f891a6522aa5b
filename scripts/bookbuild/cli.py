"""The build, step by step (what `make book` runs): data check, JavaScript, notebooks, "Try it"
page, presentation, build box, Jupyter Book, offline check and, optionally, the browser check."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from imuse_lib import provenance

from . import browser as book_browser
from .build_box import static_left_out, time_breakdown, write_build_box
from .checks import browser_check, check_offline, check_reader_aids, check_references, tryit_times
from . import common
from .common import BuildError, PROFILES, log
from .execution import execute_all, static_figure_browser
from .presentation import present, repository_setting, write_build_config
from .toc import toc_notebooks, write_build_toc
from .vendor import install_mathjax, install_plotly, install_tryit


SETUP_STAMP = ".imuse-setup-stamp"  # in the virtual environment (the Makefile's STAMP)


def verify_data() -> tuple[int, int]:
    from imuse_lib import data

    report = data.verify(progress=True)
    bad = report[report.verified < report.files]
    if len(bad):
        lines = "; ".join(f"{r.asset}: {r.verified}/{r.files} files ({r.problem})" for r in bad.itertuples())
        raise BuildError(f"input data incomplete - {lines}")
    log(f"data verified: {int(report.files.sum())} files of {len(report)} assets")
    return int(report.files.sum()), len(report)


def jupyter_book(strict: bool, toc: Path | None = None, all_files: bool = False, config: Path | None = None,
                 root: Path | None = None) -> None:
    exe = Path(sys.executable).parent / "jupyter-book"
    root = root or common.ROOT
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


@contextlib.contextmanager
def build_lock(path: Path | None = None):
    """One build at a time: two builds would execute into the same book/_executed and _build.
    A second build waits for the first (the lock goes with its process, never stale)."""
    import fcntl

    path = path or common.ROOT / "_build" / ".build_book.lock"
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
    parser = argparse.ArgumentParser(description="Build the IMUSE Jupyter Book, offline: what `make book` runs.")
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

    sys.path.insert(0, str(common.ROOT))
    # Before the lock: a build without the browser it needs says so at once, not after waiting
    # for another build of this checkout to finish.
    if args.browser_check and book_browser.any_browser() is None:
        print("build_book: error: `make book-check` opens every page in a browser and none is installed: "
              "`apt-get install -y chromium` (which `make setup` does on Debian as root)", file=sys.stderr)
        return 1
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


def setup_seconds() -> tuple[float | None, str]:
    """Set-up's wall time and date from the virtual environment's set-up stamp (make setup)."""
    import setup_system  # scripts/setup_system.py: it writes the stamp

    got = setup_system.read_stamp(str(Path(sys.prefix) / SETUP_STAMP))
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
        missing = [n for n in names if not (common.EXECUTED_DIR / f"{n}.ipynb").exists()]
        if missing and not args.allow_missing:
            raise BuildError(f"no executed copy of: {', '.join(missing)} (run without --skip-execute)")
        present_names = [n for n in names if n not in missing]
        with steps.step("Try it page (ONNX export, onnxruntime-web)"):
            tryit_sizes = install_tryit(args.allow_missing, args.profile)  # needs the default model and index: after execution
        with steps.step("presentation"):
            changed = [n for n in present_names if present(n, args.profile, repo_url, branch)]
        if changed:
            log(f"reader-first presentation applied to {', '.join(changed)}")
        check_references(names)
        check_reader_aids(names)
        box_info = {"profile": args.profile, "commit": provenance.git_commit(), "built": provenance.utc_now(),
                    "device": provenance.device_label(), "data_files": data_files, "data_assets": data_assets,
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
            check_offline(common.HTML_DIR)
        if args.browser_check:
            with steps.step("browser check"):
                browser_check(common.HTML_DIR)
                if tryit_sizes is not None:  # the box shows the page's times: measured now, box rebuilt
                    tryit_times(common.HTML_DIR)
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
    log(f"book built in {total:.1f} s: {(common.HTML_DIR / 'index.html').resolve()}")
    return 0
