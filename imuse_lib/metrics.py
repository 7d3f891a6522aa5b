"""Evaluation: how well a predictor ranks songs for images (and images for songs), and the
paper's own metrics beside it, with intervals that resample images and songs.

Recommendation quality (what the book leads with). A query image's candidates are every
song of the candidate set (the whole catalog on the ``paper`` split, every held-out song on
the ``cold`` split); they are ranked by the predicted similarity S' (ties broken at random,
seeded) and judged by their true S (Eq. 1 on the true VA):

* **NSG@k**, normalised similarity gain: (mean true S of the predicted top k - mean true S
  of all candidates) / (mean true S of the oracle's top k - mean true S of all candidates).
  A random ranking scores 0 in expectation, the oracle exactly 1, a reversed ranking < 0.
* **NDCG@k** with the graded gain max(0, S - the query's mean S over its candidates) and the
  discount 1 / log2(rank + 1), divided by the oracle's DCG.
* **quadrant@k**: the share of the top k whose true VA quadrant is the query's.
* The same three for the reverse direction (``rev_``): a song's candidates are the query
  images.

The paper's metrics (section 5.1), kept for the reproduction and shown with their
degeneracy: **MAP@k (a)** ranks each query image's own test pairs (about 4) and counts its
``best`` pairs as relevant, AP@k = sum_{i<=k} P@i rel_i / min(k, R), queries with R = 0 left
out; **MAE / RMSE** of S' against S over the test pairs.

Item-level VA quality: Pearson r per dimension, MAE of VA, the ratio of predicted to true
standard deviation per dimension (a model whose predictions collapse has a ratio near 0),
and for songs the share whose predicted quadrant (midpoint 0.5) is their official 4Q
quadrant.

Uncertainty (:func:`draw_resamples`, :func:`replicates`): images and songs are both random
samples, and songs are shared between images, so every interval comes from a two-way
bootstrap: each replicate draws images with replacement and, independently, songs with
replacement; a pair counts as often as its image times its song, a duplicated candidate
appears twice in the ranking (for MAP@k (a), whose lists hold about four pairs, a query is
weighted by its image's and its songs' multiplicities instead). The same draws score every predictor, so differences are
paired: a predictor beats another only when the 95 % interval of the difference excludes 0.

One module of about 500 lines on purpose: the bootstrap replicates recompute the ranking
metrics from the same ranked prefixes (:class:`Scored`), so splitting them would only pass
those internals across a module boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .pairs import similarity

KS = tuple(range(1, 11))
K = 10
RANK_METRICS = ("nsg", "ndcg", "quadrant")  # per direction; rev_ prefix for songs -> images
# Metrics with bootstrap replicates (the interval and paired-difference columns of Table 2).
BOOT_METRICS = ("nsg@10", "ndcg@10", "quadrant@10", "rev_nsg@10", "rev_ndcg@10", "rev_quadrant@10",
                "map_a@10", "mae", "rmse")
LOWER_IS_BETTER = {"mae", "rmse"}


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


def sd_ratio(pred, true) -> float:
    """Standard deviation of the predictions over that of the truth (1: the true spread)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    sd = np.std(true)
    return float(np.std(pred) / sd) if pred.size > 1 and sd > 1e-12 else float("nan")


def va_quadrant(va) -> np.ndarray:
    """Quadrant 1-4 of VA points [n, 2]: :func:`imuse_lib.data.quadrant_of` as numbers."""
    from .data import quadrant_of

    va = np.asarray(va, float).reshape(-1, 2)
    return np.char.lstrip(quadrant_of(va[:, 0], va[:, 1]).astype(str), "Q").astype(int)


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


def _cum_discount(k: int, kind: str) -> np.ndarray:
    """D[n] = sum of the first n rank discounts (D[0] = 0): ``mean`` 1/k, ``dcg`` 1/log2(r+1)."""
    if kind == "mean":
        return np.arange(k + 1) / k
    return np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))]


def _rank_weights(counts, k: int, cum_discounts) -> list:
    """Weights of the entries of ranked lists in which entry m appears ``counts[..., m]`` times
    (its copies take consecutive ranks): the sum of the discounts of the ranks its copies take
    among the first k, for each cumulative discount in ``cum_discounts``. Last axis = rank."""
    end = np.minimum(np.cumsum(counts, axis=-1, dtype=np.int16), k)
    start = np.empty_like(end)
    start[..., 0] = 0
    start[..., 1:] = end[..., :-1]
    return [cd[end] - cd[start] for cd in cum_discounts]


