"""Reading a song index: :func:`open_index` loads it into a :class:`SongIndex` for queries.

From its memory-mapped arrays when it has those of its current generation, else everything
from SQLite (and then the missing arrays are written for the next reader, when it may).
A model is checked against the index by duck typing (its ``fingerprint``, ``path`` and
``label()``): storage imports no model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config
from ..errors import DataError, ModelMismatchError
from ..ranking import va_columns
from . import arrays as mmap_arrays
from .files import PREDICTED, SCHEMA_VERSION, SONG_META_COLUMNS, check_index_file, connect_read, meta_of, not_an_index, read_meta, unblob


def default_index_path(model) -> Path:
    """Where the index of ``model`` (anything with a ``fingerprint``) lives by default: named by
    the schema version too, so that a program reading a newer schema builds its own beside an
    older index instead of failing on it (:func:`legacy_default_path`)."""
    return config.cache_dir() / "index" / f"{model.fingerprint[:16]}.v{SCHEMA_VERSION}.sqlite"


def legacy_default_path(model) -> Path:
    """The default index of ``model`` as schema version 1 named it: `imuse index build` to the
    default path keeps the songs added to it."""
    return config.cache_dir() / "index" / f"{model.fingerprint[:16]}.sqlite"


class SongIndex:
    """An index loaded into memory: arrays sorted by id, ready for queries.

    ``songs`` (the metadata table) is read from SQLite on first use when the index was
    loaded from its memory-mapped arrays; :meth:`song_rows` reads only the rows asked for.
    """

    def __init__(self, path: Path, meta: dict, songs: pd.DataFrame | None, song_va: np.ndarray,
                 song_vectors: np.ndarray | None, images: pd.DataFrame | None = None,
                 image_va: np.ndarray | None = None, image_vectors: np.ndarray | None = None,
                 song_ids: np.ndarray | None = None, song_rated: np.ndarray | None = None):
        self.path, self.meta = Path(path), meta
        self._songs = songs
        self.song_va = song_va  # [N, 2] float32: what the recommender ranks with (rated where known, else predicted)
        self.song_rated = np.zeros(len(song_va), np.bool_) if song_rated is None else song_rated  # [N] bool
        self.song_vectors = song_vectors  # [N, D] float32 or None
        self.images = pd.DataFrame() if images is None else images
        self.image_va = np.zeros((0, 2), np.float32) if image_va is None else image_va
        self.image_vectors = image_vectors
        self._song_ids = song_ids  # UTF-8 bytes [N], only where songs is read lazily
        if songs is None and song_ids is None:
            raise ValueError("SongIndex needs its songs table or its song ids")

    @property
    def songs(self) -> pd.DataFrame:
        """song_id, artist, title, source, valence, arousal (predicted), true_valence, true_arousal
        (rated, NaN where none), added, va_source."""
        if self._songs is None:
            self._songs = read_song_table(self.path, self.generation, self._song_ids)
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
        return read_song_table(self.path, self.generation, None, ids)

    @property
    def fingerprint(self) -> str:
        return self.meta.get("fingerprint", "")

    @functools.cached_property
    def song_va_columns(self) -> tuple[np.ndarray, np.ndarray]:
        return va_columns(self.song_va)

    @functools.cached_property
    def image_va_columns(self) -> tuple[np.ndarray, np.ndarray]:
        return va_columns(self.image_va)

    def __len__(self) -> int:
        return len(self.song_va)

    def check_model(self, model) -> None:
        check_fingerprint(self.path, self.meta, model)


def check_fingerprint(path: Path, meta: dict, model) -> None:
    fingerprint = meta.get("fingerprint", "")
    if fingerprint != model.fingerprint:
        built = meta.get("model_label", "another model")
        raise ModelMismatchError(
            f"{path}: this song index was built by a different model (fingerprint "
            f"{fingerprint[:12]}..., {built}) than {model.path or 'the model given'} "
            f"(fingerprint {model.fingerprint[:12]}..., {model.label()}); rebuild it with "
            f"`imuse index build` (songs added to it are kept) or pass the matching --model")


def open_index(path: str | os.PathLike) -> SongIndex:
    """Load an index file into memory (read only): from its memory-mapped arrays when it has
    those of its current generation (see the module notes), else everything from SQLite."""
    path = Path(path)
    check_index_file(path)
    arrays = None
    try:
        with contextlib.closing(connect_read(path)) as conn:
            conn.execute("BEGIN")  # one snapshot for every table
            meta = meta_of(conn, path)
            dim = int(meta.get("music_dim", 0))
            arrays = mmap_arrays.load_arrays(path, meta)
            if arrays is not None:
                songs, song_ids, song_vectors = None, arrays["song_ids"], arrays.get("song_vectors")
                va, rated = arrays["song_va"], arrays["song_rated"]
            else:
                rows = conn.execute(
                    f"SELECT {', '.join(SONG_META_COLUMNS)}, vector FROM songs ORDER BY song_id").fetchall()
                songs = pd.DataFrame([r[:-1] for r in rows], columns=SONG_META_COLUMNS)
                song_vectors = unblob([r[-1] for r in rows], dim) if dim else None
                song_ids = None
                va, rated = ranking_va(songs)
            idim = int(meta.get("image_dim_vec", 0))
            irows = conn.execute(
                "SELECT image_id, category, source, valence, arousal, true_valence, true_arousal, vector "
                "FROM images ORDER BY image_id").fetchall()
            images = pd.DataFrame([r[:-1] for r in irows], columns=[
                "image_id", "category", "source", "valence", "arousal", "true_valence", "true_arousal"])
            image_vectors = unblob([r[-1] for r in irows], idim) if idim else None
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise not_an_index(path, exc) from None
    except ValueError as exc:  # a vector blob of the wrong length
        raise DataError(f"{path}: damaged song index ({exc}); run `imuse index list` for its integrity check "
                        f"and rebuild it with `imuse index build`") from None
    if (arrays is None and meta.get("generation") and len(va) >= mmap_arrays.ARRAYS_MIN
            and read_meta(path).get("generation") == meta["generation"]):  # never arrays of a replaced state
        # a writer killed between its commit and its arrays: write them for the next reader
        ids = np.array([s.encode("utf-8") for s in songs.song_id], dtype=np.bytes_)
        mmap_arrays.write_arrays(path, meta["generation"], ids, va, rated, song_vectors, quiet=True)
    iva = images[["valence", "arousal"]].to_numpy(np.float32).reshape(-1, 2)
    refuse_non_finite(path, va, song_vectors if arrays is None else None, iva, image_vectors)
    return SongIndex(path=path, meta=meta, songs=songs, song_va=va, song_vectors=song_vectors,
                     images=images, image_va=iva, image_vectors=image_vectors, song_ids=song_ids, song_rated=rated)


def ranking_va(songs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(VA each song is ranked with [N, 2] float32, rated [N] bool) of a songs table: the rated VA
    (``true_valence, true_arousal``) where ``va_source`` says the song has one, else the predicted."""
    rated = (songs.va_source != PREDICTED).to_numpy(np.bool_)
    predicted = songs[["valence", "arousal"]].to_numpy(np.float32).reshape(-1, 2)
    known = songs[["true_valence", "true_arousal"]].to_numpy(np.float32).reshape(-1, 2)
    return np.where(rated[:, None], known, predicted), rated


