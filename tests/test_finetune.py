"""The CPU fine-tuning of the image arm (imuse_lib.finetune) on synthetic stored activations:
deterministic for a seed, test labels never read, early stopping on validation, save/load.
(The real run is benchmarks/finetune_image.py.)"""

import numpy as np
import pandas as pd
import pytest

from imuse_lib import finetune, pairs
from imuse_lib.errors import ImuseError, ModelMismatchError


@pytest.fixture
def synthetic(monkeypatch, tmp_path):
    """60 'images' with stored activations (eval view + 2 training views) whose mean over a
    few channels carries their VA; labels of the 20 test images are NaN (never to be read)."""
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    n, views = 60, 2
    va = rng.uniform(0.1, 0.9, size=(n, 2))
    acts = rng.normal(0, 1, size=(n, 1 + views, *finetune.ACT_SHAPE)).astype(np.float32)
    acts[:, :, :8] += 2.0 * (va[:, None, 0, None, None, None] - 0.5)
    acts[:, :, 8:16] += 2.0 * (va[:, None, 1, None, None, None] - 0.5)
    ids = [f"img{i}" for i in range(n)]
    role = pd.Series(["train"] * 30 + ["val"] * 10 + ["test"] * 20, index=ids, dtype=object)
    frame = pd.DataFrame({"image_id": ids, "path": [f"/nonexistent/{i}.jpg" for i in ids],
                          "valence": va[:, 0], "arousal": va[:, 1]})
    frame.loc[role.values == "test", ["valence", "arousal"]] = np.nan
    store = finetune.Activations(ids, acts.astype(np.float16), {"key": "synthetic", "views": views,
                                                                "weights": {"source": "test", "sha256": "0"}})
    monkeypatch.setattr(finetune, "activations", lambda *a, **k: store)
    roles = pairs.ItemRoles("cold", role, pd.Series(dtype=object))
    return frame, roles, va, ids


def test_fit_is_deterministic_and_never_reads_test_labels(synthetic):
    frame, roles, va, ids = synthetic
    kw = dict(images=frame, seed=5, epochs=3, patience=2, progress=False)
    a = finetune.fit(roles, **kw)
    b = finetune.fit(roles, **kw)
    assert a.info["fingerprint"] == b.info["fingerprint"]
    test_ids = ids[40:]
    pa, pb = a.predict(test_ids), b.predict(test_ids)
    assert np.array_equal(pa, pb) and np.isfinite(pa).all() and pa.shape == (20, 2)
    assert (a.info["n_train"], a.info["n_val"]) == (30, 10) and a.val_ids == ids[30:40]
    # the synthetic VA is in the activations: the held-out images are predicted
    assert np.corrcoef(pa[:, 0], va[40:, 0])[0, 1] > 0.5 and np.corrcoef(pa[:, 1], va[40:, 1])[0, 1] > 0.5
    hist = pd.DataFrame(a.history)
    assert hist.epoch.tolist()[0] == 0 and 0 <= a.info["best_epoch"] <= 3
    assert a.info["val_loss"] == pytest.approx(hist.val_loss.min())  # the kept network is validation's best
    c = finetune.fit(roles, **dict(kw, seed=6))  # another seed: other view draws, order, dropout
    assert pd.DataFrame(c.history).train_loss.iloc[1] != hist.train_loss.iloc[1]


def test_save_load_roundtrip_and_bad_files(synthetic, tmp_path):
    frame, roles, _, ids = synthetic
    model = finetune.fit(roles, images=frame, seed=1, epochs=1, patience=1, refit=False, progress=False)
    path = model.save(tmp_path / "arm.pt")
    again = finetune.load(path)
    again._acts = model._acts
    assert np.array_equal(again.predict(ids[40:]), model.predict(ids[40:]))
    assert (tmp_path / "arm.json").is_file() and again.info["refit_on"] == "train"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torch")
    with pytest.raises(ModelMismatchError, match="junk.pt: not a readable fine-tuned image arm"):
        finetune.load(junk)
    with pytest.raises(ImuseError, match="missing.pt: fine-tuned image arm not found"):
        finetune.load(tmp_path / "missing.pt")


def test_too_few_validation_images_is_a_clear_error(synthetic):
    frame, roles, _, _ = synthetic
    role = roles.images.copy()
    role[role == "val"] = "test"
    with pytest.raises(ImuseError, match="at least 5 training and 5 validation images, got 30 and 0"):
        finetune.fit(pairs.ItemRoles("cold", role, roles.songs), images=frame, epochs=1, progress=False)
