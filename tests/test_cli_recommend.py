"""`imuse recommend`, `imuse recommend-images`, `imuse index ...`: exit codes, output shape
and one-line errors. Runs in-process on a real saved checkpoint of a tiny IMUSENet with fake
backbones (see recommend_fakes.py); one subprocess run checks the installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from imuse_lib import cli, deployed, training
from imuse_lib.index import building as index_building
from imuse_lib.index import reading as index_reading

import recommend_fakes as fk


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A saved joint model as the default model, its index built in a private cache."""
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    model = fk.make_model(factorised=False)
    ckpt = training.save_model(tmp_path / "model.pt", model.net, model.meta)
    monkeypatch.setattr(training, "default_model_path", lambda: ckpt)
    fakes = {"image": fk.image_backbone, "audio": fk.audio_backbone}
    monkeypatch.setattr(deployed.DeployedModel, "_build", lambda self, which: fakes[which]())
    loaded = deployed.load_deployed()
    assert loaded.fingerprint == model.fingerprint  # the fingerprint survives a save/load
    catalog, sf_, images, if_ = fk.make_catalog()
    index = index_building.build_index(loaded, None, catalog, sf_, images, if_, progress=False)
    assert index == index_reading.default_index_path(loaded)
    return SimpleNamespace(tmp=tmp_path, ckpt=ckpt, index=index, catalog=catalog, model=loaded,
                           image=fk.write_image(tmp_path / "photo.jpg"))


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, *names):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imuse: error: "), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def test_recommend_json_shape(env, capsys):
    rc, out, err = run(capsys, "recommend", env.image, "--top", 5, "--json")
    assert rc == 0, err
    records = json.loads(out)
    assert isinstance(records, list) and len(records) == 5
    for i, r in enumerate(records, 1):
        assert {"song_id", "artist", "title", "similarity", "valence", "arousal"} <= set(r)
        assert r["rank"] == i and r["song_id"] in set(env.catalog.song_id)
    sims = [r["similarity"] for r in records]
    assert sims == sorted(sims, reverse=True)
    # identical on a second run
    assert json.loads(run(capsys, "recommend", env.image, "--top", 5, "--json")[1]) == records


def test_recommend_text_table(env, capsys):
    import torch

    before = torch.get_num_threads()
    rc, out, _ = run(capsys, "recommend", env.image, "--top", 3, "--threads", 1)
    assert rc == 0
    assert torch.get_num_threads() == before  # the caller's setting is restored
    assert "image predicted VA: valence" in out and "fake_image" in out
    header = [line for line in out.splitlines() if line.strip().startswith("rank")]
    assert header and all(w in header[0] for w in ("artist", "title", "similarity", "valence", "arousal"))
    assert len(out.strip().splitlines()) == 4 + 3


def test_recommend_images(env, capsys):
    clip = fk.write_tone(env.tmp / "song.wav", 523)
    rc, out, err = run(capsys, "recommend-images", clip, "--top", 4, "--json")
    assert rc == 0, err
    records = json.loads(out)
    assert len(records) == 4 and {"image_id", "similarity", "valence", "arousal"} <= set(records[0])
    rc, out, _ = run(capsys, "recommend-images", clip, "--top", 2)
    assert rc == 0 and "song predicted VA" in out and records[0]["image_id"] in out


def test_index_add_list_remove(env, capsys):
    a = fk.write_tone(env.tmp / "mine.wav", 880)
    rc, out, err = run(capsys, "index", "add", a, "--title", "My Song", "--artist", "Me")
    assert rc == 0, err
    assert "mine" in out
    rc, out, _ = run(capsys, "index", "list", "--json")
    songs = {r["song_id"]: r for r in json.loads(out)}
    assert len(songs) == 41 and songs["mine"]["title"] == "My Song" and songs["mine"]["artist"] == "Me"
    rc, out, _ = run(capsys, "index", "list")
    assert rc == 0 and "41 songs" in out and "My Song" in out
    rc, out, _ = run(capsys, "index", "remove", "mine", "--index", env.index)
    assert rc == 0 and len(index_reading.open_index(env.index)) == 40


