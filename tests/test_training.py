"""Training on a tiny synthetic feature store: the loss falls, a seed fixes the result,
a resumed run equals an uninterrupted one, checkpoints load, predictions fit."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from imuse_lib import baselines, metrics, pairs, training
from imuse_lib.errors import DataError, ModelMismatchError




def synthetic(n_images=60, n_songs=40, k=3, di=24, da=12, seed=0):
    """Features that carry the VA (a random linear map plus noise), with K noisy views."""
    rng = np.random.default_rng(seed)
    images = pd.DataFrame({"image_id": [f"img{i}" for i in range(n_images)],
                           "category": rng.choice(["A", "B"], n_images),
                           "valence": rng.random(n_images), "arousal": rng.random(n_images)})
    songs = pd.DataFrame({"song_id": [f"s{j}" for j in range(n_songs)],
                          "quadrant": [f"Q{1 + j % 4}" for j in range(n_songs)],
                          "valence": rng.random(n_songs), "arousal": rng.random(n_songs)})

    def store(frame, key, d):
        va = frame[["valence", "arousal"]].to_numpy()
        base = va @ rng.normal(size=(2, d)) * 3
        train = base[:, None, :] + 0.1 * rng.normal(size=(len(frame), k, d))
        return SimpleNamespace(ids=list(frame[key]), train=train.astype("float32"), eval=base.astype("float32"),
                               meta={"backbone": f"synthetic-{key}", "weights": {"kind": "random", "init_seed": 0}})

    p = pairs.split_pairs(pairs.form_pairs(images, songs, seed=1, n_best=3, n_worst=3, n_random=3), "paper", seed=1)
    data = training.FeatureData(store(images, "image_id", di), store(songs, "song_id", da), images, songs)
    return data, p


@pytest.fixture(scope="module")
def toy():
    return synthetic()


def cfg(**kw):
    return training.TrainConfig(**{"epochs": 2, "lr": 0.01, "device": "cpu", **kw})


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_two_epochs_lower_the_loss(toy):
    data, p = toy
    res = training.train(data, p, cfg(epochs=2, seed=0))
    ep = res.history["epochs"]
    assert [e["epoch"] for e in ep] == [1, 2]
    first_batches = np.mean(res.history["batches"]["loss"][:3])
    assert ep[-1]["train_loss"] < first_batches
    assert ep[1]["val_loss"] < ep[0]["val_loss"] or ep[1]["train_loss"] < ep[0]["train_loss"]
    n_batches = -(-int((p.split == "train").sum()) // 32)
    assert len(res.history["batches"]["image_loss"]) == 2 * n_batches
    assert all(e["train_seconds"] > 0 for e in ep)


def test_same_seed_same_model_other_seed_other(toy):
    data, p = toy
    a = training.train(data, p, cfg(seed=3)).model
    b = training.train(data, p, cfg(seed=3)).model
    c = training.train(data, p, cfg(seed=4)).model
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0)
    assert not torch.equal(a.image_arm[0].weight, c.image_arm[0].weight)


def test_training_flushes_subnormals_and_restores_the_mode(toy, monkeypatch):
    """Subnormal floats are flushed to zero while training (x86 computes them in microcode: the
    factorised network's late epochs were 7x slower), and the caller's mode is restored."""
    data, p = toy
    seen = []
    real = training.loop._train  # the loop train() runs, in its own module
    monkeypatch.setattr(training.loop, "_train", lambda *a, **k: seen.append(training.subnormals_flushed()) or real(*a, **k))
    assert not training.subnormals_flushed()
    training.train(data, p, cfg(epochs=1))
    assert seen == [True] and not training.subnormals_flushed()
    torch.set_flush_denormal(True)  # a caller who flushes keeps flushing
    try:
        training.train(data, p, cfg(epochs=1))
        assert training.subnormals_flushed()
    finally:
        torch.set_flush_denormal(False)
    # a tensor holding a subnormal meets it as zero in training arithmetic, and as itself outside
    tiny = torch.tensor([1e-39])
    assert (tiny * 1.0).item() != 0.0


@pytest.mark.parametrize("factorised", [False, True])
def test_resume_equals_uninterrupted(toy, tmp_path, factorised):
    data, p = toy
    straight = training.train(data, p, cfg(epochs=3, seed=5, factorised=factorised))
    ck = tmp_path / "ck.pt"
    first = training.train(data, p, cfg(epochs=1, seed=5, factorised=factorised), checkpoint=ck)
    assert first.resumed_from == 0 and ck.exists()
    resumed = training.train(data, p, cfg(epochs=3, seed=5, factorised=factorised), checkpoint=ck)
    assert resumed.resumed_from == 1
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(v, resumed.model.state_dict()[k], rtol=0, atol=0)
    assert resumed.history["batches"]["loss"] == straight.history["batches"]["loss"]
    assert [e["val_loss"] for e in resumed.history["epochs"]] == [e["val_loss"] for e in straight.history["epochs"]]


def test_checkpoint_of_another_run_is_refused(toy, tmp_path):
    data, p = toy
    ck = tmp_path / "ck.pt"
    training.train(data, p, cfg(epochs=1, seed=1), checkpoint=ck)
    with pytest.raises(ModelMismatchError, match="another run"):
        training.train(data, p, cfg(epochs=2, seed=2), checkpoint=ck)
    with pytest.raises(ModelMismatchError, match="past the"):
        training.train(data, p, cfg(epochs=2, seed=1), checkpoint=tmp_path / "x.pt")  # fresh: fine
        training.train(data, p, cfg(epochs=1, seed=1), checkpoint=tmp_path / "x.pt")


def test_save_load_and_predict(toy, tmp_path):
    data, p = toy
    res = training.train(data, p, cfg(epochs=1, seed=0, factorised=True), meta={"config": "toy", "split": "paper"})
    path = training.save_model(tmp_path / "m.pt", res.model, res.meta)
    model, meta = training.load_checkpoint(path)
    assert meta["factorised"] is True and meta["config"] == "toy" and meta["seed"] == 0
    assert meta["image_dim"] == 24 and meta["audio_dim"] == 12
    assert meta["image_backbone"] == "synthetic-image_id" and meta["image_weights"]["kind"] == "random"
    ir, sr = np.array([0, 1, 2]), np.array([3, 4, 5])
    iva, mva = training.predict_pairs(model, data.image_eval, data.audio_eval, ir, sr)
    m = training.predict_matrix(model, data.image_eval, data.audio_eval)
    assert m.shape == (60, 40)
    np.testing.assert_allclose(m[ir, sr], 1 - np.hypot(*(iva - mva).T), atol=1e-5)


def test_joint_matrix_matches_pairwise(toy):
    data, p = toy
    model = training.train(data, p, cfg(epochs=1)).model
    m = training.predict_matrix(model, data.image_eval[:7], data.audio_eval[:5])
    ir, sr = np.repeat(np.arange(7), 5), np.tile(np.arange(5), 7)
    iva, mva = training.predict_pairs(model, data.image_eval, data.audio_eval, ir, sr)
    np.testing.assert_allclose(m.ravel(), 1 - np.hypot(*(iva - mva).T), atol=1e-5)


def test_bad_checkpoint_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ModelMismatchError, match="bad.pt"):
        training.load_checkpoint(bad)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ModelMismatchError, match="not an IMUSE"):
        training.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(DataError, match="imuse train"):
        training.load_checkpoint(tmp_path / "missing.pt")


def test_network_beats_constant_on_learnable_toy(toy):
    """A trained network (features carry VA) must beat the constant predictor's MAE."""
    data, p = toy
    model = training.train(data, p, cfg(epochs=12, seed=0, factorised=True)).model
    ev = metrics.make_evalset(p, data.image_row, data.song_row, data.image_va, data.song_va, "paper")
    net, _ = metrics.score(training.NetworkPredictor(model, data), ev)
    ti, ts = data.rows(p[p.split == "train"])
    const, _ = metrics.score(baselines.constant(data.image_va, data.song_va, ti, ts), ev)
    assert net["mae"] < const["mae"]
    assert net["image_valence_r"] > 0.5


def test_missing_items_and_split_are_errors(toy):
    data, p = toy
    with pytest.raises(DataError, match="split"):
        training.train(data, p.drop(columns="split"), cfg())
    extra = p.copy()
    extra.loc[extra.index[extra.split == "train"][0], "image_id"] = "nope"
    with pytest.raises(ModelMismatchError, match="nope"):
        training.train(data, extra, cfg())


def test_device_auto_and_refused_cuda():
    assert training.resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ModelMismatchError, match="no CUDA"):
            training.resolve_device("cuda")


