"""The deployed VA model (imuse_lib.va_model): fitting, tuning on validation only,
calibration, persistence and its torch image pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imuse_lib import baselines, config, deployed, recommend, va_model
from imuse_lib.errors import ImuseError, ModelMismatchError
from imuse_lib.pairs import ItemRoles
from imuse_lib.index import building as index_building


def _synthetic(n, nonlinear, rng, d=8):
    x = rng.standard_normal((n, d))
    if nonlinear:
        y = np.c_[np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2, np.cos(x[:, 2] * x[:, 3])]
    else:
        y = np.c_[x[:, 0] + 0.5 * x[:, 1], x[:, 2] - x[:, 3]]
    return x, 0.5 + 0.1 * y + 0.02 * rng.standard_normal(y.shape)


def _test_mse(nonlinear):
    rng = np.random.default_rng(1)
    (x, y), (xv, yv), (xt, yt) = (_synthetic(n, nonlinear, rng) for n in (300, 100, 300))
    best = va_model.tune_arm([x], y, [xv], yv, ("s",), n_trials=8, seed=0)
    chosen = va_model.fit_arm([x], y, ("s",), best["weights"], best["kernel"], best["g"])
    ridge = baselines.fit_ridge(x, y)
    mse = lambda p: float(np.mean((p - yt) ** 2))  # noqa: E731
    return mse(chosen.predict([xt])), mse(ridge.predict(xt)), best


def test_beats_ridge_where_the_signal_is_nonlinear():
    model, ridge, best = _test_mse(nonlinear=True)
    assert best["kernel"] == "rbf"
    assert model < 0.7 * ridge


def test_ties_ridge_where_the_signal_is_linear():
    model, ridge, _ = _test_mse(nonlinear=False)
    assert model == pytest.approx(ridge, rel=0.1)


def test_leave_one_out_and_calibration_match_brute_force():
    rng = np.random.default_rng(2)
    x, y = _synthetic(60, True, rng, d=4)
    arm = va_model.fit_arm([x], y, ("s",), None, "rbf", 1.0)
    # refit without each item, with the penalties the closed form chose
    loo = np.zeros_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        sub = va_model.ArmModel(("s",), np.ones(1), "rbf", 1.0, arm.mean, arm.sd)
        xs = sub.transform([x[keep]])
        k = va_model.arm._kernel(xs, xs, "rbf", sub.gamma)
        kc = k - k.mean(0)[None] - k.mean(1)[:, None] + k.mean()
        for j in range(2):
            yc = y[keep, j] - y[keep, j].mean()
            dual = np.linalg.solve(kc + arm.lambdas[j] * np.eye(len(xs)), yc)
            kx = va_model.arm._kernel(sub.transform([x[i:i + 1]]), xs, "rbf", sub.gamma)
            loo[i, j] = y[keep, j].mean() + float(((kx - k.mean(0)) @ dual)[0])
    from imuse_lib.metrics import pearson_r

    for j in range(2):
        # the closed form standardises with all items; the refits too (same arm.mean/sd), so
        # the only approximation is the unpenalised mean: r agrees closely
        assert pearson_r(loo[:, j], y[:, j]) == pytest.approx(arm.loo_r[j], abs=0.02)
        assert arm.scale[j] == pytest.approx(y[:, j].std() / (loo[:, j] - loo[:, j].mean()).std(), rel=0.05)


def test_calibration_restores_the_held_out_spread():
    rng = np.random.default_rng(3)
    (x, y), (xt, yt) = _synthetic(600, False, rng), _synthetic(600, False, rng)
    x, xt = x + rng.standard_normal(x.shape), xt + rng.standard_normal(xt.shape)  # noisy inputs: r ~ 0.6
    raw = va_model.fit_arm([x], y, ("s",), None, "linear", calibrate=False).predict([xt])
    cal = va_model.fit_arm([x], y, ("s",), None, "linear").predict([xt])
    ratio = lambda p: p.std(0) / yt.std(0)  # noqa: E731
    assert (ratio(raw) < 0.8).all()
    assert np.all(np.abs(ratio(cal) - 1) < 0.15)


# --------------------------------------------------------------------------- the split


def _fake_world(rng, n_img=120, n_song=80):
    images = pd.DataFrame({"image_id": [f"I{i:03d}" for i in range(n_img)]})
    songs = pd.DataFrame({"song_id": [f"S{i:03d}" for i in range(n_song)]})
    xi, yi = _synthetic(n_img, True, rng)
    xs, ys = _synthetic(n_song, False, rng)
    images[["valence", "arousal"]] = yi
    songs[["valence", "arousal"]] = ys
    roles = ItemRoles("cold", pd.Series(np.resize(["train", "train", "val", "test"], n_img), index=images.image_id),
                      pd.Series(np.resize(["train", "train", "val", "test"], n_song), index=songs.song_id))
    blocks = {"image": va_model.Blocks(list(images.image_id), ("mobilenet_v2",), [xi], {}),
              "audio": va_model.Blocks(list(songs.song_id), ("musicnn",), [xs], {})}
    return images, songs, roles, blocks


def test_model_choice_never_reads_the_test_labels(monkeypatch):
    images, songs, roles, blocks = _fake_world(np.random.default_rng(4))
    monkeypatch.setattr(va_model.fitting, "load_blocks", lambda sources, arm, **kw: blocks[arm])
    first = va_model.fit(("mobilenet_v2",), ("musicnn",), roles, images=images, songs=songs, n_trials=6)
    noisy_i, noisy_s = images.copy(), songs.copy()
    rng = np.random.default_rng(99)
    ti = noisy_i.image_id.map(roles.images) == "test"
    ts = noisy_s.song_id.map(roles.songs) == "test"
    noisy_i.loc[ti, ["valence", "arousal"]] = rng.random((ti.sum(), 2))
    noisy_s.loc[ts, ["valence", "arousal"]] = rng.random((ts.sum(), 2))
    second = va_model.fit(("mobilenet_v2",), ("musicnn",), roles, images=noisy_i, songs=noisy_s, n_trials=6)
    assert first.describe()["image"] == second.describe()["image"]
    assert first.describe()["audio"] == second.describe()["audio"]
    np.testing.assert_array_equal(first.predict_images(), second.predict_images())
    np.testing.assert_array_equal(first.predict_songs(), second.predict_songs())
    # and validation labels do matter (the check above is not vacuous)
    vi = noisy_i.image_id.map(roles.images) == "val"
    noisy_i.loc[vi, ["valence", "arousal"]] = rng.random((vi.sum(), 2))
    third = va_model.fit(("mobilenet_v2",), ("musicnn",), roles, images=noisy_i, songs=noisy_s, n_trials=6)
    assert not np.array_equal(first.predict_images(), third.predict_images())


def test_save_load_round_trip_and_tamper_check(tmp_path, monkeypatch):
    images, songs, roles, blocks = _fake_world(np.random.default_rng(5))
    monkeypatch.setattr(va_model.fitting, "load_blocks", lambda sources, arm, **kw: blocks[arm])
    model = va_model.fit(("mobilenet_v2",), ("musicnn",), roles, images=images, songs=songs, n_trials=4)
    path = model.save(tmp_path / "m.npz")
    assert va_model.is_va_model_file(path)
    back = va_model.load(path)
    back._image_blocks, back._audio_blocks = blocks["image"], blocks["audio"]
    np.testing.assert_allclose(back.predict_images(), model.predict_images())
    np.testing.assert_allclose(back.predict_songs(), model.predict_songs())
    assert back.fingerprint() == model.fingerprint()
    with np.load(path) as z:
        arrays = dict(z)
    arrays["image_coef"] = arrays["image_coef"] * 1.01
    with open(tmp_path / "bad.npz", "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        va_model.load(tmp_path / "bad.npz")
    with pytest.raises(ModelMismatchError, match="feature blocks"):
        back.image.predict([])


def test_image_pipeline_module_matches_the_arm(tmp_path):
    """The torch path (RGB in [0, 1] -> VA) equals the numpy arm on the same images' features."""
    torch = pytest.importorskip("torch")
    from imuse_lib import data, features, media
    from imuse_lib.models import descriptors

    frame = data.load_images().head(12)
    every = ("mobilenet_v2", "mobilenet_v2_mid", "image_stats", "efficientnet_lite0", "efficientnet_lite0_mid")
    raw_t = descriptors.build_image_stats().eval_transform  # RGB in [0, 1]
    rgb = torch.stack([raw_t(media.load_image(p)) for p in frame.path])
    features_of = {s: features.embed_images(features.source_backbone(s), list(frame.path)).astype(np.float64)
                   for s in every}
    y = frame[["valence", "arousal"]].to_numpy(float)
    # every source; and a network's intermediate layer without its last one (a trunk cut short)
    for sources in (every, ("efficientnet_lite0_mid", "image_stats"), ("image_stats", "mobilenet_v2_mid")):
        blocks = [features_of[s] for s in sources]
        for kernel in ("rbf", "linear"):
            arm = va_model.fit_arm(blocks, y, sources, [1.0, 0.7, 1.3, 0.9, 1.1][: len(sources)], kernel, 0.8)
            model = va_model.VAModel(arm, arm, {})
            with torch.inference_mode():
                got = model.image_pipeline_module()(rgb).numpy()
            np.testing.assert_allclose(got, arm.predict(blocks), atol=2e-3, err_msg=f"{sources} {kernel}")


