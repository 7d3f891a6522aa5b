"""The song index and the recommendation API (imuse_lib.recommend), on a real IMUSENet with
small fake backbones and a synthetic catalog; one check against the real default model
when it has been trained."""

from __future__ import annotations

import math
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from imuse_lib import recommend
from imuse_lib.errors import DataError, ImuseError, MediaError, ModelMismatchError
from imuse_lib import deployed
from imuse_lib.index import building as index_building
from imuse_lib.index import editing as index_editing
from imuse_lib.index import reading as index_reading
from imuse_lib import joint
from imuse_lib import ranking

import recommend_fakes as fk


@pytest.fixture(params=[True, False], ids=["factorised", "joint"])
def built(request, tmp_path):
    """(model, index path, catalog) for both model kinds."""
    model = fk.make_model(factorised=request.param)
    catalog, sf_, images, if_ = fk.make_catalog()
    path = index_building.build_index(model, tmp_path / "idx.sqlite", catalog, sf_, images, if_, progress=False)
    return model, path, catalog


@pytest.fixture
def query_image(tmp_path):
    return fk.write_image(tmp_path / "query.png", seed=5)


# --------------------------------------------------------------------------- ranking helpers


def test_top_k_equals_a_stable_full_sort_with_ties():
    rng = np.random.default_rng(0)
    for n in (10, 5000, 50_000):
        scores = np.round(rng.random(n), 2)  # many exact ties
        for k in (1, 7, 100):
            assert np.array_equal(ranking.top_k(scores, k), np.argsort(-scores, kind="stable")[:k])
    assert len(ranking.top_k(np.zeros(3), 10)) == 3


def test_rank_va_is_eq1_nearest_neighbours():
    rng = np.random.default_rng(1)
    va = rng.random((20_000, 2)).astype(np.float32)
    idx, sim = ranking.rank_va((0.3, 0.8), va, 5)
    dist = np.hypot(va[:, 0].astype(float) - 0.3, va[:, 1].astype(float) - 0.8)
    assert np.array_equal(idx, np.argsort(dist, kind="stable")[:5])
    assert np.allclose(sim, 1 - dist[idx])


def test_joint_scorer_equals_fusion_layers():
    torch.manual_seed(3)
    from imuse_lib.network import IMUSENet

    net = IMUSENet(fk.IMAGE_DIM, fk.AUDIO_DIM).eval()
    rng = np.random.default_rng(2)
    vecs = np.maximum(rng.standard_normal((5000, 128)), 0).astype(np.float32)
    image_vec = np.maximum(rng.standard_normal(256), 0).astype(np.float32)
    assert joint.JointScorer.supports(net)
    fast = joint.JointScorer(net, vecs, batch=1024).score(image_vec)
    ref = joint.score_joint(net, image_vec, vecs, batch=777)
    for a, b in zip(fast, ref):
        assert np.allclose(a, b, atol=1e-5)
    assert not joint.JointScorer.supports(IMUSENet(4, 4, factorised=True).eval())
    assert not joint.JointScorer.supports(net.train())  # dropout active: not the eval network


# --------------------------------------------------------------------------- the index