# --------------------------------------------------------------------------- experiments / CLI


@pytest.fixture
def toy_experiments(monkeypatch, tmp_path):
    """experiments wired to the synthetic store, results under tmp_path."""
    from imuse_lib import experiments, profiles
    from imuse_lib.experiments import inputs

    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path / "results"))
    data, p = synthetic(n_images=48, n_songs=32)
    # the experiments read their inputs through experiments.inputs: replaced there
    monkeypatch.setattr(inputs, "feature_data", lambda i, a: data)
    monkeypatch.setattr(inputs, "split_pairs", lambda split: pairs.split_pairs(
        p.drop(columns="split"), split, 1, images=data.images, songs=data.songs))
    monkeypatch.setattr(inputs, "item_roles", lambda split: pairs.item_roles(split, data.images, data.songs, 1))
    monkeypatch.setattr(inputs, "configurations", lambda prof: [("mobilenet_v2", "musicnn")])
    # the deployed VA model reads the real feature store: not part of these synthetic runs
    monkeypatch.setattr(profiles, "PROFILES", {k: replace(v, deploy_va_model=False)
                                               for k, v in profiles.PROFILES.items()})
    return experiments


def test_train_and_evaluate_write_the_result_files(toy_experiments, capsys):
    from imuse_lib.cli import main

    ex = toy_experiments
    assert main(["train", "--profile", "quick", "--epochs", "2", "--no-timing", "--jobs", "1", "--seeds", "0,1"]) == 0
    root = ex.profile_dir("quick")
    model = root / "runs" / "mobilenet_v2+musicnn" / "paper" / "joint" / "seed0" / "model.pt"
    assert model.exists() and (root / "table1.csv").exists()
    hist = ex.load_history("quick", "mobilenet_v2+musicnn", "cold", "factorised", 0)
    assert len(hist["epochs"]) == 2 and hist["meta"]["split"] == "cold"
    assert training.default_model_path().exists()
    _, meta = training.load_checkpoint()
    # the default model is chosen on the validation split, among the cold-split networks
    assert meta["split"] == "cold" and meta["config"] == "mobilenet_v2+musicnn"
    assert "validation NSG@10" in meta["selected_by"]
    val = ex.load_validation("quick")
    assert set(val.predictor) >= {"joint", "factorised", "ridge", "knn"} and val["nsg@10"].notna().all()
    capsys.readouterr()
    assert main(["evaluate", "--profile", "quick", "--n-boot", "50", "--jobs", "1", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    for word in ("NSG@10", "MAP@10 (a)", "ridge", "knn", "quadrant", "image_agnostic", "constant", "oracle",
                 "0.855"):
        assert word in out
    t2 = ex.load_table2("quick")
    oracle = t2[(t2.predictor == "oracle")]
    assert np.allclose(oracle["mae"], 0) and np.allclose(oracle["map_a@10"], 1) and np.allclose(oracle["nsg@10"], 1)
    assert set(t2.predictor) >= {"joint", "joint_tta", "factorised", "ridge", "knn", "quadrant", "image_agnostic",
                                 "constant", "mean_similarity", "random"}
    assert set(t2[t2.split == "paper"].predictor) >= {"lookup"} and "lookup" not in set(t2[t2.split == "cold"].predictor)
    assert (t2.filter(like="nsg@10_lo").notna().all()).all()
    margins = ex.load_margins("quick")
    assert set(margins.baseline) >= {"ridge", "quadrant"} and set(margins.verdict) <= {"win", "loss", "tie"}
    assert set(ex.load_map_at_k("quick").k) == set(range(1, 11))
    # a second `train` reuses the finished runs (resumed at their last epoch)
    runs = ex.run_training("quick", timing=False, progress=False, jobs=1, epochs=2, seeds=[0, 1])["runs"]
    assert (runs.resumed_from == 2).all()


def test_cli_errors_are_one_line(toy_experiments, tmp_path, capsys):
    from imuse_lib.cli import main

    bad = tmp_path / "c.json"
    bad.write_text('{"epochz": 3}')
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown setting(s) epochz" in capsys.readouterr().err
    assert main(["evaluate", "--profile", "quick"]) == 2
    assert "run not trained yet" in capsys.readouterr().err


def test_training_validation_and_model_choice_never_read_the_test_split(toy_experiments, monkeypatch, tmp_path):
    """Replace every cold-split test label (the test items' VA and the test pairs' S) by noise:
    the trained networks, the validation scores and the chosen default model stay the same."""
    ex = toy_experiments
    data = ex.inputs.feature_data("mobilenet_v2", "musicnn")
    roles = ex.inputs.item_roles("cold")
    val_items = set(roles.image_ids("val")) | set(roles.song_ids("val"))
    assert val_items and not val_items & (set(roles.image_ids("test")) | set(roles.song_ids("test")))

    def run(results):
        monkeypatch.setenv("IMUSE_RESULTS", str(results))
        ex.run_training("quick", timing=False, progress=False, jobs=1, epochs=3, seeds=[0, 1], splits=["cold"])
        model, _ = training.load_checkpoint()
        return ex.load_validation("quick"), {k: v.clone() for k, v in model.state_dict().items()}

    val_a, model_a = run(tmp_path / "a")
    rng = np.random.default_rng(0)
    test_img = [data.image_row[i] for i in roles.image_ids("test")]
    test_song = [data.song_row[s] for s in roles.song_ids("test")]
    data.image_va, data.song_va = data.image_va.copy(), data.song_va.copy()
    data.image_va[test_img] = rng.random((len(test_img), 2))
    data.song_va[test_song] = rng.random((len(test_song), 2))
    original = ex.inputs.split_pairs

    def noisy_pairs(split):
        frame = original(split)
        test = frame.split == "test"
        frame.loc[test, "similarity"] = rng.random(int(test.sum()))
        return frame

    monkeypatch.setattr(ex.inputs, "split_pairs", noisy_pairs)
    val_b, model_b = run(tmp_path / "b")
    pd.testing.assert_frame_equal(val_a, val_b)
    assert model_a.keys() == model_b.keys() and all(torch.equal(model_a[k], model_b[k]) for k in model_a)


def test_item_weighting_and_best_epoch_selection(toy):
    data, p = toy
    w = training.item_weights(np.array([0, 0, 0, 1]))
    assert w.mean() == pytest.approx(1) and w[3] == pytest.approx(3 * w[0])
    res = training.train(data, p, cfg(epochs=4, seed=0, weighting="item", select="best_val"))
    val = [e["val_loss"] for e in res.history["epochs"]]
    assert res.meta["selected_epoch"] == int(np.argmin(val)) + 1
    assert res.meta["best_val_loss"] == pytest.approx(min(val))
    with pytest.raises(DataError, match="weighting"):
        training.train(data, p, cfg(weighting="song"))


def test_test_time_averaging_scores_every_stored_view(toy):
    data, p = toy
    model = training.train(data, p, cfg(epochs=2, seed=0)).model
    plain = training.NetworkPredictor(model, data)
    tta = training.NetworkPredictor(model, data, tta=True)
    rows_i, rows_s = np.arange(5), np.arange(4)
    m = tta.matrix(rows_i, rows_s)
    by_hand = np.mean([training.predict_matrix(model, data.image_train[rows_i, v], data.audio_train[rows_s, v % 3])
                       for v in range(3)], axis=0)
    np.testing.assert_allclose(m, by_hand, rtol=1e-5)
    assert not np.allclose(m, plain.matrix(rows_i, rows_s))
    iva, mva = plain.item_va(rows_i, rows_s)
    assert iva.shape == (5, 2) and mva.shape == (4, 2)
