"""Workers for the kill tests (tests/test_kill.py) and the concurrent-writer tests.

Each worker runs one real write path in a child process: the ``imuse`` command line
(``cli.main``) with the tiny fakes of recommend_fakes.py standing in for the backbones and
the feature store, or the library's feature store / training loop on tiny inputs. The
children come from a ``forkserver`` that has imported torch once, so a child starts in
milliseconds and a kill at a random moment lands in the work, not in ``import torch``.

Two ways to kill (both SIGKILL, which no ``finally`` survives):

* the parent kills the child after a seeded random delay (:func:`run_killed`);
* the child kills itself at the K-th SQLite VM step (``kill_step``), which puts kills
  inside the transactions of ``index add`` / ``index build`` deterministically.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

CTX = None


def context():
    """The forkserver context, torch and the library imported in the server once."""
    global CTX
    if CTX is None:
        CTX = mp.get_context("forkserver")
        CTX.set_forkserver_preload(["numpy", "pandas", "torch", "imuse_lib.recommend", "imuse_lib.cli",
                                    "imuse_lib.features", "imuse_lib.training", "imuse_lib.pairs",
                                    "recommend_fakes", "kill_helpers"])
    return CTX


# --------------------------------------------------------------------------- in the child


def _arm_sqlite_kill(kill_step: int | None, count_file: str | None) -> None:
    """Kill this process at the kill_step-th SQLite VM step (counted over all connections).
    Returns the step counter (a one-item list)."""
    import sqlite3

    steps = [0]
    if not kill_step and not count_file:
        return steps
    real_connect = sqlite3.connect

    def handler():
        steps[0] += 1
        if kill_step and steps[0] >= kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_progress_handler(handler, 1)
        return conn

    sqlite3.connect = connect
    return steps


def _fake_world(ckpt: str, catalog_seed: int) -> None:
    """Fake backbones for the model in ``ckpt`` and a fake catalog/feature store."""
    import recommend_fakes as fk

    from imuse_lib import data, deployed, features, training

    fakes = {"image": fk.image_backbone, "audio": fk.audio_backbone}
    deployed.DeployedModel._build = lambda self, which: fakes[which]()
    training.default_model_path = lambda: Path(ckpt)
    catalog, song_feats, images, image_feats = fk.make_catalog(seed=catalog_seed)
    data.load_catalog = lambda *a, **k: catalog
    data.load_images = lambda *a, **k: images
    features.audio_features = lambda *a, **k: SimpleNamespace(ids=list(catalog.song_id), eval=song_feats)
    features.image_features = lambda *a, **k: SimpleNamespace(ids=list(images.image_id), eval=image_feats)


def _widen_build_window(seconds: float) -> None:
    """Make `index build` dawdle between reading the old index and writing the new one: the
    window in which an unlocked concurrent `index add` would be lost, made wide on purpose."""
    from imuse_lib.index import building as index_building

    real = index_building._carry_added  # called under the lock, after the old rows were read

    def slow(*args, **kwargs):
        found = real(*args, **kwargs)
        time.sleep(seconds)
        return found

    index_building._carry_added = slow


def cli_worker(argv: list[str], log: str, ckpt: str | None = None, catalog_seed: int = 1,
               kill_step: int | None = None, count_file: str | None = None, build_pause: float = 0.0) -> None:
    """Run ``imuse ARGV`` (fakes installed when ``ckpt`` is given); exit with its status."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    import torch

    torch.set_num_threads(1)
    if ckpt:
        _fake_world(ckpt, catalog_seed)
    if build_pause:
        _widen_build_window(build_pause)
    steps = _arm_sqlite_kill(kill_step, count_file)
    from imuse_lib import cli

    rc = cli.main(argv)
    if count_file:
        Path(count_file).write_text(str(steps[0]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def feature_worker(folder: str, cache: str) -> None:
    """The feature store on 8 small real-format images, 2 items per resumable chunk."""
    os.environ["IMUSE_CACHE"] = cache
    import pandas as pd
    import torch

    import recommend_fakes as fk
    from imuse_lib import features

    torch.set_num_threads(1)
    features.CHUNK_ITEMS = 2
    frame = pd.DataFrame({"image_id": [f"img{i}" for i in range(8)],
                          "path": [str(Path(folder) / f"img{i}.png") for i in range(8)]})
    features.image_features(fk.image_backbone(), views=3, seed=7, images=frame, progress=False)
    os._exit(0)


def train_worker(folder: str, epochs: int) -> None:
    """Training with a checkpoint every epoch (resumed when there), then the final model."""
    import torch

    from imuse_lib import training
    from test_training import cfg, synthetic

    torch.set_num_threads(1)
    data, pairs = synthetic()
    res = training.train(data, pairs, cfg(epochs=epochs, seed=3), checkpoint=Path(folder) / "ckpt.pt")
    training.save_model(Path(folder) / "model.pt", res.model, {"epochs": epochs})
    os._exit(0)


# --------------------------------------------------------------------------- in the parent


def start(target, *args, **kwargs):
    proc = context().Process(target=target, args=args, kwargs=kwargs)
    proc.start()
    return proc


def run_to_end(target, *args, timeout: float = 120, **kwargs) -> tuple[int, float]:
    """(exit code, seconds) of a child run to its end."""
    t0 = time.monotonic()
    proc = start(target, *args, **kwargs)
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise AssertionError(f"{target.__name__}{args} did not finish in {timeout} s")
    return proc.exitcode, time.monotonic() - t0


def run_killed(target, *args, delay: float, **kwargs) -> int | None:
    """Start a child and SIGKILL it after ``delay`` s; its exit code (-9: killed, else it ended first)."""
    proc = start(target, *args, **kwargs)
    proc.join(delay)
    if proc.is_alive():
        proc.kill()  # SIGKILL; no error when the child ended since is_alive()
    proc.join(60)
    return proc.exitcode


def run_killed_at_write(target, *args, watch: Path, pattern: str, after: float, timeout: float = 120,
                        **kwargs) -> int | None:
    """Start a child and SIGKILL it ``after`` s after a file matching ``pattern`` (a temporary
    file of the atomic writer) appears in ``watch``: a kill inside the write itself."""
    proc = start(target, *args, **kwargs)
    deadline = time.monotonic() + timeout
    while proc.is_alive() and time.monotonic() < deadline:
        if any(Path(watch).rglob(pattern)):
            time.sleep(after)
            break
        time.sleep(0.0005)
    if proc.is_alive():
        proc.kill()  # SIGKILL; no error when the child ended since is_alive()
    proc.join(60)
    return proc.exitcode


def sqlite_steps(argv: list[str], log: str, ckpt: str, count_file: str, **kwargs) -> int:
    """How many SQLite VM steps a full run of ``imuse ARGV`` takes."""
    code, _ = run_to_end(cli_worker, argv, log, ckpt, count_file=count_file, **kwargs)
    assert code == 0, Path(log).read_text()
    return int(Path(count_file).read_text())


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())