def test_index_build_from_the_feature_store(env, capsys, monkeypatch):
    from imuse_lib import data, features

    catalog, sf_, images, if_ = fk.make_catalog(n_songs=12, n_images=6, seed=9)
    monkeypatch.setattr(data, "load_catalog", lambda *a, **k: catalog)
    monkeypatch.setattr(data, "load_images", lambda *a, **k: images)
    # the store lists ids in its own order: the build must align them
    perm = np.random.default_rng(0).permutation(12)
    monkeypatch.setattr(features, "audio_features", lambda **k: SimpleNamespace(
        ids=list(catalog.song_id[perm]), eval=sf_[perm], meta={}), raising=False)
    monkeypatch.setattr(features, "image_features", lambda **k: SimpleNamespace(
        ids=list(images.image_id), eval=if_, meta={}), raising=False)
    target = env.tmp / "built.sqlite"
    rc, out, err = run(capsys, "index", "build", "--index", target)
    assert rc == 0, err
    assert "12 songs" in out
    index = index_reading.open_index(target)
    direct = index_reading.open_index(index_building.build_index(env.model, env.tmp / "direct.sqlite", catalog, sf_,
                                                        images, if_, progress=False))
    assert np.array_equal(index.song_vectors, direct.song_vectors)


def test_bad_inputs_are_one_line_errors(env, capsys):
    t = env.tmp
    (t / "empty.png").write_bytes(b"")
    (t / "notes.jpg").write_text("not an image at all\n" * 20)
    (t / "folder").mkdir()
    for target in (t / "missing.jpg", t / "empty.png", t / "notes.jpg", t / "folder"):
        rc, _, err = run(capsys, "recommend", target)
        one_line_error(rc, err, target.name)
    rc, _, err = run(capsys, "recommend", env.image, "--model", t / "nomodel.pt")
    one_line_error(rc, err, "nomodel.pt", "no trained model")
    rc, _, err = run(capsys, "recommend", env.image, "--index", t / "noindex.sqlite")
    one_line_error(rc, err, "noindex.sqlite")
    rc, _, err = run(capsys, "recommend", env.image, "--top", 0)
    one_line_error(rc, err, "--top")
    rc, _, err = run(capsys, "recommend", env.image, "--threads", 0)
    one_line_error(rc, err, "--threads")
    for target in (t / "missing.mp3", t / "notes.jpg", t / "folder"):
        rc, _, err = run(capsys, "recommend-images", target)
        one_line_error(rc, err, target.name)


def test_index_errors_write_nothing(env, capsys):
    before = env.index.read_bytes()
    good = fk.write_tone(env.tmp / "good.wav", 200)
    (env.tmp / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 50)
    rc, _, err = run(capsys, "index", "add", good, env.tmp / "broken.mp3")
    one_line_error(rc, err, "broken.mp3")
    rc, _, err = run(capsys, "index", "remove", "S0001", "nope")
    one_line_error(rc, err, "nope")
    rc, _, err = run(capsys, "index", "add", good, "--title", "a", "--title", "b", "--title", "c")
    one_line_error(rc, err, "--title")
    assert env.index.read_bytes() == before


def test_empty_index_and_model_mismatch(env, capsys, monkeypatch):
    other = fk.make_model(factorised=False, seed=42)
    other_ckpt = training.save_model(env.tmp / "other.pt", other.net, other.meta)
    rc, _, err = run(capsys, "recommend", env.image, "--model", other_ckpt, "--index", env.index)
    one_line_error(rc, err, "different model", str(env.index))
    rc, _, err = run(capsys, "index", "add", fk.write_tone(env.tmp / "x.wav", 300), "--model", other_ckpt,
                     "--index", env.index)
    one_line_error(rc, err, "different model")
    rc, _, _ = run(capsys, "index", "remove", *env.catalog.song_id)
    assert rc == 0
    rc, _, err = run(capsys, "recommend", env.image)
    one_line_error(rc, err, "empty")


def test_corrupt_index_file(env, capsys):
    env.index.write_bytes(b"garbage" * 1000)
    rc, _, err = run(capsys, "recommend", env.image)
    one_line_error(rc, err, env.index.name, "not an IMUSE song index")
    rc, _, err = run(capsys, "index", "list")
    one_line_error(rc, err, env.index.name)


def test_entry_point_subprocess(tmp_path):
    """The real console process: a user error exits 2 with one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "imuse_lib", "recommend", str(tmp_path / "photo.jpg"),
                           "--model", str(tmp_path / "missing-model.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing-model.pt" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
