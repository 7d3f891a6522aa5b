"""The deployed recommender of the paper's section 4.2: a song index and queries on it.

*The song index* is one SQLite file (no server). Per song it holds the metadata, the
stored music vector (``net.music_vector``, float32 [128]) and the song's predicted
valence/arousal; per OASIS image the image vector and predicted VA (for the reverse
direction); and, in ``meta``, the fingerprint of the model it came from: sha256 over the
checkpoint's tensors and the backbones' names and weights provenance. A model whose
fingerprint differs is refused (:class:`~imuse_lib.errors.ModelMismatchError`).
A full build writes a temporary file and renames it (never half an index); adding or
removing songs is one SQLite transaction.

*Queries.* An image goes through ``media.load_image`` -> the image backbone ->
the image arm, then is matched against the stored songs:

* factorised model (each arm predicts VA alone): nearest neighbours in VA space, ranked
  by Eq. 1 (``pairs.similarity``) between the image's and each song's predicted VA;
* the paper's joint model: the stored music vectors are scored through the fusion
  layers (``net.fuse``) in fixed-size batches with the image vector repeated; the
  predicted similarity is Eq. 1 between the two VA heads of each pair.

The reverse direction ranks the 900 OASIS images for an audio clip the same way.
Ties are broken by id (rows are kept sorted by id), and batches have a fixed size, so
repeated queries give identical results.

With the joint model a song's VA depends on the image it is paired with. The *stored*
song VA is then the mean over the 900 OASIS images of its predicted music VA (and the
stored image VA the mean over the catalog songs at build time); query results report the
pair's own VA.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import config, pairs
from .errors import DataError, ImuseError, MediaError, ModelMismatchError

SCHEMA_VERSION = 1
JOINT_BATCH = 65536  # rows per fusion batch: fixed, so that results do not depend on N
PARTITION_MIN = 4096  # below this many rows a full sort is as fast as argpartition


# --------------------------------------------------------------------------- ranking


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first; equal scores keep position order.

    Rows are stored sorted by id, so position order is the id tie-break. For large arrays
    ``argpartition`` finds the candidates; every row tied with the k-th score is kept
    before the final stable sort, so the answer equals a full stable sort's.
    """
    scores = np.asarray(scores)
    n = len(scores)
    k = max(0, min(int(k), n))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if n >= PARTITION_MIN and k < n // 4:
        neg = -scores
        kth = np.partition(neg, k - 1)[k - 1]
        cand = np.flatnonzero(neg <= kth)  # ascending positions, ties at the boundary included
        return cand[np.argsort(neg[cand], kind="stable")[:k]]
    return np.argsort(-scores, kind="stable")[:k]


