"""Evaluation (paper section 5.1): error of the predicted similarity and ranking quality.

Definitions (also written in the book, notebook 04):

* **MAE / RMSE**: of the predicted similarity S' (Eq. 1 on predicted VA) against the true
  S, over the test pairs.
* **AP@k** of one query whose candidates are ranked by decreasing predicted score, with
  ``rel_i`` = 1 when the item at rank i is relevant, ``P@i`` = precision of the first i, and
  R = the number of relevant candidates::

      AP@k = sum_{i<=k} P@i * rel_i / min(k, R)

  Queries with R = 0 are left out; **MAP@k** is the mean of AP@k over the other queries.
  Ties in the predicted score are broken at random (seeded), so a constant predictor
  ranks like a random one instead of by catalog order.
* Protocol **(a)** "own pairs": a query is a test image; its candidates are its own test
  pairs; relevant = the pairs of its ground-truth ``best`` group.
* Protocol **(b)** "catalog": a query is a test image; its candidates are every song of
  the candidate set (the whole catalog for the paper split, the held-out songs for the cold
  split); relevant = its 10 truly nearest songs by S (songs tied with the 10th are relevant
  too, so the oracle scores exactly 1).
* Per modality: MAE of predicted VA (mean over valence and arousal) and Pearson r of each
  dimension, over the test pairs (the joint network predicts an image's VA anew in every
  pair).
* Bootstrap: test images are resampled with replacement (``n_boot`` times); each metric is
  recomputed on the resampled images' queries and pairs; the 2.5 and 97.5 percentiles
  make the 95 % interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pairs import similarity

KS = tuple(range(1, 11))
N_RELEVANT_B = 10


# --------------------------------------------------------------------------- basic errors


def mae(pred, true) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return float(np.mean(np.abs(pred - true))) if pred.size else float("nan")


def rmse(pred, true) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return float(np.sqrt(np.mean((pred - true) ** 2))) if pred.size else float("nan")


def pearson_r(pred, true) -> float:
    """Pearson correlation; NaN when either side is constant (e.g. the constant predictor)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if pred.size < 2 or np.std(pred) < 1e-12 or np.std(true) < 1e-12:
        return float("nan")
    return float(np.corrcoef(pred, true)[0, 1])


# --------------------------------------------------------------------------- ranking


