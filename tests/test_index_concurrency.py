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


# --------------------------------------------------------------------------- issue 23: links, journals, advice


def test_build_and_add_through_a_linked_folder_lose_nothing(world):  # noqa: F811
    """`index build --index real/idx.sqlite` and `index add --index link/idx.sqlite` (a link to
    the same folder) serialise: the lock is on the real folder (the issue lost the added song)."""
    tmp, model, ckpt, index = world
    link = tmp / "linked"
    link.symlink_to(index.parent, target_is_directory=True)
    via_link = link / index.name
    log = str(tmp / "child.log")
    added = {"tone_a"}
    for r in range(2):
        tone = fk.write_tone(tmp / f"linked{r}.wav", 310 + 41 * r)
        build = kh.start(kh.cli_worker, ["index", "build", "--index", str(index), "--model", str(ckpt)], log,
                         str(ckpt), catalog_seed=1 + r, build_pause=1.5)
        time.sleep(0.3)
        add = kh.start(kh.cli_worker, ["index", "add", tone, "--index", str(via_link), "--model", str(ckpt)], log,
                       str(ckpt))
        for p in (build, add):
            p.join(120)
            assert p.exitcode == 0, Path(log).read_text()[-2000:]
        added.add(f"linked{r}")
        assert not added - ids(index), f"round {r}: lost {added - ids(index)}"
    assert index_integrity.check_integrity(index) == []


def test_writer_lock_is_keyed_on_the_real_file(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with index_files.writer_lock(tmp_path / "real" / "i.sqlite"):
        with pytest.raises(DataError, match="another imuse process"):
            with index_files.writer_lock(tmp_path / "link" / "i.sqlite", timeout=0.2):
                pass


KILLED_AFTER_COMMIT = r"""
import os, sqlite3, sys
from imuse_lib.index import files as index_files
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("BEGIN IMMEDIATE")
conn.execute("DELETE FROM songs WHERE song_id = ?", (sys.argv[2],))
index_files.bump_generation(conn, index_files.utc_now())
conn.execute("COMMIT")
os._exit(0)  # killed after its commit: the write lives in the -wal only
"""


def _killed_write(index: Path, song: str) -> None:
    subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, str(index), song], check=True)
    assert Path(f"{index}-wal").stat().st_size > 0


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith("-shm")}


def test_a_killed_writers_wal_is_read_and_never_replayed_by_a_reader(world, capsys):  # noqa: F811
    tmp, model, ckpt, index = world
    _killed_write(index, "S0001")
    before = _files(index.parent)
    assert "S0001" not in ids(index)  # the committed write is seen ...
    from imuse_lib import cli

    assert cli.main(["index", "list", "--index", str(index)]) == 0 and "integrity: ok" in capsys.readouterr().out
    assert _files(index.parent) == before  # ... and the file is byte for byte as it was
    index_building.add_songs(index, model, [fk.write_tone(tmp / "after.wav", 610)])  # the writer's own journal
    assert "after" in ids(index) and "S0001" not in ids(index)


