"""The deployed recommender of the paper's section 4.2: a song index and queries on it.

*The song index* is one SQLite file (no server). Per song it holds the metadata, the
stored music vector (``net.music_vector``, float32 [128]) and the song's predicted
valence/arousal; per OASIS image the image vector and predicted VA (for the reverse
direction); and, in ``meta``, the fingerprint of the model it came from: sha256 over the
checkpoint's tensors and the backbones' names and weights provenance. A model whose
fingerprint differs is refused (:class:`~imuse_lib.errors.ModelMismatchError`).
Its storage, locking and integrity live in :mod:`imuse_lib.song_index` (WAL, one writer
at a time, a kill leaves the old index or the new); this module loads models and ranks.

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

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import config, io, pairs
from .errors import MAX_EVAL_CROPS, DataError, ImuseError, ModelMismatchError, meta_int, require_finite

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

    def image_pipeline_module(self):
        """The image path as one torch module (what the book's page runs, via ONNX): float RGB
        [N, 3, 224, 224] in [0, 1] (resize shorter side to 256, centre crop 224, as PIL does)
        -> predicted VA [N, 2]; normalisation happens inside. Factorised models only."""
        from .export import image_pipeline

        return image_pipeline(self.image_bb(), self.net)

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
    """Load a trained model: a VA model file (:mod:`imuse_lib.va_model`, ``.npz``) or an IMUSE
    network checkpoint. Default: the deployed VA model (``va_model.train_default``) when it
    exists, else the checkpoint ``imuse train`` writes."""
    from . import training, va_model

    if path is None:
        path = va_model.default_model_path()
        if not path.exists():
            path = training.default_model_path()
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no trained model there; run `imuse train --profile quick` "
                        f"or pass --model PATH")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a model checkpoint")
    io.require_regular_file(path, "model file")  # a FIFO would block the reader
    if va_model.is_va_model_file(path):
        from . import va_recommend

        return va_recommend.load(path)

    try:
        net, meta = training.load_checkpoint(path)
    except ImuseError:
        raise
    except Exception as exc:  # torch's unpickling errors vary; the user needs one line
        first = (str(exc).splitlines() or ["unreadable"])[0].split(". ")[0][:100]
        raise DataError(f"{path}: not a readable IMUSE checkpoint ({type(exc).__name__}: {first})") from None
    return Model(net=net, meta=dict(meta), path=path)


# --------------------------------------------------------------------------- the index

# Storage, locking and integrity of the song index live in imuse_lib.song_index; these
# names stay importable from here.
from .song_index import (  # noqa: E402,F401
    SCHEMA, SCHEMA_VERSION, SongIndex, add_songs, build_index, check_integrity, default_index_path,
    open_index, read_meta, remove_songs, writer_lock,
)
from .song_index import _joint_means  # noqa: E402,F401


def _store_kwargs(meta: dict, which: str) -> dict:
    """Arguments that select the feature store the model was trained on (its meta records
    the store's own meta under ``image_features`` / ``audio_features``)."""
    store = meta.get(f"{which}_features") or {}
    weights = store.get("weights") or meta.get(f"{which}_weights")
    kw = {"backbone": store.get("backbone") or meta.get(f"{which}_backbone"),
          "weights": _clean_provenance(weights).get("kind", "pretrained")}
    for key in (("views", "seed") if which == "image" else ("crops", "seed")):
        if store.get(key) is not None:
            kw[key] = meta_int(store[key], key, 0, 2**63 - 1)
    eval_crops = (store.get("spec") or {}).get("eval_crops")
    if which == "audio" and eval_crops is not None:
        kw["eval_crops"] = meta_int(eval_crops, "eval_crops", 1, MAX_EVAL_CROPS)
    return kw


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
        require_finite(_name(image), vec, va)
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
        songs = idx.song_rows(pos)  # ten rows, not the whole table, on a memory-mapped index
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
        require_finite(_name(audio), vec, va)
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
