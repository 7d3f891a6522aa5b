"""Ray as an optional engine for the two jobs that outgrow one machine (issue 11).

The default engine is ``local`` (this process) and never imports Ray. With ``--engine ray``:

* **Embedding many files** (:func:`feature_store` for ``imuse features``, :func:`index_add`
  for ``imuse index add``): Ray Data reads the files by path and ``map_batches`` runs them
  through an actor pool; each actor holds the frozen backbone once (one GPU per actor where
  the cluster has GPUs, else ``cpus_per_worker`` CPUs). The driver writes the results with
  the local path's own atomic, resumable writes: finished chunks of the feature store
  (``features.py``: the same files, then the same entry), or index transactions of
  ``commit_every`` songs (``index.building.add_embedded``). A file that fails to decode is
  reported in the ``skipped`` list and does not stop the job. A job interrupted as a whole
  resumes: finished chunks are reused, songs already in the index from the same file are
  not embedded again. A worker killed mid-job is restarted by Ray and its batch retried
  (``max_restarts``/``max_task_retries`` below).

The Ray session and the generic task plumbing (also used by the experiment grid and the VA
model's search) live in :mod:`imuse_lib.parallel`. On a cluster, every node needs this
package installed and the data, weights and results folders at the same paths (a shared
filesystem): workers read files by path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import feature_views, parallel
from .errors import DataError, ImuseError
from .parallel import RETRIES

COMMIT_EVERY = 256  # songs per index transaction in `index add --engine ray`


# --------------------------------------------------------------------------- embedding


@dataclass
class EmbedSpec:
    """What each item becomes: ``n_train`` random views/crops and ``n_eval`` evaluation
    inputs (averaged), exactly as :mod:`imuse_lib.features` makes them."""

    kind: str  # "image" or "audio"
    n_train: int
    seed: int
    n_eval: int = 1
    batch_size: int = 32


class _Embedder:
    """Ray Data actor: holds the frozen backbone; a batch of (id, path) rows in, features out.
    A file that fails to decode gives a row with its error and zero features."""

    def __init__(self, backbone, spec: EmbedSpec, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.bb, self.spec = backbone, spec
        self.dev = feature_views.pick_device(None)
        backbone.to(self.dev)

    def _inputs(self, item_id: str, path: str) -> list:
        s = self.spec
        if s.kind == "image":
            return feature_views.image_inputs(self.bb, item_id, path, s.n_train, s.seed)
        return feature_views.audio_inputs(self.bb, item_id, path, s.n_train, s.seed, s.n_eval)

    def __call__(self, batch: dict) -> dict:
        ids, paths = [str(i) for i in batch["id"]], [str(p) for p in batch["path"]]
        n_eval = 1 if self.spec.kind == "image" else self.spec.n_eval
        per_item, inputs, errors = [], [], []
        for item_id, path in zip(ids, paths):
            try:
                x = self._inputs(item_id, path)
                errors.append("")
            except (ImuseError, OSError, ValueError, RuntimeError) as exc:  # decode failures: skip, report
                x = []
                errors.append(" ".join(str(exc).split()) or type(exc).__name__)
            per_item.append(len(x))
            inputs.extend(x)
        feats = feature_views.forward(self.bb, inputs, self.spec.batch_size, self.dev)
        dim, n_train = self.bb.dim, self.spec.n_train
        ev = np.zeros((len(ids), dim), np.float32)
        tr = np.zeros((len(ids), n_train * dim), np.float32)
        pos = 0
        for i, k in enumerate(per_item):  # the same reduction as the feature store's
            if k:
                f = feats[pos:pos + k]
                ev[i] = feature_views.pool_eval(f, n_eval)
                tr[i] = f[n_eval:].reshape(-1)
            pos += k
        out = {"id": np.array(ids), "path": np.array(paths), "eval": ev, "error": np.array(errors)}
        if n_train:
            out["train"] = tr
        return out


def embed(backbone, spec: EmbedSpec, items: Sequence[tuple[str, str]], workers: int = 2,
          cpus_per_worker: float = 1, batch_items: int = 8):
    """Yield result batches (dicts of arrays: id, path, eval [B, D], train [B, K*D] when K,
    error) for ``items`` (id, path), as the actor pool finishes them (any order). Call
    inside :func:`parallel.session`."""
    ray = parallel.require_ray()
    if not items:
        return
    workers = max(1, workers)
    batch_items = max(1, min(batch_items, -(-len(items) // workers)))  # every actor gets work
    ds = ray.data.from_items([{"id": str(i), "path": str(p)} for i, p in items],
                             override_num_blocks=-(-len(items) // batch_items))
    threads = max(1, int(cpus_per_worker))
    out = ds.map_batches(
        _Embedder, fn_constructor_kwargs={"backbone": backbone, "spec": spec, "threads": threads},
        batch_size=batch_items, compute=ray.data.ActorPoolStrategy(size=workers), batch_format="numpy",
        # a killed actor is restarted and its batch retried (Ray 2.60 takes these as extra keyword
        # arguments, with a notice that 2.64 will want them another way: revisit on upgrade)
        max_restarts=RETRIES, max_task_retries=RETRIES, runtime_env=parallel.runtime_env(),
        **parallel.resources(ray, cpus_per_worker))
    yield from out.iter_batches(batch_size=None, batch_format="numpy")


@dataclass
class EmbedReport:
    """What an embedding job did: items computed here, reused from an interrupted run, skipped."""

    computed: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    result: object = None  # the FeatureSet, or the ids added to the index

    def skipped_lines(self) -> list[str]:
        return [f"{p}: {why}" for p, why in self.skipped]


def feature_store(backbone, arm: str, n_train: int, seed: int, frame=None, eval_crops: int | None = None,
                  workers: int = 2, cpus_per_worker: float = 1) -> EmbedReport:
    """The feature store entry of ``backbone`` over the OASIS images / 4Q clips (or ``frame``),
    computed on Ray: the chunk files of the feature store (:mod:`imuse_lib.features`) written as they finish, then
    the entry assembled by the local path itself (same key, same files, same provenance).
    Skipped files leave the entry incomplete (its finished chunks are kept for the rerun)."""
    from . import data, features
    from .io import write_json

    t0 = time.perf_counter()
    if arm == "image":
        frame = data.load_images() if frame is None else frame
        ids, paths = [str(i) for i in frame["image_id"]], [str(p) for p in frame["path"]]
        spec = features.feature_spec(backbone, ids, paths, n_train, seed)
        espec = EmbedSpec("image", n_train, seed, 1, 32)
    else:
        frame = data.load_catalog() if frame is None else frame
        ids, paths = [str(i) for i in frame["song_id"]], [str(p) for p in frame["path"]]
        n_eval = int(eval_crops or backbone.eval_crops or 1)
        spec = features.feature_spec(backbone, ids, paths, n_train, seed, {"eval_crops": n_eval})
        espec = EmbedSpec("audio", n_train, seed, n_eval, 8)
    if len(set(ids)) != len(ids):
        raise DataError(f"{arm} features: duplicate ids")
    key = features.feature_key(spec)
    folder = features.store_root() / key
    report = EmbedReport()

    def assemble():
        kw = {"images": frame} if arm == "image" else {"catalog": frame, "eval_crops": espec.n_eval}
        make = features.image_features if arm == "image" else features.audio_features
        return make(backbone, n_train, seed, **kw, batch_size=espec.batch_size, progress=False)

    if features.load_entry(folder, key) is not None:  # complete already
        report.result, report.reused = assemble(), len(ids)
        return report
    chunk_dir = folder / "chunks"
    chunks = [ids[s:s + features.CHUNK_ITEMS] for s in range(0, len(ids), features.CHUNK_ITEMS)]
    chunk_of = {}
    for c, cids in enumerate(chunks):
        if _chunk_done(chunk_dir / f"{c:05d}.npz", cids):  # finished by an interrupted run
            report.reused += len(cids)
            continue
        chunk_of.update((i, c) for i in cids)
    pos = {i: n for n, i in enumerate(ids)}
    todo = [(i, paths[pos[i]]) for i in ids if i in chunk_of]
    pending = {c: {} for c in set(chunk_of.values())}
    for batch in embed(backbone, espec, todo, workers, cpus_per_worker):
        for j, item in enumerate(batch["id"]):
            item = str(item)
            c = chunk_of[item]
            if batch["error"][j]:
                report.skipped.append((str(batch["path"][j]), str(batch["error"][j])))
                continue
            if not np.isfinite(batch["eval"][j]).all():  # would fail the whole transaction (add_embedded)
                report.skipped.append((str(batch["path"][j]), "its embedding is not a finite number"))
                continue
            tr = batch["train"][j].reshape(n_train, backbone.dim) if n_train else np.zeros((0, backbone.dim),
                                                                                            np.float32)
            pending[c][item] = (tr, batch["eval"][j])
            report.computed += 1
            if len(pending[c]) == len(chunks[c]):  # a whole chunk: written at once, atomically
                rows = [pending[c][i] for i in chunks[c]]
                features.save_npz(chunk_dir / f"{c:05d}.npz", ids=np.array(chunks[c]),
                                   train=np.stack([r[0] for r in rows]).astype(np.float32),
                                   eval=np.stack([r[1] for r in rows]).astype(np.float32))
                del pending[c]
    report.seconds = time.perf_counter() - t0
    if report.skipped:
        report.skipped.sort()
        return report
    fs = assemble()  # every chunk is there: the local path only concatenates and writes the entry
    fs.meta.update(engine="ray", items_computed_in_last_run=report.computed, seconds=round(report.seconds, 2))
    write_json(folder / "meta.json", fs.meta)
    fs.computed_items, fs.from_cache, fs.seconds = report.computed, report.computed == 0, report.seconds
    report.result = fs
    return report


def _chunk_done(path: Path, cids: list) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return [str(i) for i in z["ids"]] == [str(i) for i in cids]
    except (OSError, ValueError, KeyError):
        return False  # an unreadable leftover: computed again


def index_add(index_path, model, audio: Sequence, titles: Sequence[str] | None = None,
              artists: Sequence[str] | None = None, song_ids: Sequence[str] | None = None,
              workers: int = 2, cpus_per_worker: float = 1, commit_every: int = COMMIT_EVERY) -> EmbedReport:
    """``imuse index add`` over many files on Ray: songs are committed ``commit_every`` at a
    time (each one transaction of :func:`index.building.add_embedded`), so a rerun after an
    interruption finds the songs already added from the same files and embeds only the rest."""
    from .index import arrays, building, editing, files, reading

    t0 = time.perf_counter()
    index_path = Path(index_path)
    meta = files.read_meta(index_path)
    reading.check_fingerprint(index_path, meta, model)
    audio = [Path(a) for a in audio]
    ids, titles, artists = editing.per_file_text(audio, song_ids, titles, artists)
    present = editing.stored_sources(index_path, ids)
    report = EmbedReport()
    todo = []
    for i, a in enumerate(audio):
        if ids[i] in present:
            if present[ids[i]] != str(a.resolve()):
                raise ImuseError(f"{index_path}: song id {ids[i]} is already in the index, from another file "
                                 f"({present[ids[i]]}); remove it first (`imuse index remove`) or pass --id")
            report.reused += 1  # added by an earlier, interrupted run
        else:
            todo.append(i)
    eval_crops = _eval_crops(model)
    spec = EmbedSpec("audio", 0, 0, eval_crops, 8)
    buffer: list[tuple[int, np.ndarray]] = []
    added: list[str] = []

    def commit():
        if buffer:
            buffer.sort()
            rows = [i for i, _ in buffer]
            building.add_embedded(index_path, model, [audio[i] for i in rows], np.stack([f for _, f in buffer]),
                                  [ids[i] for i in rows], [titles[i] for i in rows], [artists[i] for i in rows],
                                  publish=False)  # the arrays once at the end, not per transaction
            added.extend(ids[i] for i in rows)
            buffer.clear()

    # the item id is the file's position (an item id seeds only training crops: none here)
    items = [(str(i), str(audio[i].resolve())) for i in todo]
    for batch in embed(model.audio_bb(), spec, items, workers, cpus_per_worker):
        for j, row in enumerate(batch["id"]):
            if batch["error"][j]:
                report.skipped.append((str(batch["path"][j]), str(batch["error"][j])))
                continue
            if not np.isfinite(batch["eval"][j]).all():  # would fail the whole transaction (add_embedded)
                report.skipped.append((str(batch["path"][j]), "its embedding is not a finite number"))
                continue
            buffer.append((int(row), np.asarray(batch["eval"][j], np.float32)))
            report.computed += 1
            if len(buffer) >= commit_every:
                commit()
    commit()
    if added:
        arrays.publish_arrays(index_path)
    report.skipped.sort()
    report.seconds = time.perf_counter() - t0
    report.result = added
    return report


def _eval_crops(model) -> int:
    from .deployed import store_kwargs

    return int(store_kwargs(model.meta, "audio").get("eval_crops") or model.audio_bb().eval_crops or 1)
