"""The song index file: its SQLite schema, connections, meta and the writer lock.

Readers connect with :func:`connect_read` (read-write only so that SQLite may roll back a
killed writer's hot journal); writers hold :func:`writer_lock` (``flock`` on the index's
folder) and write inside :func:`writable`'s one transaction, in WAL mode. Every write sets
a new random ``generation`` in ``meta`` (:func:`bump_generation`), which names the
memory-mapped arrays of that state (:mod:`imuse_lib.index.arrays`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import sqlite3
import stat
import time
import uuid
from pathlib import Path

import numpy as np

from ..errors import DataError

SCHEMA_VERSION = 1
LOCK_TIMEOUT = 120.0  # seconds a writer waits for another writer before giving up
SIDECARS = ("-wal", "-shm", "-journal")

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


SONG_META_COLUMNS = ["song_id", "artist", "title", "source", "valence", "arousal",
                     "true_valence", "true_arousal", "added"]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def blob(vec) -> bytes | None:
    return None if vec is None else np.asarray(vec, dtype=np.float32).tobytes()


def unblob(blobs: list, dim: int) -> np.ndarray | None:
    if not blobs or any(b is None for b in blobs):
        return None
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


def file_kind(path: Path) -> str | None:
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


def check_index_file(path: Path) -> None:
    kind = file_kind(path)
    if kind:
        raise DataError(f"{path}: is {kind}, not a song index file")
    if not path.exists():
        raise DataError(f"{path}: no song index there; build one with `imuse index build` "
                        f"(or pass --index PATH)")


def connect_read(path: Path) -> sqlite3.Connection:
    """A connection for reading. Read-write when the file and its folder allow it, so
    that SQLite can roll back a hot journal left by a killed writer of an older index
    (a read-only connection fails on it with "attempt to write a readonly database")."""
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        conn = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT)
    else:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_TIMEOUT)
    conn.execute("PRAGMA query_only = ON")  # a reader never writes data (recovery aside)
    return conn


def not_an_index(path: Path, exc: sqlite3.DatabaseError) -> DataError:
    if "readonly" in str(exc):  # a hot journal that this read-only user cannot roll back
        return DataError(f"{path}: an interrupted write left a journal beside the index, and rolling it back "
                         f"needs write permission on {path.parent}; open it once as a user who may write there")
    return DataError(f"{path}: not an IMUSE song index ({exc})")


def meta_of(conn: sqlite3.Connection, path: Path) -> dict:
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
        conn.execute("SELECT song_id FROM songs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise not_an_index(path, exc) from None
    meta = dict(rows)
    if str(meta.get("schema_version", -1)) != str(SCHEMA_VERSION):
        raise DataError(f"{path}: song index schema version {meta.get('schema_version')!r}, "
                        f"this program reads version {SCHEMA_VERSION}; rebuild it with `imuse index build`")
    return meta


def read_meta(path: str | os.PathLike) -> dict:
    path = Path(path)
    check_index_file(path)
    try:
        with contextlib.closing(connect_read(path)) as conn:
            return meta_of(conn, path)
    except sqlite3.DatabaseError as exc:
        raise not_an_index(path, exc) from None


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


def connect_write(path: Path, failing: str = "not an IMUSE song index") -> sqlite3.Connection:
    """A connection for writing, in WAL mode; SQLite's refusal becomes one line (``failing``)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise DataError(f"{path}: cannot switch the song index to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: {failing} ({exc})") from None
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection):
    """One write transaction on ``conn`` (taken at once: BEGIN IMMEDIATE), committed at the end
    of the block, rolled back on any error or interruption."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def writable(path: Path):
    """A connection on an existing index, inside one transaction (rolled back on error).
    The caller holds :func:`writer_lock`."""
    check_index_file(path)
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise DataError(f"{path}: song index is not writable")
    conn = connect_write(path)
    try:
        meta_of(conn, path)
        with transaction(conn):
            yield conn
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: cannot update the song index ({exc})") from None
    finally:
        conn.close()


def insert_all(conn: sqlite3.Connection, meta: dict, songs: list[tuple], images: list[tuple]) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    conn.executemany(f"INSERT INTO songs VALUES ({', '.join('?' * len(SONG_COLUMNS))})", songs)
    conn.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", images)




def new_generation() -> str:
    """A fresh name for the index's state after a write (names its memory-mapped arrays)."""
    return uuid.uuid4().hex


def bump_generation(conn: sqlite3.Connection, now: str) -> tuple[str | None, str]:
    """Inside a write's transaction: mark it modified and give it a new generation.
    Returns (previous generation or None, new generation)."""
    old = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    new = new_generation()
    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("modified", now), ("generation", new)])
    return (old[0] if old else None), new
