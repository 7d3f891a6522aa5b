"""Where things live, in one place.

* ``data_root()``: the read-only input data (the mirror). ``$IMUSE_DATA`` wins, then
  ``../shared/imuse-data`` beside the project checkout (or beside the working directory).
* ``cache_dir()``: derived data we write (downloads, feature store, indexes).
  ``$IMUSE_CACHE`` or ``<project>/data/cache`` (git-ignored).
* ``results_dir()``: training/evaluation outputs read by the book. ``$IMUSE_RESULTS`` or
  ``<project>/results`` (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# In a source checkout the project root holds pyproject.toml; an installed copy has none.
_CHECKOUT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").exists() else None
PROJECT_ROOT = _CHECKOUT or Path.cwd()

SEED = 2023  # the project-wide default seed (the paper's year)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else None


def mirror_candidates() -> list[Path]:
    """Places the read-only data mirror is looked for, in order: beside the project
    checkout, then beside the working directory or its parent (notebooks run in a subfolder)."""
    bases = [PROJECT_ROOT.parent, Path.cwd().parent, Path.cwd().parent.parent]
    return list(dict.fromkeys(base / "shared" / "imuse-data" for base in bases))


def data_root() -> Path | None:
    """The directory holding the mirrored inputs, or None when there is none."""
    env = _env_path("IMUSE_DATA")
    if env is not None:
        return env
    for cand in mirror_candidates():
        if (cand / "SHA256SUMS").exists():
            return cand
    return None


def cache_dir() -> Path:
    path = _env_path("IMUSE_CACHE") or (
        PROJECT_ROOT / "data" / "cache" if _CHECKOUT else Path.home() / ".cache" / "imuse"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    path = _env_path("IMUSE_RESULTS") or PROJECT_ROOT / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path
