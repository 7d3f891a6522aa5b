"""The song index's integrity check (``imuse index list`` runs it)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import numpy as np

from .arrays import arrays_dir, load_arrays, song_arrays
from .files import check_index_file, connect_read, meta_of


def check_integrity(path: str | os.PathLike) -> list[str]:
    """Problems found in the index file (empty list: sound): SQLite's ``integrity_check``,
    then every stored vector's length against the dimension in ``meta`` and finite VA."""
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
                bad = conn.execute(f"SELECT {key} FROM {table} WHERE NOT (valence BETWEEN -1e9 AND 1e9) "
                                   f"OR NOT (arousal BETWEEN -1e9 AND 1e9) LIMIT 5").fetchall()
                problems += [f"{table} {r[0]}: valence/arousal not a finite number" for r in bad]
            arrays = load_arrays(path, meta)
            if arrays is not None and not problems:  # the memory-mapped copy must equal the index
                ids, va, vecs = song_arrays(conn, int(meta.get("music_dim", 0)))
                if not (np.array_equal(ids, arrays["song_ids"]) and np.array_equal(va, arrays["song_va"])
                        and (vecs is None or np.array_equal(vecs, arrays["song_vectors"]))):
                    problems.append(f"{arrays_dir(path) / meta['generation']}: memory-mapped arrays differ from "
                                    f"the index; delete that folder (the next load rebuilds it)")
    except sqlite3.DatabaseError as exc:
        problems.append(f"not readable as a song index ({exc})")
    return problems
