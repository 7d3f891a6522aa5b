"""The deployed recommender of the paper's section 4.2: a song index and queries on it.

*The song index* is one SQLite file (no server). Per song it holds the metadata, the
stored music vector (``net.music_vector``, float32 [128]) and the song's predicted
valence/arousal; per OASIS image the image vector and predicted VA (for the reverse
direction); and, in ``meta``, the fingerprint of the model it came from: sha256 over the
checkpoint's tensors and the backbones' names and weights provenance. A model whose
fingerprint differs is refused (:class:`~imuse_lib.errors.ModelMismatchError`).
Its storage, locking and integrity live in :mod:`imuse_lib.index` (WAL, one writer at a
time, a kill leaves the old index or the new), the model in :mod:`imuse_lib.deployed`; this
module answers queries.

*Queries.* An image goes through ``media.load_image`` -> the image backbone ->
the image arm, then is matched against the stored songs:

* factorised model (each arm predicts VA alone): nearest neighbours in VA space, ranked
  by Eq. 1 (``pairs.similarity``) between the image's predicted VA and each song's VA
  (:mod:`imuse_lib.ranking`): its rated VA where the index has one (the catalog's mood tags,
  values given with ``imuse index add --valence/--arousal`` or ``--tags``), else its predicted VA;
  each result says which (``va_source``);
* the paper's joint model: the stored music vectors are scored through the fusion
  layers (``net.fuse``) in fixed-size batches with the image vector repeated; the
  predicted similarity is Eq. 1 between the two VA heads of each pair (:mod:`imuse_lib.joint`);
  for a song with a rated VA, Eq. 1 between the pair's image VA and that rated VA.

The reverse direction ranks the 900 OASIS images for an audio clip the same way.
Ties are broken by id (rows are kept sorted by id), and batches have a fixed size, so
repeated queries give identical results.

With the joint model a song's VA depends on the image it is paired with. The *stored*
song VA is then the mean over the 900 OASIS images of its predicted music VA (and the
stored image VA the mean over the catalog songs at build time); query results report the
pair's own VA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, pairs
from .deployed import DeployedModel, load_deployed
from .errors import DataError, ImuseError, require_finite
from .index.reading import SongIndex, default_index_path, open_index
from .joint import JointScorer, score_joint, score_joint_reverse
from .ranking import rank_va, top_k


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

    def __init__(self, model: DeployedModel, index: SongIndex):
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
    def load(cls, model: str | os.PathLike | DeployedModel | None = None,
             index: str | os.PathLike | None = None) -> "Recommender":
        model = model if isinstance(model, DeployedModel) else load_deployed(model)
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
            rated = idx.song_rated
            if rated.any():  # a rated song is placed at its rated VA, as in the factorised path
                allsim, mva = np.array(allsim, copy=True), np.array(mva, copy=True)
                mva[rated] = idx.song_va[rated]
                allsim[rated] = pairs.similarity(iva[rated, 0], iva[rated, 1], mva[rated, 0], mva[rated, 1])
            pos = top_k(allsim, top)
            sim, song_va, image_va = allsim[pos], mva[pos], iva[pos]
            query_va = iva.mean(axis=0)
        songs = idx.song_rows(pos)  # ten rows, not the whole table, on a memory-mapped index
        items = pd.DataFrame({
            "rank": np.arange(1, len(pos) + 1),
            "song_id": songs.song_id.to_numpy(), "artist": songs.artist.to_numpy(),
            "title": songs.title.to_numpy(), "similarity": np.asarray(sim, float),
            "valence": song_va[:, 0].astype(float), "arousal": song_va[:, 1].astype(float),
            "va_source": songs.va_source.to_numpy(),
            "image_valence": image_va[:, 0].astype(float), "image_arousal": image_va[:, 1].astype(float),
            "true_valence": songs.true_valence.to_numpy(float), "true_arousal": songs.true_arousal.to_numpy(float),
            "predicted_valence": songs.valence.to_numpy(float), "predicted_arousal": songs.arousal.to_numpy(float),
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
