"""The song index: storage, locking and integrity of the deployed recommender's data.

One SQLite file (no server). Per song it holds the metadata, the stored music vector
(``net.music_vector``, float32 [128]) and the song's predicted valence/arousal; per OASIS
image the image vector and predicted VA (for the reverse direction); and, in ``meta``,
the fingerprint of the model it came from. A model whose fingerprint differs is refused
(:class:`~imuse_lib.errors.ModelMismatchError`). Model loading and ranking live in
:mod:`imuse_lib.recommend`; this module only stores.

Survives a kill at any point, and concurrent writers:

* WAL journal mode (``PRAGMA journal_mode=WAL``): a write is one transaction, a kill
  before its commit leaves the old index, readers never see half a write and never need
  to write themselves (an older rollback-journal index is converted on its next write;
  a reader that finds its hot journal rolls it back, when the file is writable).
* Writers (``build``, ``add``, ``remove``) hold an exclusive lock (``flock`` on the index's
  folder, :func:`writer_lock`) from their check of the index to their commit, so
  that one cannot undo another's work: a ``build`` that waited for an ``add`` keeps the
  song it added. The lock dies with its process (no stale locks after a kill).
* ``build`` over an existing index rewrites it in ONE transaction (the file is never
  replaced, so no journal of the old file can be replayed onto the new one); a new
  index is written to a temporary file and renamed. Songs added to the old index (ids
  outside the catalog) are kept: as they are when the model is the same, re-embedded
  from their audio files when it is not; ``keep_added=False`` drops them.
* :func:`check_integrity` runs ``PRAGMA integrity_check`` and checks every stored vector's
  length; ``imuse index list`` runs it and reports the result.

Catalog scale: an index of :data:`ARRAYS_MIN` songs or more also keeps its song ids, VA and
vectors as ``.npy`` files in ``<index>.arrays/<generation>/``, memory-mapped on load (a
million songs load in milliseconds instead of seconds from SQLite; the metadata of the
songs is then read on demand). SQLite stays the truth: every write sets a new random
``generation`` in ``meta`` inside its transaction and, after its commit and still under
the writer lock, writes that generation's arrays (to a temporary folder renamed into
place). A reader uses only the arrays of the generation its SQLite snapshot names, so a
kill between the commit and the arrays costs speed, never consistency: the reader loads
from SQLite and writes the missing arrays itself when it may.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import functools
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from . import config
from .errors import DataError, ImuseError, ModelMismatchError, text_problem

if TYPE_CHECKING:  # the model side is imuse_lib.recommend, which imports this module
    from .recommend import Model

SCHEMA_VERSION = 1
JOINT_BATCH = 65536  # rows per fusion batch: fixed, so that results do not depend on N
LOCK_TIMEOUT = 120.0  # seconds a writer waits for another writer before giving up
SIDECARS = ("-wal", "-shm", "-journal")
# Songs from which an index keeps memory-mapped arrays beside it. Below, SQLite loads in
# well under a second and the index stays one file.
ARRAYS_MIN = 20_000

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE songs (
    song_id TEXT PRIMARY KEY,
    artist TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT,
    vector BLOB,
    valence REAL NOT NULL,
    arousal REAL NOT NULL,
    true_valence REAL,
    true_arousal REAL,
    added TEXT NOT NULL
);
CREATE TABLE images (
    image_id TEXT PRIMARY KEY,
    category TEXT,
    source TEXT,
    vector BLOB,
    valence REAL NOT NULL,
    arousal REAL NOT NULL,
    true_valence REAL,
    true_arousal REAL
);
"""
SONG_COLUMNS = ["song_id", "artist", "title", "source", "vector", "valence", "arousal",
                "true_valence", "true_arousal", "added"]


def default_index_path(model: "Model") -> Path:
    return config.cache_dir() / "index" / f"{model.fingerprint[:16]}.sqlite"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _blob(vec) -> bytes | None:
    return None if vec is None else np.asarray(vec, dtype=np.float32).tobytes()


def _unblob(blobs: list, dim: int) -> np.ndarray | None:
    if not blobs or any(b is None for b in blobs):
        return None
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


