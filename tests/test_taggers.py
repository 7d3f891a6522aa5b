"""The MSD and MTG-Jamendo music taggers: the CRNN architecture, strict loading of the
mirrored checkpoints with their tag lists and provenance, registry entries, and the
feature-source API of imuse_lib.taggers."""

import numpy as np
import pytest
import torch

from imuse_lib import config, data, models, taggers
from imuse_lib.errors import DataError, ImuseError, WeightsError
from imuse_lib.models import audio as maudio

NEW = ("msd_fcn", "msd_crnn", "jamendo_musicnn", "jamendo_fcn", "jamendo_crnn")
# name -> (class, input samples, embedding size, evaluation crops)
EXPECTED = {"msd_fcn": (maudio.FCN, 464000, 64, 1), "msd_crnn": (maudio.CRNN, 464000, 32, 1),
            "jamendo_musicnn": (maudio.Musicnn, 48000, 200, 5), "jamendo_fcn": (maudio.FCN, 464000, 64, 1),
            "jamendo_crnn": (maudio.CRNN, 464000, 32, 1)}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own cache: nothing written outside tmp."""
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))


def _mirrored(tag_set):
    root = config.data_root()
    return root is not None and (root / "weights" / tag_set).is_dir()


needs_new = pytest.mark.skipif(not (_mirrored("msd") and _mirrored("jamendo")),
                               reason="the MSD / MTG-Jamendo tagger weights are not in the data mirror "
                                      "(../shared/imuse-data/weights/{msd,jamendo}) or $IMUSE_DATA")


def test_taggers_are_named_apart_from_the_experiment_grid():
    # the experiment grid's audio arms (and `imuse features --audio-backbone`) are unchanged
    assert maudio.AUDIO_BACKBONES == ("samplecnn", "musicnn", "fcn")
    assert tuple(models.TAGGERS) == NEW
    assert taggers.TAGGER_NAMES == ("musicnn", "fcn") + NEW


@pytest.mark.parametrize("name", NEW)
def test_random_taggers_shapes_and_determinism(name):
    cls, length, dim, crops = EXPECTED[name]
    a = models.build_audio_backbone(name, weights="random", seed=3)
    b = models.build_audio_backbone(name, weights="random", seed=3)
    assert isinstance(a.module, cls) and a.weights == {"kind": "random", "init_seed": 3}
    assert (a.sample_rate, a.input_length, a.dim, a.eval_crops) == (16000, length, dim, crops)
    x = 0.1 * torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        emb, emb_b = a.module(x), b.module(x[1:])
        probs = a.head(emb)
    assert emb.shape == (2, dim) and probs.shape == (2, 50)
    assert torch.allclose(emb[1:], emb_b, atol=1e-5)  # deterministic, seeded, independent of the batch
    assert not torch.allclose(emb[0], emb[1])  # the two inputs are told apart
    assert ((probs > 0) & (probs < 1)).all()


def test_crnn_matches_the_upstream_layout():
    net = maudio.CRNN()
    keys = set(net.state_dict())
    assert {"layer5.weight_ih_l0", "layer5.weight_hh_l1", "dense.weight", "spec.mel_scale.fb"} <= keys
    assert net.layer5.hidden_size == 32 and net.layer5.num_layers == 2 and net.layer5.batch_first
    assert [getattr(net, f"layer{i}").conv.out_channels for i in range(1, 5)] == [64, 128, 128, 128]
    # 96 mel bands pooled 2 * 3 * 4 * 4 = 96 times: one frequency bin reaches the GRU
    with torch.inference_mode():
        x = net.spec_bn(net.to_db(net.spec(0.1 * torch.randn(1, 3 * 16000, generator=torch.Generator().manual_seed(0)))).unsqueeze(1))
        for i in range(1, 5):
            x = getattr(net, f"layer{i}")(x)
    assert x.shape[1:3] == (128, 1)


@needs_new
@pytest.mark.parametrize("name", NEW)
def test_mirrored_taggers_load_strictly_with_tags_and_provenance(name):
    cls, length, dim, _ = EXPECTED[name]
    tag_set, arch = models.TAGGERS[name]
    path = config.data_root() / "weights" / tag_set / f"{arch}_best_model.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = cls()
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ab = models.build_audio_backbone(name)
    w = ab.weights
    assert w["kind"] == "pretrained" and w["sha256"] == data.registry()[f"weights/{tag_set}/{arch}_best_model.pth"]
    assert w["weights_name"] == f"{tag_set}/{arch}_best_model.pth" and w["dataset"] == maudio.TAG_SETS[tag_set][2]
    lines = (config.data_root() / "weights" / tag_set / f"{tag_set}_tags.txt").read_text().split("\n")
    assert ab.labels == [t.strip() for t in lines if t.strip()] and len(ab.labels) == 50
    assert ("happy" in ab.labels) and ("sad" in ab.labels if tag_set == "msd" else "relaxing" in ab.labels)
    assert torch.equal(ab.module.spec.mel_scale.fb, state["spec.mel_scale.fb"])
    x = 0.1 * torch.randn(2, length, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        probs = ab.head(ab.module(x))
        full = net.eval().classify(x)
    assert probs.shape == (2, 50) and torch.allclose(probs, full, atol=1e-5)
    assert not any(p.requires_grad for p in ab.module.parameters()) and not ab.module.training
    assert name in models.available_taggers()


@needs_new
def test_registry_lists_the_mirror_checksums_and_verify_checks_them(mirror):
    sums = dict(reversed(line.split(None, 1)) for line in (mirror / "SHA256SUMS").read_text().splitlines() if line)
    for tag_set in ("msd", "jamendo"):
        mine = {p: s for p, s in data.registry().items() if p.startswith(f"weights/{tag_set}/")}
        assert len(mine) == (3 if tag_set == "msd" else 4)
        assert all(sums[p.strip()] == s for p, s in mine.items())
    table = data.verify(["msd_weights", "jamendo_weights"])
    assert table.files.tolist() == [3, 4] and (table.verified == table.files).all()


@needs_new
def test_altered_tagger_file_is_refused_naming_it(fake_root):
    target = fake_root / "weights" / "msd" / "crnn_best_model.pth"
    target.unlink()
    target.write_bytes(b"\0" * 100)
    with pytest.raises(WeightsError, match=r"msd_crnn: .*crnn_best_model.pth: checksum mismatch"):
        models.build_audio_backbone("msd_crnn")
    assert "msd_crnn" not in models.available_taggers()
    (fake_root / "weights" / "jamendo" / "jamendo_tags.txt").unlink()
    with pytest.raises(WeightsError, match=r"jamendo_fcn: .*jamendo_tags.txt: missing"):
        models.build_audio_backbone("jamendo_fcn")


def test_wrong_checkpoint_for_a_tagger_is_rejected(tmp_path):
    if not _mirrored("msd"):
        pytest.skip("the MSD tag list is not in the data mirror")
    path = tmp_path / "fcn_like.pth"
    torch.save(maudio.FCN().state_dict(), path)
    with pytest.raises(WeightsError, match="fcn_like.pth: does not load strictly into msd_crnn"):
        models.build_audio_backbone("msd_crnn", weights=str(path))


def test_unknown_tagger_and_missing_store_entry_are_clear_errors():
    with pytest.raises(ImuseError, match="unknown music tagger 'vggish'; choose from musicnn, fcn, msd_fcn"):
        taggers.tagger_features("vggish")
    if not _mirrored("msd"):
        pytest.skip("the MSD weights are not in the data mirror")
    with pytest.raises(ImuseError, match=r"feature source msd_fcn: not in the store .*source_features\('msd_fcn'\)"):
        taggers.tagger_features("msd_fcn", compute=False)


@needs_new
def test_tagger_features_are_stored_with_provenance_and_tags_derive_from_them():
    frame = data.load_catalog().groupby("quadrant").head(1)  # four clips, one per quadrant
    fs = taggers.tagger_features("jamendo_musicnn", frame=frame)
    assert fs.ids == [str(i) for i in frame.song_id] and fs.eval.shape == (4, 200)
    assert fs.meta["weights"]["sha256"] == data.registry()["weights/jamendo/musicnn_best_model.pth"]
    assert fs.meta["spec"]["eval_crops"] == 5 and fs.meta["spec"]["n_train"] == 0
    again = taggers.tagger_features("jamendo_musicnn", frame=frame, compute=False)
    assert again.from_cache and np.array_equal(again.eval, fs.eval)
    tags = taggers.tagger_tags("jamendo_musicnn", frame=frame)
    assert tags.eval.shape == (4, 50) and tags.meta["labels"][46:] == ["energetic", "film", "happy", "relaxing"]
    with torch.inference_mode():
        expect = taggers.tagger_backbone("jamendo_musicnn").head(torch.from_numpy(fs.eval)).numpy()
    assert np.allclose(tags.eval, expect)
    ids, blocks, names = taggers.stack(["jamendo_musicnn"], with_tags=True, frame=frame)
    assert names == ["jamendo_musicnn", "jamendo_musicnn_tags"] and [b.shape[1] for b in blocks] == [200, 50]
    prov = taggers.provenance("jamendo_musicnn")
    assert prov["weights"] == "jamendo/musicnn_best_model.pth" and prov["dataset"] == "MTG-Jamendo top-50 tags"


# --------------------------------------------------------------------------- feature sources of the VA model


def test_every_tagger_and_its_tags_is_an_audio_source():
    from imuse_lib import features

    for name in NEW:
        assert name in features.AUDIO_SOURCES and f"{name}_tags" in features.AUDIO_SOURCES
        assert name not in features.IMAGE_SOURCES
    # the ablation's tagger rows name only real sources, beside the MobileNetV2 image arm
    from imuse_lib import va_model

    rows = [r for r in va_model.ABLATION if r[0].startswith("songs: ")]
    assert len(rows) >= 5 and all(set(r[2]) <= set(features.AUDIO_SOURCES) for r in rows)
    assert {r[1] for r in rows} == {va_model.ablation.MOBILENET_IMAGE_ARM}


@needs_new
def test_tagger_sources_are_stored_resumable_and_match_the_query_path(monkeypatch):
    """A tagger as a VA-model source: an interrupted run keeps its finished chunk and resumes;
    load_blocks serves the stored entry with its provenance; a new song's query path (what
    `imuse index add` runs) gives the stored features."""
    from types import SimpleNamespace

    from imuse_lib import feature_views, features, va_model

    frame = data.load_catalog().groupby("quadrant").head(1).head(3)
    monkeypatch.setattr(features, "CHUNK_ITEMS", 2)
    real_forward, calls = feature_views.forward, {"n": 0}

    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # interrupted during the second chunk
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(feature_views, "forward", failing_forward)
    with pytest.raises(KeyboardInterrupt):
        va_model.load_blocks(("jamendo_musicnn",), "audio", frame=frame, compute=True)
    with pytest.raises(ImuseError, match="feature source jamendo_musicnn: not in the store"):
        va_model.load_blocks(("jamendo_musicnn",), "audio", frame=frame)  # an incomplete entry is not served
    monkeypatch.setattr(feature_views, "forward", real_forward)
    resumed = features.source_features("jamendo_musicnn", frame=frame)
    assert resumed.computed_items == 1  # the first chunk (2 clips) was reused
    blocks = va_model.load_blocks(("jamendo_musicnn", "jamendo_musicnn_tags"), "audio", frame=frame)
    assert blocks.ids == [str(i) for i in frame.song_id] and [a.shape for a in blocks.arrays] == [(3, 200), (3, 50)]
    np.testing.assert_array_equal(blocks.arrays[0], resumed.eval)
    prov, sha = blocks.provenance, data.registry()["weights/jamendo/musicnn_best_model.pth"]
    assert prov["jamendo_musicnn"]["key"] == resumed.meta["key"] == features.feature_key(resumed.meta["spec"])
    assert prov["jamendo_musicnn"]["weights"]["sha256"] == sha == resumed.meta["spec"]["weights"]["sha256"]
    assert prov["jamendo_musicnn_tags"]["key"] == resumed.meta["key"]  # derived from the same entry
    assert resumed.meta["spec"]["n_train"] == 0 and resumed.meta["spec"]["eval_crops"] == 5  # evaluation only
    model = va_model.VAModel(None, SimpleNamespace(sources=("jamendo_musicnn", "jamendo_musicnn_tags")), {})
    query = model.embed_song_sources(list(frame.path))
    for got, stored in zip(query, blocks.arrays):
        np.testing.assert_allclose(got, stored, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tagger_world(tmp_path_factory):
    """13 real catalog clips with their Jamendo Musicnn source stored (own cache), and
    synthetic images: 5 train, 5 val, 3 test items each (an arm needs 5 training items)."""
    import pandas as pd

    from imuse_lib import va_model
    from imuse_lib.pairs import ItemRoles

    cache = tmp_path_factory.mktemp("tagger_cache")
    songs = data.load_catalog().groupby("quadrant").head(4).head(13).reset_index(drop=True)
    rng = np.random.default_rng(0)
    images = pd.DataFrame({"image_id": [f"I{i:02d}" for i in range(13)]})
    images[["valence", "arousal"]] = rng.random((13, 2))
    role = ["train"] * 5 + ["val"] * 5 + ["test"] * 3
    roles = ItemRoles("cold", pd.Series(role, index=images.image_id), pd.Series(role, index=songs.song_id.astype(str)))
    image_blocks = va_model.Blocks(list(images.image_id), ("mobilenet_v2",), [rng.standard_normal((13, 4))], {})
    mp = pytest.MonkeyPatch()
    mp.setenv("IMUSE_CACHE", str(cache))
    va_model.load_blocks(("jamendo_musicnn",), "audio", frame=songs, compute=True)
    mp.undo()
    return cache, images, songs, roles, image_blocks


@pytest.mark.slow  # 13 clips through the Jamendo Musicnn: over 10 s on 2 cores
@needs_new
def test_the_search_and_the_ablation_accept_tagger_sources(tagger_world, monkeypatch):
    from imuse_lib import va_model

    cache, images, songs, roles, image_blocks = tagger_world
    monkeypatch.setenv("IMUSE_CACHE", str(cache))
    real = va_model.fitting.load_blocks

    def blocks_of(sources, arm, **kw):
        return image_blocks if arm == "image" else real(sources, arm, frame=songs, compute=kw.get("compute", False))

    monkeypatch.setattr(va_model.fitting, "load_blocks", blocks_of)
    sources = ("jamendo_musicnn", "jamendo_musicnn_tags")
    model = va_model.fit(("mobilenet_v2",), sources, roles, images=images, songs=songs, n_trials=4)
    tuning = model.provenance["tuning_summary"]["audio"]
    assert model.audio.sources == sources and tuning["n_trials"] == 4 and tuning["n_val"] == 5
    assert np.isfinite(model.predict_songs()).all()
    assert model.provenance["sources"]["audio"]["jamendo_musicnn"]["weights"]["sha256"] == \
        data.registry()["weights/jamendo/musicnn_best_model.pth"]
    monkeypatch.setattr(va_model.ablation, "item_labels", lambda: (images, songs))
    monkeypatch.setattr(va_model.ablation, "item_roles_of", lambda r, i, s, seed: roles)
    config_ = next(c for c in va_model.ABLATION if c[0] == "songs: Jamendo Musicnn")
    table, models_ = va_model.run_ablation([(config_[0], ("mobilenet_v2",)) + config_[2:]], n_trials=4,
                                           parts=("val",))
    row = table.iloc[0]
    assert list(table.part) == ["val"] and row.audio_sources == "jamendo_musicnn+jamendo_musicnn_tags"
    # (NSG@10 needs more than 10 candidates: these 5 validation songs are scored by r)
    assert np.isfinite([row.song_r_v, row.song_r_a, row.song_4q_acc]).all() and row.n_songs == 5
    assert config_[0] in models_ and models_[config_[0]].audio.sources == sources
