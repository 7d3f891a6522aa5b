"""Editing a song index without a model: checked text, ids already there, removing songs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ImuseError, text_problem
from . import arrays as mmap_arrays
from .files import bump_generation, check_index_file, connect_read, utc_now, writable, writer_lock


def check_text(values: Sequence[str], name: str) -> list[str]:
    """Titles, artists and ids as stored: stripped and in Unicode NFC (a name typed or read from a
    file name in NFD is the same id); empty, overlong or control characters refused."""
    out = []
    for v in values:
        v = str(v)
        problem = text_problem(v)
        if problem:
            raise ImuseError(f"--{name} {v!r} {problem}; expected 1 to 200 printable characters")
        out.append(unicodedata.normalize("NFC", v.strip()))
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


def stored_sources(index_path: Path, ids: list[str]) -> dict[str, str]:
    """{song id: its stored source path} for those of ``ids`` already in the index."""
    found = {}
    with contextlib.closing(connect_read(index_path)) as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(conn.execute(
                f"SELECT song_id, COALESCE(source, '') FROM songs WHERE song_id IN ({','.join('?' * len(chunk))})",
                chunk).fetchall())
    return found


def ids_present(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    """Those of ``ids`` that are song ids in the index (asked 500 at a time)."""
    found = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found |= {r[0] for r in conn.execute(
            f"SELECT song_id FROM songs WHERE song_id IN ({','.join('?' * len(chunk))})", chunk)}
    return found


def refuse_taken(index_path: Path, ids: list[str], conn: sqlite3.Connection | None = None) -> None:
    if conn is None:
        with contextlib.closing(connect_read(index_path)) as c:
            taken = ids_present(c, ids)
    else:
        taken = ids_present(conn, ids)
    if taken:
        raise ImuseError(f"{index_path}: song id(s) already in the index: {', '.join(sorted(taken)[:5])}; "
                         f"remove them first (`imuse index remove`) or pass --id")


def remove_songs(index_path: str | os.PathLike, song_ids: Iterable[str]) -> list[str]:
    """Remove songs by id in one transaction; unknown ids are an error and nothing is removed."""
    index_path = Path(index_path)
    ids = list(dict.fromkeys(unicodedata.normalize("NFC", str(s)) for s in song_ids))
    if not ids:
        raise ImuseError("no song id given to remove")
    check_index_file(index_path)
    with writer_lock(index_path):
        with writable(index_path) as conn:
            present = ids_present(conn, ids)
            unknown = [s for s in ids if s not in present]
            if unknown:
                shown = ", ".join(repr(s) if text_problem(s) else s for s in unknown[:5])
                raise ImuseError(f"{index_path}: no song with id {shown}"
                                 f"{' ...' if len(unknown) > 5 else ''} in the index; nothing removed")
            conn.executemany("DELETE FROM songs WHERE song_id = ?", [(s,) for s in ids])
            old_generation, generation = bump_generation(conn, utc_now())
        mmap_arrays.publish_generation(index_path, generation, old_generation, removed=ids)
    return ids