# --------------------------------------------------------------------------- behind `imuse recommend`


@pytest.fixture(scope="module")
def real_image_arm():
    """An image arm on real MobileNetV2 + image-statistics features of 16 OASIS images."""
    from imuse_lib import data, features

    frame = data.load_images().sort_values("valence").iloc[np.linspace(0, 899, 16).astype(int)]
    sources = ("mobilenet_v2", "image_stats")
    blocks = [features.embed_images(features.source_backbone(s), list(frame.path)).astype(np.float64)
              for s in sources]
    arm = va_model.fit_arm(blocks, frame[["valence", "arousal"]].to_numpy(float), sources, None, "linear")
    return arm, frame


def test_recommender_ranks_by_eq1_and_images_with_different_va_get_different_songs(tmp_path, real_image_arm):

    arm, frame = real_image_arm
    rng = np.random.default_rng(6)
    n_songs = 40
    song_x = rng.standard_normal((n_songs, 5))
    song_y = 0.5 + 0.15 * np.tanh(song_x[:, :2])
    audio = va_model.fit_arm([song_x], song_y, ("audio_descriptors",), None, "linear")
    model = deployed.VADeployedModel.from_va(va_model.VAModel(arm, audio, {"split": "cold"}))
    catalog = pd.DataFrame({"song_id": [f"S{i:02d}" for i in range(n_songs)], "artist": "a",
                            "title": [f"t{i}" for i in range(n_songs)]})
    image_feats = np.concatenate([model.embed_image(p) for p in frame.path])
    images = frame[["image_id", "category", "path"]].reset_index(drop=True)
    path = index_building.build_index(model, tmp_path / "idx.sqlite", catalog, song_x, images, image_feats,
                                 progress=False)
    rec = recommend.Recommender.load(model, path)
    pred = arm.predict(np.split(image_feats, [1280], axis=1))
    far = np.unravel_index(np.argmax(np.hypot(*(pred[:, None] - pred[None]).transpose(2, 0, 1))), (16, 16))
    tops = []
    for i in far:
        res = rec.recommend(frame.path.iloc[i], top=5)
        np.testing.assert_allclose(res.query_va, pred[i], atol=2e-3)  # the query path = the stored path
        song_va = audio.predict([song_x])
        sim = 1 - np.hypot(song_va[:, 0] - res.query_va[0], song_va[:, 1] - res.query_va[1])
        assert list(res.items.song_id) == [catalog.song_id[j] for j in np.argsort(-sim, kind="stable")[:5]]
        tops.append(set(res.items.song_id))
    assert tops[0] != tops[1]
    # a saved VA model is what load_deployed returns, and the index accepts it
    saved = model.va.save(tmp_path / "va.npz")
    again = deployed.load_deployed(saved)
    assert isinstance(again, deployed.VADeployedModel) and again.fingerprint == model.fingerprint


