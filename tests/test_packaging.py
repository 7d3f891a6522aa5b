"""The set-up files agree with each other."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*(?:-\s*)?([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M))


def test_environment_yml_mirrors_requirements():
    required = pins((ROOT / "requirements.txt").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins("\n".join(pip_section)) == required
    assert "jupyter-book" in required and required["jupyter-book"].startswith("1.")


def test_console_command_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'imuse = "imuse_lib.cli:main"' in text


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_test_orders_files_that_exist():
    """`make test` starts the book build first and the Try-it file last (tests/conftest.py): a
    renamed file would silently lose its place, so the names must be real test files."""
    import conftest

    here = Path(__file__).resolve().parent
    for name in conftest.FIRST_FILES + conftest.LAST_FILES:
        assert (here / name).is_file(), name
    makefile = (here.parent / "Makefile").read_text()
    assert "--dist loadfile --no-loadscope-reorder" in makefile  # units are files, in collection order