def va_columns(va: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float64 valence and arousal columns of ``va`` [N, 2] (prepared once per index)."""
    va = np.asarray(va)
    return np.ascontiguousarray(va[:, 0], dtype=np.float64), np.ascontiguousarray(va[:, 1], dtype=np.float64)


def va_similarity(query_va: Sequence[float], va) -> np.ndarray:
    """Eq. 1 between one point and every row of ``va``: an [N, 2] array or its :func:`va_columns`."""
    v, a = va if isinstance(va, tuple) else va_columns(va)
    return pairs.similarity(float(query_va[0]), float(query_va[1]), v, a)


def rank_va(query_va: Sequence[float], va, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbours of ``query_va`` in VA space: (positions, Eq. 1 similarity), best first.
    ``va``: stored VA [N, 2] or its :func:`va_columns`."""
    sim = va_similarity(query_va, va)
    idx = top_k(sim, k)
    return idx, sim[idx]


def _torch():
    import torch

    return torch


def _fuse_pairs(net, image_vecs: np.ndarray, music_vecs: np.ndarray,
                batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 1 through ``net.fuse`` for N pairs, in batches; a side given as one row is paired
    with every row of the other side. Returns (similarity [N], image_va [N, 2], music_va [N, 2])."""
    torch = _torch()
    iv = np.ascontiguousarray(np.atleast_2d(image_vecs), dtype=np.float32)
    mv = np.ascontiguousarray(np.atleast_2d(music_vecs), dtype=np.float32)
    n = max(len(iv), len(mv))
    ivas, mvas = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch):
            k = min(batch, n - start)
            img = torch.from_numpy(iv if len(iv) == 1 else iv[start:start + k]).expand(k, -1)
            mus = torch.from_numpy(mv if len(mv) == 1 else mv[start:start + k]).expand(k, -1)
            iva, mva = net.fuse(img, mus)
            ivas[start:start + k] = iva.numpy()
            mvas[start:start + k] = mva.numpy()
    sim = pairs.similarity(ivas[:, 0].astype(np.float64), ivas[:, 1].astype(np.float64),
                           mvas[:, 0].astype(np.float64), mvas[:, 1].astype(np.float64))
    return sim, ivas, mvas


def score_joint(net, image_vec: np.ndarray, music_vecs: np.ndarray,
                batch: int = JOINT_BATCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score one image vector [D] against N music vectors [N, 128] through ``net.fuse``.

    Returns (similarity [N], image_va [N, 2], music_va [N, 2]); similarity is Eq. 1 on the
    pair's two predicted VA points.
    """
    return _fuse_pairs(net, np.reshape(image_vec, (1, -1)), music_vecs, batch)


def score_joint_reverse(net, image_vecs: np.ndarray, music_vec: np.ndarray,
                        batch: int = JOINT_BATCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`score_joint` with the roles swapped: N image vectors, one music vector."""
    return _fuse_pairs(net, image_vecs, np.reshape(music_vec, (1, -1)), batch)


class JointScorer:
    """The joint path made cheap, exactly: the fusion's first layer is linear over
    ``concat(image_vec, music_vec)``, so its music half ``W_m @ music_vec`` is computed once
    per stored song; a query then adds ``W_i @ image_vec + b``, applies the remaining
    element-wise fusion layers and the two heads - the network's own modules. Equal to
    :func:`score_joint` up to float rounding (tests check it). Built only when the network
    has that structure (:meth:`supports`); otherwise :func:`score_joint` is used.
    """

    def __init__(self, net, music_vecs: np.ndarray, batch: int = 16384):
        torch = _torch()
        lin = net.fusion[0]
        self.net, self.batch = net, batch
        self.music_dim = int(music_vecs.shape[1])
        self.image_dim = int(lin.in_features) - self.music_dim
        self.relu = any(isinstance(m, torch.nn.ReLU) for m in list(net.fusion)[1:])  # Dropout: identity in eval
        w = lin.weight.detach()
        self.w_image, self.bias = w[:, :self.image_dim], lin.bias.detach()
        w_music = w[:, self.image_dim:].T.contiguous()
        vecs = torch.from_numpy(np.ascontiguousarray(music_vecs, dtype=np.float32))
        self.pre = torch.empty((len(vecs), w.shape[0]))
        with torch.inference_mode():
            for i in range(0, len(vecs), batch):
                torch.matmul(vecs[i:i + batch], w_music, out=self.pre[i:i + batch])
        self._work = torch.empty((min(batch, max(len(vecs), 1)), w.shape[0]))  # reused: no page faults per query

    @staticmethod
    def supports(net) -> bool:
        torch = _torch()
        nn = torch.nn
        fusion = getattr(net, "fusion", None)
        return (not getattr(net, "factorised", False) and isinstance(fusion, nn.Sequential) and len(fusion) > 0
                and isinstance(fusion[0], nn.Linear) and fusion[0].bias is not None
                and all(type(m) in (nn.ReLU, nn.Dropout, nn.Identity) for m in list(fusion)[1:])
                and hasattr(net, "image_head") and hasattr(net, "music_head") and not net.training)

    def score(self, image_vec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(similarity [N], image_va [N, 2], music_va [N, 2]) like :func:`score_joint`."""
        torch = _torch()
        n = len(self.pre)
        img = torch.as_tensor(np.asarray(image_vec, dtype=np.float32).reshape(-1))
        ivas, mvas = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
        with torch.inference_mode():
            q = self.w_image @ img + self.bias
            for start in range(0, n, self.batch):
                chunk = self.pre[start:start + self.batch]
                h = torch.add(chunk, q, out=self._work[:len(chunk)])
                if self.relu:
                    h.relu_()
                ivas[start:start + len(chunk)] = self.net.image_head(h).numpy()
                mvas[start:start + len(chunk)] = self.net.music_head(h).numpy()
        sim = pairs.similarity(ivas[:, 0].astype(np.float64), ivas[:, 1].astype(np.float64),
                               mvas[:, 0].astype(np.float64), mvas[:, 1].astype(np.float64))
        return sim, ivas, mvas


# --------------------------------------------------------------------------- the model


def _clean_provenance(weights: Any) -> dict:
    """Weights provenance without machine-specific fields (where the file happens to be)."""
    if not isinstance(weights, dict):
        return {"kind": str(weights)}
    return {k: v for k, v in sorted(weights.items()) if k not in ("file", "path")}


def _weights_identity(weights: Any) -> dict:
    """What identifies backbone weights: their kind and sha256 (or random-init seed)."""
    w = _clean_provenance(weights)
    return {k: w[k] for k in ("kind", "sha256", "init_seed") if k in w}


def model_fingerprint(net, meta: dict) -> str:
    """sha256 over the network's tensors and the backbones (names, weights) it was trained on."""
    h = hashlib.sha256()
    identity = {
        "image_backbone": meta.get("image_backbone"),
        "audio_backbone": meta.get("audio_backbone"),
        "image_weights": _weights_identity(meta.get("image_weights")),
        "audio_weights": _weights_identity(meta.get("audio_weights")),
        "factorised": bool(meta.get("factorised", False)),
    }
    h.update(json.dumps(identity, sort_keys=True, default=str).encode())
    for name, tensor in sorted(net.state_dict().items()):
        arr = tensor.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _weights_label(weights: Any) -> str:
    w = _clean_provenance(weights)
    kind = w.get("kind", "?")
    if kind == "pretrained":
        src = w.get("source") or ""
        return f"pretrained ({src})" if src else "pretrained"
    return str(kind)


@dataclass
class Model:
    """A trained IMUSE network with what is needed to feed it: its two backbones.

    Backbones are built lazily (an index can be listed or edited without them) and are
    checked against the weights the network was trained on.
    """

    net: Any
    meta: dict
    path: Path | None = None
    fingerprint: str = ""
    image_backbone: Any = None
    audio_backbone: Any = None

    def __post_init__(self):
        self.net.eval()
        if not self.fingerprint:
            self.fingerprint = model_fingerprint(self.net, self.meta)

    @property
    def factorised(self) -> bool:
        return bool(self.meta.get("factorised", False))

    def label(self) -> str:
        m = self.meta
        kind = "factorised" if self.factorised else "joint"
        return (f"{kind} IMUSE model; image backbone {m.get('image_backbone')} "
                f"[{_weights_label(m.get('image_weights'))}], audio backbone {m.get('audio_backbone')} "
                f"[{_weights_label(m.get('audio_weights'))}]")

    # -- backbones ---------------------------------------------------------------------

    def _build(self, which: str):
        from . import models

        name = self.meta.get(f"{which}_backbone")
        trained = _clean_provenance(self.meta.get(f"{which}_weights"))
        builder = models.build_image_backbone if which == "image" else models.build_audio_backbone
        kind = trained.get("kind", "pretrained")
        kwargs = {"seed": int(trained["init_seed"])} if kind == "random" and "init_seed" in trained else {}
        bb = builder(name, weights=kind, **kwargs)
        have = _clean_provenance(getattr(bb, "weights", {}))
        key = "sha256" if kind == "pretrained" else "init_seed"
        if trained.get(key) is not None and have.get(key) != trained.get(key):
            where = f" ({self.path})" if self.path else ""
            raise ModelMismatchError(
                f"model{where} was trained on {which} backbone {name} with {kind} weights {key} "
                f"{str(trained.get(key))[:12]}, but the weights built here have {key} "
                f"{str(have.get(key))[:12]}; retrain or install the same weights")
        return bb

    def image_bb(self):
        if self.image_backbone is None:
            self.image_backbone = self._build("image")
        return self.image_backbone

    def audio_bb(self):
        if self.audio_backbone is None:
            self.audio_backbone = self._build("audio")
        return self.audio_backbone

    # -- features -> arms --------------------------------------------------------------

    def embed_image(self, image) -> np.ndarray:
        """Backbone features [1, D] of an image path or PIL image (decoded by media.load_image)."""
        from . import features

        return np.asarray(features.embed_images(self.image_bb(), [image]), dtype=np.float32)

    def embed_audio(self, paths: Sequence) -> np.ndarray:
        """Backbone features [n, D] of audio files (eval crops, no store)."""
        from . import features, media

        paths = [media.check_file(p, "audio") for p in paths]
        # the same evaluation crops as the feature store the model was trained on
        eval_crops = _store_kwargs(self.meta, "audio").get("eval_crops")
        kw = {"eval_crops": eval_crops} if eval_crops else {}
        return np.asarray(features.embed_audio(self.audio_bb(), paths, **kw), dtype=np.float32)

    def _arm(self, method: str, feats: np.ndarray, batch: int = 4096) -> np.ndarray | None:
        torch = _torch()
        fn = getattr(self.net, method, None)
        if fn is None:
            return None
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(feats), batch):
                out.append(fn(torch.from_numpy(feats[start:start + batch])).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def image_side(self, feats: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(image vectors, image VA or None) for backbone features [n, Di]."""
        vec = self._arm("image_vector", feats)
        va = self._arm("image_va", feats) if self.factorised else None
        return vec, va

    def music_side(self, feats: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        vec = self._arm("music_vector", feats)
        va = self._arm("music_va", feats) if self.factorised else None
        return vec, va


def load_model(path: str | os.PathLike | None = None) -> Model:
    """Load a trained checkpoint (default: the one ``imuse train`` writes)."""
    from . import training

    path = Path(path) if path is not None else training.default_model_path()
    if not path.exists():
        raise DataError(f"{path}: no trained model there; run `imuse train --profile quick` "
                        f"or pass --model PATH")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a model checkpoint")
    from . import training

    try:
        net, meta = training.load_checkpoint(path)
    except ImuseError:
        raise
    except Exception as exc:  # torch's unpickling errors vary; the user needs one line
        raise DataError(f"{path}: not a readable IMUSE checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    return Model(net=net, meta=dict(meta), path=path)


# --------------------------------------------------------------------------- the index


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


def default_index_path(model: Model) -> Path:
    return config.cache_dir() / "index" / f"{model.fingerprint[:16]}.sqlite"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _blob(vec) -> bytes | None:
    return None if vec is None else np.asarray(vec, dtype=np.float32).tobytes()


def _unblob(blobs: list, dim: int) -> np.ndarray | None:
    if not blobs or any(b is None for b in blobs):
        return None
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


@dataclass
class SongIndex:
    """An index loaded into memory: arrays sorted by id, ready for queries."""

    path: Path
    meta: dict
    songs: pd.DataFrame  # song_id, artist, title, source, valence, arousal, true_valence, true_arousal, added
    song_va: np.ndarray  # [N, 2] float32
    song_vectors: np.ndarray | None  # [N, 128] float32
    images: pd.DataFrame = field(default_factory=pd.DataFrame)
    image_va: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    image_vectors: np.ndarray | None = None

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
        return len(self.songs)

    def check_model(self, model: Model) -> None:
        if self.fingerprint != model.fingerprint:
            built = self.meta.get("model_label", "another model")
            raise ModelMismatchError(
                f"{self.path}: this song index was built by a different model (fingerprint "
                f"{self.fingerprint[:12]}..., {built}) than {model.path or 'the model given'} "
                f"(fingerprint {model.fingerprint[:12]}..., {model.label()}); rebuild it with "
                f"`imuse index build` or pass the matching --model")


def _connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _check_index_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no song index there; build one with `imuse index build` "
                        f"(or pass --index PATH)")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a song index file")


def _read_meta(conn: sqlite3.Connection, path: Path) -> dict:
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
        conn.execute("SELECT song_id FROM songs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not an IMUSE song index ({exc})") from None
    meta = dict(rows)
    if int(meta.get("schema_version", -1)) != SCHEMA_VERSION:
        raise DataError(f"{path}: song index schema version {meta.get('schema_version')!r}, "
                        f"this program reads version {SCHEMA_VERSION}; rebuild it with `imuse index build`")
    return meta


def read_meta(path: str | os.PathLike) -> dict:
    path = Path(path)
    _check_index_file(path)
    with contextlib.closing(_connect_ro(path)) as conn:
        return _read_meta(conn, path)


def open_index(path: str | os.PathLike) -> SongIndex:
    """Load an index file into memory (read only)."""
    path = Path(path)
    _check_index_file(path)
    try:
        with contextlib.closing(_connect_ro(path)) as conn:
            meta = _read_meta(conn, path)
            dim = int(meta.get("music_dim", 0))
            rows = conn.execute(
                "SELECT song_id, artist, title, source, valence, arousal, true_valence, true_arousal, "
                "added, vector FROM songs ORDER BY song_id").fetchall()
            cols = ["song_id", "artist", "title", "source", "valence", "arousal",
                    "true_valence", "true_arousal", "added"]
            songs = pd.DataFrame([r[:-1] for r in rows], columns=cols)
            song_vectors = _unblob([r[-1] for r in rows], dim) if dim else None
            idim = int(meta.get("image_dim_vec", 0))
            irows = conn.execute(
                "SELECT image_id, category, source, valence, arousal, true_valence, true_arousal, vector "
                "FROM images ORDER BY image_id").fetchall()
            images = pd.DataFrame([r[:-1] for r in irows], columns=[
                "image_id", "category", "source", "valence", "arousal", "true_valence", "true_arousal"])
            image_vectors = _unblob([r[-1] for r in irows], idim) if idim else None
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not an IMUSE song index ({exc})") from None
    va = songs[["valence", "arousal"]].to_numpy(np.float32).reshape(-1, 2)
    iva = images[["valence", "arousal"]].to_numpy(np.float32).reshape(-1, 2)
    return SongIndex(path=path, meta=meta, songs=songs, song_va=va, song_vectors=song_vectors,
                     images=images, image_va=iva, image_vectors=image_vectors)


def _joint_means(model: Model, image_vecs: np.ndarray, music_vecs: np.ndarray,
                 batch: int = JOINT_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Joint model over every (image, song) combination: (mean image VA per image [Ni, 2],
    mean music VA per song [Ns, 2]). Runs the fusion layers in fixed-size chunks of images."""
    torch = _torch()
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


def _store_kwargs(meta: dict, which: str) -> dict:
    """Arguments that select the feature store the model was trained on (its meta records
    the store's own meta under ``image_features`` / ``audio_features``)."""
    store = meta.get(f"{which}_features") or {}
    weights = store.get("weights") or meta.get(f"{which}_weights")
    kw = {"backbone": store.get("backbone") or meta.get(f"{which}_backbone"),
          "weights": _clean_provenance(weights).get("kind", "pretrained")}
    for key in (("views", "seed") if which == "image" else ("crops", "seed")):
        if store.get(key) is not None:
            kw[key] = int(store[key])
    eval_crops = (store.get("spec") or {}).get("eval_crops")
    if which == "audio" and eval_crops is not None:
        kw["eval_crops"] = int(eval_crops)
    return kw


def _meta_rows(model: Model, music_dim: int, image_dim: int) -> dict:
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
    }


def build_index(model: Model | str | os.PathLike | None = None, path: str | os.PathLike | None = None,
                catalog: pd.DataFrame | None = None, song_features: np.ndarray | None = None,
                images: pd.DataFrame | None = None, image_features: np.ndarray | None = None,
                progress: bool = True) -> Path:
    """Build the index of ``catalog`` (default: the 500-clip catalog) for ``model``.

    Song and image backbone features default to the feature store's eval features (the
    same the model was trained on). The file is written to a temporary name and renamed.
    """
    from tqdm import tqdm

    from . import io as imuse_io

    if not isinstance(model, Model):
        model = load_model(model)
    if catalog is None or song_features is None:
        from . import data, features

        catalog = data.load_catalog() if catalog is None else catalog
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
    path = Path(path) if path is not None else default_index_path(model)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a file path for the song index")
    now = _now()

    def _opt(frame, col, i):
        return float(frame[col].iloc[i]) if col in frame and pd.notna(frame[col].iloc[i]) else None

    with imuse_io.atomic_path(path) as tmp:
        with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
            conn.execute("BEGIN")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", _meta_rows(model, music_dim, image_dim).items())
            conn.executemany(
                "INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(str(catalog.song_id.iloc[i]), str(catalog.artist.iloc[i]), str(catalog.title.iloc[i]),
                  str(catalog.path.iloc[i]) if "path" in catalog else None,
                  _blob(music_vecs[i]) if music_vecs is not None else None,
                  float(music_va[i, 0]), float(music_va[i, 1]),
                  _opt(catalog, "valence", i), _opt(catalog, "arousal", i), now)
                 for i in range(len(catalog))])
            conn.executemany(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(str(images.image_id.iloc[i]),
                  str(images.category.iloc[i]) if "category" in images else None,
                  str(images.path.iloc[i]) if "path" in images else None,
                  _blob(image_vecs[i]) if image_vecs is not None else None,
                  float(image_va[i, 0]), float(image_va[i, 1]),
                  _opt(images, "valence", i), _opt(images, "arousal", i))
                 for i in range(len(images))])
            conn.execute("COMMIT")
        bar.update(1)
    bar.close()
    return path


