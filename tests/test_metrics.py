"""Metrics of section 5.1 and the baselines, on hand-made cases with known answers."""

import numpy as np
import pandas as pd
import pytest

from imuse_lib import baselines, metrics


def test_mae_rmse_known():
    assert metrics.mae([1, 2, 3], [1, 1, 1]) == pytest.approx(1.0)
    assert metrics.rmse([1, 2, 3], [1, 1, 1]) == pytest.approx(np.sqrt(5 / 3))
    assert metrics.pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert np.isnan(metrics.pearson_r([1, 1, 1], [1, 2, 3]))


def test_ap_at_k_hand_computed():
    # ranked relevance 1,0,1,0,0 with R = 2: P@1 = 1, P@3 = 2/3
    ap = metrics.ap_at_k(np.array([[1, 0, 1, 0, 0]]), [2], ks=(1, 2, 3, 5, 10))[0]
    np.testing.assert_allclose(ap, [1.0, 0.5, (1 + 2 / 3) / 2, (1 + 2 / 3) / 2, (1 + 2 / 3) / 2])
    # relevant item only at rank 2, R = 1: AP@1 = 0, AP@2 = 1/2
    np.testing.assert_allclose(metrics.ap_at_k([[0, 1, 0]], [1], ks=(1, 2, 3))[0], [0, 0.5, 0.5])
    # R larger than k: normalised by k
    np.testing.assert_allclose(metrics.ap_at_k([[1, 1, 0]], [5], ks=(2, 3))[0], [1.0, 2 / 3])
    # relevant beyond the ranked list (R counts all relevant candidates)
    np.testing.assert_allclose(metrics.ap_at_k([[0, 0]], [1], ks=(1, 10))[0], [0, 0])
    assert np.isnan(metrics.ap_at_k([[0, 0]], [0], ks=(1,))[0, 0])


def test_average_precision_from_scores_and_map():
    scores = np.array([0.9, 0.1, 0.8, 0.3])
    relevant = np.array([True, False, False, True])
    # ranking: 0 (rel), 2, 3 (rel), 1 -> AP@4 = (1 + 2/3) / 2
    assert metrics.average_precision_at_k(scores, relevant, 4) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.average_precision_at_k(scores, relevant, 1) == pytest.approx(1.0)
    per = np.array([[1.0, 0.5], [0.0, 0.5], [np.nan, np.nan]])
    np.testing.assert_allclose(metrics.map_at_k(per), [0.5, 0.5])


def test_ties_are_broken_at_random_not_by_order():
    rng = np.random.default_rng(0)
    firsts = [metrics.rank_order(np.zeros(5), rng)[0] for _ in range(200)]
    assert len(set(firsts)) == 5
    assert list(metrics.rank_order(np.array([0.1, 0.5, 0.3]))) == [1, 2, 0]


def toy_evalset(protocol="paper"):
    # 3 images x 4 songs on a line of VA; every pair is a test pair
    image_va = np.array([[0.1, 0.1], [0.45, 0.45], [0.9, 0.9]])  # no tied best song
    song_va = np.array([[0.1, 0.1], [0.4, 0.4], [0.6, 0.6], [0.9, 0.9]])
    rows = [(i, s) for i in range(3) for s in range(4)]
    sim = [1 - np.hypot(*(image_va[i] - song_va[s])) for i, s in rows]
    frame = pd.DataFrame({"image_id": [f"i{i}" for i, _ in rows], "song_id": [f"s{s}" for _, s in rows],
                          "similarity": sim, "split": "test"})
    frame["group"] = "random"
    best = frame.groupby("image_id").similarity.idxmax()
    frame.loc[best, "group"] = "best"
    return metrics.make_evalset(frame, {f"i{i}": i for i in range(3)}, {f"s{s}": s for s in range(4)},
                                image_va, song_va, protocol)