class SongIndex:
    """An index loaded into memory: arrays sorted by id, ready for queries.

    ``songs`` (the metadata table) is read from SQLite on first use when the index was
    loaded from its memory-mapped arrays; :meth:`song_rows` reads only the rows asked for.
    """

    def __init__(self, path: Path, meta: dict, songs: pd.DataFrame | None, song_va: np.ndarray,
                 song_vectors: np.ndarray | None, images: pd.DataFrame | None = None,
                 image_va: np.ndarray | None = None, image_vectors: np.ndarray | None = None,
                 song_ids: np.ndarray | None = None):
        self.path, self.meta = Path(path), meta
        self._songs = songs
        self.song_va = song_va  # [N, 2] float32
        self.song_vectors = song_vectors  # [N, D] float32 or None
        self.images = pd.DataFrame() if images is None else images
        self.image_va = np.zeros((0, 2), np.float32) if image_va is None else image_va
        self.image_vectors = image_vectors
        self._song_ids = song_ids  # UTF-8 bytes [N], only where songs is read lazily
        if songs is None and song_ids is None:
            raise ValueError("SongIndex needs its songs table or its song ids")

    @property
    def songs(self) -> pd.DataFrame:
        """song_id, artist, title, source, valence, arousal, true_valence, true_arousal, added."""
        if self._songs is None:
            self._songs = _read_song_table(self.path, self.generation, self._song_ids)
        return self._songs

    @property
    def generation(self) -> str:
        return self.meta.get("generation", "")

    def song_rows(self, positions) -> pd.DataFrame:
        """The metadata rows at ``positions`` (as ``songs.iloc[positions]``), read from SQLite
        alone when the table is not loaded: a query over a million songs reads ten rows."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._songs is not None:
            return self._songs.iloc[positions]
        ids = [bytes(b).decode("utf-8") for b in self._song_ids[positions]]
        return _read_song_table(self.path, self.generation, None, ids)

    @property
    def fingerprint(self) -> str:
        return self.meta.get("fingerprint", "")

    @functools.cached_property
    def song_va_columns(self) -> tuple[np.ndarray, np.ndarray]:
        from .recommend import va_columns

        return va_columns(self.song_va)

    @functools.cached_property
    def image_va_columns(self) -> tuple[np.ndarray, np.ndarray]:
        from .recommend import va_columns

        return va_columns(self.image_va)

    def __len__(self) -> int:
        return len(self.song_va)

    def check_model(self, model: "Model") -> None:
        _check_fingerprint(self.path, self.meta, model)


def _check_fingerprint(path: Path, meta: dict, model: "Model") -> None:
    fingerprint = meta.get("fingerprint", "")
    if fingerprint != model.fingerprint:
        built = meta.get("model_label", "another model")
        raise ModelMismatchError(
            f"{path}: this song index was built by a different model (fingerprint "
            f"{fingerprint[:12]}..., {built}) than {model.path or 'the model given'} "
            f"(fingerprint {model.fingerprint[:12]}..., {model.label()}); rebuild it with "
            f"`imuse index build` (songs added to it are kept) or pass the matching --model")


# --------------------------------------------------------------------------- files and connections


def _file_kind(path: Path) -> str | None:
    """None for a regular file (links followed) or nothing; else what it is instead."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "a dangling symbolic link"
        return None
    except NotADirectoryError:
        return "under a file, not a folder"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    return {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(st.st_mode), "not a file")


def _check_index_file(path: Path) -> None:
    kind = _file_kind(path)
    if kind:
        raise DataError(f"{path}: is {kind}, not a song index file")
    if not path.exists():
        raise DataError(f"{path}: no song index there; build one with `imuse index build` "
                        f"(or pass --index PATH)")


def _connect_read(path: Path) -> sqlite3.Connection:
    """A connection for reading. Read-write when the file and its folder allow it, so
    that SQLite can roll back a hot journal left by a killed writer of an older index
    (a read-only connection fails on it with "attempt to write a readonly database")."""
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        conn = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT)
    else:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_TIMEOUT)
    conn.execute("PRAGMA query_only = ON")  # a reader never writes data (recovery aside)
    return conn


def _not_an_index(path: Path, exc: sqlite3.DatabaseError) -> DataError:
    if "readonly" in str(exc):  # a hot journal that this read-only user cannot roll back
        return DataError(f"{path}: an interrupted write left a journal beside the index, and rolling it back "
                         f"needs write permission on {path.parent}; open it once as a user who may write there")
    return DataError(f"{path}: not an IMUSE song index ({exc})")