def nsg_at_k(pred, true, k: int = K, rng: np.random.Generator | None = None) -> np.ndarray:
    """Per-query NSG@k: ``pred`` and ``true`` are [Q, N] predicted and true similarities of
    every candidate; the predicted top k (random tie-break) against the candidates' mean and
    the oracle's top k."""
    true = np.asarray(true, float)
    top = np.take_along_axis(true, rank_order(pred, rng)[:, :k], 1).mean(1)
    best = -np.sort(-true, axis=1)[:, :k].mean(1)
    mean = true.mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (top - mean) / (best - mean)


def ndcg_at_k(pred, true, k: int = K, rng: np.random.Generator | None = None) -> np.ndarray:
    """Per-query NDCG@k with gain max(0, S - the query's mean S) (see the module doc)."""
    true = np.asarray(true, float)
    gain = np.maximum(0.0, true - true.mean(1, keepdims=True))
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (np.take_along_axis(gain, rank_order(pred, rng)[:, :k], 1) * disc).sum(1)
    idcg = (-np.sort(-gain, axis=1)[:, :k] * disc).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)


# --------------------------------------------------------------------------- evaluation sets


@dataclass
class EvalSet:
    """What predictors are scored on, for one split and one part (``test`` or ``val``).

    Rows index the VA tables (``image_va`` [Ni,2], ``song_va`` [Ns,2]; the same rows as the
    feature store). ``query_images`` / ``candidate_songs``: the images that are queries and the
    songs that are ranked (and, reversed, the other way round); they are also what the
    bootstrap resamples. ``pair_*``: the part's pairs (the paper's metrics), all inside them.
    ``song_quadrant_4q``: the official 4Q quadrant of every song row (1-4), when known.
    """

    image_va: np.ndarray
    song_va: np.ndarray
    query_images: np.ndarray
    candidate_songs: np.ndarray
    pair_image: np.ndarray
    pair_song: np.ndarray
    pair_best: np.ndarray
    protocol: str = "paper"
    part: str = "test"
    song_quadrant_4q: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def pair_similarity(self) -> np.ndarray:
        iva, mva = self.image_va[self.pair_image], self.song_va[self.pair_song]
        return similarity(iva[:, 0], iva[:, 1], mva[:, 0], mva[:, 1])

    def true_matrix(self) -> np.ndarray:
        """True S [queries, candidates]."""
        if "true" not in self._cache:
            iva, mva = self.image_va[self.query_images], self.song_va[self.candidate_songs]
            self._cache["true"] = similarity(iva[:, None, 0], iva[:, None, 1], mva[None, :, 0], mva[None, :, 1])
        return self._cache["true"]

    def quadrant_match(self) -> np.ndarray:
        """[queries, candidates]: the song's true VA quadrant is the image's."""
        if "match" not in self._cache:
            qi = va_quadrant(self.image_va[self.query_images])
            qs = va_quadrant(self.song_va[self.candidate_songs])
            self._cache["match"] = qi[:, None] == qs[None, :]
        return self._cache["match"]

    def oracle_order(self, m: int, reverse: bool = False) -> np.ndarray:
        """The first ``m`` candidate positions of each query ranked by true S (``reverse``: the
        query positions for each candidate song)."""
        key = ("oracle", m, reverse)
        if key not in self._cache:
            true_m = self.true_matrix().T if reverse else self.true_matrix()
            self._cache[key] = np.argsort(-true_m, axis=1, kind="stable")[:, :m]
        return self._cache[key]

    @property
    def pair_query(self) -> np.ndarray:
        """Position of each pair's image among the queries, and of its song among the candidates."""
        return np.searchsorted(self.query_images, self.pair_image)

    @property
    def pair_candidate(self) -> np.ndarray:
        return np.searchsorted(self.candidate_songs, self.pair_song)


