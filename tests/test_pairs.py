"""Eq. 1, the best/worst/random sampling and the two split protocols, on small synthetic data."""

import numpy as np
import pandas as pd
import pytest

from imuse_lib import pairs


def synthetic(n_images=40, n_songs=60, seed=0):
    rng = np.random.default_rng(seed)
    images = pd.DataFrame({"image_id": [f"img{i}" for i in range(n_images)],
                           "category": rng.choice(["Animal", "Scene", "Person"], n_images),
                           "valence": rng.random(n_images), "arousal": rng.random(n_images)})
    songs = pd.DataFrame({"song_id": [f"s{j}" for j in range(n_songs)],
                          "quadrant": [f"Q{1 + j % 4}" for j in range(n_songs)],
                          "valence": rng.random(n_songs), "arousal": rng.random(n_songs)})
    return images, songs


def test_similarity_is_eq1():
    assert pairs.similarity(0.5, 0.5, 0.5, 0.5) == 1.0
    assert pairs.similarity(0.0, 0.0, 1.0, 1.0) == pytest.approx(1 - np.sqrt(2))
    assert pairs.similarity(0.2, 0.9, 0.5, 0.5) == pytest.approx(1 - np.hypot(0.3, 0.4))
    # broadcasts over arrays
    out = pairs.similarity(np.array([0.0, 1.0]), 0.0, np.array([[0.0], [1.0]]), 0.0)
    np.testing.assert_allclose(out, [[1, 0], [0, 1]])


def test_counts_and_groups_are_really_best_and_worst():
    images, songs = synthetic()
    p = pairs.form_pairs(images, songs, seed=1)
    assert len(p) == 40 * 15
    assert p.groupby("image_id").size().eq(15).all()
    assert p.groupby(["image_id", "group"]).size().eq(5).all()
    sim = pd.DataFrame(pairs.similarity_matrix(images, songs), index=images.image_id, columns=songs.song_id)
    for image_id, grp in p.groupby("image_id"):
        row = sim.loc[image_id].sort_values(ascending=False)
        best = set(grp[grp.group == "best"].song_id)
        worst = set(grp[grp.group == "worst"].song_id)
        rand = set(grp[grp.group == "random"].song_id)
        assert best == set(row.index[:5])
        assert worst == set(row.index[-5:])
        assert not rand & (best | worst) and len(rand) == 5
        np.testing.assert_allclose(grp.similarity, sim.loc[image_id, grp.song_id].to_numpy())


def test_same_seed_same_pairs_other_seed_other_random():
    images, songs = synthetic()
    a, b = pairs.form_pairs(images, songs, seed=7), pairs.form_pairs(images, songs, seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = pairs.form_pairs(images, songs, seed=8)
    assert a[a.group != "random"].equals(c[c.group != "random"])
    assert not a[a.group == "random"].song_id.equals(c[c.group == "random"].song_id)


def test_paper_split_is_75_25_and_stratified_by_song():
    images, songs = synthetic()
    p = pairs.split_pairs(pairs.form_pairs(images, songs, seed=1), "paper", seed=3)
    assert set(p.split) == {"train", "val", "test"}
    assert (p.split == "test").sum() == round(0.25 * len(p))
    assert (p.split == "val").sum() == round(0.15 * len(p))
    # the validation carve-out leaves the test draw as it was
    two_way = pairs.split_pairs(pairs.form_pairs(images, songs, seed=1), "paper", seed=3, val_size=0)
    assert set(two_way.split) == {"train", "test"}
    assert (two_way.split == "test").equals(p.split == "test")
    per_song = p.groupby("song_id").split.apply(lambda s: (s == "test").sum())
    quota = p.groupby("song_id").size() * 0.25
    assert ((per_song - quota).abs() < 1).all()  # each song split 75/25 up to rounding
    again = pairs.split_pairs(pairs.form_pairs(images, songs, seed=1), "paper", seed=3)
    assert p.split.equals(again.split)


def test_cold_split_never_leaks():
    images, songs = synthetic(80, 80)
    p = pairs.split_pairs(pairs.form_pairs(images, songs, seed=1), "cold", seed=5, images=images, songs=songs)
    train, test, val = p[p.split == "train"], p[p.split == "test"], p[p.split == "val"]
    assert len(test) > 0 and len(val) > 0 and set(p.split) <= {"train", "val", "test", "none"}
    for a, b in ((train, test), (train, val), (val, test)):
        assert not set(a.image_id) & set(b.image_id)
        assert not set(a.song_id) & set(b.song_id)
    roles = pairs.item_roles("cold", images, songs, seed=5)
    assert set(test.image_id) <= set(roles.image_ids("test")) and set(val.song_id) <= set(roles.song_ids("val"))
    assert not set(roles.image_ids("val")) & set(roles.image_ids("test"))
    # 25 % and 15 % of 80, rounded per stratum
    assert abs(len(roles.image_ids("test")) - 20) <= 2 and abs(len(roles.image_ids("val")) - 12) <= 2
    # the test items are those of the two-way split of the same seed
    two_way = pairs.split_pairs(pairs.form_pairs(images, songs, seed=1), "cold", seed=5, images=images,
                                songs=songs, val_size=0)
    assert set(two_way[two_way.split == "test"].image_id) == set(test.image_id)
    # a 'none' pair mixes a held-out side with a training side
    test_imgs = set(p.image_id) - set(train.image_id)
    none = p[p.split == "none"]
    img_role, song_role = none.image_id.map(roles.images), none.song_id.map(roles.songs)
    assert (img_role != song_role).all() and test_imgs >= set(test.image_id)


def test_split_summary_and_checks():
    images, songs = synthetic()
    p = pairs.form_pairs(images, songs, seed=1)
    paper = pairs.split_pairs(p, "paper", seed=1)
    cold = pairs.split_pairs(p, "cold", seed=1, images=images, songs=songs)
    stats = pairs.split_summary({"paper": paper, "cold": cold})
    assert list(stats.index.names) == ["protocol", "split"]
    # the cold split drops the pairs that join a held-out item to a training one ("none")
    assert set(stats.index) == {(s, part) for s in ("paper", "cold") for part in ("train", "val", "test")} \
        | {("cold", "none")}
    for name, frame in (("paper", paper), ("cold", cold)):
        assert stats.loc[name].pairs.sum() == len(frame)
        test = frame[frame.split == "test"]
        assert stats.loc[(name, "test"), "images"] == test.image_id.nunique()
        assert stats.loc[(name, "test"), list(pairs.GROUPS)].sum() == len(test)
    share = pairs.song_test_share(paper)
    assert share.index.is_unique and set(share.index) == set(paper.song_id)
    song = share.index[0]
    assert share[song] == pytest.approx((paper[paper.song_id == song].split == "test").mean())
    assert pairs.cold_leak(cold) == 0
    assert pairs.cold_leak(paper) > 0  # the paper protocol holds out pairs, not items


def test_unknown_protocol_is_refused():
    images, songs = synthetic()
    with pytest.raises(ValueError, match="split protocol"):
        pairs.split_pairs(pairs.form_pairs(images, songs), "random")


def test_real_pairs(mirror):
    p = pairs.make_pairs("paper", seed=2023)
    assert len(p) == 13_500 and p.image_id.nunique() == 900
    assert (p.split == "test").sum() == 3375
    assert p.similarity.between(1 - np.sqrt(2), 1).all()
    means = p.groupby("group").similarity.mean()
    assert means["best"] > means["random"] > means["worst"]
