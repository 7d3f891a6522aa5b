"""The layers contract of imuse_lib (issue 20): import-linter's contracts in pyproject.toml
hold, they fail on an upward import or a circle, and every module sits in a layer."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import imuse_lib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(imuse_lib.__file__).resolve().parent


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under ``root`` with ``root``'s pyproject.toml (no cache)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, show_timings=False, "
            "verbose=False, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_the_contracts_hold():
    pytest.importorskip("importlinter")
    run = lint_imports(PACKAGE.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("ranking.py", "from . import recommend  # noqa: F401\n", "imuse_lib layers"),  # up, and a circle
    ("index/files.py", "from ..deployed import model  # noqa: F401\n", "song index storage imports no model"),
    ("va_model/arm.py", "from . import fitting  # noqa: F401\n", "no circle among the modules"),
])
def test_an_upward_import_or_a_circle_breaks_a_contract(tmp_path, module, line, broken):
    pytest.importorskip("importlinter")
    shutil.copytree(PACKAGE, tmp_path / "imuse_lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(PACKAGE.parent / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "imuse_lib" / module
    target.write_text(target.read_text() + line)
    run = lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{broken}" in run.stdout and "BROKEN" in run.stdout


def _layer_modules() -> set[str]:
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return {m.strip() for layer in layers for m in layer.split("|")}


def test_every_module_sits_in_a_layer():
    listed = _layer_modules()
    missing = []
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="imuse_lib."):
        name = info.name
        parts = name.split(".")
        covered = any(".".join(parts[:i]) in listed for i in range(2, len(parts) + 1))
        children_listed = info.ispkg and any(m.startswith(name + ".") for m in listed)
        if not covered and not children_listed:
            missing.append(name)
    assert not missing, f"modules in no layer of pyproject.toml's contract: {missing}"


def test_the_package_map_names_every_module():
    """imuse_lib/__init__.py's docstring names each top-level module and package once."""
    doc = imuse_lib.__doc__ or ""
    names = [info.name for info in pkgutil.iter_modules([str(PACKAGE)]) if info.name != "__main__"]
    missing = [n for n in names if f"``{n}``" not in doc]
    assert not missing, f"imuse_lib/__init__.py does not describe: {missing}"