def make_evalset(pairs, image_row: dict, song_row: dict, image_va: np.ndarray, song_va: np.ndarray,
                 protocol: str, part: str = "test", roles=None, song_quadrant_4q=None) -> EvalSet:
    """The EvalSet of one part (``test`` / ``val``) of a split pairs frame.

    ``paper``: queries are the images that have pairs in the part, candidates the whole
    catalog (every song row). ``cold``: queries and candidates are the images and songs whose
    role is ``part`` (``roles``: :class:`imuse_lib.pairs.ItemRoles`; without it, the items of
    the part's pairs)."""
    if protocol not in ("paper", "cold"):
        raise ValueError(f"protocol must be 'paper' or 'cold', not {protocol!r}")
    sub = pairs[pairs.split == part]
    pi = np.array([image_row[str(i)] for i in sub.image_id], dtype=np.int64)
    ps = np.array([song_row[str(s)] for s in sub.song_id], dtype=np.int64)
    if protocol == "paper":
        queries, candidates = np.unique(pi), np.arange(len(song_va))
    elif roles is not None:
        queries = np.sort([image_row[str(i)] for i in roles.image_ids(part) if str(i) in image_row]).astype(np.int64)
        candidates = np.sort([song_row[str(s)] for s in roles.song_ids(part) if str(s) in song_row]).astype(np.int64)
    else:
        queries, candidates = np.unique(pi), np.unique(ps)
    return EvalSet(np.asarray(image_va, float), np.asarray(song_va, float), queries, candidates, pi, ps,
                   (sub.group == "best").to_numpy(), protocol, part,
                   None if song_quadrant_4q is None else np.asarray(song_quadrant_4q))


# --------------------------------------------------------------------------- scoring one predictor


@dataclass
class Scored:
    """What the bootstrap needs of one predictor (one seed) on one EvalSet."""

    order: np.ndarray        # [Q, M] candidate positions by decreasing S' (ties random)
    rev_order: np.ndarray    # [N, M'] query positions, by decreasing S', for each candidate song
    pair_pred: np.ndarray    # [P] S' of the part's pairs
    a_pairs: np.ndarray      # [Qa, L] pair indices of each protocol-(a) query, ranked; -1 pads
    a_query: np.ndarray      # [Qa] query position of each protocol-(a) query


def _ranked_prefix(n: int) -> int:
    # Only the first ranks can reach the top 10, even when resampling duplicates or drops
    # candidates: 30 Poisson(1) counts sum to under 10 with probability ~7e-6 (and such a
    # list is then scored on the copies it has: the weights are renormalised).
    return min(n, 3 * K)


def score(predictor, ev: EvalSet, seed: int = 0) -> tuple[dict, Scored]:
    """Metrics of ``predictor`` on ``ev``: (summary dict, :class:`Scored` for the bootstrap).

    ``predictor`` has ``matrix(img_rows, song_rows) -> S' [ni, ns]`` and
    ``pairs(img_rows, song_rows) -> (S' [n], image_va [n,2] | None, music_va [n,2] | None)``;
    optionally ``item_va(img_rows, song_rows) -> (image_va [ni,2], song_va [ns,2])`` for the
    item-level VA metrics (one VA per item)."""
    rng = np.random.default_rng(seed)
    pred_m = np.asarray(predictor.matrix(ev.query_images, ev.candidate_songs), float)
    true_m = ev.true_matrix()
    nq, nc = true_m.shape
    order = rank_order(pred_m, rng)[:, :_ranked_prefix(nc)]
    rev_order = rank_order(pred_m.T, rng)[:, :_ranked_prefix(nq)]

    out = {"n_queries": int(nq), "n_candidates": int(nc)}
    # the ranked metrics at every k (no resampling: every item counts once)
    ranked_true = np.take_along_axis(true_m, order, 1)
    best = -np.sort(-true_m, axis=1)[:, :K]
    mean = true_m.mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in KS:
            nsg = (ranked_true[:, :k].mean(1) - mean) / (best[:, :k].mean(1) - mean)
            out[f"nsg@{k}"] = float(np.nanmean(nsg))
    point = _rank_replicates(ev, order, rev_order, np.ones((1, nq)), np.ones((1, nc)))
    out.update({name: float(v[0]) for name, v in point.items()})

    # the paper's metrics on the part's pairs
    s_pred, iva, mva = predictor.pairs(ev.pair_image, ev.pair_song)
    s_pred = np.asarray(s_pred, float)
    s_true = ev.pair_similarity
    a_pairs, a_query = _protocol_a_lists(ev, s_pred, rng)
    scored = Scored(order, rev_order, s_pred, a_pairs, a_query)
    out.update({"mae": mae(s_pred, s_true), "rmse": rmse(s_pred, s_true), "n_pairs": int(len(s_true)),
                "n_queries_a": int(len(a_query))})
    ap = _ap_replicates(ev, scored, np.ones((1, nq)), np.ones((1, nc)), ks=KS)
    for k, v in zip(KS, ap[0]):
        out[f"map_a@{k}"] = float(v)
    out.update(pair_va_metrics("image", iva, ev.image_va[ev.pair_image]))
    out.update(pair_va_metrics("music", mva, ev.song_va[ev.pair_song]))
    if hasattr(predictor, "item_va"):
        item_iva, item_mva = predictor.item_va(ev.query_images, ev.candidate_songs)
        out.update(item_va_metrics(ev, item_iva, item_mva))
    return out, scored