def test_build_stores_songs_images_and_provenance(built):
    model, path, catalog = built
    index = index_reading.open_index(path)
    assert len(index) == len(catalog) and len(index.images) == 30
    assert list(index.songs.song_id) == sorted(catalog.song_id)  # kept in id order (tie-break)
    assert index.fingerprint == model.fingerprint
    assert index.meta["image_backbone"] == "fake_image" and "fake_audio" in index.meta["model_label"]
    assert index.song_vectors.shape == (40, 128) and index.song_vectors.dtype == np.float32
    assert ((index.song_va > 0) & (index.song_va < 1)).all()
    # stored music vectors are the model's own
    feats = fk.make_catalog()[1]
    order = np.argsort(catalog.song_id.to_numpy())
    expect = model.net.music_vector(torch.from_numpy(feats)).detach().numpy()[order]
    assert np.allclose(index.song_vectors, expect, atol=1e-6)
    # a catalog that does not say where its VA comes from gives no rated VA: every song is predicted
    assert (index.songs.va_source == "predicted").all() and index.songs.true_valence.isna().all()
    assert not index.song_rated.any()
    assert np.allclose(index.song_va, index.songs[["valence", "arousal"]].to_numpy(np.float32))
    if not model.factorised:  # joint: a song's stored VA is its music VA averaged over the images
        with torch.no_grad():
            j = 3
            iva, mva = model.net.fuse(torch.from_numpy(index.image_vectors),
                                      torch.from_numpy(index.song_vectors[j]).expand(30, -1))
            assert np.allclose(index.song_va[j], mva.mean(0).numpy(), atol=1e-5)
            iva, mva = model.net.fuse(torch.from_numpy(index.image_vectors[j]).expand(40, -1),
                                      torch.from_numpy(index.song_vectors))
            assert np.allclose(index.image_va[j], iva.mean(0).numpy(), atol=1e-5)


def test_fingerprint_depends_on_weights_and_backbones():
    a, b = fk.make_model(False, seed=0), fk.make_model(False, seed=1)
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == fk.make_model(False, seed=0).fingerprint
    meta = dict(a.meta, audio_backbone="musicnn")
    assert deployed.model_fingerprint(a.net, meta) != a.fingerprint
    # where the weights file lies is not part of the identity
    meta = dict(a.meta, image_weights={"kind": "random", "init_seed": 0, "file": "/x"})
    assert deployed.model_fingerprint(a.net, meta) == a.fingerprint


def test_model_mismatch_is_refused(built):
    model, path, _ = built
    other = fk.make_model(model.factorised, seed=7)
    with pytest.raises(ModelMismatchError, match="different model"):
        recommend.Recommender.load(other, path)
    with pytest.raises(ModelMismatchError):
        index_building.add_songs(path, other, ["x.wav"])


def test_add_and_remove_songs(built, tmp_path, query_image):
    model, path, _ = built
    before = index_reading.open_index(path)
    a = fk.write_tone(tmp_path / "tone_a.wav", 440)
    b = fk.write_tone(tmp_path / "tone_b.flac", 1800)
    ids = index_building.add_songs(path, model, [a, b], titles=["A song", "B song"], artists=["Me", "You"])
    assert ids == ["tone_a", "tone_b"]
    after = index_reading.open_index(path)
    assert len(after) == len(before) + 2
    # the rest is untouched: same vectors and VA for the old songs
    old = after.songs.song_id.isin(before.songs.song_id).to_numpy()
    assert np.array_equal(after.song_vectors[old], before.song_vectors)
    assert np.array_equal(after.song_va[old], before.song_va)
    row = after.songs.set_index("song_id").loc["tone_b"]
    assert (row.title, row.artist) == ("B song", "You") and pd.isna(row.true_valence)
    # the stored vector equals the model applied to the clip's own features
    feats = model.embed_audio([b])
    vec = model.net.music_vector(torch.from_numpy(feats)).detach().numpy()[0]
    assert np.allclose(after.song_vectors[list(after.songs.song_id).index("tone_b")], vec, atol=1e-6)
    # a new song can be recommended
    rec = recommend.Recommender(model, after).recommend(query_image, top=len(after))
    assert {"tone_a", "tone_b"} <= set(rec.items.song_id)
    # taking an id twice is refused and changes nothing
    with pytest.raises(ImuseError, match="already in the index"):
        index_building.add_songs(path, model, [a])
    assert index_editing.remove_songs(path, ["tone_a", "S0003"]) == ["tone_a", "S0003"]
    left = index_reading.open_index(path)
    assert len(left) == len(before) and "S0003" not in set(left.songs.song_id)
    with pytest.raises(ImuseError, match="nothing removed"):
        index_editing.remove_songs(path, ["tone_b", "no-such-song"])
    assert len(index_reading.open_index(path)) == len(left)