def _read_meta(conn: sqlite3.Connection, path: Path) -> dict:
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
        conn.execute("SELECT song_id FROM songs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise _not_an_index(path, exc) from None
    meta = dict(rows)
    if str(meta.get("schema_version", -1)) != str(SCHEMA_VERSION):
        raise DataError(f"{path}: song index schema version {meta.get('schema_version')!r}, "
                        f"this program reads version {SCHEMA_VERSION}; rebuild it with `imuse index build`")
    return meta


def read_meta(path: str | os.PathLike) -> dict:
    path = Path(path)
    _check_index_file(path)
    try:
        with contextlib.closing(_connect_read(path)) as conn:
            return _read_meta(conn, path)
    except sqlite3.DatabaseError as exc:
        raise _not_an_index(path, exc) from None


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike, timeout: float = LOCK_TIMEOUT):
    """Hold the exclusive writer lock of the index at ``path``: ``flock`` on its folder.

    The folder, not a lock file: it exists before a first build, it leaves nothing behind
    and SQLite's own (fcntl) locks on the index file are not disturbed. Writers of other
    indexes in the same folder wait too; writes are short, so this costs little."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise DataError(f"{path}: cannot lock the song index for writing ({folder}: {exc.strerror or exc})") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DataError(f"{path}: another imuse process has been writing a song index in {folder} "
                                    f"for {timeout:.0f} s; try again when it has finished") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _connect_write(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise DataError(f"{path}: cannot switch the song index to WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@contextlib.contextmanager
def _writable(path: Path):
    """A connection on an existing index, inside one transaction (rolled back on error).
    The caller holds :func:`writer_lock`."""
    _check_index_file(path)
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise DataError(f"{path}: song index is not writable")
    try:
        conn = _connect_write(path)
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not an IMUSE song index ({exc})") from None
    try:
        _read_meta(conn, path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: cannot update the song index ({exc})") from None
    finally:
        conn.close()


def _insert_all(conn: sqlite3.Connection, meta: dict, songs: list[tuple], images: list[tuple]) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    conn.executemany(f"INSERT INTO songs VALUES ({', '.join('?' * len(SONG_COLUMNS))})", songs)
    conn.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", images)


# --------------------------------------------------------------------------- reading


SONG_META_COLUMNS = ["song_id", "artist", "title", "source", "valence", "arousal",
                     "true_valence", "true_arousal", "added"]


def open_index(path: str | os.PathLike) -> SongIndex:
    """Load an index file into memory (read only): from its memory-mapped arrays when it has
    those of its current generation (see the module notes), else everything from SQLite."""
    path = Path(path)
    _check_index_file(path)
    arrays = None
    try:
        with contextlib.closing(_connect_read(path)) as conn:
            conn.execute("BEGIN")  # one snapshot for every table
            meta = _read_meta(conn, path)
            dim = int(meta.get("music_dim", 0))
            arrays = _load_arrays(path, meta)
            if arrays is not None:
                songs, song_ids, song_vectors = None, arrays["song_ids"], arrays.get("song_vectors")
                va = arrays["song_va"]
            else:
                rows = conn.execute(
                    f"SELECT {', '.join(SONG_META_COLUMNS)}, vector FROM songs ORDER BY song_id").fetchall()
                songs = pd.DataFrame([r[:-1] for r in rows], columns=SONG_META_COLUMNS)
                song_vectors = _unblob([r[-1] for r in rows], dim) if dim else None
                song_ids = None
                va = songs[["valence", "arousal"]].to_numpy(np.float32).reshape(-1, 2)
            idim = int(meta.get("image_dim_vec", 0))
            irows = conn.execute(
                "SELECT image_id, category, source, valence, arousal, true_valence, true_arousal, vector "
                "FROM images ORDER BY image_id").fetchall()
            images = pd.DataFrame([r[:-1] for r in irows], columns=[
                "image_id", "category", "source", "valence", "arousal", "true_valence", "true_arousal"])
            image_vectors = _unblob([r[-1] for r in irows], idim) if idim else None
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise _not_an_index(path, exc) from None
    except ValueError as exc:  # a vector blob of the wrong length
        raise DataError(f"{path}: damaged song index ({exc}); run `imuse index list` for its integrity check "
                        f"and rebuild it with `imuse index build`") from None
    if (arrays is None and meta.get("generation") and len(va) >= ARRAYS_MIN
            and read_meta(path).get("generation") == meta["generation"]):  # never arrays of a replaced state
        # a writer killed between its commit and its arrays: write them for the next reader
        ids = np.array([s.encode("utf-8") for s in songs.song_id], dtype=np.bytes_)
        _write_arrays(path, meta["generation"], ids, va, song_vectors, quiet=True)
    iva = images[["valence", "arousal"]].to_numpy(np.float32).reshape(-1, 2)
    return SongIndex(path=path, meta=meta, songs=songs, song_va=va, song_vectors=song_vectors,
                     images=images, image_va=iva, image_vectors=image_vectors, song_ids=song_ids)


def _read_song_table(path: Path, generation: str, expect_ids: np.ndarray | None,
                     ids: list[str] | None = None) -> pd.DataFrame:
    """The songs' metadata (all of it, or the rows of ``ids`` in that order) from the SQLite
    snapshot of ``generation``; DataError when the index was written since it was loaded."""
    try:
        with contextlib.closing(_connect_read(path)) as conn:
            conn.execute("BEGIN")
            meta = _read_meta(conn, path)
            if meta.get("generation", "") != generation:
                raise DataError(f"{path}: the song index was changed (by `imuse index add/remove/build`) since it "
                                f"was loaded; load it again")
            cols = ", ".join(SONG_META_COLUMNS)
            if ids is None:
                rows = conn.execute(f"SELECT {cols} FROM songs ORDER BY song_id").fetchall()
            else:
                found = {}
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    for r in conn.execute(f"SELECT {cols} FROM songs WHERE song_id IN "
                                          f"({','.join('?' * len(chunk))})", chunk):
                        found[r[0]] = r
                rows = [found[i] for i in ids]  # the generation matched: every id is there
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise _not_an_index(path, exc) from None
    table = pd.DataFrame(rows, columns=SONG_META_COLUMNS)
    if expect_ids is not None and (len(table) != len(expect_ids) or any(
            a.encode("utf-8") != bytes(b) for a, b in zip(table.song_id, expect_ids))):
        raise DataError(f"{path}: the arrays in {arrays_dir(path)} do not match the index; delete that folder "
                        f"(it is rebuilt from the index)")
    return table


# --------------------------------------------------------------------------- memory-mapped arrays


def arrays_dir(path: str | os.PathLike) -> Path:
    """The folder of the index's memory-mapped arrays (one subfolder per generation)."""
    path = Path(path)
    return path.with_name(path.name + ".arrays")


