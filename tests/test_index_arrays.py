"""The song index's memory-mapped arrays (catalog scale, issue 11): what a reader loads from
them equals what it loads from SQLite, after build, add and remove; a writer killed between
its commit and its arrays, stale or tampered arrays, and the lazily read metadata.

ARRAYS_MIN is lowered so that the small fake catalog gets arrays (real indexes get them from
20,000 songs on)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imuse_lib import recommend
from imuse_lib.errors import DataError
from imuse_lib.index import arrays as index_arrays
from imuse_lib.index import building as index_building
from imuse_lib.index import editing as index_editing
from imuse_lib.index import files as index_files
from imuse_lib.index import integrity as index_integrity
from imuse_lib.index import reading as index_reading

import kill_helpers as kh
import recommend_fakes as fk
from test_kill import world  # noqa: F401  (the fixture)


@pytest.fixture(params=[True, False], ids=["factorised", "joint"])
def big(request, tmp_path, monkeypatch):
    monkeypatch.setattr(index_arrays, "ARRAYS_MIN", 10)
    model = fk.make_model(factorised=request.param)
    catalog, sf_, images, if_ = fk.make_catalog(n_songs=40)
    path = index_building.build_index(model, tmp_path / "idx.sqlite", catalog, sf_, images, if_, progress=False)
    return model, path, tmp_path


def _from_sqlite(path):
    """The index loaded the old way: its arrays moved aside for the call, then put back."""
    root = index_arrays.arrays_dir(path)
    aside = root.with_name(root.name + ".aside")
    root.rename(aside)
    try:
        return index_reading.open_index(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the reader may have rewritten them: keep the writer's
        aside.rename(root)


def _same(a, b):
    assert len(a) == len(b)
    assert np.array_equal(np.asarray(a.song_va), np.asarray(b.song_va))
    if a.song_vectors is None:
        assert b.song_vectors is None
    else:
        assert np.array_equal(np.asarray(a.song_vectors), np.asarray(b.song_vectors))
    pd.testing.assert_frame_equal(a.songs.reset_index(drop=True), b.songs.reset_index(drop=True))


def test_arrays_equal_sqlite_after_build_add_remove(big):
    model, path, tmp = big
    idx = index_reading.open_index(path)
    gen = idx.meta["generation"]
    assert isinstance(idx.song_va, np.memmap) and idx._songs is None  # mapped, metadata not read yet
    assert [p.name for p in index_arrays.arrays_dir(path).iterdir()] == [gen]
    _same(idx, _from_sqlite(path))

    tones = [fk.write_tone(tmp / f"{name}.wav", f) for name, f in (("AAA first", 330), ("zzz last", 550))]
    index_building.add_songs(path, model, tones)
    after_add = index_reading.open_index(path)
    assert after_add.meta["generation"] != gen and isinstance(after_add.song_va, np.memmap)
    assert {"AAA first", "zzz last"} <= set(after_add.songs.song_id)
    _same(after_add, _from_sqlite(path))

    index_editing.remove_songs(path, ["S0003", "zzz last"])
    after_rm = index_reading.open_index(path)
    assert len(after_rm) == 40 and "S0003" not in set(after_rm.songs.song_id)
    _same(after_rm, _from_sqlite(path))
    # only the current generation's arrays are kept
    assert [p.name for p in index_arrays.arrays_dir(path).iterdir()] == [after_rm.meta["generation"]]
    assert index_integrity.check_integrity(path) == []


def test_query_reads_only_its_rows_and_equals_the_sqlite_answer(big, monkeypatch):
    model, path, tmp = big
    query = fk.write_image(tmp / "q.png", seed=5)
    mapped = recommend.Recommender(model, index_reading.open_index(path)).recommend(query, top=7)
    plain = recommend.Recommender(model, _from_sqlite(path)).recommend(query, top=7)
    pd.testing.assert_frame_equal(mapped.items, plain.items)


def test_reader_after_a_writer_killed_before_its_arrays(big, monkeypatch):
    """The commit happened, the arrays did not: readers load from SQLite (same answer) and
    the first one writes the arrays."""
    model, path, tmp = big
    monkeypatch.setattr(index_arrays, "publish_generation", lambda *a, **k: None)  # "killed" after the commit
    index_building.add_songs(path, model, [fk.write_tone(tmp / "late.wav", 440)])
    meta = index_files.read_meta(path)
    assert not (index_arrays.arrays_dir(path) / meta["generation"]).exists()
    first = index_reading.open_index(path)
    assert not isinstance(first.song_va, np.memmap) and "late" in set(first.songs.song_id)
    assert (index_arrays.arrays_dir(path) / meta["generation"]).is_dir()  # written by that reader
    second = index_reading.open_index(path)
    assert isinstance(second.song_va, np.memmap)
    _same(first, second)


def test_lazy_metadata_refuses_a_changed_index(big):
    model, path, tmp = big
    idx = index_reading.open_index(path)
    assert len(idx.song_rows([0, 5])) == 2
    index_editing.remove_songs(path, ["S0001"])
    with pytest.raises(DataError, match="load it again"):
        idx.song_rows([0])
    with pytest.raises(DataError, match="load it again"):
        idx.songs  # noqa: B018


def test_tampered_or_damaged_arrays(big):
    model, path, tmp = big
    gen = index_files.read_meta(path)["generation"]
    folder = index_arrays.arrays_dir(path) / gen
    va = np.load(folder / "song_va.npy")
    np.save(folder / "song_va.npy", va + 0.5)
    assert any("differ from the index" in p for p in index_integrity.check_integrity(path))
    (folder / "song_vectors.npy").write_bytes(b"not an array")  # damaged: ignored, SQLite used
    idx = index_reading.open_index(path)
    assert not isinstance(idx.song_va, np.memmap)
    assert np.array_equal(idx.song_va, _from_sqlite(path).song_va)


def test_small_index_stays_one_file(tmp_path):
    """Below ARRAYS_MIN (the default): no arrays folder, as before."""
    model = fk.make_model(factorised=True)
    catalog, sf_, images, if_ = fk.make_catalog()
    path = index_building.build_index(model, tmp_path / "idx.sqlite", catalog, sf_, images, if_, progress=False)
    index_building.add_songs(path, model, [fk.write_tone(tmp_path / "t.wav", 300)])
    assert not index_arrays.arrays_dir(path).exists()
    assert index_reading.open_index(path)._songs is not None


def test_shrinking_below_the_threshold_drops_the_arrays(big, monkeypatch):
    model, path, tmp = big
    assert index_arrays.arrays_dir(path).is_dir()
    monkeypatch.setattr(index_arrays, "ARRAYS_MIN", 1000)
    index_editing.remove_songs(path, ["S0000"])
    assert not index_arrays.arrays_dir(path).exists()


def arrays_cli_worker(argv, log, ckpt):
    """kill_helpers.cli_worker with arrays from 10 songs on (a child process of its own)."""
    index_arrays.ARRAYS_MIN = 10
    kh.cli_worker(argv, log, ckpt)


def test_concurrent_writers_leave_arrays_equal_to_the_index(world):  # noqa: F811
    """Three `index add` and one `index remove` at once, real processes: the arrays of the
    final generation equal what SQLite holds, and no older generation is left."""
    tmp, model, ckpt, index = world
    log = str(tmp / "child.log")
    cmds = [["index", "add", fk.write_tone(tmp / f"par{i}.wav", 310 + 70 * i), "--index", str(index),
             "--model", str(ckpt)] for i in range(3)]
    cmds.append(["index", "remove", "S0005", "--index", str(index), "--model", str(ckpt)])
    procs = [kh.start(arrays_cli_worker, argv, log, str(ckpt)) for argv in cmds]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, Path(log).read_text()[-2000:]
    idx = index_reading.open_index(index)
    assert isinstance(idx.song_va, np.memmap)
    assert {"par0", "par1", "par2"} <= set(idx.songs.song_id) and "S0005" not in set(idx.songs.song_id)
    _same(idx, _from_sqlite(index))
    assert [p.name for p in index_arrays.arrays_dir(index).iterdir()] == [idx.meta["generation"]]
    assert index_integrity.check_integrity(index) == []
