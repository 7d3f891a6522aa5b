"""Shared fixtures. Tests read the real mirror (../shared/imuse-data) and never write into
it; a test that writes points IMUSE_CACHE / IMUSE_RESULTS at its tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imuse_lib import config


@pytest.fixture(scope="session")
def mirror() -> Path:
    root = config.data_root()
    if root is None or not (root / "SHA256SUMS").exists():
        pytest.fail("the data mirror ../shared/imuse-data (or $IMUSE_DATA) is needed by the tests")
    return root


@pytest.fixture
def fake_root(tmp_path, mirror, monkeypatch):
    """A data root laid out like the mirror, each file a symlink to the real one; tests
    replace single files in it to simulate missing or altered data. IMUSE_DATA points at it."""
    root = tmp_path / "imuse-data"
    for src in mirror.rglob("*"):
        if src.is_file():
            dst = root / src.relative_to(mirror)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst)
    monkeypatch.setenv("IMUSE_DATA", str(root))
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    return root


@pytest.fixture(autouse=True)
def _no_deployed_va_model(request, monkeypatch):
    """deployed.load_deployed() prefers the deployed VA model (results/models/va_model.npz) when
    it exists; tests that install their own default checkpoint must not pick up a real one
    from the results folder. Tests of the VA model pass its path explicitly; the book build
    (marked ``real_deployed_model``) uses the real one, as `make book` does."""
    from imuse_lib import va_model

    if request.node.get_closest_marker("real_deployed_model"):
        return

    monkeypatch.setattr(va_model, "default_model_path", lambda: Path("/nonexistent/imuse/va_model.npz"))


# `make test` runs the suite on two pytest-xdist workers, a test file being one unit of work
# (--dist loadfile: a module's fixtures, such as a Ray cluster or an exported model, are built
# once), handed out in collection order (--no-loadscope-reorder). The quick book build is the
# longest unit, so its file goes first and starts at once on one worker while the other takes the
# other files. The Try-it tests train the deployed model from the feature stores that the book
# build leaves in the project's cache: their file goes last, so that it starts after the build
# rather than computing the same stores beside it.
FIRST_FILES = ("test_book_build.py",)
LAST_FILES = ("test_tryit_browser.py",)


# The other files' tests give way to the book build when both want the CPU (nice 5 on their worker,
# about a quarter of a core against the build's processes): the build is the longest unit, and the
# suite ends sooner when it is not slowed. Not more than that: some of those tests have time limits.
OTHER_FILES_NICE = 5


def pytest_runtest_setup(item):
    if os.environ.get("PYTEST_XDIST_WORKER") and item.path.name not in FIRST_FILES:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < OTHER_FILES_NICE:
            os.setpriority(os.PRIO_PROCESS, 0, OTHER_FILES_NICE)  # its subprocesses inherit it


def _unit_order(item) -> int:
    name = item.path.name
    return 0 if name in FIRST_FILES else 2 if name in LAST_FILES else 1


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they deselect
def pytest_collection_modifyitems(config, items):
    """test_kill's short sweep (FEW kill points, the fast suite's) draws its points from the same
    seeded generator as the long sweep (MANY, slow): for the pairs, feature-store and checkpoint
    writers they are the long sweep's first points, for the index writers points drawn the same
    way. When both are selected, as in `make test`, the long sweep runs alone."""
    items.sort(key=_unit_order)  # stable: file order otherwise (see FIRST_FILES)
    kill = [it for it in items if getattr(it, "module", None) is not None
            and it.module.__name__ == "test_kill" and hasattr(it, "callspec")]
    if not kill:
        return
    few = kill[0].module.FEW
    with_long = {it.originalname for it in kill if it.callspec.params.get("n") != few}
    drop = {id(it) for it in kill if it.callspec.params.get("n") == few and it.originalname in with_long}
    if drop:
        config.hook.pytest_deselected(items=[it for it in items if id(it) in drop])
        items[:] = [it for it in items if id(it) not in drop]
