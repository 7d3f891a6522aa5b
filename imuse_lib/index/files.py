"""The song index file: its SQLite schema, connections, meta and the writer lock.

Readers connect with :func:`connect_read`: never so that a journal is replayed into the
file (a reader changes nothing, see there), and only after :func:`check_journals` found the
``-wal``/``-shm``/``-journal`` beside it to belong to it. Writers hold :func:`writer_lock`
(``flock`` on the index's real folder) and write inside :func:`writable`'s one transaction,
in WAL mode. Every write sets a new random ``generation`` in ``meta`` (:func:`bump_generation`),
which names the memory-mapped arrays of that state (:mod:`imuse_lib.index.arrays`), and stamps
the SQLite header (:func:`stamp_write`): ``application_id`` = the file's lineage (random, set
when the file is made), ``user_version`` = its count of writes. Every commit thus carries
page 1, which is what lets :func:`check_journals` tell a journal of this file from another's.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import random
import re
import sqlite3
import stat
import struct
import time
import uuid
from pathlib import Path

import numpy as np

from ..errors import DataError

SCHEMA_VERSION = 2  # 2: songs carry va_source (rated VA where a song has it); 1 is read only to be rebuilt
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
    added TEXT NOT NULL,
    va_source TEXT NOT NULL,
    CHECK ((va_source = 'predicted') = (true_valence IS NULL)),
    CHECK ((true_valence IS NULL) = (true_arousal IS NULL))
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
# A song's ``valence, arousal`` are always the model's prediction from its audio; ``true_valence,
# true_arousal`` its rated VA, stored exactly when ``va_source`` names where they come from (not
# "predicted"). The recommender ranks with the rated VA where there is one.
SONG_COLUMNS = ["song_id", "artist", "title", "source", "vector", "valence", "arousal",
                "true_valence", "true_arousal", "added", "va_source"]


SONG_META_COLUMNS = ["song_id", "artist", "title", "source", "valence", "arousal",
                     "true_valence", "true_arousal", "added", "va_source"]

PREDICTED = "predicted"
# Where a song's VA comes from: the stored code, and what the recommender's output says.
VA_SOURCES = {
    "allmusic-tags": "rated (AllMusic mood tags, Warriner lexicon)",
    "spotify": "rated (Spotify valence/energy)",
    "pmemo": "rated (PMEmo ratings)",
    "user": "rated (given with --valence/--arousal)",
    "user-tags": "rated (tags given with --tags, Warriner lexicon)",
    PREDICTED: "predicted from audio",
}

# The songs table of schema version 1 (no va_source): read only so that `imuse index build` can
# rebuild such an index in place, keeping the songs added to it.
SONGS_V1 = """CREATE TABLE songs (
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
)"""


def va_source_label(code: str) -> str:
    """What the output says of a stored ``va_source`` (an unknown code is said as it is)."""
    return VA_SOURCES.get(str(code), f"rated ({code})")


def check_va_source(code: str) -> str:
    if code not in VA_SOURCES:
        raise ValueError(f"unknown VA source {code!r}; expected one of {', '.join(VA_SOURCES)}")
    return code


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


WAL_MAGICS = (0x377F0682, 0x377F0683)
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def _page_size(raw: int) -> int:
    return 65536 if raw == 1 else raw


def _header_fields(page1: bytes) -> tuple[int, int, int, int]:
    """(page size, journal version: 2 = WAL, user_version, application_id) of a page 1."""
    return (_page_size(struct.unpack(">H", page1[16:18])[0]), page1[18],
            struct.unpack(">i", page1[60:64])[0], struct.unpack(">i", page1[68:72])[0])


def _wal_commits(wal: Path, page_size: int) -> tuple[int, list[bytes], bool] | None:
    """(WAL page size, the page-1 images of its committed transactions in order, whether it
    holds any commit), reading frames as SQLite does: those whose salts equal the header's,
    up to the last commit frame (checksums are not recomputed: the first frame of another
    salt ends the log). None when the file is no WAL at all."""
    with open(wal, "rb") as fh:
        head = fh.read(32)
        if len(head) < 32:
            return None
        magic, version, wal_page, _seq, salt1, salt2 = struct.unpack(">6I", head[:24])
        if magic not in WAL_MAGICS or version != 3007000 or wal_page < 512 or wal_page & (wal_page - 1):
            return None
        pages1, pending, committed = [], [], False
        while True:
            frame = fh.read(24)
            if len(frame) < 24:
                break
            pgno, commit, s1, s2 = struct.unpack(">4I", frame[:16])
            if (s1, s2) != (salt1, salt2):
                break
            if pgno == 1:
                pending.append(fh.read(100))
                fh.seek(wal_page - 100, os.SEEK_CUR)
            else:
                fh.seek(wal_page, os.SEEK_CUR)
            if commit:
                pages1 += pending
                pending, committed = [], True
    return wal_page, pages1, committed


def check_journals(path: Path) -> bool:
    """:func:`journals_belong`, asked again twice before refusing: a writer that checkpoints
    and restarts its log between our reads of the file and of the log looks like a stale
    log for a moment; leftovers stay wrong."""
    for attempt in range(3):
        try:
            return journals_belong(path)
        except DataError:
            if attempt == 2:
                raise
            time.sleep(0.1)
    return False


def journals_belong(path: Path) -> bool:
    """Refuse a ``-wal``, ``-shm`` or ``-journal`` beside the index that is not its own
    (another database's leftovers, or a restored backup beside its stale journal): SQLite
    would replay it into the file. Returns whether a WAL with committed data is there.

    The check: a WAL's page size must equal the file's; every committed page 1 in it must
    carry the file's lineage (``application_id``, see :func:`stamp_write`), and its write
    counts (``user_version``) must continue the file's: the file's count is one of them (a
    checkpoint has copied part of the log) or the first is the file's count plus one. A
    WAL with commits but no page 1 is not ours when the file has a lineage (every write of
    ours stamps page 1). Indexes made before the stamps (lineage 0) get the page-size and
    lineage checks only. A ``-shm`` must name the same page size; a hot ``-journal`` is
    refused beside a WAL-mode file (ours never write one), and must match the page size
    beside an older rollback-journal file."""
    def refuse(suffix: str, why: str) -> DataError:
        return DataError(f"{path}{suffix}: {why}; it does not belong to the song index {path}, which is left as "
                         f"it is: move {path.name}{suffix} away if no imuse process is writing (then the index "
                         f"reads as it was last checkpointed)")

    sidecars = {s: Path(f"{path}{s}") for s in SIDECARS}
    present = {s: p for s, p in sidecars.items() if os.path.lexists(p)}
    if not present:
        return False
    for suffix, side in present.items():
        kind = file_kind(side)
        if kind:
            raise refuse(suffix, f"is {kind}, not a journal")
    try:
        with open(path, "rb") as fh:
            page1 = fh.read(100)
        if len(page1) < 100 or not page1.startswith(b"SQLite format 3\x00"):
            return False  # not a database: the caller says so, never replaying anything onto it
        page_size, journal_version, count, lineage = _header_fields(page1)
        has_wal = False
        if "-wal" in present and os.path.getsize(present["-wal"]):
            found = _wal_commits(present["-wal"], page_size)
            if found is None:
                raise refuse("-wal", "is not a SQLite write-ahead log")
            wal_page, pages1, has_wal = found
            if has_wal:
                if wal_page != page_size:
                    raise refuse("-wal", f"holds pages of {wal_page} bytes, the index has {page_size}")
                lineages = {_header_fields(p)[3] for p in pages1}
                if lineages - {lineage}:
                    raise refuse("-wal", f"was written to another database (lineage {min(lineages - {lineage})}, "
                                         f"the index's is {lineage})")
                counts = [_header_fields(p)[2] for p in pages1]
                if lineage and not counts:
                    raise refuse("-wal", "holds commits that no IMUSE writer made (no page 1)")
                if lineage and count not in counts and counts[0] != count + 1:
                    raise refuse("-wal", f"continues write {counts[0] - 1} of this index, but the file is at write "
                                         f"{count} (a restored or replaced file beside a stale journal)")
        if "-shm" in present and os.path.getsize(present["-shm"]) >= 136:
            with open(present["-shm"], "rb") as fh:
                shm = fh.read(48)
            if shm[12]:  # isInit; szPage at 14, in this machine's byte order (the shm is never copied)
                raw = struct.unpack("=H", shm[14:16])[0]
                if raw and _page_size(raw) != page_size:
                    raise refuse("-shm", f"indexes pages of {_page_size(raw)} bytes, the index has {page_size}")
        if "-journal" in present and os.path.getsize(present["-journal"]):
            with open(present["-journal"], "rb") as fh:
                head = fh.read(28)
            if head[:8] == JOURNAL_MAGIC:  # else not hot: SQLite ignores it
                if journal_version == 2:
                    raise refuse("-journal", "is a rollback journal beside a write-ahead-log index")
                if struct.unpack(">I", head[24:28])[0] != page_size:
                    raise refuse("-journal", "holds pages of another size than the index's")
        return has_wal
    except OSError as exc:
        raise cannot_read(path, exc.strerror or exc) from None


def _read_only_filesystem(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def connect_read(path: Path) -> sqlite3.Connection:
    """A connection for reading that never changes the file (its journals checked first,
    :func:`check_journals`):

    * a WAL with commits beside it (a writer at work, or killed): ``mode=ro``, which reads
      the log but never checkpoints it into the file;
    * an older rollback-journal index with a hot journal: read-write, so that SQLite rolls
      back the killed writer's half-done transaction (the file's own, checked);
    * a file nobody may write here (a read-only mount, or no write permission on it or its
      folder) and no WAL: ``immutable=1`` (``mode=ro`` would need to create the ``-shm``);
    * else read-write with ``query_only``: nothing to replay, and the empty ``-wal`` and
      ``-shm`` SQLite makes are removed when it closes (``mode=ro`` would leave them); when
      they cannot be made (a full disk), ``immutable=1`` as on a read-only mount.
    """
    has_wal = check_journals(path)
    uri = path.resolve().as_uri()
    hot_journal = os.path.exists(f"{path}-journal") and os.path.getsize(f"{path}-journal") > 0
    writable_here = (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
                     and not _read_only_filesystem(path))
    try:
        if has_wal:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=LOCK_TIMEOUT)
        elif not writable_here and not hot_journal:
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=LOCK_TIMEOUT)
        elif not writable_here:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=LOCK_TIMEOUT)
        else:
            conn = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT)
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens its -wal and -shm
            except sqlite3.DatabaseError as exc:
                conn.close()  # now: an open connection keeps its -wal and -shm
                if not any(words in str(exc).lower() for words in SYSTEM_ERRORS) or hot_journal:
                    raise
                # a full disk (no room for the -shm): with no log to read, the file alone is the index
                conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=LOCK_TIMEOUT)
    except sqlite3.DatabaseError as exc:
        if any(words in str(exc).lower() for words in SYSTEM_ERRORS):
            raise cannot_read(path, exc) from None
        raise
    conn.isolation_level = None
    conn.execute("PRAGMA query_only = ON")  # a reader never writes data (recovery aside)
    return conn


class UnreadableIndex(DataError):
    """The system (permissions, I/O, space, a read-only mount), not the file, keeps it from being read."""


def cannot_read(path: Path, exc: BaseException) -> DataError:
    """The one line for an index that the system (not its content) keeps from being read."""
    return UnreadableIndex(f"{path}: cannot read the song index ({exc}); the file itself may be sound: check the "
                     f"disk space, the permissions of {path.parent} and whether it is mounted read-only")


# SQLite's words for a file it could not read or lock, as against a file that is not an index
SYSTEM_ERRORS = ("disk i/o error", "unable to open", "database or disk is full", "locking protocol",
                 "database is locked", "attempt to write a readonly database", "readonly database")


def not_an_index(path: Path, exc: sqlite3.DatabaseError) -> DataError:
    if "readonly" in str(exc) and os.path.exists(f"{path}-journal"):  # a hot journal this user cannot roll back
        return DataError(f"{path}: an interrupted write left a journal beside the index, and rolling it back "
                         f"needs write permission on {path.parent}; open it once as a user who may write there")
    if any(words in str(exc).lower() for words in SYSTEM_ERRORS):
        return cannot_read(path, exc)
    return DataError(f"{path}: not an IMUSE song index ({exc}); `imuse index build --replace-broken --index "
                     f"{path}` replaces it with a new index (or remove it yourself)")


def _normal_sql(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip().rstrip(";").replace("( ", "(").replace(" )", ")")


SCHEMA_TABLES = {re.search(r"CREATE TABLE (\w+)", st).group(1): _normal_sql(st)
                 for st in SCHEMA.split(";") if st.strip()}
OLDER_TABLES = {"songs": {_normal_sql(SONGS_V1)}}  # accepted by check_schema, refused by meta_of's version check


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """The file holds the schema's three tables as written, and nothing else (no view, no
    trigger, no other table): every query is then bounded by real rows (a ``songs`` that is a
    cross-join view once drove ``index list`` to 5 GB)."""
    objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    objects.sort(key=lambda o: o[1] not in SCHEMA_TABLES)  # a schema name of the wrong kind is said first
    found = {}
    for kind, name, table, sql in objects:
        if kind == "index" and sql is None and table in SCHEMA_TABLES:  # the primary keys' own indexes
            continue
        if kind == "table" and name in SCHEMA_TABLES and (_normal_sql(sql) == SCHEMA_TABLES[name]
                                                          or _normal_sql(sql) in OLDER_TABLES.get(name, ())):
            found[name] = True
            continue
        raise DataError(f"{path}: not an IMUSE song index (its {kind} {name!r} is not in the song index schema); "
                        f"`imuse index build --replace-broken --index {path}` replaces it with a new index")
    missing = [t for t in SCHEMA_TABLES if t not in found]
    if missing:
        raise DataError(f"{path}: not an IMUSE song index (no table {missing[0]}); `imuse index build "
                        f"--replace-broken --index {path}` replaces it with a new index (or remove it yourself)")


def meta_of(conn: sqlite3.Connection, path: Path, versions: tuple[int, ...] = (SCHEMA_VERSION,)) -> dict:
    """The index's ``meta``, once its schema is checked; an index of another schema version than
    ``versions`` (default: this program's) is refused with one line saying how to rebuild it."""
    try:
        check_schema(conn, path)
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
        conn.execute("SELECT song_id FROM songs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise not_an_index(path, exc) from None
    meta = dict(rows)
    version = str(meta.get("schema_version", -1))
    if version not in {str(v) for v in versions}:
        why = " (its songs do not say where their VA comes from)" if version == "1" else ""
        raise DataError(f"{path}: song index schema version {meta.get('schema_version')!r}{why}, this program "
                        f"reads version {SCHEMA_VERSION}; rebuild it with `imuse index build --index {path}` "
                        f"(songs added with `imuse index add` are kept)")
    songs_sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'songs'").fetchone()[0]
    if (_normal_sql(songs_sql) == SCHEMA_TABLES["songs"]) != (version == str(SCHEMA_VERSION)):
        raise DataError(f"{path}: not an IMUSE song index (its songs table is not that of schema version {version}); "
                        f"`imuse index build --replace-broken --index {path}` replaces it with a new index")
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
    indexes in the same folder wait too; writes are short, so this costs little. The folder
    is the one the path resolves to (symbolic links followed): two paths to one file, one lock."""
    path = Path(path)
    folder = Path(os.path.realpath(path)).parent  # links to one file share one lock
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
    """A connection for writing, in WAL mode, once :func:`check_journals` found the journals
    beside the file to be its own; SQLite's refusal becomes one line (``failing``)."""
    check_journals(path)
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


def stamp_write(conn: sqlite3.Connection, new_file: bool = False) -> None:
    """Inside a write's transaction: count the write in the header (``user_version``) and,
    for a new file or one made before the stamps, give it a random lineage
    (``application_id``). Writes page 1 in every commit (see :func:`check_journals`)."""
    lineage = conn.execute("PRAGMA application_id").fetchone()[0]
    count = 0 if new_file else conn.execute("PRAGMA user_version").fetchone()[0]
    if new_file or not lineage:
        conn.execute(f"PRAGMA application_id = {random.SystemRandom().randint(1, 2**31 - 1)}")
    conn.execute(f"PRAGMA user_version = {(count + 1) % 2**31}")


def insert_all(conn: sqlite3.Connection, meta: dict, songs: list[tuple], images: list[tuple],
               new_file: bool = False) -> None:
    stamp_write(conn, new_file)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    insert_songs(conn, songs)
    conn.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", images)


def insert_songs(conn: sqlite3.Connection, songs: list[tuple]) -> None:
    """Song rows in the order of :data:`SONG_COLUMNS`."""
    conn.executemany(f"INSERT INTO songs ({', '.join(SONG_COLUMNS)}) VALUES ({', '.join('?' * len(SONG_COLUMNS))})",
                     songs)




def new_generation() -> str:
    """A fresh name for the index's state after a write (names its memory-mapped arrays)."""
    return uuid.uuid4().hex


def bump_generation(conn: sqlite3.Connection, now: str) -> tuple[str | None, str]:
    """Inside a write's transaction: mark it modified and give it a new generation.
    Returns (previous generation or None, new generation)."""
    old = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    stamp_write(conn)
    new = new_generation()
    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("modified", now), ("generation", new)])
    return (old[0] if old else None), new