def test_add_is_all_or_nothing(built, tmp_path):
    model, path, _ = built
    good = fk.write_tone(tmp_path / "good.wav", 300)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(MediaError, match="bad.wav"):
        index_building.add_songs(path, model, [good, bad])
    assert "good" not in set(index_reading.open_index(path).songs.song_id)


def test_failed_build_leaves_the_old_index(built, monkeypatch):
    model, path, catalog = built
    before = path.read_bytes()
    catalog2, sf_, images, if_ = fk.make_catalog(seed=3)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(index_building, "meta_rows", boom)
    with pytest.raises(RuntimeError):
        index_building.build_index(model, path, catalog2, sf_, images, if_, progress=False)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_bad_index_files(tmp_path):
    with pytest.raises(DataError, match="no song index"):
        index_reading.open_index(tmp_path / "missing.sqlite")
    with pytest.raises(DataError, match="directory"):
        index_reading.open_index(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="not an IMUSE song index"):
        index_reading.open_index(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(DataError, match="not an IMUSE song index"):
        index_reading.open_index(other)
    assert not (tmp_path / "missing.sqlite").exists()  # reading never creates a file


# --------------------------------------------------------------------------- queries


def _brute_force_songs(model, index, image):
    """Score every song one at a time, in plain Python, and sort by (-S, song_id)."""
    feats = torch.from_numpy(model.embed_image(image))
    with torch.no_grad():
        if model.factorised:
            iv, ia = model.net.image_va(feats)[0].tolist()
            scored = [(1 - math.sqrt((iv - mv) ** 2 + (ia - ma) ** 2), sid)
                      for sid, (mv, ma) in zip(index.songs.song_id, index.song_va.tolist())]
        else:
            ivec = model.net.image_vector(feats)
            scored = []
            for sid, mvec in zip(index.songs.song_id, index.song_vectors):
                iva, mva = model.net.fuse(ivec, torch.from_numpy(mvec)[None])
                (iv, ia), (mv, ma) = iva[0].tolist(), mva[0].tolist()
                scored.append((1 - math.sqrt((iv - mv) ** 2 + (ia - ma) ** 2), sid))
    return sorted(scored, key=lambda t: (-t[0], t[1]))


def test_ranking_equals_brute_force(built, query_image):
    model, path, _ = built
    rec = recommend.Recommender.load(model, path)
    got = rec.recommend(query_image, top=len(rec.index))
    expect = _brute_force_songs(model, rec.index, query_image)
    assert list(got.items.song_id) == [sid for _, sid in expect]
    assert np.allclose(got.items.similarity, [s for s, _ in expect], atol=1e-6)
    assert list(got.items["rank"]) == list(range(1, len(expect) + 1))
    top5 = rec.recommend(query_image, top=5)
    assert list(top5.items.song_id) == [sid for _, sid in expect[:5]]


def test_repeated_queries_are_identical(built, query_image):
    model, path, _ = built
    rec = recommend.Recommender.load(model, path)
    first = rec.recommend(query_image, top=10).to_records()
    assert all(rec.recommend(query_image, top=10).to_records() == first for _ in range(3))
    again = recommend.Recommender.load(model, path).recommend(Image.open(query_image), top=10)
    assert again.to_records() == first


def test_ties_are_broken_by_song_id(tmp_path, query_image):
    model = fk.make_model(factorised=True)
    catalog, sf_, images, if_ = fk.make_catalog()
    sf_[:] = sf_[0]  # every song identical: all scores tie
    path = index_building.build_index(model, tmp_path / "t.sqlite", catalog, sf_, images, if_, progress=False)
    rec = recommend.Recommender.load(model, path).recommend(query_image, top=10)
    assert list(rec.items.song_id) == sorted(catalog.song_id)[:10]


def test_reverse_direction_ranks_images(built, tmp_path):
    model, path, _ = built
    clip = fk.write_tone(tmp_path / "clip.wav", 660)
    rec = recommend.Recommender.load(model, path)
    got = rec.recommend_images(clip, top=30)
    assert got.direction == "images" and len(got.items) == 30
    feats = torch.from_numpy(model.embed_audio([clip]))
    with torch.no_grad():
        if model.factorised:
            mv, ma = model.net.music_va(feats)[0].tolist()
            expect = [1 - math.sqrt((iv - mv) ** 2 + (ia - ma) ** 2) for iv, ia in rec.index.image_va.tolist()]
        else:
            mvec = model.net.music_vector(feats)
            expect = []
            for ivec in rec.index.image_vectors:
                iva, mva = model.net.fuse(torch.from_numpy(ivec)[None], mvec)
                expect.append(float(1 - torch.dist(iva, mva)))
    order = sorted(range(30), key=lambda i: (-expect[i], rec.index.images.image_id[i]))
    assert list(got.items.image_id) == [rec.index.images.image_id[i] for i in order]
    assert np.allclose(got.items.similarity, [expect[i] for i in order], atol=1e-6)
    assert got.to_records() == rec.recommend_images(clip, top=30).to_records()


def test_empty_index_is_a_clear_error(built, query_image):
    model, path, catalog = built
    index_editing.remove_songs(path, catalog.song_id)
    with pytest.raises(DataError, match="empty"):
        recommend.Recommender.load(model, path).recommend(query_image)


def test_json_records_shape(built, query_image):
    model, path, _ = built
    records = recommend.Recommender.load(model, path).recommend(query_image, top=3).to_records()
    assert len(records) == 3
    for r in records:
        assert {"song_id", "artist", "title", "similarity", "valence", "arousal"} <= set(r)
        assert isinstance(r["similarity"], float) and isinstance(r["song_id"], str)


# --------------------------------------------------------------------------- odd and bad images


def _exif_rotated(path):
    img = Image.fromarray(np.arange(20 * 10 * 3, dtype=np.uint8).reshape(10, 20, 3) * 3, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    img.save(path, exif=exif)
    return str(path)


def _png_header(path, width, height):
    """A tiny PNG file that declares a huge image (a decompression bomb's signature)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                     chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return str(path)


ODD = {
    "cmyk.jpg": lambda p: fk.write_image(p, mode="CMYK"),
    "gray.png": lambda p: fk.write_image(p, mode="L"),
    "palette.gif": lambda p: fk.write_image(p, mode="P"),
    "alpha.png": lambda p: fk.write_image(p, mode="RGBA"),
    "gray_alpha.png": lambda p: fk.write_image(p, mode="LA"),
    "deep16.png": lambda p: Image.fromarray(
        (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)).save(p) or str(p),
    "exif.jpg": _exif_rotated,
    "tiny8.png": lambda p: fk.write_image(p, size=(8, 8)),
    "webp.webp": lambda p: fk.write_image(p),
}


@pytest.fixture(scope="module")
def factorised_recommender(tmp_path_factory):
    model = fk.make_model(factorised=True)
    catalog, sf_, images, if_ = fk.make_catalog()
    path = tmp_path_factory.mktemp("odd") / "i.sqlite"
    index_building.build_index(model, path, catalog, sf_, images, if_, progress=False)
    return recommend.Recommender.load(model, path)


@pytest.mark.parametrize("name", sorted(ODD))
def test_unusual_images_are_accepted(name, tmp_path, factorised_recommender):
    img = ODD[name](tmp_path / name)
    rec = factorised_recommender.recommend(img, top=3)
    assert len(rec.items) == 3 and all(0 < v < 1 for v in rec.query_va)


def test_exif_rotation_is_applied(tmp_path):
    model = fk.make_model(factorised=True)
    path = _exif_rotated(tmp_path / "r.jpg")
    upright = Image.open(path).transpose(Image.Transpose.ROTATE_270)  # what orientation 6 displays
    assert np.allclose(model.embed_image(path), model.embed_image(upright), atol=1e-6)


def _put(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


BAD = {
    "missing.jpg": (lambda p: str(p), "no such file|not found"),
    "a_directory": (lambda p: p.mkdir() or str(p), "directory"),
    "empty.jpg": (lambda p: _put(p, b""), "empty"),
    "text.jpg": (lambda p: _put(p, b"hello, not an image\n" * 50), "not an image"),
    "truncated.jpg": (lambda p: (fk.write_image(p, size=(300, 200)),
                                 p.write_bytes(p.read_bytes()[:2000]))[0], "corrupt or truncated"),
    "corrupt.png": (lambda p: (fk.write_image(p, size=(100, 80)),
                               p.write_bytes(p.read_bytes()[:60] + b"\x00" * 400))[0], "corrupt|truncated"),
    "bomb.png": (lambda p: _png_header(p, 20000, 20000), "decompression bomb"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_images_are_one_line_errors(name, tmp_path):
    model = fk.make_model(factorised=False)
    make, pattern = BAD[name]
    target = make(tmp_path / name)
    with pytest.raises(MediaError, match=pattern) as info:
        model.embed_image(target)
    msg = str(info.value)
    assert name in msg and "\n" not in msg


def test_a_real_huge_image_is_refused_without_decoding(tmp_path):
    # 10000 x 9000 grayscale JPEG: 90 M pixels, over the limit; refused from its header
    path = tmp_path / "huge.jpg"
    Image.new("L", (10000, 9000), 128).save(path, quality=10)
    with pytest.raises(MediaError, match="decompression bomb"):
        fk.make_model(True).embed_image(path)


@pytest.mark.parametrize("name,make", [
    ("missing.mp3", lambda p: str(p)),
    ("empty.mp3", lambda p: _put(p, b"")),
    ("text.mp3", lambda p: _put(p, b"not audio " * 100)),
    ("dir.mp3", lambda p: p.mkdir() or str(p)),
    ("image.wav", lambda p: _put(p, Path(fk.write_image(p.with_suffix(".png"))).read_bytes())),
    ("truncated.wav", lambda p: _put(p, Path(fk.write_tone(p.with_suffix(".x.wav"), 440)).read_bytes()[:30])),
])
def test_bad_audio_is_a_one_line_error(name, make, built, tmp_path):
    model, path, _ = built
    target = make(tmp_path / name)
    with pytest.raises(MediaError) as info:
        recommend.Recommender.load(model, path).recommend_images(target)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no trained model"):
        deployed.load_deployed(tmp_path / "none.pt")
    with pytest.raises(DataError, match="directory"):
        deployed.load_deployed(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ImuseError, match="junk.pt"):
        deployed.load_deployed(junk)


# --------------------------------------------------------------------------- the real model


def test_real_default_model_when_trained():
    """With the trained default model and its index: an OASIS image gets 5 catalog songs,
    and the live image arm reproduces the stored (feature-store) image VA of that image."""
    from imuse_lib import training

    path = training.default_model_path()
    if not path.exists():
        pytest.skip("no default model yet (run `imuse train --profile quick`)")
    model = deployed.load_deployed(path)
    index_path = index_reading.default_index_path(model)
    if not index_path.exists():
        pytest.skip("no index for the default model yet (run `imuse index build`)")
    rec = recommend.Recommender.load(model, index_path)
    from imuse_lib import data

    img = data.load_images().iloc[0]
    got = rec.recommend(img.path, top=5)
    assert len(got.items) == 5 and got.items.song_id.isin(rec.index.songs.song_id).all()
    if model.factorised:
        stored = rec.index.image_va[list(rec.index.images.image_id).index(img.image_id)]
        assert np.allclose(got.query_va, stored, atol=2e-3)