def test_the_deployed_va_model_is_the_default(tmp_path, monkeypatch):

    images, songs, roles, blocks = _fake_world(np.random.default_rng(8))
    monkeypatch.setattr(va_model.fitting, "load_blocks", lambda sources, arm, **kw: blocks[arm])
    saved = va_model.fit(("mobilenet_v2",), ("musicnn",), roles, images=images, songs=songs,
                         n_trials=3).save(tmp_path / "va.npz")
    monkeypatch.setattr(va_model, "default_model_path", lambda: saved)
    assert isinstance(deployed.load_deployed(), deployed.VADeployedModel)
    assert deployed.load_deployed().label().startswith("factorised")  # what the CLI reads


def test_part_metrics_oracle_and_shrunk_predictions():
    images, songs, roles, _ = _fake_world(np.random.default_rng(7))
    songs["quadrant"] = [f"Q{q}" for q in __import__("imuse_lib.metrics", fromlist=["x"]).va_quadrant(
        songs[["valence", "arousal"]].to_numpy())]
    iva, sva = images[["valence", "arousal"]].to_numpy(), songs[["valence", "arousal"]].to_numpy()
    oracle = va_model.part_metrics(iva, sva, images, songs, roles, "test")
    assert oracle["nsg@10"] == pytest.approx(1) and oracle["rev_nsg@10"] == pytest.approx(1)
    assert oracle["song_4q_acc"] == 1 and oracle["image_r_v"] == pytest.approx(1)
    shrunk = va_model.part_metrics(0.5 + 0.5 * (iva - 0.5), sva, images, songs, roles, "test")
    assert shrunk["image_sd_ratio_v"] == pytest.approx(0.5) and shrunk["image_r_a"] == pytest.approx(1)
    assert oracle["n_images"] == (images.image_id.map(roles.images) == "test").sum()