def refuse_non_finite(path: Path, *stored) -> None:
    """A stored VA or vector that is NaN or infinite would rank as nonsense: refused, naming the index.
    (Memory-mapped vectors are checked by the integrity check only: reading them all would
    undo what mapping them saves; their VA are checked here.)"""
    for values in stored:
        if values is not None and len(values) and not np.isfinite(values).all():
            raise DataError(f"{path}: the song index stores values that are not finite numbers (NaN or infinity); "
                            f"run `imuse index list` for its integrity check and rebuild it with `imuse index build`")


def read_song_table(path: Path, generation: str, expect_ids: np.ndarray | None,
                     ids: list[str] | None = None) -> pd.DataFrame:
    """The songs' metadata (all of it, or the rows of ``ids`` in that order) from the SQLite
    snapshot of ``generation``; DataError when the index was written since it was loaded."""
    try:
        with contextlib.closing(connect_read(path)) as conn:
            conn.execute("BEGIN")
            meta = meta_of(conn, path)
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
        raise not_an_index(path, exc) from None
    table = pd.DataFrame(rows, columns=SONG_META_COLUMNS)
    if expect_ids is not None and (len(table) != len(expect_ids) or any(
            a.encode("utf-8") != bytes(b) for a, b in zip(table.song_id, expect_ids))):
        raise DataError(f"{path}: the arrays in {mmap_arrays.arrays_dir(path)} do not match the index; delete that folder "
                        f"(it is rebuilt from the index)")
    return table
