"""Paths, the error type and the log line shared by the builder's parts."""

from __future__ import annotations

from pathlib import Path

from imuse_lib import profiles

ROOT = Path(__file__).resolve().parents[2]  # scripts/bookbuild/common.py -> the project
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "book" / "_executed"
VENDOR_DIR = ROOT / "book" / "_static" / "vendor"
HTML_DIR = ROOT / "_build" / "html"
TOC = ROOT / "_toc.yml"
PROFILES = tuple(profiles.PROFILES)  # the profiles' one home is the library
BUILD_BOX = EXECUTED_DIR / "build-box.md"  # included by book/intro.md
BUILD_CONFIG = ROOT / "_build" / "_config.build.yml"  # _config.yml plus the repository setting


class BuildError(Exception):
    """A build step failed; the message says which and why, in one line."""


def log(msg: str) -> None:
    print(f"[book] {msg}", flush=True)


def short_path(path: Path) -> str:
    """``path`` relative to the project when inside it (shorter messages)."""
    path = Path(path)
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
