"""Ray as the engine (issue 11), on a simulated two-node cluster (``ray.cluster_utils.Cluster``,
as Ray's own tests do; one CPU per node on this 2-core machine): real clips and images
embedded into the feature store equal the local path's; `index add` over files with a bad
one skips and reports it; a worker killed mid-job is restarted and the index ends complete;
an interrupted job resumes; two grid cells trained as Ray tasks equal the local ones.

Skipped when Ray is not installed (`pip install .[scale]`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install '.[scale]' (issue 11)")

from imuse_lib import deployed, engine, features  # noqa: E402
from imuse_lib.experiments import train_one as ORIGINAL_TRAIN_ONE  # noqa: E402
from imuse_lib.index import arrays as index_arrays  # noqa: E402
from imuse_lib.index import building as index_building  # noqa: E402
from imuse_lib.index import integrity as index_integrity  # noqa: E402
from imuse_lib.index import reading as index_reading  # noqa: E402

import recommend_fakes as fk  # noqa: E402

pytestmark = pytest.mark.slow
TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each; workers can import the test helpers."""
    from ray.cluster_utils import Cluster

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([TESTS] + ([old] if old else []))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield c
    ray.shutdown()
    c.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _images(mirror, n):
    from imuse_lib import data

    return data.load_images().iloc[:n].reset_index(drop=True)


def _clips(n):
    from imuse_lib import data

    return data.load_catalog().iloc[:n].reset_index(drop=True)


def test_real_images_and_clips_equal_the_local_path(cluster, cache, mirror, monkeypatch):
    from imuse_lib import models

    monkeypatch.setattr(features, "CHUNK_ITEMS", 2)  # several chunks from a few items
    frame = _images(mirror, 5)
    bb = models.build_image_backbone("mobilenet_v2")
    rep = engine.feature_store(bb, "image", 1, 7, frame=frame, workers=2)
    assert rep.computed == 5 and not rep.skipped
    fs = rep.result
    assert fs.meta["engine"] == "ray" and fs.meta["items_computed_in_last_run"] == 5
    local_cache = cache / "local"
    monkeypatch.setenv("IMUSE_CACHE", str(local_cache))
    local = features.image_features(bb, 1, 7, images=frame, progress=False)
    assert fs.path.name == local.path.name  # the same store key: same backbone, items, views, seed
    assert fs.ids == local.ids
    np.testing.assert_allclose(fs.eval, local.eval, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fs.train, local.train, rtol=1e-4, atol=1e-5)

    clips = _clips(3)
    ab = models.build_audio_backbone("musicnn")
    monkeypatch.setenv("IMUSE_CACHE", str(cache / "cache"))
    rep = engine.feature_store(ab, "audio", 1, 7, frame=clips, eval_crops=1, workers=2)
    monkeypatch.setenv("IMUSE_CACHE", str(local_cache))
    local = features.audio_features(ab, 1, 7, catalog=clips, eval_crops=1, progress=False)
    np.testing.assert_allclose(rep.result.eval, local.eval, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rep.result.train, local.train, rtol=1e-4, atol=1e-5)
    print(f"\nRAY EQUALITY images max |diff| {np.abs(fs.eval - features.image_features(bb, 1, 7, images=frame, progress=False).eval).max():.2e}, "
          f"clips max |diff| {np.abs(rep.result.eval - local.eval).max():.2e}")