@contextlib.contextmanager
def _writable(path: Path):
    """A connection on an existing index, inside one transaction (rolled back on error)."""
    _check_index_file(path)
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise DataError(f"{path}: song index is not writable")
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
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


def add_songs(index_path: str | os.PathLike, model: Model, audio: Sequence, titles: Sequence[str] | None = None,
              artists: Sequence[str] | None = None, song_ids: Sequence[str] | None = None,
              true_va: Sequence[tuple[float, float]] | None = None) -> list[str]:
    """Embed ``audio`` files and add them to the index in one transaction. Returns their ids.

    ``song_id`` defaults to the file name without extension (the catalog's convention).
    Nothing is written unless every file decodes and no id is already taken.
    """
    index_path = Path(index_path)
    meta = read_meta(index_path)
    if meta.get("fingerprint") != model.fingerprint:
        SongIndex(index_path, meta, pd.DataFrame(), np.zeros((0, 2)), None).check_model(model)
    audio = [Path(a) for a in audio]
    if not audio:
        raise ImuseError("no audio file given to add")
    n = len(audio)

    def _per_file(values, name, default):
        values = list(values) if values else []
        if not values:
            return [default(a) for a in audio]
        if len(values) == 1 and n == 1 or len(values) == n:
            return [str(v) for v in values]
        raise ImuseError(f"{len(values)} --{name} value(s) for {n} audio file(s); give one per file")

    ids = _per_file(song_ids, "id", lambda a: a.stem)
    titles = _per_file(titles, "title", lambda a: a.stem)
    artists = _per_file(artists, "artist", lambda a: "unknown artist")
    if len(set(ids)) != n:
        raise ImuseError(f"duplicate song id(s) among the files: {sorted({i for i in ids if ids.count(i) > 1})}")
    with contextlib.closing(_connect_ro(index_path)) as conn:
        taken = {r[0] for r in conn.execute(
            f"SELECT song_id FROM songs WHERE song_id IN ({','.join('?' * n)})", ids)}
    if taken:
        raise ImuseError(f"{index_path}: song id(s) already in the index: {', '.join(sorted(taken))}; "
                         f"remove them first (`imuse index remove`) or pass --id")

    feats = model.embed_audio(audio)  # every file decodes, or MediaError before any write
    music_vecs, music_va = model.music_side(feats)
    if not model.factorised:
        idx = open_index(index_path)
        if idx.image_vectors is None or not len(idx.image_vectors):
            raise DataError(f"{index_path}: holds no image vectors to place new songs in VA space; rebuild it")
        music_va = _joint_means(model, idx.image_vectors, music_vecs)[1]
    now = _now()
    with _writable(index_path) as conn:
        conn.executemany(
            "INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(ids[i], artists[i], titles[i], str(audio[i].resolve()),
              _blob(music_vecs[i]) if music_vecs is not None else None,
              float(music_va[i, 0]), float(music_va[i, 1]),
              *(map(float, true_va[i]) if true_va else (None, None)), now) for i in range(n)])
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('modified', ?)", (now,))
    return ids


