"""The one writer for every output file: a reader never sees half a file, nothing but a
regular file at the named path is ever replaced, an interrupted run leaves nothing behind.

* :func:`check_output_path` refuses, with one line naming the path, a directory, a FIFO,
  a device, a socket, a path under a file, an unwritable folder and a symbolic link
  (unless ``follow_symlinks``: then the link's target is written, the link kept).
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

from .errors import DataError

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


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | os.PathLike, frame, follow_symlinks: bool = False) -> Path:
    """Write a pandas DataFrame without its index."""
    with atomic_path(path, follow_symlinks) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def save_torch(path: str | os.PathLike, obj: Any, follow_symlinks: bool = False) -> Path:
    import torch

    with atomic_path(path, follow_symlinks) as tmp:
        torch.save(obj, tmp)
    return Path(path)