def _protocol_a_lists(ev: EvalSet, s_pred: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Each query image's own pairs ranked by S' (ties random), padded with -1; only the
    queries with at least one ``best`` pair (R > 0), as the paper's MAP leaves the others out."""
    q_of_pair = ev.pair_query
    lists, queries = [], []
    order = np.argsort(q_of_pair, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(q_of_pair, minlength=len(ev.query_images)))]
    for q in range(len(ev.query_images)):
        idx = order[bounds[q]:bounds[q + 1]]
        if not ev.pair_best[idx].any():
            continue
        lists.append(idx[rank_order(s_pred[idx], rng)])
        queries.append(q)
    width = max((len(x) for x in lists), default=0)
    a_pairs = np.full((len(lists), width), -1, dtype=np.int64)
    for j, idx in enumerate(lists):
        a_pairs[j, :len(idx)] = idx
    return a_pairs, np.asarray(queries, dtype=np.int64)


def pair_va_metrics(prefix: str, pred_va, true_va) -> dict:
    """``<prefix>_va_mae``, ``<prefix>_valence_r``, ``<prefix>_arousal_r`` over pairs (NaN without VA)."""
    if pred_va is None:
        return {f"{prefix}_va_mae": float("nan"), f"{prefix}_valence_r": float("nan"),
                f"{prefix}_arousal_r": float("nan")}
    pred_va, true_va = np.asarray(pred_va, float), np.asarray(true_va, float)
    return {f"{prefix}_va_mae": mae(pred_va, true_va),
            f"{prefix}_valence_r": pearson_r(pred_va[:, 0], true_va[:, 0]),
            f"{prefix}_arousal_r": pearson_r(pred_va[:, 1], true_va[:, 1])}


def item_va_metrics(ev: EvalSet, image_va, song_va) -> dict:
    """One VA per query image and candidate song: r, sd ratio per dimension, VA MAE; for songs
    also the share whose predicted quadrant is the official 4Q one (``song_quadrant_4q``)."""
    out = {}
    for who, pred, true in (("image", image_va, ev.image_va[ev.query_images]),
                            ("song", song_va, ev.song_va[ev.candidate_songs])):
        pred = np.asarray(pred, float)
        out[f"{who}_item_va_mae"] = mae(pred, true)
        for d, dim in enumerate(("valence", "arousal")):
            out[f"{who}_item_{dim}_r"] = pearson_r(pred[:, d], true[:, d])
            out[f"{who}_item_{dim}_sd_ratio"] = sd_ratio(pred[:, d], true[:, d])
        out[f"{who}_item_quadrant_acc"] = float(np.mean(va_quadrant(pred) == va_quadrant(true)))
    if ev.song_quadrant_4q is not None:
        official = ev.song_quadrant_4q[ev.candidate_songs]
        out["song_item_quadrant_4q_acc"] = float(np.mean(va_quadrant(song_va) == official))
    return out


# --------------------------------------------------------------------------- replicates (two-way bootstrap)


@dataclass
class Resamples:
    """Multiplicities of the query images [B, Q] and candidate songs [B, N] in each replicate."""

    images: np.ndarray
    songs: np.ndarray

    @property
    def n(self) -> int:
        return len(self.images)