def remove_songs(index_path: str | os.PathLike, song_ids: Iterable[str]) -> list[str]:
    """Remove songs by id in one transaction; unknown ids are an error and nothing is removed."""
    index_path = Path(index_path)
    ids = list(dict.fromkeys(str(s) for s in song_ids))
    if not ids:
        raise ImuseError("no song id given to remove")
    with _writable(index_path) as conn:
        present = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            present |= {r[0] for r in conn.execute(
                f"SELECT song_id FROM songs WHERE song_id IN ({','.join('?' * len(chunk))})", chunk)}
        unknown = [s for s in ids if s not in present]
        if unknown:
            raise ImuseError(f"{index_path}: no song with id {', '.join(unknown[:5])}"
                             f"{' ...' if len(unknown) > 5 else ''} in the index; nothing removed")
        conn.executemany("DELETE FROM songs WHERE song_id = ?", [(s,) for s in ids])
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('modified', ?)", (_now(),))
    return ids


# --------------------------------------------------------------------------- queries


@dataclass
class Recommendation:
    """A ranked answer: ``items`` (one row per result, best first) and the query's VA."""

    query: str
    query_va: tuple[float, float]
    items: pd.DataFrame
    model_label: str
    direction: str  # "songs" or "images"

    def to_records(self) -> list[dict]:
        """JSON-ready list of dicts (the ``--json`` output)."""
        out = []
        for rec in self.items.to_dict(orient="records"):
            out.append({k: (None if isinstance(v, float) and np.isnan(v) else
                            (v.item() if isinstance(v, np.generic) else v)) for k, v in rec.items()})
        return out


