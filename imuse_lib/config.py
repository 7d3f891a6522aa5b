"""Where things live, in one place.

* ``data_root()``: the read-only input data (the mirror). ``$IMUSE_DATA`` wins, then
  ``../shared/imuse-data`` beside the project checkout (or beside the working directory).
* ``cache_dir()``: derived data we write (downloads, feature store, indexes).
  ``$IMUSE_CACHE`` or ``<project>/data/cache`` (git-ignored).
* ``results_dir()``: training/evaluation outputs read by the book. ``$IMUSE_RESULTS`` or
  ``<project>/results`` (git-ignored).

And the limits of this machine, read when used (never at import): :func:`env_number` (an
``IMUSE_*`` number, range-checked, one line naming the variable), :func:`check_bootstrap`
(the memory a bootstrap may take), :func:`ray_address_problem` (a Ray address probed with a
timeout).
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


# --------------------------------------------------------------------------- machine limits

# Seconds a Ray cluster address is given to answer a TCP connection before the command stops
# (`ray.init` itself retried for over 9 minutes, printing warnings, on an address like garbage:1).
RAY_CONNECT_SECONDS = 10.0
# Share of the machine's available memory a bootstrap may plan to hold.
BOOT_MEMORY_SHARE = 0.5
# Replicate vectors held at once: a float64 per metric, replicate and predictor (seeds averaged),
# kept until every paired difference of a table is formed.
BOOT_HELD_VECTORS = 16 * 24


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def bootstrap_bytes(n_boot: int, n_images: int, n_songs: int) -> int:
    """Peak bytes of ``n_boot`` two-way bootstrap draws of ``n_images`` images and ``n_songs``
    songs: numpy's int64 multinomial draws of both sides and their int16 copies, held at once
    in metrics.draw_resamples (measured: 401 MiB for 200,000 x (135 + 75), as counted), and
    the per-replicate metric vectors held until the end."""
    n_boot = max(int(n_boot), 1)
    draw = n_boot * (int(n_images) + int(n_songs)) * (8 + 2)
    return draw + n_boot * 8 * BOOT_HELD_VECTORS


def check_bootstrap(n_boot: int, n_images: int, n_songs: int) -> int:
    """``n_boot`` when its draws fit the machine, else one line with the estimate and the
    largest ``--n-boot`` that fits (the documented 1,000,000 ran out of memory). A run of
    over 10,000 replicates announces its memory estimate on stderr first: it runs long."""
    import sys

    from .errors import ImuseError

    need, have = bootstrap_bytes(n_boot, n_images, n_songs), int(available_memory() * BOOT_MEMORY_SHARE)
    if need > have:
        fits = max(int(n_boot * have / need), 1)
        raise ImuseError(f"--n-boot {n_boot}: the bootstrap of {n_images} images x {n_songs} songs would hold "
                         f"about {need / 2**30:.1f} GiB, over half this machine's available memory "
                         f"({have / 2**30:.1f} GiB); use --n-boot {fits} or less")
    if n_boot > 10_000:
        print(f"imuse: bootstrap of {n_boot:,} replicates ({n_images} images x {n_songs} songs): about "
              f"{need / 2**30:.2f} GiB; it takes about {n_boot / 1000:.0f} times as long as the default 1,000",
              file=sys.stderr)
    return n_boot


def ray_address_problem(address: str | None, timeout: float = RAY_CONNECT_SECONDS) -> str | None:
    """Why the Ray cluster at ``address`` (``host:port`` or ``ray://host:port``) cannot be
    reached, in one line, or None (reachable, or an address Ray resolves itself: ``auto``,
    ``local``). A TCP connection with a timeout, before ``ray.init`` retries for minutes."""
    import socket

    if not address or address in ("auto", "local"):
        return None
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return f"Ray address {address!r} is not host:port (or ray://host:port)"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except socket.gaierror:
        return f"Ray address {address!r}: unknown host {host!r}"
    except TimeoutError:
        return f"Ray address {address!r}: no answer within {timeout:g} s"
    except OSError as exc:
        return f"Ray address {address!r}: cannot connect ({exc.strerror or exc})"
