"""The song index's integrity check (``imuse index list`` runs it)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import numpy as np

from .arrays import arrays_dir, load_arrays, song_arrays
from .files import SYSTEM_ERRORS, cannot_read, check_index_file, connect_read, meta_of


def _non_finite_vectors(conn: sqlite3.Connection, table: str, key: str, dim: int) -> list[str]:
    """The first rows whose stored vector holds NaN or infinity (read 10,000 rows at a time)."""
    bad, cursor = [], conn.execute(f"SELECT {key}, vector FROM {table}")
    while len(bad) < 5:
        rows = cursor.fetchmany(10_000)
        if not rows:
            break
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        bad += [f"{table} {rows[i][0]}: vector holds a value that is not a finite number"
                for i in np.flatnonzero(~np.isfinite(vecs).all(axis=1))[:5]]
    return bad[:5]


def check_integrity(path: str | os.PathLike) -> list[str]:
    """Problems found in the index file (empty list: sound): SQLite's ``integrity_check``,
    then every stored vector's length against the dimension in ``meta`` and finite VA (predicted and rated)."""
    path = Path(path)
    check_index_file(path)
    problems = []
    try:
        with contextlib.closing(connect_read(path)) as conn:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                return [f"integrity_check: {r}" for r in result[:5]]
            meta = meta_of(conn, path)
            for table, key, dim_key in (("songs", "song_id", "music_dim"), ("images", "image_id", "image_dim_vec")):
                nbytes = 4 * int(meta.get(dim_key, 0))
                if nbytes:
                    bad = conn.execute(f"SELECT {key} FROM {table} WHERE vector IS NULL OR length(vector) != ? "
                                       f"LIMIT 5", (nbytes,)).fetchall()
                    problems += [f"{table} {r[0]}: vector is not {nbytes // 4} float32 values" for r in bad]
                    if not bad:
                        problems += _non_finite_vectors(conn, table, key, nbytes // 4)
                bad = conn.execute(f"SELECT {key} FROM {table} WHERE NOT (valence BETWEEN -1e9 AND 1e9) "
                                   f"OR NOT (arousal BETWEEN -1e9 AND 1e9) OR NOT (COALESCE(true_valence, 0) "
                                   f"BETWEEN -1e9 AND 1e9) OR NOT (COALESCE(true_arousal, 0) BETWEEN -1e9 AND 1e9) "
                                   f"LIMIT 5").fetchall()
                problems += [f"{table} {r[0]}: valence/arousal not a finite number" for r in bad]
            arrays = load_arrays(path, meta)
            if arrays is not None and not problems:  # the memory-mapped copy must equal the index
                ids, va, rated, vecs = song_arrays(conn, int(meta.get("music_dim", 0)))
                if not (np.array_equal(ids, arrays["song_ids"]) and np.array_equal(va, arrays["song_va"])
                        and np.array_equal(rated, arrays["song_rated"])
                        and (vecs is None or np.array_equal(vecs, arrays["song_vectors"]))):
                    problems.append(f"{arrays_dir(path) / meta['generation']}: memory-mapped arrays differ from "
                                    f"the index; delete that folder (the next load rebuilds it)")
    except sqlite3.DatabaseError as exc:
        if any(words in str(exc).lower() for words in SYSTEM_ERRORS):  # the system's failing, not the file's
            raise cannot_read(path, exc) from None
        problems.append(f"not readable as a song index ({exc})")
    return problems