def test_a_stale_wal_beside_a_restored_backup_is_refused_and_left_alone(world, capsys):  # noqa: F811
    """The issue: a backup restored beside its own index's stale -wal; `index list` replayed
    it (900 images became 800). The -wal continues a later write than the file's."""
    tmp, model, ckpt, index = world
    backup = index.read_bytes()
    index_building.add_songs(index, model, [fk.write_tone(tmp / "later.wav", 620)])  # checkpointed
    _killed_write(index, "S0002")
    stale = Path(f"{index}-wal").read_bytes()
    Path(f"{index}-shm").unlink()
    index.write_bytes(backup)  # restored beside the stale -wal
    before = _files(index.parent)
    from imuse_lib import cli

    for argv in (["index", "list"], ["index", "remove", "S0003"]):
        assert cli.main([*argv, "--index", str(index)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{index}-wal: continues write" in err and "restored" in err
        assert _files(index.parent) == before
    with pytest.raises(DataError, match="continues write"):
        index_reading.open_index(index)
    assert Path(f"{index}-wal").read_bytes() == stale
    Path(f"{index}-wal").unlink()  # what the message advises: the backup then reads as it was
    assert "S0002" in ids(index) and "later" not in ids(index)


def test_replace_broken_is_needed_to_replace_a_broken_index(world, capsys):  # noqa: F811
    """`index list` advises `index build --replace-broken`, and `build` accepts it; without it,
    a damaged index or a file that is no index is never replaced."""
    tmp, model, ckpt, index = world
    from imuse_lib import cli

    catalog, sf_, images, if_ = fk.make_catalog(seed=1)
    for damage in (lambda b: bytes(len(b)), lambda b: b[: len(b) // 3], lambda b: b"not an index at all\n" * 10):
        index.write_bytes(damage(index.read_bytes()) if index.exists() else b"")
        broken = index.read_bytes()
        assert cli.main(["index", "list", "--index", str(index)]) == 2
        err = capsys.readouterr().err
        assert f"imuse index build --replace-broken --index {index}" in err
        assert cli.main(["index", "build", "--index", str(index), "--model", str(ckpt)]) == 2
        assert "pass --replace-broken" in capsys.readouterr().err and index.read_bytes() == broken
        with pytest.raises(DataError, match="pass --replace-broken"):
            index_building.build_index(model, index, catalog, sf_, images, if_, progress=False)
        index_building.build_index(model, index, catalog, sf_, images, if_, progress=False, replace_broken=True)
        assert index_integrity.check_integrity(index) == [] and ids(index) == set(catalog.song_id)
        assert sorted(p.name for p in index.parent.iterdir()) == [index.name]


def test_a_read_only_filesystem_is_read_without_sidecars(world, monkeypatch):  # noqa: F811
    tmp, model, ckpt, index = world
    monkeypatch.setattr(index_files, "_read_only_filesystem", lambda path: True)
    before = _files(index.parent)
    assert "tone_a" in ids(index) and index_integrity.check_integrity(index) == []
    assert sorted(p.name for p in index.parent.iterdir()) == [index.name] and _files(index.parent) == before


def test_a_system_failure_is_not_called_a_broken_index(world, capsys, monkeypatch):  # noqa: F811
    tmp, model, ckpt, index = world

    def failing(path):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(index_integrity, "connect_read", failing)
    from imuse_lib import cli

    assert cli.main(["index", "list", "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the song index (disk I/O error)" in err and "FAILED" not in err and err.count("\n") == 1


def test_nfc_and_nfd_spellings_are_one_id(world):  # noqa: F811
    import unicodedata

    tmp, model, ckpt, index = world
    nfd = fk.write_tone(tmp / unicodedata.normalize("NFD", "café.wav"), 480)
    assert index_building.add_songs(index, model, [nfd]) == ["café"]  # NFC
    (tmp / "other").mkdir()
    nfc = fk.write_tone(tmp / "other" / unicodedata.normalize("NFC", "café.wav"), 490)
    with pytest.raises(Exception, match="already in the index"):
        index_building.add_songs(index, model, [nfc])


def test_a_non_finite_embedding_is_refused_naming_the_audio(world, monkeypatch):  # noqa: F811
    tmp, model, ckpt, index = world
    real = type(model).music_side
    monkeypatch.setattr(type(model), "music_side",
                        lambda self, feats: tuple(np.full_like(x, np.nan) for x in real(self, feats)))
    before = index.read_bytes()
    tone = fk.write_tone(tmp / "poison.wav", 530)
    with pytest.raises(DataError, match=r"poison\.wav: its embedding is not a finite number"):
        index_building.add_songs(index, model, [tone])
    assert index.read_bytes() == before


def test_a_full_disk_still_reads_a_clean_index(world, monkeypatch):  # noqa: F811
    """No room for the -shm a read-write reader makes: the clean file alone is read."""
    tmp, model, ckpt, index = world
    real = sqlite3.connect

    class NoRoom:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, *a):
            raise sqlite3.OperationalError("database or disk is full")

        def close(self):
            self.conn.close()

    monkeypatch.setattr(index_files.sqlite3, "connect",
                        lambda target, *a, uri=False, **k: real(target, *a, uri=uri, **k) if uri
                        else NoRoom(real(target, *a, **k)))
    assert "tone_a" in ids(index) and index_integrity.check_integrity(index) == []