def test_oracle_is_perfect_and_constant_errs():
    ev = toy_evalset()
    out, per = metrics.score(baselines.oracle(ev.image_va, ev.song_va), ev)
    assert out["mae"] == pytest.approx(0) and out["rmse"] == pytest.approx(0)
    assert out["map_a@10"] == pytest.approx(1) and out["nsg@10"] == pytest.approx(1)
    assert out["ndcg@10"] == pytest.approx(1) and out["rev_nsg@10"] == pytest.approx(1)
    assert out["image_va_mae"] == pytest.approx(0) and out["image_valence_r"] == pytest.approx(1)
    assert out["n_queries_a"] == 3 and out["n_candidates"] == 4
    const = baselines.ConstantSimilarity("c", 0.5)
    out, _ = metrics.score(const, ev)
    np.testing.assert_allclose(out["mae"], np.mean(np.abs(0.5 - ev.pair_similarity)))
    assert np.isnan(out["image_va_mae"])


def test_reversed_predictor_gets_low_map():
    ev = toy_evalset()

    class Reverse:
        def pairs(self, i, s):
            return -ev.pair_similarity, None, None

        def matrix(self, i, s):
            return -ev.true_matrix()

    out, _ = metrics.score(Reverse(), ev)
    # the best pair ranks last of 4: AP@10 = P@4 = 1/4 per image (protocol a, 1 relevant)
    assert out["map_a@10"] == pytest.approx(0.25)
    assert out["map_a@1"] == 0


def test_bootstrap_interval_contains_estimate_and_is_seeded():
    ev = toy_evalset()
    rng = np.random.default_rng(0)
    pred = baselines.ItemVAPredictor("noisy", ev.image_va + rng.normal(0, 0.1, (3, 2)), ev.song_va)
    out, sc = metrics.score(pred, ev)
    draws = metrics.draw_resamples(3, 4, 300, seed=1)
    reps = metrics.replicates(ev, [sc], draws)
    lo, hi = metrics.interval(reps["mae"])
    assert lo <= out["mae"] <= hi
    again = metrics.replicates(ev, [sc], metrics.draw_resamples(3, 4, 300, seed=1))
    np.testing.assert_array_equal(reps["nsg@10"], again["nsg@10"])


def test_cold_candidates_are_test_songs_only():
    ev = toy_evalset("cold")
    np.testing.assert_array_equal(ev.candidate_songs, [0, 1, 2, 3])
    with pytest.raises(ValueError):
        toy_evalset("other")


def test_baselines_constant_ridge_random():
    rng = np.random.default_rng(0)
    image_va, song_va = rng.random((30, 2)), rng.random((20, 2))
    c = baselines.constant(image_va, song_va, np.arange(10), np.arange(5))
    np.testing.assert_allclose(c.image_va[25], image_va[:10].mean(0))
    np.testing.assert_allclose(c.song_va[0], song_va[:5].mean(0))
    # ridge on features linear in VA recovers VA
    w = rng.normal(size=(2, 16))
    feats_i, feats_a = image_va @ w + 0.001 * rng.normal(size=(30, 16)), song_va @ w
    r = baselines.ridge(feats_i, feats_a, image_va, song_va, np.arange(20), np.arange(15))
    assert np.abs(r.image_va[20:] - image_va[20:]).max() < 0.05
    r1 = baselines.random_va(image_va, song_va, np.arange(10), np.arange(5), seed=3)
    r2 = baselines.random_va(image_va, song_va, np.arange(10), np.arange(5), seed=3)
    np.testing.assert_array_equal(r1.image_va, r2.image_va)
    assert set(map(tuple, r1.song_va)) <= set(map(tuple, song_va[:5]))


# --------------------------------------------------------------------------- NSG@k, NDCG@k