def _load_arrays(path: Path, meta: dict) -> dict | None:
    """The arrays of the generation in ``meta``, memory-mapped copy-on-write (writable for
    callers such as torch, never written back); None when absent or not of that shape."""
    generation = meta.get("generation")
    if not generation:
        return None
    folder = arrays_dir(path) / generation
    dim = int(meta.get("music_dim", 0))
    try:
        out = {name: np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False)
               for name in ("song_ids", "song_va") + (("song_vectors",) if dim else ())}
    except (OSError, ValueError):  # missing (not written yet, or removed by a later writer) or damaged
        return None
    n = len(out["song_ids"])
    if (out["song_ids"].dtype.kind != "S" or out["song_va"].shape != (n, 2) or out["song_va"].dtype != np.float32
            or (dim and (out["song_vectors"].shape != (n, dim) or out["song_vectors"].dtype != np.float32))):
        return None
    return out


def _write_arrays(path: Path, generation: str, ids: np.ndarray, va: np.ndarray, vectors: np.ndarray | None,
                  quiet: bool = False) -> None:
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
        arrays = {"song_ids": ids, "song_va": np.ascontiguousarray(va, dtype=np.float32)}
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


def _publish_arrays(path: Path, generation: str, old_generation: str | None = None,
                    added: tuple[list[str], np.ndarray, np.ndarray | None] | None = None,
                    removed: list[str] | None = None) -> None:
    """After a commit, under the writer lock: the new generation's arrays, and the older
    generations' (and killed writers' temporary folders) removed. From the previous
    generation's arrays plus the change when they exist, else read from SQLite."""
    root = arrays_dir(path)
    old = _load_arrays(path, {"generation": old_generation, "music_dim": 0}) if old_generation else None
    arrays = None
    if old is not None and (added or removed):
        ids, va = np.asarray(old["song_ids"]), np.asarray(old["song_va"])
        vec_file = arrays_dir(path) / old_generation / "song_vectors.npy"
        vecs = np.load(vec_file, mmap_mode="r") if vec_file.exists() else None
        if added:
            new_ids = np.array([s.encode("utf-8") for s in added[0]], dtype=np.bytes_)
            ids = np.concatenate([ids, new_ids])
            va = np.concatenate([va, np.asarray(added[1], np.float32).reshape(-1, 2)])
            if vecs is not None and added[2] is not None:
                vecs = np.concatenate([vecs, np.asarray(added[2], np.float32)])
            order = np.argsort(ids, kind="stable")  # bytes order = SQLite's ORDER BY song_id (BINARY)
            ids, va, vecs = ids[order], va[order], (vecs[order] if vecs is not None else None)
        if removed:
            keep = ~np.isin(ids, np.array([s.encode("utf-8") for s in removed], dtype=np.bytes_))
            ids, va, vecs = ids[keep], va[keep], (vecs[keep] if vecs is not None else None)
        arrays = ids, va, vecs
    with contextlib.closing(_connect_read(path)) as conn:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        n = conn.execute("SELECT COUNT(*) FROM songs").fetchone()[0]
        if meta.get("generation") == generation and n >= ARRAYS_MIN and (
                arrays is None or len(arrays[0]) != n
                or (arrays[2] is None) != (not int(meta.get("music_dim", 0)))):
            arrays = _song_arrays(conn, int(meta.get("music_dim", 0)))
        conn.execute("COMMIT")
    if meta.get("generation") == generation and n >= ARRAYS_MIN:
        _write_arrays(path, generation, *arrays)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name != generation or n < ARRAYS_MIN:
                shutil.rmtree(entry, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()  # only when empty: an index under ARRAYS_MIN stays one file


def _song_arrays(conn: sqlite3.Connection, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rows = conn.execute("SELECT song_id, valence, arousal, vector FROM songs ORDER BY song_id").fetchall()
    ids = np.array([r[0].encode("utf-8") for r in rows], dtype=np.bytes_)
    va = np.array([(r[1], r[2]) for r in rows], dtype=np.float32).reshape(-1, 2)
    return ids, va, (_unblob([r[3] for r in rows], dim) if dim else None)


def check_integrity(path: str | os.PathLike) -> list[str]:
    """Problems found in the index file (empty list: sound): SQLite's ``integrity_check``,
    then every stored vector's length against the dimension in ``meta`` and finite VA."""
    path = Path(path)
    _check_index_file(path)
    problems = []
    try:
        with contextlib.closing(_connect_read(path)) as conn:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                return [f"integrity_check: {r}" for r in result[:5]]
            meta = _read_meta(conn, path)
            for table, key, dim_key in (("songs", "song_id", "music_dim"), ("images", "image_id", "image_dim_vec")):
                nbytes = 4 * int(meta.get(dim_key, 0))
                if nbytes:
                    bad = conn.execute(f"SELECT {key} FROM {table} WHERE vector IS NULL OR length(vector) != ? "
                                       f"LIMIT 5", (nbytes,)).fetchall()
                    problems += [f"{table} {r[0]}: vector is not {nbytes // 4} float32 values" for r in bad]
                bad = conn.execute(f"SELECT {key} FROM {table} WHERE NOT (valence BETWEEN -1e9 AND 1e9) "
                                   f"OR NOT (arousal BETWEEN -1e9 AND 1e9) LIMIT 5").fetchall()
                problems += [f"{table} {r[0]}: valence/arousal not a finite number" for r in bad]
            arrays = _load_arrays(path, meta)
            if arrays is not None and not problems:  # the memory-mapped copy must equal the index
                ids, va, vecs = _song_arrays(conn, int(meta.get("music_dim", 0)))
                if not (np.array_equal(ids, arrays["song_ids"]) and np.array_equal(va, arrays["song_va"])
                        and (vecs is None or np.array_equal(vecs, arrays["song_vectors"]))):
                    problems.append(f"{arrays_dir(path) / meta['generation']}: memory-mapped arrays differ from "
                                    f"the index; delete that folder (the next load rebuilds it)")
    except sqlite3.DatabaseError as exc:
        problems.append(f"not readable as a song index ({exc})")
    return problems


# --------------------------------------------------------------------------- building


def _joint_means(model: "Model", image_vecs: np.ndarray, music_vecs: np.ndarray,
                 batch: int = JOINT_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Joint model over every (image, song) combination: (mean image VA per image [Ni, 2],
    mean music VA per song [Ns, 2]). Runs the fusion layers in fixed-size chunks of images."""
    import torch

    ni, ns = len(image_vecs), len(music_vecs)
    img_sum, mus_sum = np.zeros((ni, 2), np.float64), np.zeros((ns, 2), np.float64)
    iv_all = torch.from_numpy(np.ascontiguousarray(image_vecs, dtype=np.float32))
    mv = torch.from_numpy(np.ascontiguousarray(music_vecs, dtype=np.float32))
    rows = max(1, batch // max(ns, 1))
    with torch.inference_mode():
        for start in range(0, ni, rows):
            iv = iv_all[start:start + rows]
            k = len(iv)
            iva, mva = model.net.fuse(iv.repeat_interleave(ns, 0), mv.repeat(k, 1))
            img_sum[start:start + k] = iva.reshape(k, ns, 2).double().sum(1).numpy()
            mus_sum += mva.reshape(k, ns, 2).double().sum(0).numpy()
    return (img_sum / max(ns, 1)).astype(np.float32), (mus_sum / max(ni, 1)).astype(np.float32)


def _meta_rows(model: "Model", music_dim: int, image_dim: int) -> dict:
    from .recommend import _clean_provenance

    m = model.meta
    return {
        "schema_version": str(SCHEMA_VERSION),
        "fingerprint": model.fingerprint,
        "created": _now(),
        "model_path": str(model.path) if model.path else "",
        "model_label": model.label(),
        "factorised": "1" if model.factorised else "0",
        "image_backbone": str(m.get("image_backbone")),
        "audio_backbone": str(m.get("audio_backbone")),
        "image_weights": json.dumps(_clean_provenance(m.get("image_weights")), sort_keys=True, default=str),
        "audio_weights": json.dumps(_clean_provenance(m.get("audio_weights")), sort_keys=True, default=str),
        "music_dim": str(music_dim),
        "image_dim_vec": str(image_dim),
        "generation": _new_generation(),
    }


def _new_generation() -> str:
    """A fresh name for the index's state after a write (names its memory-mapped arrays)."""
    return uuid.uuid4().hex


def _existing_index(path: Path) -> tuple[dict | None, list[tuple]]:
    """(meta, song rows) of the index at ``path`` that a rebuild replaces; (None, []) when
    there is none. A file there that is not a song index is refused, never replaced."""
    if not path.exists():
        return None, []
    try:
        with contextlib.closing(_connect_read(path)) as conn:
            try:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                rows = conn.execute(f"SELECT {', '.join(SONG_COLUMNS)} FROM songs ORDER BY song_id").fetchall()
            except sqlite3.DatabaseError as exc:
                raise DataError(f"{path}: exists and is not an IMUSE song index ({exc}); refusing to replace "
                                f"it: remove it yourself or give another --index") from None
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: exists and is not an IMUSE song index ({exc}); refusing to replace it: "
                        f"remove it yourself or give another --index") from None
    if "fingerprint" not in meta:
        raise DataError(f"{path}: exists and is not an IMUSE song index (no fingerprint); refusing to replace "
                        f"it: remove it yourself or give another --index")
    return meta, rows


def _carry_added(path: Path, model: "Model", old_meta: dict, old_rows: list[tuple], catalog_ids: set,
                 image_vecs: np.ndarray | None, music_dim: int) -> list[tuple]:
    """Song rows added to the old index (ids outside the catalog), valid for ``model``:
    copied when the model is the one that embedded them, else re-embedded from their audio."""
    added = [r for r in old_rows if r[0] not in catalog_ids]
    if not added:
        return []
    same = (old_meta.get("fingerprint") == model.fingerprint
            and str(old_meta.get("schema_version")) == str(SCHEMA_VERSION)
            and int(old_meta.get("music_dim", 0)) == music_dim)
    if same:
        return added
    sources = [Path(r[3]) if r[3] else None for r in added]
    gone = [r[0] for r, s in zip(added, sources) if s is None or not s.is_file()]
    if gone:
        raise DataError(f"{path}: {len(added)} song(s) were added to this index by hand and must be re-embedded "
                        f"for the new model, but the audio of {len(gone)} is gone (e.g. {gone[0]}); restore "
                        f"it, or pass --drop-added to rebuild without the added songs")
    feats = model.embed_audio(sources)
    vecs, va = model.music_side(feats)
    if not model.factorised:
        va = _joint_means(model, image_vecs, vecs)[1]
    return [(r[0], r[1], r[2], r[3], _blob(vecs[i]) if vecs is not None else None,
             float(va[i, 0]), float(va[i, 1]), r[7], r[8], r[9]) for i, r in enumerate(added)]


def build_index(model: "Model | str | os.PathLike | None" = None, path: str | os.PathLike | None = None,
                catalog: pd.DataFrame | None = None, song_features: np.ndarray | None = None,
                images: pd.DataFrame | None = None, image_features: np.ndarray | None = None,
                progress: bool = True, keep_added: bool = True) -> Path:
    """Build the index of ``catalog`` (default: the 500-clip catalog) for ``model``.

    Song and image backbone features default to the feature store's eval features (the
    same the model was trained on). Songs added to an existing index at ``path`` are kept
    (``keep_added``; see the module notes). Atomic: a kill leaves the old index or the new.
    """
    from tqdm import tqdm

    from . import io as imuse_io
    from .recommend import Model, _store_kwargs, load_model

    if not isinstance(model, Model):
        model = load_model(model)
    path = Path(path) if path is not None else default_index_path(model)
    kind = _file_kind(path)
    if kind:
        raise DataError(f"{path}: is {kind}; give a file path for the song index")
    if path.exists():
        _existing_index(path)  # refuse a file that is not an index before the long work
    if catalog is None or song_features is None:
        from . import data, features

        catalog = data.load_catalog() if catalog is None else catalog
        if song_features is None and hasattr(model, "catalog_features"):  # a VA model: its own sources
            song_features = model.catalog_features(catalog)
        if song_features is None:
            fs = features.audio_features(**_store_kwargs(model.meta, "audio"))
            pos = {sid: i for i, sid in enumerate(fs.ids)}
            missing = [s for s in catalog.song_id if s not in pos]
            if missing:
                raise DataError(f"audio feature store lacks {len(missing)} catalog song(s), e.g. {missing[0]}")
            song_features = fs.eval[[pos[s] for s in catalog.song_id]]
    if images is None or image_features is None:
        from . import data, features

        images = data.load_images() if images is None else images
        if image_features is None and hasattr(model, "oasis_features"):
            image_features = model.oasis_features(images)
        if image_features is None:
            fs = features.image_features(**_store_kwargs(model.meta, "image"))
            pos = {iid: i for i, iid in enumerate(fs.ids)}
            image_features = fs.eval[[pos[i] for i in images.image_id]]
    if len(catalog) != len(song_features) or len(images) != len(image_features):
        raise ValueError("features and their tables differ in length")
    if catalog.song_id.duplicated().any():
        raise DataError(f"catalog has duplicate song_id(s): {catalog.song_id[catalog.song_id.duplicated()].tolist()[:3]}")

    bar = tqdm(total=3, desc="index", disable=not progress, leave=False)
    music_vecs, music_va = model.music_side(song_features)
    image_vecs, image_va = model.image_side(image_features)
    bar.update(1)
    if not model.factorised:
        if music_vecs is None or image_vecs is None:
            raise ModelMismatchError("a joint model must provide music_vector and image_vector")
        image_va, music_va = _joint_means(model, image_vecs, music_vecs)
    bar.update(1)
    music_dim = music_vecs.shape[1] if music_vecs is not None else 0
    image_dim = image_vecs.shape[1] if image_vecs is not None else 0
    now = _now()

    def _opt(frame, col, i):
        return float(frame[col].iloc[i]) if col in frame and pd.notna(frame[col].iloc[i]) else None

    song_rows = [(str(catalog.song_id.iloc[i]), str(catalog.artist.iloc[i]), str(catalog.title.iloc[i]),
                  str(catalog.path.iloc[i]) if "path" in catalog else None,
                  _blob(music_vecs[i]) if music_vecs is not None else None,
                  float(music_va[i, 0]), float(music_va[i, 1]),
                  _opt(catalog, "valence", i), _opt(catalog, "arousal", i), now)
                 for i in range(len(catalog))]
    image_rows = [(str(images.image_id.iloc[i]),
                   str(images.category.iloc[i]) if "category" in images else None,
                   str(images.path.iloc[i]) if "path" in images else None,
                   _blob(image_vecs[i]) if image_vecs is not None else None,
                   float(image_va[i, 0]), float(image_va[i, 1]),
                   _opt(images, "valence", i), _opt(images, "arousal", i))
                  for i in range(len(images))]
    meta = _meta_rows(model, music_dim, image_dim)

    with writer_lock(path):
        old_meta, old_rows = _existing_index(path)
        if old_meta is not None:
            if keep_added:
                kept = _carry_added(path, model, old_meta, old_rows, set(catalog.song_id.astype(str)),
                                    image_vecs, music_dim)
                song_rows += kept
                meta["added_kept"] = str(len(kept))  # said by `imuse index build`
            try:
                conn = _connect_write(path)
            except sqlite3.DatabaseError as exc:
                raise DataError(f"{path}: cannot rewrite the song index ({exc})") from None
            with contextlib.closing(conn):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for table in ("meta", "songs", "images"):
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                    _insert_all(conn, meta, song_rows, image_rows)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        else:
            for suffix in SIDECARS:  # journals of an index deleted by hand: never replay them onto this one
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            with imuse_io.atomic_path(path) as tmp:
                with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
                    conn.execute("BEGIN")
                    _insert_all(conn, meta, song_rows, image_rows)
                    conn.execute("COMMIT")
                    conn.execute("PRAGMA journal_mode=WAL")
                for suffix in SIDECARS:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{tmp}{suffix}")
        _publish_arrays(path, meta["generation"])
        bar.update(1)
    bar.close()
    return path


# --------------------------------------------------------------------------- editing


def check_text(values: Sequence[str], name: str) -> list[str]:
    """Titles, artists and ids as stored: stripped; empty, overlong or control characters refused."""
    out = []
    for v in values:
        v = str(v)
        problem = text_problem(v)
        if problem:
            raise ImuseError(f"--{name} {v!r} {problem}; expected 1 to 200 printable characters")
        out.append(v.strip())
    return out


def per_file_text(audio: Sequence[Path], song_ids=None, titles=None, artists=None):
    """(ids, titles, artists) for the audio files: given one per file, or defaults (the file
    name without extension for id and title, "unknown artist"); checked as stored."""
    n = len(audio)
    if not n:
        raise ImuseError("no audio file given to add")

    def _per_file(values, name, default):
        values = list(values) if values else []
        if not values:
            return check_text([default(a) for a in audio], name)
        if len(values) == 1 and n == 1 or len(values) == n:
            return check_text(values, name)
        raise ImuseError(f"{len(values)} --{name} value(s) for {n} audio file(s); give one per file")

    ids = _per_file(song_ids, "id", lambda a: a.stem)
    titles = _per_file(titles, "title", lambda a: a.stem)
    artists = _per_file(artists, "artist", lambda a: "unknown artist")
    if len(set(ids)) != n:
        raise ImuseError(f"duplicate song id(s) among the files: {sorted({i for i in ids if ids.count(i) > 1})}")
    return ids, titles, artists


def add_songs(index_path: str | os.PathLike, model: "Model", audio: Sequence, titles: Sequence[str] | None = None,
              artists: Sequence[str] | None = None, song_ids: Sequence[str] | None = None,
              true_va: Sequence[tuple[float, float]] | None = None) -> list[str]:
    """Embed ``audio`` files and add them to the index in one transaction. Returns their ids.

    ``song_id`` defaults to the file name without extension (the catalog's convention).
    Nothing is written unless every file decodes and no id is already taken. The writer
    lock is held from the final checks to the commit: a concurrent rebuild either ran
    before (this adds to the new index) or waits and keeps these songs.
    """
    index_path = Path(index_path)
    meta = read_meta(index_path)
    _check_fingerprint(index_path, meta, model)
    audio = [Path(a) for a in audio]
    ids, titles, artists = per_file_text(audio, song_ids, titles, artists)
    _refuse_taken(index_path, ids)
    feats = model.embed_audio(audio)  # every file decodes, or MediaError before any write
    return add_embedded(index_path, model, audio, feats, ids, titles, artists, true_va)


def add_embedded(index_path: Path, model: "Model", audio: Sequence[Path], feats: np.ndarray, ids: list[str],
                 titles: list[str], artists: list[str],
                 true_va: Sequence[tuple[float, float]] | None = None, publish: bool = True) -> list[str]:
    """Add songs whose backbone features ``feats`` [n, D] are computed (by :func:`add_songs`,
    or by the Ray engine's workers): the model's music arm, then one transaction.
    ``publish=False`` leaves the memory-mapped arrays to a later :func:`publish_arrays` (a job
    of many transactions writes them once, not once per transaction)."""
    n = len(ids)
    music_vecs, music_va = model.music_side(feats)
    if not model.factorised:
        idx = open_index(index_path)
        if idx.image_vectors is None or not len(idx.image_vectors):
            raise DataError(f"{index_path}: holds no image vectors to place new songs in VA space; rebuild it")
        music_va = _joint_means(model, idx.image_vectors, music_vecs)[1]
    now = _now()
    with writer_lock(index_path):
        with _writable(index_path) as conn:
            # what we checked may have changed while we embedded: check again under the lock
            _check_fingerprint(index_path, dict(conn.execute("SELECT key, value FROM meta").fetchall()), model)
            _refuse_taken(index_path, ids, conn)
            conn.executemany(
                f"INSERT INTO songs VALUES ({', '.join('?' * len(SONG_COLUMNS))})",
                [(ids[i], artists[i], titles[i], str(Path(audio[i]).resolve()),
                  _blob(music_vecs[i]) if music_vecs is not None else None,
                  float(music_va[i, 0]), float(music_va[i, 1]),
                  *(map(float, true_va[i]) if true_va else (None, None)), now) for i in range(n)])
            old_generation, generation = _bump_generation(conn, now)
        if publish:
            _publish_arrays(index_path, generation, old_generation, added=(ids, music_va, music_vecs))
    return ids


def publish_arrays(index_path: str | os.PathLike) -> None:
    """Write the memory-mapped arrays of the index's current state (after writes made with
    ``publish=False``); nothing to do below :data:`ARRAYS_MIN` songs."""
    index_path = Path(index_path)
    with writer_lock(index_path):
        _publish_arrays(index_path, read_meta(index_path).get("generation", ""))


def stored_sources(index_path: Path, ids: list[str]) -> dict[str, str]:
    """{song id: its stored source path} for those of ``ids`` already in the index."""
    found = {}
    with contextlib.closing(_connect_read(index_path)) as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(conn.execute(
                f"SELECT song_id, COALESCE(source, '') FROM songs WHERE song_id IN ({','.join('?' * len(chunk))})",
                chunk).fetchall())
    return found


def _bump_generation(conn: sqlite3.Connection, now: str) -> tuple[str | None, str]:
    """Inside a write's transaction: mark it modified and give it a new generation.
    Returns (previous generation or None, new generation)."""
    old = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    new = _new_generation()
    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("modified", now), ("generation", new)])
    return (old[0] if old else None), new


