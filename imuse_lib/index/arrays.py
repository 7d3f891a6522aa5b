"""The song index's memory-mapped arrays: song ids, VA and vectors as ``.npy`` files.

An index of :data:`ARRAYS_MIN` songs or more keeps them (the VA the recommender ranks with: rated
where a song has it, else predicted, and which are rated) in ``<index>.arrays/<generation>/``,
memory-mapped on load. SQLite stays the truth: the arrays of a generation are written after
its commit, under the writer lock, to a temporary folder renamed into place; a reader uses
only the arrays of the generation its SQLite snapshot names (see :mod:`imuse_lib.index`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import connect_read, file_kind, read_meta, unblob, writer_lock

# Songs from which an index keeps memory-mapped arrays beside it. Below, SQLite loads in
# well under a second and the index stays one file.
ARRAYS_MIN = 20_000


def arrays_dir(path: str | os.PathLike) -> Path:
    """The folder of the index's memory-mapped arrays (one subfolder per generation)."""
    path = Path(path)
    return path.with_name(path.name + ".arrays")


def load_arrays(path: Path, meta: dict) -> dict | None:
    """The arrays of the generation in ``meta``, memory-mapped copy-on-write (writable for
    callers such as torch, never written back); None when absent or not of that shape."""
    generation = meta.get("generation")
    if not generation:
        return None
    folder = arrays_dir(path) / generation
    dim = int(meta.get("music_dim", 0))
    names = ("song_ids", "song_va", "song_rated") + (("song_vectors",) if dim else ())
    for name in names:  # regular files only: opening a FIFO would wait for a writer forever
        kind = file_kind(folder / f"{name}.npy")
        if kind:
            raise DataError(f"{folder / name}.npy: is {kind}, not a memory-mapped array of the song index {path}; "
                            f"delete the folder {folder} (it is rebuilt from the index)")
    try:
        out = {name: np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False) for name in names}
    except (OSError, ValueError):  # missing (not written yet, or removed by a later writer) or damaged
        return None
    n = len(out["song_ids"])
    if (out["song_ids"].dtype.kind != "S" or out["song_va"].shape != (n, 2) or out["song_va"].dtype != np.float32
            or out["song_rated"].shape != (n,) or out["song_rated"].dtype != np.bool_
            or (dim and (out["song_vectors"].shape != (n, dim) or out["song_vectors"].dtype != np.float32))):
        return None
    return out


def write_arrays(path: Path, generation: str, ids: np.ndarray, va: np.ndarray, rated: np.ndarray,
                 vectors: np.ndarray | None, quiet: bool = False) -> None:
    """Write the arrays of ``generation`` into place: a temporary folder, each file flushed
    to disk, renamed as a whole. Arrays are a cache: failing to write them only warns (the
    index is already committed and readers fall back to SQLite)."""
    root = arrays_dir(path)
    final = root / generation
    if final.is_dir():
        return
    tmp = None
    try:
        root.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{generation}.{os.getpid()}.", suffix=".tmp", dir=root))
        arrays = {"song_ids": ids, "song_va": np.ascontiguousarray(va, dtype=np.float32),
                  "song_rated": np.ascontiguousarray(rated, dtype=np.bool_)}
        if vectors is not None:
            arrays["song_vectors"] = np.ascontiguousarray(vectors, dtype=np.float32)
        for name, arr in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # else: another process wrote the same
                raise
    except OSError as exc:
        if not quiet:
            warnings.warn(f"{path}: could not write its memory-mapped arrays in {root} ({exc.strerror or exc}); "
                          f"the index is complete but loads from SQLite", RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish_generation(path: Path, generation: str, old_generation: str | None = None,
                    added: tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None] | None = None,
                    removed: list[str] | None = None) -> None:
    """After a commit, under the writer lock: the new generation's arrays, and the older
    generations' (and killed writers' temporary folders) removed. From the previous
    generation's arrays plus the change when they exist, else read from SQLite. ``added``:
    (ids, ranking VA, rated mask, vectors) of the songs added."""
    root = arrays_dir(path)
    old = None
    if old_generation:
        with contextlib.suppress(DataError):  # damaged old arrays: rebuilt from SQLite below
            old = load_arrays(path, {"generation": old_generation, "music_dim": 0})
    arrays = None
    if old is not None and (added or removed):
        ids, va, rated = np.asarray(old["song_ids"]), np.asarray(old["song_va"]), np.asarray(old["song_rated"])
        vec_file = arrays_dir(path) / old_generation / "song_vectors.npy"
        vecs = np.load(vec_file, mmap_mode="r") if vec_file.exists() and not file_kind(vec_file) else None
        if added:
            new_ids = np.array([s.encode("utf-8") for s in added[0]], dtype=np.bytes_)
            ids = np.concatenate([ids, new_ids])
            va = np.concatenate([va, np.asarray(added[1], np.float32).reshape(-1, 2)])
            rated = np.concatenate([rated, np.asarray(added[2], np.bool_).reshape(-1)])
            if vecs is not None and added[3] is not None:
                vecs = np.concatenate([vecs, np.asarray(added[3], np.float32)])
            order = np.argsort(ids, kind="stable")  # bytes order = SQLite's ORDER BY song_id (BINARY)
            ids, va, rated = ids[order], va[order], rated[order]
            vecs = vecs[order] if vecs is not None else None
        if removed:
            keep = ~np.isin(ids, np.array([s.encode("utf-8") for s in removed], dtype=np.bytes_))
            ids, va, rated, vecs = ids[keep], va[keep], rated[keep], (vecs[keep] if vecs is not None else None)
        arrays = ids, va, rated, vecs
    with contextlib.closing(connect_read(path)) as conn:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        n = conn.execute("SELECT COUNT(*) FROM songs").fetchone()[0]
        if meta.get("generation") == generation and n >= ARRAYS_MIN and (
                arrays is None or len(arrays[0]) != n
                or (arrays[3] is None) != (not int(meta.get("music_dim", 0)))):
            arrays = song_arrays(conn, int(meta.get("music_dim", 0)))
        conn.execute("COMMIT")
    if meta.get("generation") == generation and n >= ARRAYS_MIN:
        write_arrays(path, generation, *arrays)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name != generation or n < ARRAYS_MIN:
                shutil.rmtree(entry, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()  # only when empty: an index under ARRAYS_MIN stays one file


# The VA a song is ranked with: its rated VA where it has one, else its predicted VA.
RANKING_VA_SQL = ("CASE WHEN va_source = 'predicted' THEN valence ELSE true_valence END, "
                  "CASE WHEN va_source = 'predicted' THEN arousal ELSE true_arousal END, va_source != 'predicted'")


def song_arrays(conn: sqlite3.Connection, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, ranking VA [N, 2], rated [N], vectors or None) from SQLite, by id."""
    rows = conn.execute(f"SELECT song_id, {RANKING_VA_SQL}, vector FROM songs ORDER BY song_id").fetchall()
    ids = np.array([r[0].encode("utf-8") for r in rows], dtype=np.bytes_)
    va = np.array([(r[1], r[2]) for r in rows], dtype=np.float32).reshape(-1, 2)
    rated = np.array([bool(r[3]) for r in rows], dtype=np.bool_)
    return ids, va, rated, (unblob([r[4] for r in rows], dim) if dim else None)




def publish_arrays(index_path: str | os.PathLike) -> None:
    """Write the memory-mapped arrays of the index's current state (after writes made with
    ``publish=False``); nothing to do below :data:`ARRAYS_MIN` songs."""
    index_path = Path(index_path)
    with writer_lock(index_path):
        publish_generation(index_path, read_meta(index_path).get("generation", ""))
