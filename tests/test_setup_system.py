"""Set-up's system packages (scripts/setup_system.py) and what the code does without them:
the list and the code's uses agree, set-up installs only what is missing and says so in one
line, says why when it cannot, and the book's figure step goes on without a browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

import browser_helpers
from bookbuild import build_box, cli, common, execution
from browser_helpers import ROOT, book_browser, setup_system


def _fake_bin(tmp_path: Path, **scripts: str) -> Path:
    """A folder of shell scripts named after the keys (``apt_get`` -> ``apt-get``), for PATH."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = folder / name.replace("_", "-")
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return folder


def _code_lookups() -> set[str]:
    """Every program the project's code looks up on PATH by name (``which("...")``); set-up's own
    tools (apt-get, sudo) and this file are not the project's uses."""
    found = set()
    skip = {ROOT / "scripts" / "setup_system.py", Path(__file__).resolve()}
    for folder in ("imuse_lib", "scripts", "tests", "benchmarks"):
        for path in set((ROOT / folder).rglob("*.py")) - skip:
            found |= set(re.findall(r"""\bwhich\(\s*["']([\w.+-]+)["']""", path.read_text(encoding="utf-8")))
    return found


def test_setup_list_and_the_code_agree():
    """Each program the code looks up is installed by set-up or named, with the reason, as one it
    leaves alone; each package set-up installs is used; the browser the code drives is the one
    set-up installs (Debian's chromium is /usr/bin/chromium)."""
    provided = {c for p in setup_system.SYSTEM_PACKAGES for c in p.commands}
    looked_up = _code_lookups()
    assert looked_up, "the scan found no lookups: it is broken"
    unknown = looked_up - provided - set(setup_system.NOT_INSTALLED)
    assert not unknown, f"programs the code needs that set-up neither installs nor names: {unknown}"
    assert setup_system.package("chromium").commands[0] == "chromium"
    unused = [p.apt for p in setup_system.SYSTEM_PACKAGES
              if p.apt != "chromium" and not set(p.commands) & looked_up]
    assert not unused, f"set-up installs packages nothing uses: {unused}"
    # the browser: the builder's static images, the browser checks and the tests take set-up's
    assert book_browser.find_chromium() == setup_system.browser() == execution.static_figure_browser(False)[0]
    assert "setup_system.browser()" in (ROOT / "scripts" / "bookbuild" / "browser.py").read_text()


def test_without_a_browser_on_path_nobody_finds_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_fake_bin(tmp_path)))
    assert setup_system.browser() is None and book_browser.find_chromium() is None
    browser, why = execution.static_figure_browser(no_static=False)
    assert browser is None and "no Chrome/Chromium on PATH" in why and "make setup" in why


