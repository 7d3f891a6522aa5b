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


def test_nearest_relevance_includes_ties():
    s = np.array([[0.9, 0.8, 0.8, 0.1]])
    np.testing.assert_array_equal(metrics.nearest_relevance(s, 2), [[True, True, True, False]])


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
    assert out["map_a@10"] == pytest.approx(1) and out["map_b@10"] == pytest.approx(1)
    assert out["image_va_mae"] == pytest.approx(0) and out["image_valence_r"] == pytest.approx(1)
    assert out["n_queries_a"] == 3 and out["n_candidates_b"] == 4
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
    out, per = metrics.score(pred, ev)
    ci = metrics.bootstrap([per], n_boot=300, seed=1)
    assert ci["mae"][0] <= out["mae"] <= ci["mae"][1]
    assert ci == metrics.bootstrap([per], n_boot=300, seed=1)
    assert ci["map_b"][0] <= out["map_b@10"] <= ci["map_b"][1]


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
