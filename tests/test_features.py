"""The feature store: shapes, seeded views, keys that change with everything the features
depend on, atomic writes, resuming an interrupted run, bad inputs, and the CLI."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from PIL import Image

from imuse_lib import config, features
from imuse_lib.cli import main
from imuse_lib.errors import MediaError
from imuse_lib.models.base import Backbone, freeze
from imuse_lib.models.image import IMAGENET_MEAN, IMAGENET_STD, make_transforms
from imuse_lib import feature_views

sf = pytest.importorskip("soundfile")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def fake_image_backbone(sha="a" * 64, mean=IMAGENET_MEAN):
    """A tiny frozen 'CNN': mean colour + a fixed linear map -> 4-d."""
    torch.manual_seed(0)
    module = freeze(nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 4)))
    train, evaluation = make_transforms(mean, IMAGENET_STD)
    return Backbone(name="fake_image", kind="image", dim=4, module=module,
                    weights={"kind": "pretrained", "source": "test", "file": "-", "sha256": sha},
                    preprocessing={"mean": list(mean), "resize": 256, "crop": 224},
                    train_transform=train, eval_transform=evaluation)


class WaveStats(nn.Module):
    def forward(self, x):  # [B, L] -> [B, 3]: a deterministic summary of each crop
        return torch.stack([x.mean(1), x.std(1), x[:, :10].mean(1)], dim=1)


def fake_audio_backbone(sr=8000, length=8000, eval_crops=3):
    return Backbone(name="fake_audio", kind="audio", dim=3, module=WaveStats(),
                    weights={"kind": "random", "init_seed": 0},
                    preprocessing={"sample_rate": sr, "input_length": length},
                    sample_rate=sr, input_length=length, eval_crops=eval_crops)


@pytest.fixture
def image_items(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        path = tmp_path / "imgs" / f"img {i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
        rows.append({"image_id": f"img {i}", "path": path})
    return pd.DataFrame(rows)


@pytest.fixture
def clip_items(tmp_path):
    rows = []
    for i, seconds in enumerate([3.0, 2.5, 0.7]):  # the last is shorter than the 1 s crop: looped
        path = tmp_path / "clips" / f"song{i}.wav"
        path.parent.mkdir(exist_ok=True)
        t = np.arange(int(seconds * 16000)) / 16000
        wave = (0.2 + 0.05 * i) * np.sin(2 * np.pi * (200 + 100 * i) * t) * (1 + t)
        sf.write(path, np.stack([wave, wave], 1).astype(np.float32), 16000)
        rows.append({"song_id": f"song{i}", "path": path})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- images


def test_image_store_shapes_seeded_views_and_cache_hit(image_items):
    bb = fake_image_backbone()
    fs = features.image_features(bb, views=3, images=image_items, progress=False)
    assert fs.ids == list(image_items.image_id) and not fs.from_cache and fs.computed_items == 5
    assert fs.train.shape == (5, 3, 4) and fs.eval.shape == (5, 4) and fs.train.dtype == np.float32
    assert not np.allclose(fs.train[:, 0], fs.train[:, 1])  # views differ
    # the eval view is the deterministic centre crop
    direct = features.embed_images(bb, list(image_items.path))
    np.testing.assert_allclose(fs.eval, direct, atol=1e-6)
    assert fs.meta["weights"]["sha256"] == "a" * 64 and fs.meta["views"] == 3 and fs.meta["seed"] == config.SEED
    assert (fs.path / "features.npz").is_file() and (fs.path / "meta.json").is_file()
    assert not (fs.path / "chunks").exists()
    again = features.image_features(bb, views=3, images=image_items, progress=False)
    assert again.from_cache and again.computed_items == 0
    np.testing.assert_array_equal(again.train, fs.train)
    # recomputing from scratch gives the same seeded views
    import shutil

    shutil.rmtree(fs.path)
    fresh = features.image_features(bb, views=3, images=image_items, progress=False)
    np.testing.assert_array_equal(fresh.train, fs.train)


def test_keys_change_with_everything_features_depend_on(image_items, tmp_path):
    bb = fake_image_backbone()
    ids, paths = list(image_items.image_id), list(image_items.path)
    base = features.feature_key(features.feature_spec(bb, ids, paths, 4, 1))
    assert base == features.feature_key(features.feature_spec(fake_image_backbone(), ids, paths, 4, 1))
    variants = [
        features.feature_spec(bb, ids, paths, 3, 1),  # views
        features.feature_spec(bb, ids, paths, 4, 2),  # seed
        features.feature_spec(fake_image_backbone(sha="b" * 64), ids, paths, 4, 1),  # weights
        features.feature_spec(fake_image_backbone(mean=(0.5, 0.5, 0.5)), ids, paths, 4, 1),  # preprocessing
        features.feature_spec(bb, ids[:4], paths[:4], 4, 1),  # item list
    ]
    keys = {features.feature_key(s) for s in variants}
    assert len(keys) == len(variants) and base not in keys
    # content change of an item file (not a mirrored file: size + mtime)
    Image.new("RGB", (10, 10)).save(paths[0])
    assert features.feature_key(features.feature_spec(bb, ids, paths, 4, 1)) != base
    random_bb = fake_image_backbone()
    random_bb.weights = {"kind": "random", "init_seed": 5}
    assert features.feature_key(features.feature_spec(random_bb, ids, paths, 4, 1)) != base


def test_interrupted_run_leaves_no_entry_and_resumes(image_items, monkeypatch):
    bb = fake_image_backbone()
    monkeypatch.setattr(features, "CHUNK_ITEMS", 2)
    real_forward = feature_views.forward
    calls = {"n": 0}

    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run is interrupted during the second chunk
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(feature_views, "forward", failing_forward)
    with pytest.raises(KeyboardInterrupt):
        features.image_features(bb, views=2, images=image_items, progress=False)
    folder = features.store_root() / features.feature_key(
        features.feature_spec(bb, list(image_items.image_id), list(image_items.path), 2, config.SEED))
    assert not (folder / "meta.json").exists() and not (folder / "features.npz").exists()
    assert sorted(p.name for p in (folder / "chunks").iterdir()) == ["00000.npz"]  # no temp files left
    assert features.list_store() == []  # an incomplete entry is not listed

    monkeypatch.setattr(feature_views, "forward", real_forward)
    resumed = features.image_features(bb, views=2, images=image_items, progress=False)
    assert resumed.computed_items == 3  # chunk 0 (2 items) was reused
    clean_dir = folder.parent / "clean"
    folder.rename(clean_dir)
    clean = features.image_features(bb, views=2, images=image_items, progress=False)
    np.testing.assert_array_equal(resumed.train, clean.train)
    np.testing.assert_array_equal(resumed.eval, clean.eval)


def test_stale_or_broken_chunk_is_recomputed(image_items, monkeypatch):
    bb = fake_image_backbone()
    monkeypatch.setattr(features, "CHUNK_ITEMS", 2)
    spec = features.feature_spec(bb, list(image_items.image_id), list(image_items.path), 1, config.SEED)
    chunks = features.store_root() / features.feature_key(spec) / "chunks"
    chunks.mkdir(parents=True)
    features.save_npz(chunks / "00000.npz", ids=np.array(["other", "ids"]), train=np.zeros((2, 1, 4)),
                       eval=np.zeros((2, 4)))
    (chunks / "00001.npz").write_bytes(b"broken")
    fs = features.image_features(bb, views=1, images=image_items, progress=False)
    assert fs.computed_items == 5 and np.abs(fs.eval).sum() > 0


def test_bad_image_in_the_item_list_names_the_file(image_items, tmp_path):
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    items = pd.concat([image_items, pd.DataFrame([{"image_id": "broken", "path": bad}])], ignore_index=True)
    with pytest.raises(MediaError, match="broken.jpg"):
        features.image_features(fake_image_backbone(), views=1, images=items, progress=False)


# --------------------------------------------------------------------------- audio


def test_audio_store_crops_and_eval_mean(clip_items):
    ab = fake_audio_backbone()
    fs = features.audio_features(ab, crops=2, catalog=clip_items, progress=False)
    assert fs.train.shape == (3, 2, 3) and fs.eval.shape == (3, 3)
    assert fs.meta["crops"] == 2 and fs.meta["spec"]["eval_crops"] == 3
    np.testing.assert_allclose(fs.eval, features.embed_audio(ab, list(clip_items.path)), atol=1e-6)
    # eval = mean over 3 evenly spaced 1 s crops of the 8 kHz mono signal
    from imuse_lib import media

    wave = media.load_audio(clip_items.path[0], 8000)
    starts = feature_views.eval_starts(len(wave), 8000, 3)
    assert list(starts) == [0, (len(wave) - 8000) // 2, len(wave) - 8000]
    expected = np.mean([[c.mean(), c.std(ddof=1), c[:10].mean()] for c in (wave[s:s + 8000] for s in starts)], 0)
    np.testing.assert_allclose(fs.eval[0], expected, atol=1e-5)
    assert features.audio_features(ab, crops=2, catalog=clip_items, progress=False).from_cache
    other_seed = features.audio_features(ab, crops=2, seed=1, catalog=clip_items, progress=False)
    assert not other_seed.from_cache and not np.allclose(other_seed.train, fs.train)


@pytest.mark.parametrize("case", ["silent", "too_short", "not_audio"])
def test_bad_clip_in_the_item_list_names_the_file(clip_items, tmp_path, case):
    path = tmp_path / f"{case}.wav"
    if case == "silent":
        sf.write(path, np.zeros(16000, np.float32), 16000)
    elif case == "too_short":
        sf.write(path, 0.3 * np.ones(3000, np.float32), 16000)  # 0.19 s < half the 1 s crop
    else:
        path.write_text("definitely not audio\n")
    items = pd.concat([clip_items, pd.DataFrame([{"song_id": case, "path": path}])], ignore_index=True)
    with pytest.raises(MediaError, match=f"{case}.wav"):
        features.audio_features(fake_audio_backbone(), crops=1, catalog=items, progress=False)


# --------------------------------------------------------------------------- real backbones, few items


@pytest.mark.skipif(config.data_root() is None, reason="data mirror not available")
def test_real_musicnn_on_two_clips():
    from imuse_lib import data, models

    if "musicnn" not in models.available_audio_backbones():
        pytest.skip("MTAT weights not available")
    catalog = data.load_catalog().head(2)
    fs = features.audio_features("musicnn", crops=1, catalog=catalog, progress=False)
    assert fs.train.shape == (2, 1, 200) and np.isfinite(fs.eval).all()
    assert fs.meta["weights"]["kind"] == "pretrained" and fs.meta["backbone"] == "musicnn"


# --------------------------------------------------------------------------- CLI


def test_cli_list_and_errors(capsys):
    assert main(["features", "--list"]) == 0
    out = capsys.readouterr().out
    assert "pretrained audio backbones here:" in out and "feature store" in out
    assert main(["features"]) == 2
    assert "give --image-backbone and/or --audio-backbone" in capsys.readouterr().err
    assert main(["features", "--image-backbone", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imuse: error: resnet18: pretrained ImageNet weights") and "--random-weights" in err
    assert main(["features", "--audio-backbone", "samplecnn"]) == 2
    assert "samplecnn: no MagnaTagATune-trained SampleCNN checkpoint" in capsys.readouterr().err


def test_cli_names_match_the_models():
    from imuse_lib import models
    from imuse_lib.cli import features as cli_features

    assert cli_features.IMAGE_CHOICES == models.IMAGE_BACKBONES
    assert cli_features.AUDIO_CHOICES == models.AUDIO_BACKBONES


def test_cli_help_states_the_library_defaults(capsys):
    """The CLI keeps torch out of `--help` by not importing the feature store, so its help text
    states the defaults itself: it must say what features.py does."""
    assert main(["features", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {features.DEFAULT_VIEWS})" in text
    crops = ", ".join(f"{k} {v}" for k, v in features.DEFAULT_CROPS.items())
    assert f"(default: {crops})" in text
