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
* ``knn``: the mean VA of the k nearest training items in the standardised feature space
  (cosine), one model per modality, k chosen by 5-fold cross-validation on the training items.
* ``quadrant``: each item gets the mean VA of the training items of its TRUE quadrant: what
  coarse affect alone buys (it is told the quadrant, so it is not a fair competitor but a
  yardstick: a metric that scores it near the oracle cannot see finer affect).
* ``image_agnostic``: every image gets the same ranking of songs, by each song's mean true S
  to the training images (it knows every song's true VA): what a song's "centrality" alone buys.
* ``lookup``: the training labels as a table (items never seen in training get the training
  mean). On the ``paper`` split every test item was seen in training, so it equals the
  oracle there: memorisation is all the paper split asks for.
* ``oracle``: the true VA (sanity check: MAE 0, NSG 1, MAP 1).
"""

from __future__ import annotations

import numpy as np

from .metrics import FixedVA, va_quadrant
from .pairs import similarity

RIDGE_ALPHAS = np.logspace(-2, 5, 15)


class ItemVAPredictor(FixedVA):
    """A predictor that gives each image and each song one VA (table rows = feature rows), clipped
    to [0, 1], with its name and what it was fitted with (``info``)."""

    def __init__(self, name: str, image_va: np.ndarray, song_va: np.ndarray, info: dict | None = None):
        super().__init__(np.clip(np.asarray(image_va, float), 0.0, 1.0), np.clip(np.asarray(song_va, float), 0.0, 1.0))
        self.name = name
        self.info = info or {}


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


class SongScore:
    """S'(image, song) = one score per song, whatever the image (no VA)."""

    def __init__(self, name: str, song_score: np.ndarray, info: dict | None = None):
        self.name, self.song_score, self.info = name, np.asarray(song_score, float), info or {}

    def pairs(self, img_rows, song_rows):
        return self.song_score[np.asarray(song_rows)], None, None

    def matrix(self, img_rows, song_rows):
        return np.broadcast_to(self.song_score[np.asarray(song_rows)], (len(img_rows), len(song_rows))).copy()


def quadrant_only(image_va, song_va, train_image_rows, train_song_rows) -> ItemVAPredictor:
    """Every item gets the mean VA of the training items of its own true quadrant."""
    out = []
    for va, train in ((np.asarray(image_va, float), _unique(train_image_rows)),
                      (np.asarray(song_va, float), _unique(train_song_rows))):
        quad, pred = va_quadrant(va), np.empty_like(va)
        centres = {}
        for q in (1, 2, 3, 4):
            members = train[quad[train] == q]
            # a quadrant without training items: its geometric centre
            centres[q] = va[members].mean(0) if len(members) else np.array([0.75 if q in (1, 4) else 0.25,
                                                                             0.75 if q in (1, 2) else 0.25])
            pred[quad == q] = centres[q]
        out.append((pred, {str(q): c.tolist() for q, c in centres.items()}))
    return ItemVAPredictor("quadrant", out[0][0], out[1][0], {"image_centres": out[0][1], "song_centres": out[1][1]})


def image_agnostic(image_va, song_va, train_image_rows) -> SongScore:
    """One ranking of songs for every image: each song's mean true S to the training images."""
    ti = np.asarray(image_va, float)[_unique(train_image_rows)]
    sv = np.asarray(song_va, float)
    score = similarity(ti[:, None, 0], ti[:, None, 1], sv[None, :, 0], sv[None, :, 1]).mean(0)
    return SongScore("image_agnostic", score, {"n_train_images": int(len(ti))})


def lookup(image_va, song_va, train_image_rows, train_song_rows) -> ItemVAPredictor:
    """The training labels as a table; unseen items get the training mean."""
    out = []
    for va, train in ((np.asarray(image_va, float), _unique(train_image_rows)),
                      (np.asarray(song_va, float), _unique(train_song_rows))):
        pred = np.tile(va[train].mean(0), (len(va), 1))
        pred[train] = va[train]
        out.append(pred)
    return ItemVAPredictor("lookup", out[0], out[1], {"n_seen_images": int(len(_unique(train_image_rows))),
                                                      "n_seen_songs": int(len(_unique(train_song_rows)))})


KNN_KS = (5, 10, 20, 40)


def fit_knn(x: np.ndarray, y: np.ndarray, ks=KNN_KS, seed: int = 0):
    """Standardise + cosine kNN regression, k chosen by 5-fold CV (MAE) on the given items."""
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(x, float), np.asarray(y, float)
    ks = [k for k in ks if k < 0.8 * len(x)] or [1]
    pipe = make_pipeline(StandardScaler(), KNeighborsRegressor(metric="cosine"))
    search = GridSearchCV(pipe, {"kneighborsregressor__n_neighbors": ks}, scoring="neg_mean_absolute_error",
                          cv=KFold(5, shuffle=True, random_state=seed))
    return search.fit(x, y).best_estimator_


def knn(image_feats, audio_feats, image_va, song_va, train_image_rows, train_song_rows) -> ItemVAPredictor:
    """kNN VA regressors on frozen evaluation features, fitted on the training items only."""
    ti, ts = _unique(train_image_rows), _unique(train_song_rows)
    img_model = fit_knn(np.asarray(image_feats)[ti], np.asarray(image_va)[ti])
    aud_model = fit_knn(np.asarray(audio_feats)[ts], np.asarray(song_va)[ts])
    info = {"image_k": int(img_model[-1].n_neighbors), "music_k": int(aud_model[-1].n_neighbors)}
    return ItemVAPredictor("knn", img_model.predict(np.asarray(image_feats, float)),
                           aud_model.predict(np.asarray(audio_feats, float)), info)