def test_nsg_hand_computed():
    true = np.array([[0.9, 0.5, 0.3, 0.1]])  # candidate mean 0.45, oracle top-2 mean 0.7
    assert metrics.nsg_at_k(true, true, k=2)[0] == pytest.approx(1.0)
    assert metrics.nsg_at_k(-true, true, k=2)[0] == pytest.approx((0.2 - 0.45) / 0.25)  # reversed: -1
    # a known permutation: the prediction puts 0.9 first and 0.3 second -> top-2 mean 0.6
    pred = np.array([[4.0, 1.0, 3.0, 2.0]])
    assert metrics.nsg_at_k(pred, true, k=2)[0] == pytest.approx((0.6 - 0.45) / 0.25)


def test_ndcg_hand_computed():
    true = np.array([[0.9, 0.5, 0.3, 0.1]])  # gains max(0, S - 0.45): 0.45, 0.05, 0, 0
    pred = np.array([[1.0, 2.0, 0.0, -1.0]])  # ranks 0.5 first, then 0.9
    dcg = 0.05 + 0.45 / np.log2(3)
    idcg = 0.45 + 0.05 / np.log2(3)
    assert metrics.ndcg_at_k(pred, true, k=2)[0] == pytest.approx(dcg / idcg)
    assert metrics.ndcg_at_k(true, true, k=2)[0] == pytest.approx(1.0)


def test_random_ranking_scores_zero_in_expectation_and_oracle_one():
    rng = np.random.default_rng(0)
    true = rng.random((2000, 50))
    nsg = metrics.nsg_at_k(rng.random(true.shape), true, k=10)
    assert abs(nsg.mean()) < 0.02
    assert metrics.nsg_at_k(true, true, k=10) == pytest.approx(np.ones(2000))
    const = metrics.nsg_at_k(np.zeros_like(true), true, k=10, rng=rng)  # ties broken at random
    assert abs(const.mean()) < 0.02


def _synthetic_evalset(ni=40, ns=30, per_image=6, seed=0):
    rng = np.random.default_rng(seed)
    iva, sva = rng.random((ni, 2)), rng.random((ns, 2))
    rows = [(i, s) for i in range(ni) for s in rng.choice(ns, per_image, replace=False)]
    frame = pd.DataFrame({"image_id": [f"i{i}" for i, _ in rows], "song_id": [f"s{s}" for _, s in rows],
                          "split": "test"})
    frame["similarity"] = [1 - np.hypot(*(iva[i] - sva[s])) for i, s in rows]
    frame["group"] = "random"
    frame.loc[frame.groupby("image_id").similarity.nlargest(2).index.get_level_values(1), "group"] = "best"
    ev = metrics.make_evalset(frame, {f"i{i}": i for i in range(ni)}, {f"s{s}": s for s in range(ns)},
                              iva, sva, "paper")
    noisy = baselines.ItemVAPredictor("noisy", iva + rng.normal(0, 0.15, iva.shape),
                                      sva + rng.normal(0, 0.15, sva.shape))
    return ev, noisy


def test_point_metrics_agree_with_the_plain_definitions():
    ev, pred = _synthetic_evalset()
    out, _ = metrics.score(pred, ev, seed=3)
    s_pred = pred.matrix(ev.query_images, ev.candidate_songs)
    true = ev.true_matrix()
    assert out["nsg@10"] == pytest.approx(metrics.nsg_at_k(s_pred, true, 10).mean())
    assert out["ndcg@10"] == pytest.approx(metrics.ndcg_at_k(s_pred, true, 10).mean())
    assert out["rev_nsg@10"] == pytest.approx(metrics.nsg_at_k(s_pred.T, true.T, 10).mean())
    # quadrant share: of the predicted top 10, those in the query's true quadrant
    top = np.argsort(-s_pred, axis=1)[:, :10]
    assert out["quadrant@10"] == pytest.approx(np.take_along_axis(ev.quadrant_match(), top, 1).mean())