class Recommender:
    """A loaded model and its index, kept in memory for fast repeated queries."""

    def __init__(self, model: Model, index: SongIndex):
        index.check_model(model)
        self.model = model
        self.index = index
        self._joint: JointScorer | None = None

    def joint_scorer(self) -> JointScorer | None:
        """The precomputed joint path for this index (None where the network does not allow it)."""
        if self._joint is None and JointScorer.supports(self.model.net) and self.index.song_vectors is not None:
            self._joint = JointScorer(self.model.net, self.index.song_vectors)
        return self._joint

    @classmethod
    def load(cls, model: str | os.PathLike | Model | None = None,
             index: str | os.PathLike | None = None) -> "Recommender":
        model = model if isinstance(model, Model) else load_model(model)
        path = Path(index) if index is not None else default_index_path(model)
        if index is None and not path.exists():
            raise DataError(f"{path}: no song index for this model yet ({model.label()}); "
                            f"build it with `imuse index build`")
        return cls(model, open_index(path))

    def _require_songs(self):
        if len(self.index) == 0:
            raise DataError(f"{self.index.path}: the song index is empty; add songs with "
                            f"`imuse index add` or rebuild it with `imuse index build`")

    def image_point(self, image) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(image vector [D] or None, image VA [2] or None) of one image."""
        feats = self.model.embed_image(image)
        vec, va = self.model.image_side(feats)
        return (None if vec is None else vec[0]), (None if va is None else va[0])

    def recommend(self, image, top: int = 10) -> Recommendation:
        """Rank the indexed songs for ``image`` (a path or a PIL image)."""
        self._require_songs()
        top = _check_top(top)
        vec, va = self.image_point(image)
        idx = self.index
        if self.model.factorised:
            pos, sim = rank_va(va, idx.song_va_columns, top)
            song_va, image_va = idx.song_va[pos], np.repeat(va[None, :], len(pos), axis=0)
            query_va = va
        else:
            if idx.song_vectors is None:
                raise DataError(f"{idx.path}: holds no music vectors; rebuild it with `imuse index build`")
            scorer = self.joint_scorer()
            allsim, iva, mva = scorer.score(vec) if scorer else score_joint(self.model.net, vec, idx.song_vectors)
            pos = top_k(allsim, top)
            sim, song_va, image_va = allsim[pos], mva[pos], iva[pos]
            query_va = iva.mean(axis=0)
        songs = idx.songs.iloc[pos]
        items = pd.DataFrame({
            "rank": np.arange(1, len(pos) + 1),
            "song_id": songs.song_id.to_numpy(), "artist": songs.artist.to_numpy(),
            "title": songs.title.to_numpy(), "similarity": np.asarray(sim, float),
            "valence": song_va[:, 0].astype(float), "arousal": song_va[:, 1].astype(float),
            "image_valence": image_va[:, 0].astype(float), "image_arousal": image_va[:, 1].astype(float),
            "true_valence": songs.true_valence.to_numpy(float), "true_arousal": songs.true_arousal.to_numpy(float),
        })
        return Recommendation(_name(image), (float(query_va[0]), float(query_va[1])), items,
                              self.model.label(), "songs")

    def recommend_images(self, audio, top: int = 10) -> Recommendation:
        """Rank the indexed OASIS images for an audio clip."""
        top = _check_top(top)
        idx = self.index
        if len(idx.images) == 0:
            raise DataError(f"{idx.path}: holds no images; rebuild it with `imuse index build`")
        feats = self.model.embed_audio([audio])
        vec, va = self.model.music_side(feats)
        if self.model.factorised:
            pos, sim = rank_va(va[0], idx.image_va_columns, top)
            image_va, song_va = idx.image_va[pos], np.repeat(va, len(pos), axis=0)
            query_va = va[0]
        else:
            if idx.image_vectors is None:
                raise DataError(f"{idx.path}: holds no image vectors; rebuild it with `imuse index build`")
            allsim, iva, mva = score_joint_reverse(self.model.net, idx.image_vectors, vec[0])
            pos = top_k(allsim, top)
            sim, image_va, song_va = allsim[pos], iva[pos], mva[pos]
            query_va = mva.mean(axis=0)
        imgs = idx.images.iloc[pos]
        items = pd.DataFrame({
            "rank": np.arange(1, len(pos) + 1),
            "image_id": imgs.image_id.to_numpy(), "category": imgs.category.to_numpy(),
            "similarity": np.asarray(sim, float),
            "valence": image_va[:, 0].astype(float), "arousal": image_va[:, 1].astype(float),
            "song_valence": song_va[:, 0].astype(float), "song_arousal": song_va[:, 1].astype(float),
            "true_valence": imgs.true_valence.to_numpy(float), "true_arousal": imgs.true_arousal.to_numpy(float),
            "path": imgs.source.to_numpy(),
        })
        return Recommendation(_name(audio), (float(query_va[0]), float(query_va[1])), items,
                              self.model.label(), "images")


def _name(obj) -> str:
    return str(obj) if isinstance(obj, (str, os.PathLike)) else type(obj).__name__


def _check_top(top) -> int:
    top = int(top)
    if top < 1:
        raise ImuseError(f"--top must be at least 1, not {top}")
    return top


_CACHE: dict[tuple, Recommender] = {}


def _recommender(model, index) -> Recommender:
    key = (str(model), str(index))
    if key not in _CACHE:
        _CACHE[key] = Recommender.load(model, index)
    return _CACHE[key]


def recommend(image, top: int = 10, model=None, index=None) -> Recommendation:
    """Top songs for an image with the default (or given) model and index; cached between calls."""
    return _recommender(model, index).recommend(image, top)


def recommend_images(audio, top: int = 10, model=None, index=None) -> Recommendation:
    """Top OASIS images for an audio clip."""
    return _recommender(model, index).recommend_images(audio, top)


# --------------------------------------------------------------------------- examples

QUADRANT_CENTRES = {"Q1": (0.75, 0.75), "Q2": (0.25, 0.75), "Q3": (0.25, 0.25), "Q4": (0.75, 0.25)}


# Examples shown in the book avoid OASIS's explicit, gory and hateful pictures.
def example_images(n: int = 4, protocol: str = "paper", seed: int = config.SEED,
                   images: pd.DataFrame | None = None) -> pd.DataFrame:
    """``n`` OASIS test images spread over the VA plane (for the book and the benchmark).

    Candidates are the images with test pairs under ``protocol`` that the book may show
    (``data.showable``: these examples are published); quadrants Q1..Q4 are
    visited in turn, each time taking the not yet chosen candidate nearest its quadrant's
    centre (by the images' normative VA). Deterministic.
    """
    from . import data

    images = data.load_images() if images is None else images
    test_ids = set(pairs.make_pairs(protocol, seed).query("split == 'test'").image_id)
    keep = images.image_id.isin(test_ids) & data.showable(images)
    cand = images[keep].sort_values("image_id").reset_index(drop=True)
    chosen: list[int] = []
    quadrants = list(QUADRANT_CENTRES)
    while len(chosen) < min(n, len(cand)):
        cv, ca = QUADRANT_CENTRES[quadrants[len(chosen) % 4]]
        dist = np.hypot(cand.valence - cv, cand.arousal - ca).to_numpy().copy()
        dist[chosen] = np.inf
        chosen.append(int(np.argmin(dist)))
    out = cand.iloc[chosen].reset_index(drop=True)
    out.insert(1, "quadrant", [quadrants[i % 4] for i in range(len(out))])
    return out
