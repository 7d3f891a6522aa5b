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


def cache_dir(create: bool = True) -> Path:
    path = _env_path("IMUSE_CACHE") or (
        PROJECT_ROOT / "data" / "cache" if _CHECKOUT else Path.home() / ".cache" / "imuse"
    )
    return _made(path, "IMUSE_CACHE", "the cache of derived data") if create else path


def results_dir(create: bool = True) -> Path:
    path = _env_path("IMUSE_RESULTS") or PROJECT_ROOT / "results"
    return _made(path, "IMUSE_RESULTS", "the results folder") if create else path


def _made(path: Path, env: str, what: str) -> Path:
    """``path`` as an existing folder, or one line saying why it cannot be (a file there, no
    permission): "File exists" alone named neither the path nor the variable."""
    from .errors import DataError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{path}: {what} must be a folder, but a file is there (set {env} to a folder)") from None
    except NotADirectoryError:
        raise DataError(f"{path}: {what} cannot be made, a parent of it is a file (set {env} to a folder)") from None
    except OSError as exc:
        raise DataError(f"{path}: {what} cannot be made ({exc.strerror or exc}; set {env} to a writable folder)"
                        ) from None
    return path


def env_number(name: str, default: float, lo: float, hi: float) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty), read when
    used, not at import: a bad value is one line naming the variable, never a traceback on
    every command. nan, inf and values outside [lo, hi] are refused."""
    import math

    from .errors import DataError

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"environment variable {name}={text[:40]!r} is not a number "
                        f"(expected {lo:g} to {hi:g}; unset it for the default {default:g})") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise DataError(f"environment variable {name}={text[:40]!r} is out of range "
                        f"(expected {lo:g} to {hi:g}; unset it for the default {default:g})")
    return value
