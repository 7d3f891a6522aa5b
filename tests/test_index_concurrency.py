"""The song index under concurrent writers, crashes of older versions, and rebuilds:
no lost update, never locked by a dead process, added songs survive ``index build``,
``index list`` reports the integrity check. Writers are real processes running the
command line (see kill_helpers.py)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imuse_lib.errors import DataError
from imuse_lib.index import building as index_building
from imuse_lib.index import files as index_files
from imuse_lib.index import integrity as index_integrity
from imuse_lib.index import reading as index_reading

import kill_helpers as kh
import recommend_fakes as fk
from test_kill import world  # noqa: F401  (the fixture)


def ids(path) -> set:
    return set(index_reading.open_index(path).songs.song_id)


@pytest.mark.parametrize("rounds", [pytest.param(3, id="3-rounds"),
                                    pytest.param(12, id="12-rounds", marks=pytest.mark.slow)])
def test_build_and_add_at_once_lose_nothing(world, rounds):  # noqa: F811
    """`index build` and `index add` started together, again and again: every added song is
    there at the end, whichever ran first (the issue saw the add report success, then vanish).
    Every other build dawdles 1.5 s between reading the old index and writing the new one,
    so that the add lands in that window (without the writer lock, this loses the song)."""
    tmp, model, ckpt, pristine = world
    log = str(tmp / "child.log")
    index = pristine
    added = {"tone_a"}
    rng = np.random.default_rng(4)
    for r in range(rounds):
        tone = fk.write_tone(tmp / f"song{r}.wav", 300 + 37 * r)
        build = kh.start(kh.cli_worker, ["index", "build", "--index", str(index), "--model", str(ckpt)], log,
                         str(ckpt), catalog_seed=1 + r % 2, build_pause=1.5 if r % 2 == 0 else 0.0)
        time.sleep(float(rng.uniform(0, 1.0)))
        add = kh.start(kh.cli_worker, ["index", "add", tone, "--index", str(index), "--model", str(ckpt)], log,
                       str(ckpt))
        for p in (build, add):
            p.join(120)
            assert p.exitcode == 0, Path(log).read_text()[-2000:]
        added.add(f"song{r}")
        missing = added - ids(index)
        assert not missing, f"round {r}: lost {missing}"
    assert index_integrity.check_integrity(index) == []
    print(f"\nCONCURRENT build+add: {rounds} runs, lost updates {len(added - ids(index))}")


def test_two_adds_at_once(world):  # noqa: F811
    tmp, model, ckpt, index = world
    log = str(tmp / "child.log")
    procs = [kh.start(kh.cli_worker, ["index", "add", fk.write_tone(tmp / f"two{i}.wav", 350 + 90 * i),
                                      "--index", str(index), "--model", str(ckpt)], log, str(ckpt))
             for i in range(3)]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, Path(log).read_text()[-2000:]
    assert {"two0", "two1", "two2"} <= ids(index)


def test_build_keeps_added_songs_and_drops_them_only_when_asked(world):  # noqa: F811
    tmp, model, ckpt, index = world
    catalog, sf_, images, if_ = fk.make_catalog(seed=2)
    assert "tone_a" in ids(index)
    index_building.build_index(model, index, catalog, sf_, images, if_, progress=False)
    assert ids(index) == set(catalog.song_id) | {"tone_a"}
    index_building.build_index(model, index, catalog, sf_, images, if_, progress=False, keep_added=False)
    assert ids(index) == set(catalog.song_id)


def test_build_for_another_model_reembeds_added_songs(world):  # noqa: F811
    tmp, model, ckpt, index = world
    other = fk.make_model(factorised=False, seed=5)
    catalog, sf_, images, if_ = fk.make_catalog(seed=1)
    before = index_reading.open_index(index)
    index_building.build_index(other, index, catalog, sf_, images, if_, progress=False)
    after = index_reading.open_index(index)
    assert "tone_a" in set(after.songs.song_id) and after.fingerprint == other.fingerprint
    row = list(after.songs.song_id).index("tone_a")
    old_row = list(before.songs.song_id).index("tone_a")
    assert not np.allclose(after.song_vectors[row], before.song_vectors[old_row])  # re-embedded
    expect = other.music_side(other.embed_audio([tmp / "tone_a.wav"]))[0][0]
    assert np.allclose(after.song_vectors[row], expect, atol=1e-6)


def test_build_refuses_to_lose_added_songs_whose_audio_is_gone(world):  # noqa: F811
    tmp, model, ckpt, index = world
    other = fk.make_model(factorised=False, seed=5)
    catalog, sf_, images, if_ = fk.make_catalog(seed=1)
    (tmp / "tone_a.wav").unlink()
    before = index.read_bytes()
    with pytest.raises(DataError, match="--drop-added"):
        index_building.build_index(other, index, catalog, sf_, images, if_, progress=False)
    assert index.read_bytes() == before
    index_building.build_index(other, index, catalog, sf_, images, if_, progress=False, keep_added=False)
    assert "tone_a" not in ids(index)


def test_index_is_in_wal_mode_and_leaves_no_sidecars(world):  # noqa: F811
    tmp, model, ckpt, index = world
    with sqlite3.connect(index) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert sorted(p.name for p in index.parent.iterdir()) == [index.name]


LEGACY_CRASH = r"""
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=DELETE")
conn.execute("PRAGMA cache_size=1")  # spill changed pages into the file mid-transaction
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE songs SET title = title || ' (half-written)'")
conn.execute("UPDATE images SET category = 'half-written'")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_hot_journal_of_a_killed_writer_is_rolled_back_not_a_lock(world, capsys):  # noqa: F811
    """An index written in rollback-journal mode (older versions) whose writer was killed
    mid-commit: reading it rolls the journal back; it is not "readonly" or locked."""
    tmp, model, ckpt, index = world
    with sqlite3.connect(index, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    expect = index_reading.open_index(index).songs.title.tolist()
    proc = subprocess.run([sys.executable, "-c", LEGACY_CRASH, str(index)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert Path(f"{index}-journal").exists()  # the hot journal the issue saw
    from imuse_lib import cli

    assert cli.main(["index", "list", "--index", str(index)]) == 0
    assert "integrity: ok" in capsys.readouterr().out
    assert index_reading.open_index(index).songs.title.tolist() == expect
    index_building.add_songs(index, model, [fk.write_tone(tmp / "later.wav", 700)])
    assert "later" in ids(index)


def test_build_at_a_new_path_ignores_journals_of_a_deleted_index(world):  # noqa: F811
    tmp, model, ckpt, _ = world
    target = tmp / "fresh" / "index.sqlite"
    target.parent.mkdir()
    Path(f"{target}-journal").write_bytes(b"stale journal of an index deleted by hand" * 50)
    Path(f"{target}-wal").write_bytes(b"stale wal" * 50)
    catalog, sf_, images, if_ = fk.make_catalog(seed=1)
    index_building.build_index(model, target, catalog, sf_, images, if_, progress=False)
    assert sorted(p.name for p in target.parent.iterdir()) == ["index.sqlite"]
    index_building.add_songs(target, model, [fk.write_tone(tmp / "x.wav", 321)])
    assert ids(target) == set(catalog.song_id) | {"x"}


def test_integrity_check_finds_damage(world, capsys):  # noqa: F811
    tmp, model, ckpt, index = world
    assert index_integrity.check_integrity(index) == []
    with sqlite3.connect(index) as conn:
        conn.execute("UPDATE songs SET vector = x'00010203' WHERE song_id = 'S0002'")
    conn.close()
    problems = index_integrity.check_integrity(index)
    assert problems and "S0002" in problems[0]
    from imuse_lib import cli

    assert cli.main(["index", "list", "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert "integrity check FAILED" in err and err.count("\n") == 1


def test_writer_lock_times_out_with_one_line(tmp_path):
    path = tmp_path / "i.sqlite"
    with index_files.writer_lock(path):
        code = subprocess.run([sys.executable, "-c",
                               "import sys; from imuse_lib.index import files as index_files\n"
                               "try:\n"
                               f"    with index_files.writer_lock(sys.argv[1], timeout=0.3): pass\n"
                               "except Exception as e: print(e); sys.exit(3)", str(path)],
                              capture_output=True, text=True)
    assert code.returncode == 3 and "another imuse process" in code.stdout
    with index_files.writer_lock(path, timeout=0.3):  # released: free again
        pass