def test_resampled_replicate_equals_explicitly_duplicated_items():
    """A replicate that draws an image or song twice scores like a data set holding two copies."""
    ev, pred = _synthetic_evalset()
    _, sc = metrics.score(pred, ev, seed=0)
    draws = metrics.draw_resamples(len(ev.query_images), len(ev.candidate_songs), 3, seed=5)
    reps = metrics.replicates(ev, [sc], draws)
    s_pred = pred.matrix(ev.query_images, ev.candidate_songs)  # no ties: random tie-breaks play no part
    true = ev.true_matrix()
    for b in range(3):
        qi = np.repeat(np.arange(len(ev.query_images)), draws.images[b])
        cj = np.repeat(np.arange(len(ev.candidate_songs)), draws.songs[b])
        nsg = metrics.nsg_at_k(s_pred[np.ix_(qi, cj)], true[np.ix_(qi, cj)], 10)
        assert reps["nsg@10"][b] == pytest.approx(np.nanmean(nsg))
        ndcg = metrics.ndcg_at_k(s_pred[np.ix_(qi, cj)], true[np.ix_(qi, cj)], 10)
        assert reps["ndcg@10"][b] == pytest.approx(np.nanmean(ndcg))
        rev = metrics.nsg_at_k(s_pred[np.ix_(qi, cj)].T, true[np.ix_(qi, cj)].T, 10)
        assert reps["rev_nsg@10"][b] == pytest.approx(np.nanmean(rev))
        # pairs follow their image and song: MAE over the duplicated pairs
        w = draws.images[b][ev.pair_query] * draws.songs[b][ev.pair_candidate]
        err = np.abs(sc.pair_pred - ev.pair_similarity)
        assert reps["mae"][b] == pytest.approx(np.repeat(err, w).mean())
        # MAP@10 (a): each image copy's AP over its own pairs, weighted by its songs' mean multiplicity
        aps, weights = [], []
        for q in qi:
            idx = np.flatnonzero(ev.pair_query == q)
            rel = ev.pair_best[idx]
            if rel.any():
                ranked = rel[np.argsort(-sc.pair_pred[idx], kind="stable")]
                aps.append(metrics.ap_at_k(ranked[None], rel.sum(), ks=(10,))[0, 0])
                weights.append(draws.songs[b][ev.pair_candidate[idx]].mean())
        assert reps["map_a@10"][b] == pytest.approx(np.average(aps, weights=weights))


def test_two_way_bootstrap_covers_at_the_nominal_rate_and_image_only_does_not():
    """Errors with a strong song effect: the image-only bootstrap ignores that the songs are a
    sample too, and its intervals are too narrow; the two-way one covers about 95 %."""
    from scipy.stats import norm

    mu, sd_img, sd_song, sd_noise = 0.2, 0.04, 0.12, 0.04
    sigma = np.sqrt(sd_img ** 2 + sd_song ** 2 + sd_noise ** 2)
    truth = sigma * np.sqrt(2 / np.pi) * np.exp(-mu ** 2 / (2 * sigma ** 2)) + mu * (1 - 2 * norm.cdf(-mu / sigma))
    rng = np.random.default_rng(42)
    ni, ns, trials = 30, 20, 150
    q, c = np.repeat(np.arange(ni), ns), np.tile(np.arange(ns), ni)
    covered = {"two-way": 0, "image-only": 0}
    for t in range(trials):
        err = mu + rng.normal(0, sd_img, ni)[q] + rng.normal(0, sd_song, ns)[c] + rng.normal(0, sd_noise, ni * ns)
        for name, songs in (("two-way", True), ("image-only", False)):
            d = metrics.draw_resamples(ni, ns, 300, seed=t, resample_songs=songs)
            lo, hi = metrics.interval(metrics.pair_error_replicates(err, q, c, d.images, d.songs)["mae"])
            covered[name] += lo <= truth <= hi
    assert covered["two-way"] / trials >= 0.88
    assert covered["image-only"] / trials <= 0.75