def test_bad_file_skipped_and_interrupted_job_resumes(cluster, cache, mirror, monkeypatch):
    from imuse_lib import models

    monkeypatch.setattr(features, "CHUNK_ITEMS", 2)
    frame = _images(mirror, 5)
    bad = cache / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    broken = frame.copy()
    broken.loc[3, "path"] = str(bad)
    bb = models.build_image_backbone("mobilenet_v2")
    rep = engine.feature_store(bb, "image", 0, 7, frame=broken, workers=2)
    assert [p for p, _ in rep.skipped] == [str(bad)] and rep.computed == 4
    assert "broken.jpg" in rep.skipped_lines()[0]
    assert rep.result is None  # the entry is incomplete: its good chunks are kept for a rerun

    # interrupted as a whole after its first chunk: the rerun computes only the rest
    real_save = features.save_npz
    calls = []

    def dies_after_one(path, **arrays):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(arrays["ids"]))  # Ray hands batches back in any order: which chunk came first
        real_save(path, **arrays)

    monkeypatch.setattr(features, "save_npz", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        engine.feature_store(bb, "image", 0, 7, frame=frame, workers=2)
    monkeypatch.setattr(features, "save_npz", real_save)
    rep = engine.feature_store(bb, "image", 0, 7, frame=frame, workers=2)
    assert calls and rep.reused == calls[0] and rep.computed == 5 - calls[0] and not rep.skipped
    local = features.image_features(bb, 0, 7, images=frame, progress=False)  # now served from the store
    assert local.from_cache and local.ids == rep.result.ids


def _index(tmp, factorised=True):
    model = fk.make_model(factorised=factorised)
    catalog, sf_, images, if_ = fk.make_catalog()
    path = index_building.build_index(model, tmp / "idx.sqlite", catalog, sf_, images, if_, progress=False)
    return model, path


def test_index_add_equals_local_skips_bad_files_and_resumes(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(index_arrays, "ARRAYS_MIN", 10)  # memory-mapped arrays, as a large index has
    publishes = []
    real_publish = index_arrays.publish_generation
    monkeypatch.setattr(index_arrays, "publish_generation", lambda *a, **k: publishes.append(a) or real_publish(*a, **k))
    tones = [fk.write_tone(tmp_path / f"tone{i}.wav", 220 + 55 * i) for i in range(5)]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF nonsense")
    (tmp_path / "a").mkdir()
    model, path = _index(tmp_path / "a")
    rep = engine.index_add(path, model, tones[:3] + [str(bad)], workers=2, commit_every=2)
    assert [p for p, _ in rep.skipped] == [str(bad.resolve())] and rep.computed == 3
    # a rerun (as after an interruption) with more files: the three are not embedded again
    rep = engine.index_add(path, model, tones, workers=2, commit_every=2)
    assert rep.reused == 3 and rep.computed == 2 and sorted(rep.result) == ["tone3", "tone4"]
    # the build, then five songs in three transactions (commit_every=2) over two runs: arrays once a run
    assert len(publishes) == 1 + 2

    (tmp_path / "b").mkdir()
    _, local_path = _index(tmp_path / "b")
    index_building.add_songs(local_path, model, tones)
    a, b = index_reading.open_index(path), index_reading.open_index(local_path)
    assert isinstance(a.song_va, np.memmap)  # the arrays of the final state
    assert [p.name for p in index_arrays.arrays_dir(path).iterdir()] == [a.meta["generation"]]
    assert list(a.songs.song_id) == list(b.songs.song_id)
    np.testing.assert_allclose(a.song_vectors, b.song_vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.song_va, b.song_va, rtol=1e-5, atol=1e-6)
    assert index_integrity.check_integrity(path) == []


class KillOnce:
    """An audio module whose first forward, in whichever worker runs it, kills that worker
    process outright (SIGKILL), as an out-of-memory killer or a lost node would."""

    def __init__(self, inner, marker: str):
        self.inner, self.marker = inner, marker

    def __call__(self, x):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.inner(x)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def to(self, device):
        self.inner.to(device)
        return self

    def eval(self):
        return self


def test_worker_killed_mid_job_is_retried_and_the_index_is_complete(cluster, tmp_path):
    model, path = _index(tmp_path)
    bb = model.audio_bb()
    marker = tmp_path / "killed.pid"
    bb.module = KillOnce(bb.module, str(marker))
    tones = [fk.write_tone(tmp_path / f"k{i}.wav", 300 + 40 * i) for i in range(6)]
    rep = engine.index_add(path, model, tones, workers=2, commit_every=2)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert rep.computed == 6 and not rep.skipped
    idx = index_reading.open_index(path)
    assert {f"k{i}" for i in range(6)} <= set(idx.songs.song_id) and len(idx) == 46
    assert index_integrity.check_integrity(path) == []
    print(f"\nRAY KILLED WORKER: pid {marker.read_text()} killed, 6/6 songs added, integrity ok")


def toy_train_one(task):
    """experiments.train_one on the synthetic features of test_training, wired in the process
    that runs it (a Ray worker does not see the test's monkeypatches of the driver)."""
    import test_training as tt
    from imuse_lib import pairs
    from imuse_lib.experiments import inputs

    data, p = tt.synthetic(n_images=48, n_songs=32)
    inputs.feature_data = lambda i, a: data
    inputs.split_pairs = lambda split: pairs.split_pairs(p.drop(columns="split"), split, 1,
                                                              images=data.images, songs=data.songs)
    return ORIGINAL_TRAIN_ONE(task)



def test_two_grid_cells_as_ray_tasks_equal_the_local_ones(cluster, tmp_path, monkeypatch):
    import torch

    from imuse_lib import training

    out = {}
    for eng in ("local", "ray"):
        with monkeypatch.context() as m:
            m.setenv("IMUSE_RESULTS", str(tmp_path / eng))
            ex = _wire(m, tmp_path)
            if eng == "ray":  # the workers wire the synthetic data themselves
                m.setattr(ex.grid, "train_one", toy_train_one)
            prev = torch.get_num_threads()
            torch.set_num_threads(1)  # the local cells with one thread, as each Ray task
            try:
                res = ex.run_training("quick", timing=False, progress=False, jobs=1, epochs=2, seeds=[0],
                                      variants=["joint"], splits=["cold", "paper"], engine=eng)
            finally:
                torch.set_num_threads(prev)
            chosen = training.load_checkpoint()[1]  # the default model, chosen on validation
            out[eng] = (res["runs"], {p.relative_to(tmp_path / eng): torch.load(p, weights_only=False)
                                      for p in sorted((tmp_path / eng).rglob("model.pt"))},
                        {k: chosen.get(k) for k in ("config", "split", "variant", "seed", "selected_by")})
    (lr, lm, lc), (rr, rm, rc) = out["local"], out["ray"]
    assert (rr.engine == "ray").all() and (lr.engine == "local").all()
    assert lc == rc and lc["split"] == "cold"  # the same chosen model
    assert len(lr) == 2 and len(lm) >= 2 and list(rm) == list(lm)
    for k in lm:
        a, b = lm[k], rm[k]
        sa, sb = a["model"], b["model"]
        assert all(torch.equal(sa[n], sb[n]) for n in sa), k
    cols = ["config", "split", "variant", "seed", "epochs", "final_val_loss"]
    pd.testing.assert_frame_equal(lr[cols], rr[cols])


def _wire(m, tmp_path):
    from dataclasses import replace

    import test_training as tt
    from imuse_lib import experiments, pairs, profiles
    from imuse_lib.experiments import inputs

    data, p = tt.synthetic(n_images=48, n_songs=32)
    m.setattr(inputs, "feature_data", lambda i, a: data)
    m.setattr(inputs, "split_pairs", lambda split: pairs.split_pairs(
        p.drop(columns="split"), split, 1, images=data.images, songs=data.songs))
    m.setattr(inputs, "item_roles", lambda split: pairs.item_roles(split, data.images, data.songs, 1))
    m.setattr(inputs, "configurations", lambda prof: [("mobilenet_v2", "musicnn")])
    m.setattr(profiles, "PROFILES", {k: replace(v, deploy_va_model=False) for k, v in profiles.PROFILES.items()})
    return experiments


def test_cli_index_add_engine_ray_reports_skipped_files(cluster, tmp_path, monkeypatch, capsys):
    """`imuse index add --engine ray` on the cluster (a Ray already running is used as it is)."""
    from imuse_lib import training
    from imuse_lib.cli import main

    model, path = _index(tmp_path)
    ckpt = training.save_model(tmp_path / "model.pt", model.net, model.meta)
    fakes = {"image": fk.image_backbone, "audio": fk.audio_backbone}
    monkeypatch.setattr(deployed.DeployedModel, "_build", lambda self, which: fakes[which]())
    tones = [fk.write_tone(tmp_path / f"c{i}.wav", 250 + 30 * i) for i in range(2)]
    bad = tmp_path / "empty.mp3"
    bad.write_bytes(b"")
    argv = ["index", "add", *tones, str(bad), "--index", str(path), "--model", str(ckpt), "--engine", "ray"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "added 2 song(s)" in out and "(engine ray" in out
    assert f"skipped: {bad}" in err and "1 file(s) could not be decoded" in err
    assert {"c0", "c1"} <= set(index_reading.open_index(path).songs.song_id)
    assert main(argv[:4] + argv[5:]) == 0  # the same files again, less the bad one: nothing to do
    assert "added 0 song(s)" in capsys.readouterr().out and len(index_reading.open_index(path)) == 42


def test_va_search_on_ray_finds_what_the_local_search_finds(cluster):
    """The deployed model's Optuna search with its trials as Ray tasks (batches of 4, told in
    order) gives exactly the local search's trials, losses and choice with the same batch."""
    from imuse_lib import va_model

    rng = np.random.default_rng(0)
    x = [rng.normal(size=(80, 6)), rng.normal(size=(80, 3))]
    y = np.column_stack([np.tanh(x[0][:, 0] + 0.3 * x[1][:, 0]), np.sin(x[0][:, 1])]) * 0.2 + 0.5
    xv = [rng.normal(size=(30, 6)), rng.normal(size=(30, 3))]
    yv = np.column_stack([np.tanh(xv[0][:, 0] + 0.3 * xv[1][:, 0]), np.sin(xv[0][:, 1])]) * 0.2 + 0.5
    args = (x, y, xv, yv, ("a", "b"), 10, 3)
    local = va_model.tune_arm(*args, batch=4, engine="local")
    on_ray = va_model.tune_arm(*args, batch=4, engine="ray")
    for key in ("kernel", "weights", "g", "val_loss", "n_trials"):
        assert on_ray[key] == local[key], key
    assert on_ray["trials"]["value"].tolist() == local["trials"]["value"].tolist()
