"""The one writer (imuse_lib.io): a regular file at the named path or a clear refusal;
atomic; no temporary file left by any exit Python sees; leftovers of killed runs removed
by the next write. Special files are made inside tmp_path only."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest

from imuse_lib import io
from imuse_lib.errors import DataError


def test_writes_a_regular_file_and_keeps_its_mode(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    io.write_text(path, "one\n")
    assert path.read_text() == "one\n" and stat.S_ISREG(path.stat().st_mode)
    os.chmod(path, 0o640)
    io.write_text(path, "two\n")
    assert path.read_text() == "two\n" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("kind", ["dir", "fifo", "chardev", "symlink", "dangling", "loop", "under-file"])
def test_refuses_what_is_not_a_regular_file(tmp_path, kind):
    target = tmp_path / "target"
    target.write_text("keep me\n")
    path = tmp_path / "out.csv"
    expect = {"dir": "is a directory", "fifo": "FIFO", "chardev": "character device",
              "symlink": "symbolic link", "dangling": "symbolic link", "loop": "symbolic link",
              "under-file": "is a file, not a folder"}[kind]
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "chardev":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # what /dev/full is
        except PermissionError:
            pytest.skip("mknod needs root")
    elif kind == "symlink":
        path.symlink_to(target)
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nothing")
    elif kind == "loop":
        path.symlink_to(tmp_path / "loop2")
        (tmp_path / "loop2").symlink_to(path)
    elif kind == "under-file":
        path = target / "out.csv"
    before = {p.name: os.lstat(p) for p in tmp_path.iterdir()}
    with pytest.raises(DataError, match=expect) as err:
        io.write_csv(path, pd.DataFrame({"a": [1]}))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    after = {p.name: os.lstat(p) for p in tmp_path.iterdir()}
    assert before.keys() == after.keys()
    assert all((before[k].st_mode, before[k].st_ino, before[k].st_mtime_ns) ==
               (after[k].st_mode, after[k].st_ino, after[k].st_mtime_ns) for k in before)
    assert target.read_text() == "keep me\n"


def test_symlink_followed_only_when_asked(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    io.write_text(link, "new\n", follow_symlinks=True)
    assert link.is_symlink() and target.read_text() == "new\n"
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    with pytest.raises(DataError, match="symbolic link loop"):
        io.write_text(tmp_path / "loop_a", "x", follow_symlinks=True)


def test_exception_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_leftovers_of_killed_runs_are_removed_by_the_next_write(tmp_path):
    path = tmp_path / "out.txt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    stale = tmp_path / f".out.txt.{dead_pid}.abc123.tmp"
    stale.write_text("half")
    legacy = tmp_path / ".out.txt.zz9k2w1q.tmp"  # the older name, without a pid
    legacy.write_text("half")
    old = time.time() - 2 * io.STALE_SECONDS
    os.utime(legacy, (old, old))
    alive = tmp_path / f".out.txt.{os.getppid()}.def456.tmp"  # a live writer's: left alone
    alive.write_text("in progress")
    other = tmp_path / f".other.txt.{dead_pid}.x.tmp"  # another file's: not ours to judge here
    other.write_text("x")
    io.write_text(path, "done\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.txt", alive.name, other.name])


def test_sigterm_during_a_cli_write_removes_the_temporary_file(tmp_path):
    """SIGTERM unwinds like Ctrl-C in the command line: the `finally` removes the temporary file."""
    script = (
        "import sys, time\n"
        "from imuse_lib import cli, io\n"
        "def slow(args):\n"
        "    with io.atomic_path(args.out) as tmp:\n"
        "        tmp.write_text('half')\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(30)\n"
        "import imuse_lib.cli.data as d\n"
        "d.cmd_pairs = slow\n"
        "sys.exit(cli.main(['pairs', '--out', sys.argv[1]]))\n"
    )
    out = tmp_path / "pairs.csv"
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