def rank_order(scores: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices that sort ``scores`` (last axis) by decreasing value, ties broken at random."""
    scores = np.asarray(scores, float)
    rng = rng or np.random.default_rng(0)
    return np.lexsort((rng.random(scores.shape), -scores), axis=-1)


def ap_at_k(relevance_ranked: np.ndarray, n_relevant, ks=KS) -> np.ndarray:
    """AP@k for ranked 0/1 relevance rows.

    ``relevance_ranked``: [Q, L] (or [L]) relevance in ranked order (only the first max(ks)
    ranks matter; shorter lists count as non-relevant beyond their end); ``n_relevant``: R per
    query (all relevant candidates, not only those ranked). Returns [Q, len(ks)] (NaN where R=0).
    """
    rel = np.atleast_2d(np.asarray(relevance_ranked, float))
    n_rel = np.atleast_1d(np.asarray(n_relevant, float))
    kmax = max(ks)
    if rel.shape[1] < kmax:
        rel = np.pad(rel, ((0, 0), (0, kmax - rel.shape[1])))
    rel = rel[:, :kmax]
    ranks = np.arange(1, kmax + 1)
    prec_rel = np.cumsum(rel, axis=1) / ranks * rel  # P@i * rel_i
    cum = np.cumsum(prec_rel, axis=1)
    out = np.full((len(rel), len(ks)), np.nan)
    for j, k in enumerate(ks):
        denom = np.minimum(k, n_rel)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(n_rel > 0, cum[:, k - 1] / denom, np.nan)
    return out


def average_precision_at_k(scores, relevant, k: int, rng: np.random.Generator | None = None) -> float:
    """AP@k of one query: ``scores`` of its candidates, ``relevant`` a boolean mask over them."""
    scores, relevant = np.asarray(scores, float), np.asarray(relevant, bool)
    order = rank_order(scores, rng)
    return float(ap_at_k(relevant[order][None], relevant.sum(), ks=(k,))[0, 0])


def map_at_k(per_query: np.ndarray) -> np.ndarray:
    """MAP@k from a [Q, len(ks)] array of AP@k (NaN queries left out)."""
    per_query = np.asarray(per_query, float)
    valid = ~np.isnan(per_query[:, 0]) if per_query.size else np.zeros(0, bool)
    return per_query[valid].mean(0) if valid.any() else np.full(per_query.shape[1], np.nan)


def nearest_relevance(true_scores: np.ndarray, n: int = N_RELEVANT_B) -> np.ndarray:
    """Relevant mask of protocol (b): each row's n highest true scores, ties with the n-th included."""
    true_scores = np.asarray(true_scores, float)
    n = min(n, true_scores.shape[1])
    kth = -np.sort(-true_scores, axis=1)[:, n - 1:n]
    return true_scores >= kth - 1e-12


# --------------------------------------------------------------------------- evaluation sets


@dataclass
class EvalSet:
    """Everything a predictor is scored on, for one split.

    Rows index the feature/VA tables (``image_va`` [Ni,2], ``song_va`` [Ns,2]).
    ``pair_image`` / ``pair_song``: rows of the test pairs; ``pair_best``: their group is best;
    ``query_images``: the test images (protocol (a) and (b) queries); ``candidate_songs``:
    song rows ranked in protocol (b).
    """

    image_va: np.ndarray
    song_va: np.ndarray
    pair_image: np.ndarray
    pair_song: np.ndarray
    pair_best: np.ndarray
    query_images: np.ndarray
    candidate_songs: np.ndarray

    @property
    def pair_similarity(self) -> np.ndarray:
        iva, mva = self.image_va[self.pair_image], self.song_va[self.pair_song]
        return similarity(iva[:, 0], iva[:, 1], mva[:, 0], mva[:, 1])

    def true_matrix(self) -> np.ndarray:
        iva, mva = self.image_va[self.query_images], self.song_va[self.candidate_songs]
        return similarity(iva[:, None, 0], iva[:, None, 1], mva[None, :, 0], mva[None, :, 1])


def make_evalset(pairs, image_row: dict, song_row: dict, image_va: np.ndarray, song_va: np.ndarray,
                 protocol: str, test_split: str = "test") -> EvalSet:
    """The EvalSet of a split pairs frame (``pairs.split_pairs``): test pairs, test images as
    queries, and as protocol-(b) candidates the whole catalog (``paper``) or the songs of the
    test pairs (``cold``: the held-out songs)."""
    test = pairs[pairs.split == test_split]
    pi = np.array([image_row[str(i)] for i in test.image_id], dtype=np.int64)
    ps = np.array([song_row[str(s)] for s in test.song_id], dtype=np.int64)
    if protocol == "paper":
        candidates = np.arange(len(song_va))
    elif protocol == "cold":
        candidates = np.unique(ps)
    else:
        raise ValueError(f"protocol must be 'paper' or 'cold', not {protocol!r}")
    return EvalSet(np.asarray(image_va, float), np.asarray(song_va, float), pi, ps,
                   (test.group == "best").to_numpy(), np.unique(pi), candidates)


# --------------------------------------------------------------------------- scoring one predictor


@dataclass
class PerImage:
    """Per-query statistics, the unit the bootstrap resamples (aligned with ``query_images``)."""

    ap_a: np.ndarray      # [Q, 10] AP@k protocol (a), NaN where the image has no best test pair
    ap_b: np.ndarray      # [Q, 10] AP@k protocol (b)
    abs_sum: np.ndarray   # [Q] sum of |S' - S| over the image's test pairs
    sq_sum: np.ndarray    # [Q] sum of (S' - S)^2
    count: np.ndarray     # [Q] number of test pairs


def score(predictor, ev: EvalSet, seed: int = 0) -> tuple[dict, PerImage]:
    """Metrics of ``predictor`` on ``ev``.

    ``predictor`` has ``pairs(img_rows, song_rows) -> (S' [n], image_va [n,2] | None,
    music_va [n,2] | None)`` and ``matrix(img_rows, song_rows) -> S' [ni, ns]``.
    Returns (summary dict, per-image statistics)."""
    rng = np.random.default_rng(seed)
    s_pred, iva, mva = predictor.pairs(ev.pair_image, ev.pair_song)
    s_pred = np.asarray(s_pred, float)
    s_true = ev.pair_similarity
    q_index = np.searchsorted(ev.query_images, ev.pair_image)
    nq = len(ev.query_images)
    err = s_pred - s_true
    abs_sum = np.bincount(q_index, np.abs(err), nq)
    sq_sum = np.bincount(q_index, err ** 2, nq)
    count = np.bincount(q_index, minlength=nq).astype(float)

    # (a) each image's own test pairs
    ap_a = np.full((nq, len(KS)), np.nan)
    order = np.argsort(q_index, kind="stable")
    bounds = np.r_[0, np.cumsum(count).astype(int)]
    for q in range(nq):
        idx = order[bounds[q]:bounds[q + 1]]
        rel = ev.pair_best[idx]
        if rel.any():
            ranked = rel[rank_order(s_pred[idx], rng)]
            ap_a[q] = ap_at_k(ranked[None], rel.sum())[0]

    # (b) the candidate songs
    pred_m = np.asarray(predictor.matrix(ev.query_images, ev.candidate_songs), float)
    relevant = nearest_relevance(ev.true_matrix())
    ranked = np.take_along_axis(relevant, rank_order(pred_m, rng)[:, :max(KS)], axis=1)
    ap_b = ap_at_k(ranked, relevant.sum(1))

    per = PerImage(ap_a, ap_b, abs_sum, sq_sum, count)
    out = {"mae": mae(s_pred, s_true), "rmse": rmse(s_pred, s_true), "n_test_pairs": int(len(s_true)),
           "n_queries_a": int((~np.isnan(ap_a[:, 0])).sum()), "n_queries_b": int(nq),
           "n_candidates_b": int(len(ev.candidate_songs))}
    for name, values in (("map_a", map_at_k(ap_a)), ("map_b", map_at_k(ap_b))):
        for k, v in zip(KS, values):
            out[f"{name}@{k}"] = float(v)
    out.update(va_metrics("image", iva, ev.image_va[ev.pair_image]))
    out.update(va_metrics("music", mva, ev.song_va[ev.pair_song]))
    return out, per


def va_metrics(prefix: str, pred_va, true_va) -> dict:
    """``<prefix>_va_mae``, ``<prefix>_valence_r``, ``<prefix>_arousal_r`` (NaN when there is no VA)."""
    if pred_va is None:
        return {f"{prefix}_va_mae": float("nan"), f"{prefix}_valence_r": float("nan"),
                f"{prefix}_arousal_r": float("nan")}
    pred_va, true_va = np.asarray(pred_va, float), np.asarray(true_va, float)
    return {f"{prefix}_va_mae": mae(pred_va, true_va),
            f"{prefix}_valence_r": pearson_r(pred_va[:, 0], true_va[:, 0]),
            f"{prefix}_arousal_r": pearson_r(pred_va[:, 1], true_va[:, 1])}


# --------------------------------------------------------------------------- bootstrap


def bootstrap(per_runs: list[PerImage], n_boot: int = 1000, seed: int = 0, k: int = 10) -> dict:
    """95 % intervals of MAP@k (a), MAP@k (b), MAE and RMSE over resampled test images.

    ``per_runs``: the per-image statistics of one or more runs (seeds) on the same queries;
    each replicate draws one set of images, scores every run on it and averages the runs, so
    the interval is that of the seed-mean. Returns ``{metric: (low, high)}``."""
    if not per_runs:
        return {}
    nq = len(per_runs[0].count)
    rng = np.random.default_rng(seed)
    # Multiplicity of each image in each replicate: a resample is a weighted sum.
    w = np.stack([np.bincount(rng.integers(0, nq, nq), minlength=nq) for _ in range(n_boot)]).astype(float)
    j = k - 1
    reps = {"map_a": [], "map_b": [], "mae": [], "rmse": []}
    for per in per_runs:
        for name, ap in (("map_a", per.ap_a[:, j]), ("map_b", per.ap_b[:, j])):
            valid = ~np.isnan(ap)
            with np.errstate(invalid="ignore", divide="ignore"):
                reps[name].append((w @ np.where(valid, ap, 0)) / (w @ valid))
        with np.errstate(invalid="ignore", divide="ignore"):
            reps["mae"].append((w @ per.abs_sum) / (w @ per.count))
            reps["rmse"].append(np.sqrt((w @ per.sq_sum) / (w @ per.count)))
    out = {}
    for name, runs in reps.items():
        mean = np.mean(runs, axis=0)
        out[name] = (float(np.nanpercentile(mean, 2.5)), float(np.nanpercentile(mean, 97.5)))
    return out
