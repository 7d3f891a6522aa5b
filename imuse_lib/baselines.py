"""Baselines scored on the same splits as the network: its worth is its margin over these.

Every predictor answers ``pairs(img_rows, song_rows) -> (S', image_va, music_va)`` and
``matrix(img_rows, song_rows) -> S'`` (see :func:`imuse_lib.metrics.score`).

* ``constant``: every image gets the training images' mean VA and every song the training
  songs' mean VA (so S' is one number: it ranks like chance; its MAE is what "knowing
  nothing but the training means" buys).
* ``mean_similarity``: S' = the training pairs' mean S (the best constant for MAE/RMSE
  under the pair sampling).
* ``ridge``: ridge regression from the frozen features (evaluation view) to VA, one per
  modality, fitted on the items of the training pairs; features standardised; alpha
  chosen by efficient leave-one-out (GCV) on those training items only, from 10^-2..10^5.
* ``random``: each item gets the VA of a training item drawn at random (seeded): a random
  ranking with the training VA distribution.
* ``oracle``: the true VA (sanity check: MAE 0, MAP 1).
"""

from __future__ import annotations

import numpy as np

from .pairs import similarity

RIDGE_ALPHAS = np.logspace(-2, 5, 15)


class ItemVAPredictor:
    """A predictor that gives each image and each song one VA (table rows = feature rows)."""

    def __init__(self, name: str, image_va: np.ndarray, song_va: np.ndarray, info: dict | None = None):
        self.name = name
        self.image_va = np.clip(np.asarray(image_va, float), 0.0, 1.0)
        self.song_va = np.clip(np.asarray(song_va, float), 0.0, 1.0)
        self.info = info or {}

    def pairs(self, img_rows, song_rows):
        iva, mva = self.image_va[img_rows], self.song_va[song_rows]
        return similarity(iva[:, 0], iva[:, 1], mva[:, 0], mva[:, 1]), iva, mva

    def matrix(self, img_rows, song_rows):
        iva, mva = self.image_va[img_rows], self.song_va[song_rows]
        return similarity(iva[:, None, 0], iva[:, None, 1], mva[None, :, 0], mva[None, :, 1])


class ConstantSimilarity:
    """S' = one number for every pair (no VA)."""

    def __init__(self, name: str, value: float):
        self.name, self.value, self.info = name, float(value), {"value": float(value)}

    def pairs(self, img_rows, song_rows):
        return np.full(len(img_rows), self.value), None, None

    def matrix(self, img_rows, song_rows):
        return np.full((len(img_rows), len(song_rows)), self.value)


def _unique(rows) -> np.ndarray:
    return np.unique(np.asarray(rows, dtype=np.int64))


def constant(image_va, song_va, train_image_rows, train_song_rows) -> ItemVAPredictor:
    """Training-mean VA for every image and every song (means over distinct training items)."""
    mi = np.asarray(image_va)[_unique(train_image_rows)].mean(0)
    ms = np.asarray(song_va)[_unique(train_song_rows)].mean(0)
    return ItemVAPredictor("constant", np.tile(mi, (len(image_va), 1)), np.tile(ms, (len(song_va), 1)),
                           {"image_va": mi.tolist(), "music_va": ms.tolist()})


def mean_similarity(train_similarity) -> ConstantSimilarity:
    return ConstantSimilarity("mean_similarity", float(np.mean(train_similarity)))


def oracle(image_va, song_va) -> ItemVAPredictor:
    return ItemVAPredictor("oracle", image_va, song_va)


def random_va(image_va, song_va, train_image_rows, train_song_rows, seed: int = 0) -> ItemVAPredictor:
    rng = np.random.default_rng(seed)
    ti, ts = _unique(train_image_rows), _unique(train_song_rows)
    return ItemVAPredictor("random", np.asarray(image_va)[rng.choice(ti, len(image_va))],
                           np.asarray(song_va)[rng.choice(ts, len(song_va))], {"seed": seed})


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas=RIDGE_ALPHAS):
    """Standardise + RidgeCV (efficient leave-one-out over ``alphas``); returns the fitted pipeline."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(np.asarray(x, float), np.asarray(y, float))


def ridge(image_feats, audio_feats, image_va, song_va, train_image_rows, train_song_rows) -> ItemVAPredictor:
    """Ridge VA regressors on frozen evaluation features, fitted on the training items only."""
    ti, ts = _unique(train_image_rows), _unique(train_song_rows)
    img_model = fit_ridge(np.asarray(image_feats)[ti], np.asarray(image_va)[ti])
    aud_model = fit_ridge(np.asarray(audio_feats)[ts], np.asarray(song_va)[ts])
    info = {"image_alpha": float(img_model[-1].alpha_), "music_alpha": float(aud_model[-1].alpha_),
            "n_train_images": int(len(ti)), "n_train_songs": int(len(ts))}
    return ItemVAPredictor("ridge", img_model.predict(np.asarray(image_feats, float)),
                           aud_model.predict(np.asarray(audio_feats, float)), info)
