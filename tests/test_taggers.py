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
    with pytest.raises(ImuseError, match=r"music tagger msd_fcn: not in the store .*tagger_features\('msd_fcn'\)"):
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