def draw_resamples(n_images: int, n_songs: int, n_boot: int = 1000, seed: int = 0,
                   resample_songs: bool = True, resample_images: bool = True) -> Resamples:
    """``n_boot`` two-way bootstrap draws: images and songs each drawn with replacement,
    independently (``resample_songs=False``: the image-only bootstrap)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, not {n_boot}")
    rng = np.random.default_rng(seed)
    imgs = (rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=n_boot) if resample_images
            else np.ones((n_boot, n_images), np.int64))
    songs = (rng.multinomial(n_songs, np.full(n_songs, 1 / n_songs), size=n_boot) if resample_songs
             else np.ones((n_boot, n_songs), np.int64))
    return Resamples(imgs.astype(np.int16), songs.astype(np.int16))


def _weighted_mean(values, weights):
    """Mean over the last axis of [B, Q] ``values`` with [B, Q] ``weights``, NaN entries left out."""
    ok = ~np.isnan(values)
    w = np.where(ok, weights, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, values, 0) * w).sum(-1) / w.sum(-1)


def _direction(true_m, match, order, oracle, q_w, c_w):
    """NSG@10, NDCG@10 and quadrant@10 of one direction for a batch of replicates.

    ``true_m`` [Q, N]; ``order`` / ``oracle`` [Q, M] candidate positions ranked by the
    prediction / by the truth; ``q_w`` [B, Q] and ``c_w`` [B, N] multiplicities of the queries
    and candidates."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cand_mean = (c_w.astype(np.float64) @ true_m.T) / c_w.sum(1, keepdims=True)  # [B, Q]
    discounts = (_cum_discount(K, "mean").astype(np.float32), _cum_discount(K, "dcg").astype(np.float32))
    x_p = np.take_along_axis(true_m, order, 1).astype(np.float32)[None]
    x_o = np.take_along_axis(true_m, oracle, 1).astype(np.float32)[None]
    mean_p, dcg_p = _rank_weights(c_w[:, order], K, discounts)  # [B, Q, M]
    mean_o, dcg_o = _rank_weights(c_w[:, oracle], K, discounts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p /= mean_p.sum(-1, keepdims=True)  # 1 unless the list is shorter than k
        mean_o /= mean_o.sum(-1, keepdims=True)
    top_p, top_o = (x_p * mean_p).sum(-1), (x_o * mean_o).sum(-1)
    cm = cand_mean[..., None]
    dcg = (np.maximum(0, x_p - cm) * dcg_p).sum(-1)
    idcg = (np.maximum(0, x_o - cm) * dcg_o).sum(-1)
    quad = (np.take_along_axis(match, order, 1)[None] * mean_p).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        nsg = (top_p - cand_mean) / (top_o - cand_mean)
        ndcg = np.where(idcg > 0, dcg / idcg, np.nan)
    return {"nsg@10": _weighted_mean(nsg, q_w), "ndcg@10": _weighted_mean(ndcg, q_w),
            "quadrant@10": _weighted_mean(quad, q_w)}


def _rank_replicates(ev: EvalSet, order, rev_order, img_w, song_w) -> dict:
    true_m, match = ev.true_matrix(), ev.quadrant_match()
    fwd = _direction(true_m, match, order, ev.oracle_order(order.shape[1]), img_w, song_w)
    rev = _direction(true_m.T, match.T, rev_order, ev.oracle_order(rev_order.shape[1], reverse=True),
                     song_w, img_w)
    return {**fwd, **{f"rev_{k}": v for k, v in rev.items()}}


def _ap_replicates(ev: EvalSet, s: Scored, img_w, song_w, ks=(K,)) -> np.ndarray:
    """MAP@k (a) per replicate [B, len(ks)]. Each query's AP is that of its own pairs as they
    are (duplicating a pair inside a list of about four would change what AP measures: the
    interval would not even hold the estimate); the query weighs its image's multiplicity times
    the mean multiplicity of its pairs' songs, so a replicate's songs still count."""
    if len(s.a_query) == 0:
        return np.full((len(img_w), len(ks)), np.nan)
    valid = s.a_pairs >= 0
    idx = np.where(valid, s.a_pairs, 0)
    rel = ev.pair_best[idx] & valid
    ap = ap_at_k(rel, rel.sum(1), ks=ks)  # [Qa, len(ks)]
    song_mult = np.where(valid[None], song_w[:, ev.pair_candidate[idx]], 0).sum(-1) / valid.sum(1)  # [B, Qa]
    weight = img_w[:, s.a_query] * song_mult
    return np.stack([_weighted_mean(np.broadcast_to(ap[:, j], weight.shape), weight) for j in range(len(ks))], 1)


def pair_error_replicates(err, pair_query, pair_candidate, img_w, song_w) -> dict:
    """MAE and RMSE of pair errors per replicate: a pair weighs its image's times its song's
    multiplicity."""
    w = img_w[:, pair_query].astype(float) * song_w[:, pair_candidate]
    err = np.asarray(err, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tot = w.sum(1)
        return {"mae": (w @ np.abs(err)) / tot, "rmse": np.sqrt((w @ err ** 2) / tot)}


def replicates(ev: EvalSet, runs: list[Scored], draws: Resamples, batch: int = 25) -> dict:
    """Every metric of :data:`BOOT_METRICS` per replicate, averaged over ``runs`` (the seeds of
    one predictor, scored on the same draws): ``{metric: [B]}``."""
    err_runs = [r.pair_pred - ev.pair_similarity for r in runs]
    out = {m: np.zeros(draws.n) for m in BOOT_METRICS}
    for lo in range(0, draws.n, batch):
        iw, sw = draws.images[lo:lo + batch], draws.songs[lo:lo + batch]
        for run, err in zip(runs, err_runs):
            vals = _rank_replicates(ev, run.order, run.rev_order, iw, sw)
            vals["map_a@10"] = _ap_replicates(ev, run, iw, sw)[:, 0]
            vals.update(pair_error_replicates(err, ev.pair_query, ev.pair_candidate, iw, sw))
            for m in BOOT_METRICS:
                out[m][lo:lo + batch] += vals[m] / len(runs)
    return out


def interval(values, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates left out)."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def paired_difference(a: dict, b: dict, metric: str) -> dict:
    """The interval of ``a - b`` over the same replicates, and its verdict for ``a``: ``win``
    or ``loss`` when the interval excludes 0 (on the better or worse side of ``metric``),
    ``tie`` when it holds 0. The point estimate is the callers' (the difference of the two
    predictors' point estimates)."""
    diff = np.asarray(a[metric]) - np.asarray(b[metric])
    lo, hi = interval(diff)
    better = -1 if metric in LOWER_IS_BETTER else 1
    verdict = "tie"
    if lo > 0 or hi < 0:
        verdict = "win" if (lo > 0) == (better > 0) else "loss"
    return {"lo": lo, "hi": hi, "verdict": verdict}


# --------------------------------------------------------------------------- rated against predicted song VA


class FixedVA:
    """A predictor that places each image and each song at one VA (rows = the EvalSet's VA
    tables) and scores a pair by Eq. 1 between them: what the deployed recommender does."""

    def __init__(self, image_va, song_va):
        self.image_va, self.song_va = np.asarray(image_va, float), np.asarray(song_va, float)

    def pairs(self, img_rows, song_rows):
        iva, mva = self.image_va[img_rows], self.song_va[song_rows]
        return similarity(iva[:, 0], iva[:, 1], mva[:, 0], mva[:, 1]), iva, mva

    def item_va(self, img_rows, song_rows):
        return self.image_va[img_rows], self.song_va[song_rows]

    def matrix(self, img_rows, song_rows):
        iva, mva = self.image_va[img_rows], self.song_va[song_rows]
        return similarity(iva[:, None, 0], iva[:, None, 1], mva[None, :, 0], mva[None, :, 1])


SONG_VA_ARMS = {"rated": "songs with rated VA (only the image arm predicts)",
                "audio": "songs known by their audio alone (both arms predict)"}


def nsg_by_song_va(ev: EvalSet, image_va_pred, song_va_pred, n_boot: int = 1000, seed: int = 0,
                   metric: str = "nsg@10") -> dict:
    """``metric`` (NSG@10) of the recommender on ``ev`` (the cold split's test part: images and
    songs it never saw) as the index ranks: the image's predicted VA (``image_va_pred``, rows of
    ``ev.image_va``) against each song's VA, taken two ways (:data:`SONG_VA_ARMS`):

    * ``rated``: the song's rated VA (``ev.song_va``: the catalog's tag-derived VA), as for a
      song whose index row carries one;
    * ``audio``: the song's VA predicted from its audio (``song_va_pred``), as for a new song.

    Returns ``{arm: {"estimate", "lo", "hi", "n_images", "n_songs"}}`` with two-way bootstrap 95 %
    intervals (images and songs resampled, the same ``n_boot`` draws for both arms, as
    :mod:`imuse_lib.experiments` evaluates), and ``"rated - audio"``: the paired difference."""
    predictors = {"rated": FixedVA(image_va_pred, ev.song_va), "audio": FixedVA(image_va_pred, song_va_pred)}
    draws = draw_resamples(len(ev.query_images), len(ev.candidate_songs), n_boot, seed)
    out, reps = {}, {}
    for arm, pred in predictors.items():
        summary, scored = score(pred, ev, seed=seed)
        reps[arm] = replicates(ev, [scored], draws)
        lo, hi = interval(reps[arm][metric])
        out[arm] = {"estimate": summary[metric], "lo": lo, "hi": hi, "n_images": summary["n_queries"],
                    "n_songs": summary["n_candidates"]}
    diff = paired_difference(reps["rated"], reps["audio"], metric)
    out["rated - audio"] = {"estimate": out["rated"]["estimate"] - out["audio"]["estimate"], **diff}
    return out