def test_sequential_ask_and_tell_is_optunas_own_sequential_search():
    """tune_arm asks and tells trials itself (so that a batch can run on Ray); with batch 1 it
    is exactly Optuna's study.optimize with the same seed and starting trials."""
    import optuna

    rng = np.random.default_rng(1)
    x, xv = [rng.normal(size=(60, 4)), rng.normal(size=(60, 2))], [rng.normal(size=(25, 4)), rng.normal(size=(25, 2))]
    y, yv = 0.5 + 0.2 * np.tanh(x[0][:, :2]), 0.5 + 0.2 * np.tanh(xv[0][:, :2])
    ours = va_model.tune_arm(x, y, xv, yv, ("a", "b"), n_trials=9, seed=5)
    sd = y.std(0)

    def objective(trial):
        kernel = trial.suggest_categorical("kernel", list(va_model.KERNELS))
        weights = [1.0, trial.suggest_float("w_b", 0.1, 3.0, log=True)]
        g = trial.suggest_float("g", 0.05, 4.0, log=True) if kernel == "rbf" else 1.0
        arm = va_model.fit_arm(x, y, ("a", "b"), weights, kernel, g)
        return va_model.fitting._val_error(arm.predict(xv), yv, sd)

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=5))
    for kernel in va_model.KERNELS:
        study.enqueue_trial({"kernel": kernel, "w_b": 1.0, **({"g": 0.5} if kernel == "rbf" else {})})
    study.optimize(objective, n_trials=9)
    assert ours["trials"]["value"].tolist() == [t.value for t in study.trials]
    assert ours["val_loss"] == study.best_value
    with pytest.raises(ImuseError, match="at least 1"):
        va_model.tune_arm(x, y, xv, yv, ("a", "b"), n_trials=2, batch=0)


def _stratified_world(seed):
    images, songs, roles, blocks = _fake_world(np.random.default_rng(seed))
    images["category"] = np.resize(["Animal", "Object", "Person"], len(images))  # 3: not in step with the roles
    songs["quadrant"] = np.resize(["Q1", "Q2", "Q3", "Q4"], len(songs))[np.random.default_rng(seed).permutation(len(songs))]
    return images, songs, roles, blocks


def test_cross_validation_folds_partition_the_non_test_items_by_stratum():
    images, songs, roles, _ = _stratified_world(5)
    folds = [va_model.fold_roles(roles, images, songs, f, 5, seed=3) for f in range(5)]
    for arm, strata in (("images", images.set_index("image_id").category), ("songs", songs.set_index("song_id").quadrant)):
        base = getattr(roles, arm)
        held = [getattr(fr, arm) for fr in folds]
        for fr in held:  # test items keep their role; the others are train or val, nothing else
            assert (fr[base == "test"] == "test").all() and set(fr[base != "test"]) <= {"train", "val"}
        times_val = sum((fr == "val").astype(int) for fr in held)
        assert (times_val[base != "test"] == 1).all() and (times_val[base == "test"] == 0).all()
        for fr in held:  # each fold holds its share of every stratum (dealt in turn: within one)
            per = strata[fr == "val"].value_counts().reindex(strata.unique(), fill_value=0)
            whole = strata[base != "test"].value_counts().reindex(strata.unique())
            assert ((per - whole / 5).abs() <= 1).all()
    again = va_model.fold_roles(roles, images, songs, 2, 5, seed=3)
    assert again.songs.equals(folds[2].songs)  # seeded
    assert not va_model.fold_roles(roles, images, songs, 2, 5, seed=4).songs.equals(folds[2].songs)