def test_setup_installs_only_what_is_missing_and_records_it(tmp_path, monkeypatch, capsys):
    """A fake apt-get that 'installs' chromium into the PATH folder: one line says what and why,
    the record names the path; a second run finds it present and installs nothing."""
    monkeypatch.setattr(setup_system, "_apt_command", lambda: (["apt-get"], ""))
    bin_ = _fake_bin(tmp_path, npm="exit 0", node="exit 0")
    log = tmp_path / "apt.log"
    _fake_bin(tmp_path, apt_get=f'echo "$@" >> {log}\ncase "$1" in install) printf "#!/bin/sh\\n" > {bin_}/chromium; '
                                f'/bin/chmod +x {bin_}/chromium;; esac')
    monkeypatch.setenv("PATH", str(bin_))
    record = tmp_path / "venv" / "stamp.system"
    assert setup_system.main(["--record", str(record)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"[setup] installing chromium with apt-get, for {setup_system.package('chromium').why}"]
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq chromium"]
    setup_system.finish(str(tmp_path / "venv" / "stamp"))
    got = setup_system.read_stamp(str(tmp_path / "venv" / "stamp"))
    assert got["system"]["chromium"] == f"installed ({bin_}/chromium)" and got["seconds"] is not None
    assert got["system"]["npm"] == f"present ({bin_}/npm)"
    log.unlink()
    setup_system.install_missing()
    assert not log.exists() and capsys.readouterr().out == ""  # a second run costs nothing


@pytest.mark.parametrize("case", ["apt fails", "skip", "not debian"])
def test_setup_says_in_one_line_when_it_cannot_install(case, tmp_path, monkeypatch, capsys):
    bin_ = _fake_bin(tmp_path, apt_get='echo "E: Failed to fetch http://deb.debian.org (Temporary failure '
                                       'resolving)" >&2; exit 100', npm="exit 0", node="exit 0")
    monkeypatch.setenv("PATH", str(bin_))
    if case == "apt fails":
        monkeypatch.setattr(setup_system, "_apt_command", lambda: (["apt-get"], ""))
        expect = "E: Failed to fetch"
    elif case == "skip":
        monkeypatch.setattr(setup_system, "_apt_command", lambda: (["apt-get"], ""))
        monkeypatch.setenv(setup_system.SKIP_ENV, "skip")
        expect = f"{setup_system.SKIP_ENV}=skip"
    else:
        monkeypatch.setattr(setup_system, "_distribution", lambda: "ubuntu")
        expect = "not Debian (ubuntu)"
    lines = setup_system.install_missing()
    out = capsys.readouterr().out.splitlines()
    # one line saying it cannot (after the one saying what it tried, when apt-get was tried)
    assert len(out) == (2 if case == "apt fails" else 1), out
    assert "chromium" in out[-1] and expect in out[-1] and "apt-get install -y chromium" in out[-1]
    assert expect in [ln for ln in lines if ln.startswith("chromium: missing (")][0]


def test_without_a_browser_the_figure_step_builds_the_page_and_says_what_it_left_out(tmp_path, monkeypatch):
    """A real kernel executes a notebook with a plotly figure while no browser is on PATH: the page
    has the live figure and no static image, its stamp and the build box say what was left out
    and why, and nothing fails."""
    import plotly.graph_objects as go

    monkeypatch.setattr(common, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(common, "EXECUTED_DIR", tmp_path / "executed")
    monkeypatch.setenv("PATH", str(_fake_bin(tmp_path)))
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A figure"), nbformat.v4.new_code_cell('profile = "quick"'),
        nbformat.v4.new_code_cell(f"import plotly.io as pio\npio.show(pio.from_json({fig.to_json()!r}))")])
    source.cells[1].metadata["tags"] = ["parameters"]
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(source, tmp_path / "notebooks" / "99_figure.ipynb")
    browser, why = execution.static_figure_browser(no_static=False)
    assert browser is None
    env = {"PLOTLY_RENDERER": "plotly_mimetype"}
    monkeypatch.setattr(execution, "kernel_env", lambda workdir, real=execution.kernel_env: {**real(workdir), **env})
    times = execution.execute_all(["99_figure"], "quick", force=True, allow_missing=False, browser=browser,
                           no_browser_why=why)
    assert times["99_figure"] > 0
    page = json.dumps([c.get("outputs", []) for c in nbformat.read(tmp_path / "executed" / "99_figure.ipynb", as_version=4).cells])
    assert "Plotly.newPlot" in page and "imuse-static-figure" not in page
    stamp = json.loads((tmp_path / "executed" / "99_figure.stamp.json").read_text())
    assert stamp["figures"] == {"figures": 1, "static": 0, "left_out_why": why}
    assert build_box.static_left_out(["99_figure"]) == f"99_figure 1 figure(s): {why}"
    info = {"profile": "quick", "commit": "c", "built": "now", "device": "CPU", "data_files": 1, "data_assets": 1,
            "wall_s": 1.0, "executed": times, "tryit": None, "setup": (42, "today"), "steps": {"notebooks": 3.0},
            "times": times, "inside": {"feature store mobilenet_v2": 2.0}}
    box = build_box.write_build_box(info, ["99_figure"], out=tmp_path / "box.md").read_text()
    assert "| static images | left out for 99_figure 1 figure(s): no Chrome/Chromium on PATH" in box
    assert "set-up (make setup, today): 42.0 s" in box and "within them, feature store mobilenet_v2: 2.00 s" in box


def test_book_check_without_a_browser_stops_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(_fake_bin(tmp_path)))
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "no-browsers"))

    def lock_taken():  # it says so before waiting on another build's lock (`make test` builds beside it)
        raise AssertionError("took the build lock before saying that no browser is installed")

    monkeypatch.setattr(cli, "build_lock", lock_taken)
    assert cli.main(["--profile", "quick", "--browser-check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make book-check" in err[0] and "apt-get install -y chromium" in err[0]


def test_browser_tests_skip_only_where_setup_recorded_it_could_not_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_fake_bin(tmp_path)))
    stamp = tmp_path / "stamp"
    monkeypatch.setattr(browser_helpers, "SETUP_STAMP", stamp)
    stamp.write_text("set up 2026-01-01 00:00 UTC in 5 s\nsystem chromium: missing (not Debian (ubuntu))\n")
    with pytest.raises(pytest.skip.Exception, match=r"set-up could not install it here \(missing \(not Debian"):
        browser_helpers.require_browser()
    stamp.write_text("set up 2026-01-01 00:00 UTC in 5 s\nsystem chromium: installed (/usr/bin/chromium)\n")
    with pytest.raises(pytest.fail.Exception, match="run `make setup`"):
        browser_helpers.require_browser()
