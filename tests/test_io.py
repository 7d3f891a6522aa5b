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


# --------------------------------------------------------------------------- round two (issue 23)


@pytest.mark.parametrize("kind", ["fifo", "dir", "missing", "loop"])
def test_reading_needs_a_regular_file(tmp_path, kind):
    """A FIFO where a model or array is read blocked the reader forever."""
    path = tmp_path / "model.npz"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path)
    expect = {"fifo": "FIFO", "dir": "is a directory", "missing": "file not found", "loop": "symbolic link loop"}
    with pytest.raises(DataError, match=expect[kind]):
        io.require_regular_file(path, "model")
    with pytest.raises(DataError):
        with io.open_npz(path, "model"):
            pass


def test_damaged_npz_and_json_name_the_file(tmp_path):
    import numpy as np

    good = tmp_path / "good.npz"
    with open(good, "wb") as fh:
        np.savez(fh, ids=np.arange(1000), train=np.ones((1000, 8)))
    raw = good.read_bytes()
    for name, data in (("half.npz", raw[: len(raw) // 2]), ("head.npz", raw[:100]),
                       ("member.npz", raw[:200] + bytes(len(raw) - 400) + raw[-200:])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(io.CorruptFileError, match=name):
            with io.open_npz(tmp_path / name, "feature store entry") as z:
                z["ids"], z["train"]
    with io.open_npz(good) as z:
        assert z["ids"].sum() == 999 * 500
    (tmp_path / "meta.json").write_bytes(b"\xff\xfe{garbage")
    with pytest.raises(io.CorruptFileError, match="meta.json: store entry is not UTF-8"):
        io.read_json(tmp_path / "meta.json", "store entry")
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(DataError, match="deep.json"):
        io.read_json(tmp_path / "deep.json")
    with pytest.raises(FileNotFoundError):  # absent stays absent for the callers that expect it
        io.read_json(tmp_path / "none.json")


def test_outputs_never_replace_protected_files(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path / "results"))
    db = tmp_path / "songs.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(DataError, match="song index"):
        io.check_output(db)
    for folder in ("cache/features/k", "cache/index", "results/models"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        with pytest.raises(DataError, match="outputs never go there"):
            io.check_output(tmp_path / folder / "x.csv")
    from imuse_lib import config

    mirror_file = config.data_root() / "oasis" / "OASIS.csv"
    try:
        os.link(mirror_file, tmp_path / "hard.csv")
    except OSError:
        pytest.skip("the mirror is on another file system: no hard link to it here")
    with pytest.raises(DataError, match="registered data file oasis/OASIS.csv"):
        io.check_output(tmp_path / "hard.csv")


def test_environment_numbers_are_checked_at_use(monkeypatch):
    from imuse_lib import config

    for bad in ("abc", "nan", "inf", "-1", "0", "1e400", "2e9"):
        monkeypatch.setenv("IMUSE_X", bad)
        with pytest.raises(DataError, match="IMUSE_X"):
            config.env_number("IMUSE_X", 5, 1, 1e6)
    monkeypatch.setenv("IMUSE_X", " 12.5 ")
    assert config.env_number("IMUSE_X", 5, 1, 1e6) == 12.5
    monkeypatch.setenv("IMUSE_X", "")
    assert config.env_number("IMUSE_X", 5, 1, 1e6) == 5


def test_cache_or_results_that_is_a_file(tmp_path, monkeypatch):
    from imuse_lib import config

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "file"))
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path / "file" / "below"))
    with pytest.raises(DataError, match="set IMUSE_CACHE to a folder"):
        config.cache_dir()
    with pytest.raises(DataError, match="set IMUSE_RESULTS to a folder"):
        config.results_dir()


def test_bootstrap_bounded_by_memory(monkeypatch, capsys):
    from imuse_lib import config
    from imuse_lib.errors import ImuseError

    monkeypatch.setattr(config, "available_memory", lambda: 4 * 2**30)
    assert config.check_bootstrap(1000, 135, 75) == 1000
    with pytest.raises(ImuseError, match=r"--n-boot 1000000: .* use --n-boot \d+ or less"):
        config.check_bootstrap(1_000_000, 900, 500)
    config.check_bootstrap(50_000, 135, 75)
    assert "GiB" in capsys.readouterr().err


def test_ray_address_is_probed_with_a_timeout():
    from imuse_lib import config

    assert "unknown host" in config.ray_address_problem("garbage:1", 2)
    assert "not host:port" in config.ray_address_problem("ray://nohostport", 2)
    assert config.ray_address_problem(None) is None and config.ray_address_problem("auto") is None


def test_torch_write_failure_is_one_line(tmp_path, monkeypatch):
    """A full disk under torch.save is a RuntimeError ("file write failed"), not an OSError."""
    import torch

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed "
                           "writing file data/0: file write failed")

    (tmp_path / "m.pt").write_text("old")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DataError, match="m.pt: cannot be written .*file write failed.*unchanged"):
        io.save_torch(tmp_path / "m.pt", {"a": 1})
    assert (tmp_path / "m.pt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