def test_ranking_nsg_is_one_for_the_true_va_and_falls_with_the_songs_misplaced():
    images, songs, roles, _ = _stratified_world(9)
    iva, sva = images[["valence", "arousal"]].to_numpy(float), songs[["valence", "arousal"]].to_numpy(float)
    assert va_model.ranking_nsg(iva, sva, images, songs, roles, "test") == pytest.approx(1.0)
    mirrored = 1.0 - sva  # every song placed at the opposite corner: the worst songs ranked first
    assert va_model.ranking_nsg(iva, mirrored, images, songs, roles, "test") < 0
    shrunk = sva.mean(0) + 0.5 * (sva - sva.mean(0))  # a shrink around the centre keeps most of the order
    assert 0.5 < va_model.ranking_nsg(iva, shrunk, images, songs, roles, "test") < 1.0


def test_each_fold_is_tuned_with_its_own_items_hidden():
    images, songs, roles, _ = _stratified_world(7)
    for fold in range(3):
        scored = va_model.fold_roles(roles, images, songs, fold, 3, seed=3)
        inner = va_model.tuning_roles(roles, images, songs, fold, 3, seed=3)
        nxt = va_model.fold_roles(roles, images, songs, (fold + 1) % 3, 3, seed=3)
        for arm in ("images", "songs"):
            s, i, n, base = (getattr(r, arm) for r in (scored, inner, nxt, roles))
            assert (i[s == "val"] == "test").all()  # the scored fold is hidden from the search
            assert (i[n == "val"] == "val").all() and (i[base == "test"] == "test").all()
            assert set(i[(s != "val") & (n != "val") & (base != "test")]) == {"train"}


def test_cross_validation_search_never_reads_the_fold_it_scores(monkeypatch):
    images, songs, roles, blocks = _stratified_world(8)
    monkeypatch.setattr(va_model.fitting, "load_blocks", lambda sources, arm, **kw: blocks[arm])
    idea = [("kernel", ("mobilenet_v2",), ("musicnn",), va_model.KERNELS, True, True)]
    first = va_model.cross_validate(idea, folds=3, n_trials=4, images=images, songs=songs, roles=roles)
    scored = va_model.fold_roles(roles, images, songs, 0, 3, seed=config.SEED)
    moved = songs.copy()  # new labels for the songs fold 0 is scored on
    held = moved.song_id.map(scored.songs) == "val"
    moved.loc[held, ["valence", "arousal"]] = np.random.default_rng(3).random((held.sum(), 2))
    second = va_model.cross_validate(idea, folds=3, n_trials=4, images=images, songs=moved, roles=roles)
    assert first.params[0] == second.params[0]  # fold 0's search did not see them...
    assert first["nsg@10"][0] != second["nsg@10"][0]  # ...its score did
    assert list(first.params[1:]) != list(second.params[1:])  # the other folds' searches do train on them


def test_cross_validation_never_reads_the_test_labels(monkeypatch):
    images, songs, roles, blocks = _stratified_world(6)
    monkeypatch.setattr(va_model.fitting, "load_blocks", lambda sources, arm, **kw: blocks[arm])
    idea = [("kernel", ("mobilenet_v2",), ("musicnn",), va_model.KERNELS, True, True)]
    first = va_model.cross_validate(idea, folds=3, n_trials=4, images=images, songs=songs, roles=roles)
    assert list(first.fold) == [0, 1, 2] and (first.part == "cv").all()
    assert first["rated_nsg@10"].between(-1, 1).all() and first["nsg@10_songs_uncalibrated"].between(-1, 1).all()
    assert first.n_songs.sum() == (roles.songs != "test").sum()  # every non-test song scored once
    noisy = songs.copy()
    test = noisy.song_id.map(roles.songs) == "test"
    noisy.loc[test, ["valence", "arousal"]] = np.random.default_rng(1).random((test.sum(), 2))
    second = va_model.cross_validate(idea, folds=3, n_trials=4, images=images, songs=noisy, roles=roles)
    cols = ["nsg@10", "rev_nsg@10", "song_r_v", "image_r_a"]
    pd.testing.assert_frame_equal(first[cols], second[cols])
    moved = songs.copy()  # and the non-test labels are what it scores on (the check above is not vacuous)
    moved.loc[~test, ["valence", "arousal"]] = np.random.default_rng(2).random(((~test).sum(), 2))
    third = va_model.cross_validate(idea, folds=3, n_trials=4, images=images, songs=moved, roles=roles)
    assert not np.allclose(first["nsg@10"], third["nsg@10"])