def _refuse_taken(index_path: Path, ids: list[str], conn: sqlite3.Connection | None = None) -> None:
    def taken_in(c):
        found = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found |= {r[0] for r in c.execute(
                f"SELECT song_id FROM songs WHERE song_id IN ({','.join('?' * len(chunk))})", chunk)}
        return found

    if conn is None:
        with contextlib.closing(_connect_read(index_path)) as c:
            taken = taken_in(c)
    else:
        taken = taken_in(conn)
    if taken:
        raise ImuseError(f"{index_path}: song id(s) already in the index: {', '.join(sorted(taken)[:5])}; "
                         f"remove them first (`imuse index remove`) or pass --id")


def remove_songs(index_path: str | os.PathLike, song_ids: Iterable[str]) -> list[str]:
    """Remove songs by id in one transaction; unknown ids are an error and nothing is removed."""
    index_path = Path(index_path)
    ids = list(dict.fromkeys(str(s) for s in song_ids))
    if not ids:
        raise ImuseError("no song id given to remove")
    _check_index_file(index_path)
    with writer_lock(index_path):
        with _writable(index_path) as conn:
            present = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                present |= {r[0] for r in conn.execute(
                    f"SELECT song_id FROM songs WHERE song_id IN ({','.join('?' * len(chunk))})", chunk)}
            unknown = [s for s in ids if s not in present]
            if unknown:
                shown = ", ".join(repr(s) if text_problem(s) else s for s in unknown[:5])
                raise ImuseError(f"{index_path}: no song with id {shown}"
                                 f"{' ...' if len(unknown) > 5 else ''} in the index; nothing removed")
            conn.executemany("DELETE FROM songs WHERE song_id = ?", [(s,) for s in ids])
            old_generation, generation = _bump_generation(conn, _now())
        _publish_arrays(index_path, generation, old_generation, removed=ids)
    return ids
