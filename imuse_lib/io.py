"""The one writer for every output file: a reader never sees half a file, nothing but a
regular file at the named path is ever replaced, an interrupted run leaves nothing behind.

* :func:`check_output_path` refuses, with one line naming the path, a directory, a FIFO,
  a device, a socket, a path under a file, an unwritable folder and a symbolic link
  (unless ``follow_symlinks``: then the link's target is written, the link kept).
* :func:`check_output` is the one check of a command's ``--out``: the above, ``-`` for
  standard output (or refused), and no output ever replaces an input (the command's own,
  a registered data file, a song index, a model or a store entry; links and hard links
  resolved). :func:`check_output_folder` is its counterpart for a folder.
* :func:`require_regular_file`, :func:`read_json`, :func:`open_npz`: reading a file that is
  a FIFO, a device, truncated or not UTF-8 is one line naming it, never a hang or traceback.
* :func:`atomic_path` writes a temporary file beside the target (``.NAME.<pid>.<rand>.tmp``),
  flushes it to disk and renames it over the target; on any exception (Ctrl-C and, in
  the CLI, SIGTERM/SIGHUP included) the temporary file is removed. A run killed outright
  (SIGKILL, power loss) leaves its temporary file; the next write of the same path removes
  every leftover whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError, ImuseError

# Leftover temporary files without a recorded process id (older format) are removed
# once they are this old: no write takes that long between create and rename.
STALE_SECONDS = 3600

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def _lstat(path: Path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise DataError(f"{path}: a parent of this path is a file, not a folder") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def _check_parent(path: Path) -> None:
    """The folder of ``path`` exists (or can be made) and is writable."""
    parent = path.parent
    probe = parent
    while True:
        st = _lstat(probe)
        if st is not None:
            break
        if probe.parent == probe:
            break
        probe = probe.parent
    if st is not None and not stat.S_ISDIR(os.stat(probe).st_mode if stat.S_ISLNK(st.st_mode) else st.st_mode):
        raise DataError(f"{path}: cannot be written, {probe} is a file, not a folder")
    if st is not None and not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{path}: cannot be written, no permission to write in {probe}")


def check_output_path(path: str | os.PathLike, follow_symlinks: bool = False) -> Path:
    """The regular-file path a write of ``path`` goes to, or DataError saying why not."""
    path = Path(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise DataError(f"{str(path)!r}: not a file path; give a file name to write")
    st = _lstat(path)
    if st is not None and stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        if not follow_symlinks:
            raise DataError(f"{path}: is a symbolic link (to {target}); refusing to replace it: give the "
                            f"target path itself (or pass --follow-symlinks to write through it)")
        try:
            resolved = path.resolve(strict=False)
        except (RuntimeError, OSError):
            raise DataError(f"{path}: symbolic link loop; nothing written") from None
        if resolved.is_symlink():  # strict=False leaves a looping link unresolved
            raise DataError(f"{path}: symbolic link loop; nothing written")
        return check_output_path(resolved, follow_symlinks=False)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise DataError(f"{path}: is a directory; give a file path (e.g. {path / 'out.csv'})")
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise DataError(f"{path}: is {kind}, not a regular file; refusing to write there")
    _check_parent(path)
    return path


STDOUT = "-"  # `--out -`: standard output, never a file named "-"

# What an output must never replace, judged by the file's first bytes (the layout may move).
_PROTECTED_MAGIC = ((b"SQLite format 3\x00", "a song index (SQLite database)"),
                    (b"PK\x03\x04", "a model or array archive (.pt / .npz)"),
                    (b"\x93NUMPY", "a NumPy array of an index or store"),
                    (b"\x80\x02\x8a\x0a", "a PyTorch model"))


def is_stdout(out) -> bool:
    """``--out -`` as typed (Path("./-") prints as "-": only the raw string counts)."""
    return isinstance(out, str) and out == STDOUT


def check_output(out, follow_symlinks: bool = False, inputs=(), stdout: bool = False) -> Path | None:
    """Where a command's ``--out`` goes: None for standard output (``-``, where ``stdout``),
    else the checked regular-file path (:func:`check_output_path`). Refused, one line each:
    ``-`` where standard output is not supported, and a path that resolves (links, ``..``,
    hard links) to one of ``inputs``, to a registered data file, or into the data mirror,
    the feature store, the index or model folders, or to a file that is a song index, a
    model or an array (:func:`refuse_replacing_inputs`)."""
    if is_stdout(out):
        if stdout:
            return None
        raise DataError("--out -: this command writes files, not standard output; give a file path "
                        "(./- for a file named '-')")
    path = check_output_path(out, follow_symlinks)
    refuse_replacing_inputs(path, inputs)
    return path


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _protected_folders() -> list[tuple[Path, str]]:
    from . import config

    folders = []
    root = config.data_root()
    if root is not None:
        folders.append((root, "the data mirror (registered inputs)"))
    cache = config.cache_dir(create=False)
    folders += [(cache / "downloads", "the download cache (registered inputs)"),
                (cache / "features", "the feature store"), (cache / "index", "the song index folder"),
                (config.results_dir(create=False) / "models", "the trained models folder")]
    return [(Path(os.path.realpath(f)), what) for f, what in folders]


def _registered_identities() -> dict[tuple[int, int], str]:
    """(device, inode) -> mirror path, of every registered data file present."""
    from . import config, data

    roots = [r for r in (config.data_root(), config.cache_dir(create=False) / "downloads") if r is not None]
    found = {}
    for rel in data.registry():
        for root in roots:
            ident = _identity(root / rel)
            if ident is not None:
                found.setdefault(ident, rel)
    return found


def refuse_replacing_inputs(path, inputs=()) -> None:
    """DataError when writing ``path`` would replace an input: see :func:`check_output`.
    Compared by resolved path and by (device, inode), so a symbolic link, a ``..`` detour or
    a hard link to an input is caught as well as the input's own name."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    ident = _identity(real)
    for inp in inputs:
        if inp is None:
            continue
        if Path(os.path.realpath(inp)) == real or (ident is not None and _identity(inp) == ident):
            raise DataError(f"{path}: is this command's input {inp}; refusing to replace an input with "
                            f"its output: write elsewhere")
    for folder, what in _protected_folders():
        if real == folder or folder in real.parents:
            raise DataError(f"{path}: is inside {what} ({folder}); outputs never go there: write elsewhere")
    if ident is None:
        return
    rel = _registered_identities().get(ident)
    if rel is not None:
        raise DataError(f"{path}: is the registered data file {rel} (a link to it); refusing to replace "
                        f"an input: write elsewhere")
    try:
        with open(real, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return
    for magic, what in _PROTECTED_MAGIC:
        if head.startswith(magic):
            raise DataError(f"{path}: is {what}, not an output of this command; refusing to replace it: "
                            f"write elsewhere")


def check_output_folder(out, inputs=(), writes=()) -> Path:
    """A folder a command writes into (``acquire --out DIR``): not standard output, not a file,
    not inside a protected folder, and none of the files it ``writes`` (names inside it) is
    one of ``inputs``."""
    if is_stdout(out):
        raise DataError("--out -: this command writes a folder, not standard output; give a folder path")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file, not a folder; --out names the folder to write in")
    real = Path(os.path.realpath(path))
    for folder, what in _protected_folders():
        if real == folder or folder in real.parents:
            raise DataError(f"{path}: is inside {what} ({folder}); outputs never go there: write elsewhere")
    for name in writes:
        refuse_replacing_inputs(path / name, inputs)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(path: str | os.PathLike) -> list[Path]:
    """Temporary files of earlier, killed writes of ``path`` (their process is gone)."""
    path = Path(path)
    found = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"))
    except OSError:
        return found
    for tmp in candidates:
        middle = tmp.name[len(path.name) + 2:].split(".")[0]
        if middle.isdigit():
            if int(middle) != os.getpid() and not _pid_alive(int(middle)):
                found.append(tmp)
        else:
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > STALE_SECONDS:
                    found.append(tmp)
    return found


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def remove_leftovers(path: str | os.PathLike) -> int:
    n = 0
    for tmp in leftovers(path):
        with contextlib.suppress(OSError):
            tmp.unlink()
            n += 1
    return n


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, follow_symlinks: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    ``path`` must name a regular file or nothing (see :func:`check_output_path`). On any
    exception the temporary file is removed and ``path`` is left untouched.
    """
    path = check_output_path(path, follow_symlinks)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as exc:
        raise DataError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        # mkstemp makes the file private (0600): keep the replaced file's mode, else a plain open()'s.
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG):
            raise DataError(f"{path}: cannot be written ({exc.strerror}); the file is unchanged") from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _fsync(path: Path) -> None:
    """Data on disk before the rename, so that a crash cannot leave a renamed empty file."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike, text: str, follow_symlinks: bool = False) -> Path:
    with atomic_path(path, follow_symlinks) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, follow_symlinks: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", follow_symlinks)


class CorruptFileError(DataError, ValueError):
    """A file that is there but cannot be parsed; a ValueError too, so that callers which
    treat an unparsable file as absent (``except ValueError``) keep doing so."""


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The JSON in ``path``; one line naming the file for garbage (not UTF-8, not JSON) or for a
    FIFO or device there. A missing file stays FileNotFoundError (callers treat it as absent)."""
    path = Path(path)
    if os.path.exists(path):
        try:
            require_regular_file(path, what)
        except DataError as exc:
            raise CorruptFileError(str(exc)) from None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{path}: {what} is not UTF-8 text (byte {exc.start}); it is damaged, "
                               f"delete or restore it") from None
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: {what} is not valid JSON (line {exc.lineno}: {exc.msg}); it is damaged, "
                               f"delete or restore it") from None
    except RecursionError:
        raise CorruptFileError(f"{path}: {what} is nested too deeply to read") from None


def regular_file_problem(path: str | os.PathLike, noun: str = "a file") -> str | None:
    """Why ``path`` cannot be read as a regular file (missing, a folder, a FIFO or device,
    a link loop...), phrased with ``noun`` ("an image file"), or None when it can."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"broken symbolic link (to {os.readlink(path)}), not {noun}"
        return f"file not found (expected {noun})"
    except NotADirectoryError:
        return "a parent of this path is a file, not a folder"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop, not {noun}"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return f"is a directory, not {noun}"
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block the reader or never end
        return f"is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, not {noun}"
    return None


def require_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is a readable regular file (links followed), else one line saying what it
    is: a FIFO or device named where a file is read would block the reader forever."""
    path = Path(path)
    problem = regular_file_problem(path, f"a {what}")
    if problem:
        raise DataError(f"{path}: {problem}")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: no permission to read this {what}")
    return path


@contextlib.contextmanager
def open_npz(path: str | os.PathLike, what: str = "array file") -> Iterator[Any]:
    """``np.load(path)`` of a regular ``.npz`` without pickles, and one line naming the file for
    a truncated or damaged archive: inside the ``with`` block too, where members are read."""
    import zipfile
    import zlib

    import numpy as np

    path = require_regular_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CorruptFileError(f"{path}: {what} is truncated or damaged ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:120]}); delete or restore it") from None
    except (ValueError, OSError) as exc:
        if isinstance(exc, ImuseError):  # ours, already naming the file
            raise
        raise CorruptFileError(f"{path}: {what} cannot be read ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:120]}); delete or restore it") from None


def write_csv(path: str | os.PathLike, frame, follow_symlinks: bool = False) -> Path | None:
    """Write a pandas DataFrame without its index (to standard output for ``-``)."""
    if is_stdout(path):
        import sys

        frame.to_csv(sys.stdout, index=False)
        sys.stdout.flush()
        return None
    with atomic_path(path, follow_symlinks) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def save_torch(path: str | os.PathLike, obj: Any, follow_symlinks: bool = False) -> Path:
    import torch

    with atomic_path(path, follow_symlinks) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a full disk as RuntimeError, not OSError
            if "write" not in str(exc).lower():
                raise
            raise DataError(f"{path}: cannot be written ({str(exc).strip().splitlines()[-1][-120:]}; a full disk?); "
                            f"the file is unchanged") from None
    return Path(path)