def test_paired_difference_verdicts():
    a = {"nsg@10": np.linspace(0.5, 0.6, 100), "mae": np.linspace(0.10, 0.12, 100)}
    b = {"nsg@10": np.linspace(0.3, 0.4, 100), "mae": np.linspace(0.20, 0.22, 100)}
    assert metrics.paired_difference(a, b, "nsg@10")["verdict"] == "win"
    assert metrics.paired_difference(a, b, "mae")["verdict"] == "win"  # lower is better
    assert metrics.paired_difference(b, a, "nsg@10")["verdict"] == "loss"
    noisy = {"nsg@10": np.random.default_rng(0).normal(0, 1, 100)}
    assert metrics.paired_difference(noisy, {"nsg@10": np.zeros(100)}, "nsg@10")["verdict"] == "tie"


def test_quadrants_and_sd_ratio():
    np.testing.assert_array_equal(metrics.va_quadrant([[0.7, 0.7], [0.2, 0.8], [0.1, 0.1], [0.9, 0.3]]), [1, 2, 3, 4])
    assert metrics.sd_ratio([1, 2, 3], [2, 4, 6]) == pytest.approx(0.5)
    assert np.isnan(metrics.sd_ratio([1, 2], [1, 1]))


def test_new_baselines_bracket():
    ev, _ = _synthetic_evalset(60, 50)
    rows = np.arange(60), np.arange(50)
    quad = baselines.quadrant_only(ev.image_va, ev.song_va, *rows)
    assert set(map(tuple, np.round(quad.image_va, 6))) <= set(map(tuple, np.round(
        [quad.info["image_centres"][str(q)] for q in (1, 2, 3, 4)], 6)))
    agn = baselines.image_agnostic(ev.image_va, ev.song_va, rows[0])
    m = agn.matrix(ev.query_images, ev.candidate_songs)
    assert (m == m[0]).all()  # the same ranking for every image
    out = {name: metrics.score(p, ev)[0] for name, p in [
        ("quadrant", quad), ("agnostic", agn), ("lookup", baselines.lookup(ev.image_va, ev.song_va, *rows)),
        ("oracle", baselines.oracle(ev.image_va, ev.song_va))]}
    assert out["lookup"]["nsg@10"] == pytest.approx(1.0)  # every item seen in training
    assert 0.3 < out["quadrant"]["nsg@10"] < 1.0
    assert abs(out["agnostic"]["rev_nsg@10"]) < 0.2  # it knows nothing about images
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 8))
    k = baselines.knn(ev.image_va @ w, ev.song_va @ w, ev.image_va, ev.song_va, np.arange(40), np.arange(30))
    assert np.abs(k.image_va[40:] - ev.image_va[40:]).mean() < 0.15


def test_cold_split_candidates_are_every_held_out_song(mirror):
    from imuse_lib import data, pairs

    images, songs = data.load_images(), data.load_catalog()
    p = pairs.make_pairs("cold")
    roles = pairs.item_roles("cold", images, songs)
    image_row = {str(i): r for r, i in enumerate(images.image_id)}
    song_row = {str(s): r for r, s in enumerate(songs.song_id)}
    va_i, va_s = images[["valence", "arousal"]].to_numpy(), songs[["valence", "arousal"]].to_numpy()
    for part in ("test", "val"):
        ev = metrics.make_evalset(p, image_row, song_row, va_i, va_s, "cold", part, roles=roles)
        held_out = sorted(song_row[s] for s in roles.song_ids(part))
        assert list(ev.candidate_songs) == held_out
        assert len(set(ev.pair_song)) < len(held_out)  # more held-out songs than songs in held-out pairs
        assert list(ev.query_images) == sorted(image_row[i] for i in roles.image_ids(part))
    paper = metrics.make_evalset(pairs.make_pairs("paper"), image_row, song_row, va_i, va_s, "paper")
    assert len(paper.candidate_songs) == 500
