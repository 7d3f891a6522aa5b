"""Building and adding to a song index: the operations that run a model.

:func:`build_index` embeds the catalog (or takes the feature store's features) through a
:class:`~imuse_lib.deployed.DeployedModel` and writes a new index atomically;
:func:`add_songs` embeds audio files and adds them in one transaction (:func:`add_embedded`
when the features are computed elsewhere, e.g. by the Ray engine's workers). With the joint
model the stored VA are means over every (image, song) combination (:func:`imuse_lib.joint.joint_means`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..deployed import DeployedModel, clean_provenance, load_deployed, store_kwargs
from ..errors import DataError, ImuseError, ModelMismatchError
from ..joint import joint_means
from . import arrays as mmap_arrays
from .editing import per_file_text, refuse_taken
from .files import (PREDICTED, SCHEMA_VERSION, SIDECARS, SONG_COLUMNS, SYSTEM_ERRORS, VA_SOURCES, UnreadableIndex,
                    blob, bump_generation, cannot_read, connect_read, connect_write, file_kind, insert_all,
                    insert_songs, meta_of, new_generation, read_meta, transaction, utc_now, writable, writer_lock)
from .reading import check_fingerprint, default_index_path, legacy_default_path, open_index


def meta_rows(model: DeployedModel, music_dim: int, image_dim: int) -> dict:
    m = model.meta
    return {
        "schema_version": str(SCHEMA_VERSION),
        "fingerprint": model.fingerprint,
        "created": utc_now(),
        "model_path": str(model.path) if model.path else "",
        "model_label": model.label(),
        "factorised": "1" if model.factorised else "0",
        "image_backbone": str(m.get("image_backbone")),
        "audio_backbone": str(m.get("audio_backbone")),
        "image_weights": json.dumps(clean_provenance(m.get("image_weights")), sort_keys=True, default=str),
        "audio_weights": json.dumps(clean_provenance(m.get("audio_weights")), sort_keys=True, default=str),
        "music_dim": str(music_dim),
        "image_dim_vec": str(image_dim),
        "generation": new_generation(),
    }


def existing_index(path: Path, replace_broken: bool = False) -> tuple[dict | None, list[tuple]]:
    """(meta, song rows) of the index at ``path`` that a rebuild replaces; (None, []) when
    there is none. A file there that is not a sound song index (not SQLite, another schema,
    damaged pages, or journals that are not its own) is refused, never replaced, unless
    ``replace_broken`` (``--replace-broken``) says to; then (None, []) too, and the new index
    is written beside it and renamed over it. A file the system cannot read (permissions,
    I/O, a full disk) is refused either way: it may be sound. An index of schema version 1 is
    read too (its rows given this version's columns: a rated VA it holds is the user's), so that
    a rebuild migrates it in place."""
    if not path.exists():
        return None, []
    try:
        with contextlib.closing(connect_read(path)) as conn:
            check = conn.execute("PRAGMA quick_check(5)").fetchall()  # a bit flip fails here, not in DROP TABLE
            if [r[0] for r in check] != ["ok"]:
                raise DataError(f"{path}: a damaged song index (SQLite quick_check: {check[0][0]})")
            meta = meta_of(conn, path, versions=(1, SCHEMA_VERSION))
            columns = SONG_COLUMNS if str(meta["schema_version"]) == str(SCHEMA_VERSION) else V1_AS_CURRENT
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM songs ORDER BY song_id").fetchall()
    except UnreadableIndex:
        raise
    except (DataError, sqlite3.DatabaseError) as exc:
        if any(words in str(exc).lower() for words in SYSTEM_ERRORS):
            raise cannot_read(path, exc) from None
        if replace_broken:
            return None, []
        why = str(exc).removeprefix(f"{path}: ").split("; ")[0]
        raise DataError(f"{path}: exists and is not a sound IMUSE song index ({why}); refusing to replace it: "
                        f"pass --replace-broken to replace it with a new index, or give another --index") from None
    if "fingerprint" not in meta:
        if replace_broken:
            return None, []
        raise DataError(f"{path}: exists and is not an IMUSE song index (no fingerprint); refusing to replace "
                        f"it: pass --replace-broken to replace it with a new index, or give another --index")
    return meta, rows


_V1_RATED = "true_valence IS NOT NULL AND true_arousal IS NOT NULL"
V1_AS_CURRENT = SONG_COLUMNS[:7] + [f"CASE WHEN {_V1_RATED} THEN true_valence END",
                                    f"CASE WHEN {_V1_RATED} THEN true_arousal END", "added",
                                    f"CASE WHEN {_V1_RATED} THEN 'user' ELSE '{PREDICTED}' END"]


def _carry_added(path: Path, model: DeployedModel, old_meta: dict, old_rows: list[tuple], catalog_ids: set,
                 image_vecs: np.ndarray | None, music_dim: int) -> list[tuple]:
    """Song rows added to the old index (ids outside the catalog), valid for ``model``:
    copied when the model is the one that embedded them, else re-embedded from their audio."""
    added = [r for r in old_rows if r[0] not in catalog_ids]
    if not added:
        return []
    same = (old_meta.get("fingerprint") == model.fingerprint  # schema 1 stored the same vectors and VA
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
        va = joint_means(model.net, image_vecs, vecs)[1]
    return [(r[0], r[1], r[2], r[3], blob(vecs[i]) if vecs is not None else None,
             float(va[i, 0]), float(va[i, 1]), r[7], r[8], r[9], r[10]) for i, r in enumerate(added)]


def catalog_features(model: DeployedModel, catalog: pd.DataFrame | None = None, song_features=None,
                     images: pd.DataFrame | None = None, image_features=None) -> tuple:
    """(catalog, song features, images, image features) an index of ``model`` is built from:
    what is given, else the 500-clip catalog and the OASIS images with the features the model
    was trained on (a VA model's own sources, or the feature store's eval features)."""
    if catalog is None or song_features is None:
        from .. import data, features

        catalog = data.load_catalog() if catalog is None else catalog
        if song_features is None and hasattr(model, "catalog_features"):  # a VA model: its own sources
            song_features = model.catalog_features(catalog)
        if song_features is None:
            fs = features.audio_features(**store_kwargs(model.meta, "audio"))
            pos = {sid: i for i, sid in enumerate(fs.ids)}
            missing = [s for s in catalog.song_id if s not in pos]
            if missing:
                raise DataError(f"audio feature store lacks {len(missing)} catalog song(s), e.g. {missing[0]}")
            song_features = fs.eval[[pos[s] for s in catalog.song_id]]
    if images is None or image_features is None:
        from .. import data, features

        images = data.load_images() if images is None else images
        if image_features is None and hasattr(model, "oasis_features"):
            image_features = model.oasis_features(images)
        if image_features is None:
            fs = features.image_features(**store_kwargs(model.meta, "image"))
            pos = {iid: i for i, iid in enumerate(fs.ids)}
            image_features = fs.eval[[pos[i] for i in images.image_id]]
    return catalog, song_features, images, image_features


def build_index(model: "DeployedModel | str | os.PathLike | None" = None, path: str | os.PathLike | None = None,
                catalog: pd.DataFrame | None = None, song_features: np.ndarray | None = None,
                images: pd.DataFrame | None = None, image_features: np.ndarray | None = None,
                progress: bool = True, keep_added: bool = True, replace_broken: bool = False) -> Path:
    """Build the index of ``catalog`` (default: the 500-clip catalog) for ``model``.

    Song and image backbone features default to the feature store's eval features (the
    same the model was trained on). A song's rated VA is the catalog's ``valence, arousal``
    where its ``va_source`` column names their source (:data:`.files.VA_SOURCES`; the 4Q
    catalog's is ``allmusic-tags``); without that column, or where it says ``predicted`` or the
    values are missing, the song's VA is predicted only. Songs added to an existing index at ``path`` are kept
    (``keep_added``; see the module notes). Atomic: a kill leaves the old index or the new.
    A file at ``path`` that is not a sound index is replaced only with ``replace_broken``.
    A first build at the default path keeps the songs added to the model's index of the older
    schema's default name (:func:`.reading.legacy_default_path`), which is left as it is.
    """
    from tqdm import tqdm

    if not isinstance(model, DeployedModel):
        model = load_deployed(model)
    legacy = legacy_default_path(model) if path is None else None
    path = Path(path) if path is not None else default_index_path(model)
    kind = file_kind(path)
    if kind:
        raise DataError(f"{path}: is {kind}; give a file path for the song index")
    if path.exists():
        existing_index(path, replace_broken)  # refuse a file that is not an index before the long work
    catalog, song_features, images, image_features = catalog_features(model, catalog, song_features, images,
                                                                       image_features)
    if len(catalog) != len(song_features) or len(images) != len(image_features):
        raise ValueError("features and their tables differ in length")
    if catalog.song_id.duplicated().any():
        raise DataError(f"catalog has duplicate song_id(s): {catalog.song_id[catalog.song_id.duplicated()].tolist()[:3]}")

    bar = tqdm(total=3, desc="index", disable=not progress, leave=False)
    try:  # closed before any error is printed: the message gets a line of its own
        _write_index(path, model, catalog, song_features, image_features, images, keep_added, replace_broken, bar,
                     legacy)
    finally:
        bar.close()
    return path


def _write_index(path: Path, model: DeployedModel, catalog: pd.DataFrame, song_features: np.ndarray,
                 image_features: np.ndarray, images: pd.DataFrame, keep_added: bool, replace_broken: bool, bar,
                 legacy: Path | None = None) -> None:
    """:func:`build_index` past its inputs: the model's arms, then the index written under the lock."""
    from .. import io as imuse_io

    music_vecs, music_va = model.music_side(song_features)
    image_vecs, image_va = model.image_side(image_features)
    bar.update(1)
    if not model.factorised:
        if music_vecs is None or image_vecs is None:
            raise ModelMismatchError("a joint model must provide music_vector and image_vector")
        image_va, music_va = joint_means(model.net, image_vecs, music_vecs)
    bar.update(1)
    music_dim = music_vecs.shape[1] if music_vecs is not None else 0
    image_dim = image_vecs.shape[1] if image_vecs is not None else 0
    now = utc_now()

    def _opt(frame, col, i):
        return float(frame[col].iloc[i]) if col in frame and pd.notna(frame[col].iloc[i]) else None

    rated_va, sources = catalog_rated_va(catalog)
    song_rows = [(str(catalog.song_id.iloc[i]), str(catalog.artist.iloc[i]), str(catalog.title.iloc[i]),
                  str(catalog.path.iloc[i]) if "path" in catalog else None,
                  blob(music_vecs[i]) if music_vecs is not None else None,
                  float(music_va[i, 0]), float(music_va[i, 1]),
                  *((None, None) if rated_va[i] is None else rated_va[i]), now, sources[i])
                 for i in range(len(catalog))]
    image_rows = [(str(images.image_id.iloc[i]),
                   str(images.category.iloc[i]) if "category" in images else None,
                   str(images.path.iloc[i]) if "path" in images else None,
                   blob(image_vecs[i]) if image_vecs is not None else None,
                   float(image_va[i, 0]), float(image_va[i, 1]),
                   _opt(images, "valence", i), _opt(images, "arousal", i))
                  for i in range(len(images))]
    meta = meta_rows(model, music_dim, image_dim)

    with writer_lock(path):
        old_meta, old_rows = existing_index(path, replace_broken)
        carried = (old_meta, old_rows, path)
        if old_meta is None and legacy is not None and legacy.is_file() and not file_kind(legacy):
            with contextlib.suppress(DataError):  # an unreadable older index: nothing to keep from it
                carried = (*existing_index(legacy), legacy)
        if carried[0] is not None and keep_added:
            kept = _carry_added(carried[2], model, carried[0], carried[1], set(catalog.song_id.astype(str)),
                                image_vecs, music_dim)
            song_rows += kept
            meta["added_kept"] = str(len(kept))  # said by `imuse index build`
        if old_meta is not None:
            conn = connect_write(path, "cannot rewrite the song index")
            try:
                with contextlib.closing(conn), transaction(conn):
                    for table in ("meta", "songs", "images"):
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                    insert_all(conn, meta, song_rows, image_rows)
            except sqlite3.DatabaseError as exc:
                raise DataError(f"{path}: cannot rewrite the song index ({exc}); nothing changed") from None
        else:
            for suffix in SIDECARS:  # journals of an index deleted by hand: never replay them onto this one
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            with imuse_io.atomic_path(path) as tmp:
                with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
                    conn.execute("BEGIN")
                    insert_all(conn, meta, song_rows, image_rows, new_file=True)
                    conn.execute("COMMIT")
                    conn.execute("PRAGMA journal_mode=WAL")
                for suffix in SIDECARS:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{tmp}{suffix}")
        mmap_arrays.publish_generation(path, meta["generation"])
        bar.update(1)


def catalog_rated_va(catalog: pd.DataFrame) -> tuple[list, list[str]]:
    """Per catalog row: (rated (valence, arousal) or None, its VA source); see :func:`build_index`."""
    n = len(catalog)
    if "va_source" not in catalog:
        return [None] * n, [PREDICTED] * n
    out, sources = [], []
    for i in range(n):
        source = str(catalog.va_source.iloc[i])
        if source not in VA_SOURCES:
            raise DataError(f"catalog song {catalog.song_id.iloc[i]}: unknown va_source {source!r} "
                            f"(expected one of {', '.join(VA_SOURCES)})")
        va = (catalog.valence.iloc[i], catalog.arousal.iloc[i]) if {"valence", "arousal"} <= set(catalog) else None
        if source == PREDICTED or va is None or not all(np.isfinite(np.asarray(va, float))):
            out.append(None)
            sources.append(PREDICTED)
        else:
            out.append((float(va[0]), float(va[1])))
            sources.append(source)
    return out, sources


def refuse_non_finite_audio(audio: Sequence[Path], *arrays) -> None:
    """Songs whose features, vector or VA hold NaN or infinity are refused before any write,
    naming the audio (SQLite would store NaN as NULL and blame the index)."""
    for values in arrays:
        if values is None:
            continue
        rows = np.asarray(values, dtype=np.float64).reshape(len(audio), -1)
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if len(bad):
            raise DataError(f"{audio[bad[0]]}: its embedding is not a finite number (NaN or infinity; the audio may be "
                            f"silent, damaged or far past full scale); nothing added")


def check_rated_va(rated_va, va_source, n: int) -> tuple[list[tuple[float, float] | None], list[str]]:
    """``rated_va`` as stored: per song, a finite (valence, arousal) on the index's [0, 1] scale or
    None (predicted), and its source: ``va_source`` is one known source other than ``predicted``
    for all rated songs, or one per song (``predicted`` exactly where the song has no rating).
    Without ``rated_va``, every song is predicted."""
    if rated_va is None:
        return [None] * n, [PREDICTED] * n
    rated_va = [None if va is None else (float(va[0]), float(va[1])) for va in rated_va]
    if len(rated_va) != n:
        raise ImuseError(f"{len(rated_va)} rated VA value(s) for {n} song(s); give one per song")
    if isinstance(va_source, (list, tuple)):
        if len(va_source) != n:
            raise ImuseError(f"{len(va_source)} VA source(s) for {n} song(s); give one per song")
        sources = list(va_source)
    else:
        sources = [va_source if va is not None else PREDICTED for va in rated_va]
    for va, source in zip(rated_va, sources):
        if va is None:
            if source != PREDICTED:
                raise ImuseError(f"VA source {source!r} given for a song without a rated VA")
            continue
        if source not in VA_SOURCES or source == PREDICTED:
            raise ImuseError(f"a rated VA needs its source, one of "
                             f"{', '.join(s for s in VA_SOURCES if s != PREDICTED)}; not {source!r}")
        v, a = va
        if not (0.0 <= v <= 1.0 and 0.0 <= a <= 1.0):  # NaN fails too
            raise ImuseError(f"rated valence {v:g}, arousal {a:g}: the song index's VA are on [0, 1] "
                             f"(0 = most negative / calm, 1 = most positive / aroused)")
    return rated_va, sources


def add_songs(index_path: str | os.PathLike, model: DeployedModel, audio: Sequence, titles: Sequence[str] | None = None,
              artists: Sequence[str] | None = None, song_ids: Sequence[str] | None = None,
              rated_va: Sequence[tuple[float, float] | None] | None = None,
              va_source: str | Sequence[str] | None = None) -> list[str]:
    """Embed ``audio`` files and add them to the index in one transaction. Returns their ids.

    ``song_id`` defaults to the file name without extension (the catalog's convention).
    Nothing is written unless every file decodes and no id is already taken. The writer
    lock is held from the final checks to the commit: a concurrent rebuild either ran
    before (this adds to the new index) or waits and keeps these songs. ``rated_va`` (one
    (valence, arousal) on [0, 1] per file, or None for a file without one) with its
    ``va_source`` (e.g. ``user``, or one per file: :func:`check_rated_va`) is stored beside the
    prediction, and the recommender ranks these songs with it.
    """
    check_rated_va(rated_va, va_source, len(audio))
    index_path = Path(index_path)
    meta = read_meta(index_path)
    check_fingerprint(index_path, meta, model)
    audio = [Path(a) for a in audio]
    ids, titles, artists = per_file_text(audio, song_ids, titles, artists)
    refuse_taken(index_path, ids)
    feats = model.embed_audio(audio)  # every file decodes, or MediaError before any write
    return add_embedded(index_path, model, audio, feats, ids, titles, artists, rated_va, va_source)


def add_embedded(index_path: Path, model: DeployedModel, audio: Sequence[Path], feats: np.ndarray, ids: list[str],
                 titles: list[str], artists: list[str],
                 rated_va: Sequence[tuple[float, float] | None] | None = None,
                 va_source: str | Sequence[str] | None = None, publish: bool = True) -> list[str]:
    """Add songs whose backbone features ``feats`` [n, D] are computed (by :func:`add_songs`,
    or by the Ray engine's workers): the model's music arm, then one transaction.
    ``publish=False`` leaves the memory-mapped arrays to a later :func:`publish_arrays` (a job
    of many transactions writes them once, not once per transaction)."""
    n = len(ids)
    rated_va, sources = check_rated_va(rated_va, va_source, n)
    refuse_non_finite_audio(audio, feats)
    music_vecs, music_va = model.music_side(feats)
    refuse_non_finite_audio(audio, music_va, music_vecs)
    if not model.factorised:
        idx = open_index(index_path)
        if idx.image_vectors is None or not len(idx.image_vectors):
            raise DataError(f"{index_path}: holds no image vectors to place new songs in VA space; rebuild it")
        music_va = joint_means(model.net, idx.image_vectors, music_vecs)[1]
    refuse_non_finite_audio(audio, music_va)
    now = utc_now()
    with writer_lock(index_path):
        with writable(index_path) as conn:
            # what we checked may have changed while we embedded: check again under the lock
            check_fingerprint(index_path, dict(conn.execute("SELECT key, value FROM meta").fetchall()), model)
            refuse_taken(index_path, ids, conn)
            insert_songs(conn, [(ids[i], artists[i], titles[i], str(Path(audio[i]).resolve()),
                                 blob(music_vecs[i]) if music_vecs is not None else None,
                                 float(music_va[i, 0]), float(music_va[i, 1]),
                                 *(rated_va[i] or (None, None)), now, sources[i]) for i in range(n)])
            old_generation, generation = bump_generation(conn, now)
        if publish:
            rated = np.array([va is not None for va in rated_va], bool)
            ranked = np.array([va or music_va[i] for i, va in enumerate(rated_va)], np.float32).reshape(n, 2)
            mmap_arrays.publish_generation(index_path, generation, old_generation,
                                           added=(ids, ranked, rated, music_vecs))
    return ids
