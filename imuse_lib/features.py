"""The feature store: frozen-backbone features computed once, then served from disk.

The paper freezes its pretrained backbones, so every (backbone, weights, preprocessing,
item, view) has one feature vector; training then never runs a CNN again.

    fs = features.image_features("mobilenet_v2", views=2)   # 900 OASIS images
    fs = features.audio_features("musicnn", crops=2)        # 500 4Q clips
    fs.ids, fs.train [N, K, D], fs.eval [N, D], fs.meta

Views (made by :mod:`imuse_lib.feature_views`). Images: ``K`` random training views
(the spec of :mod:`imuse_lib.image_view`: random crop + horizontal flip), each seeded by
(seed, image_id, view), plus the evaluation view (centre crop). Clips: ``M`` random crops of
the backbone's input length (start drawn uniformly, seeded by (seed, song_id)) plus the
backbone's fixed evaluation crops (evenly spaced over the clip; the centre one when there is
one), whose features are averaged into ``eval``. Clips shorter than a crop follow
:func:`imuse_lib.media.fit_length`.

On-disk format (``cache_dir()/features/<backbone>-<key>/``):

* ``features.npz``: ``ids`` (str [N]), ``train`` (float32 [N, K, D]), ``eval`` (float32 [N, D]);
* ``meta.json``: the key's full specification (backbone, weights provenance incl. sha256 or
  "random" + init seed, preprocessing parameters, views/crops, seed, items digest) plus
  run facts (time, device, library versions). It is written last: its presence marks a
  complete entry;
* ``chunks/NNNNN.npz`` while a run is in progress: finished chunks of items, reused when an
  interrupted run is started again, removed once ``features.npz`` is written.

The key is the sha256 of the specification, so changing the backbone, its weights (sha256),
any preprocessing parameter, the number of views, the seed or the item list (ids and file
checksums) gives a new entry: stale features are never served. All writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config, feature_views, frozen_runtime, media
from .errors import DataError, ImuseError
from .io import atomic_path, open_npz, read_json, write_json
from .models.audio import TAGGERS
from .models.base import Backbone
from .models.descriptors import DESCRIPTOR_SOURCES

FORMAT_VERSION = 1
# K random training views per image and M random training crops per clip: what training's
# augmentation and the test-time-averaged predictor draw from. Two keep both meaningful; each
# more costs a backbone pass per item (on 2 CPU cores ~50 ms an image view, ~70 ms a Musicnn
# crop), which made the stores the largest part of a first quick build (issue 19).
# FCN's crop is 29 s of a 30 s clip: extra random crops differ by under a second, so one.
DEFAULT_VIEWS = 2
DEFAULT_CROPS = {"samplecnn": 2, "musicnn": 2, "fcn": 1}
CHUNK_ITEMS = 50  # items per resumable chunk


@dataclass
class FeatureSet:
    """Frozen features of every item: ``train`` [N, K, D] random views/crops, ``eval`` [N, D]."""

    ids: list
    train: np.ndarray
    eval: np.ndarray
    meta: dict
    path: Path | None = None
    from_cache: bool = False
    seconds: float = 0.0
    computed_items: int = 0  # items computed in this call (0 when fully served from the store)
    extra: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.eval.shape[1])

    def index(self) -> dict:
        return {i: n for n, i in enumerate(self.ids)}


# --------------------------------------------------------------------------- keys


def store_root() -> Path:
    return config.cache_dir() / "features"


def _item_token(path: Path) -> str:
    """What identifies an item's content: its registry sha256 when it is a mirrored file,
    else its size and modification time."""
    path = Path(path)
    root = config.data_root()
    if root is not None:
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = None
        if rel is not None:
            from . import data

            sha = data.registry().get(rel)
            if sha:
                return sha
    try:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


def _weights_key(weights: dict) -> dict:
    if weights.get("kind") == "random":
        return {"kind": "random", "init_seed": weights.get("init_seed")}
    return {"kind": weights.get("kind"), "sha256": weights.get("sha256")}


def feature_spec(backbone: Backbone, ids: list, paths: list, n_train: int, seed: int, extra: dict | None = None) -> dict:
    """Everything the features depend on (the store key is its hash)."""
    items = hashlib.sha256(json.dumps([[str(i), _item_token(p)] for i, p in zip(ids, paths)]).encode()).hexdigest()
    spec = {
        "format": FORMAT_VERSION,
        "arm": backbone.kind,
        "backbone": backbone.name,
        "weights": _weights_key(backbone.weights),
        "preprocessing": backbone.preprocessing,
        "dim": backbone.dim,
        "n_train": int(n_train),
        "seed": int(seed),
        "n_items": len(ids),
        "items_sha256": items,
    }
    if extra:
        spec.update(extra)
    return spec


def feature_key(spec: dict) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    return f"{spec['backbone']}-{digest[:16]}"


# --------------------------------------------------------------------------- the store


def save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append '.npz' to a name
            np.savez(fh, **arrays)


def load_entry(folder: Path, key: str):
    meta_path, npz_path = folder / "meta.json", folder / "features.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        return None
    meta = read_json(meta_path)
    if meta.get("key") != key:
        return None
    with open_npz(npz_path, "feature store entry") as z:
        return [str(i) for i in z["ids"]], z["train"], z["eval"], meta


def _extract(backbone: Backbone, ids: list, sources: list, n_train: int, seed: int, spec: dict,
             batch_size: int, progress: bool, device, make_inputs, n_per_item_eval: int,
             desc: str) -> FeatureSet:
    """Compute (or load) the features of ``ids``; resumable chunk by chunk."""
    from tqdm import tqdm

    key = feature_key(spec)
    folder = store_root() / key
    t0 = time.perf_counter()
    hit = load_entry(folder, key)
    if hit is not None:
        got_ids, train, ev, meta = hit
        return FeatureSet(got_ids, train, ev, meta, folder, True, time.perf_counter() - t0, 0)

    dev = feature_views.pick_device(device)
    backbone.to(dev)
    chunk_dir = folder / "chunks"
    n = len(ids)
    starts = list(range(0, n, CHUNK_ITEMS))
    parts, computed = [], 0
    bar = tqdm(total=n, desc=desc, unit="item", disable=not progress, leave=False)
    for c, start in enumerate(starts):
        cids = [str(i) for i in ids[start:start + CHUNK_ITEMS]]
        cpath = chunk_dir / f"{c:05d}.npz"
        if cpath.is_file():  # resume: a chunk finished by an earlier, interrupted run
            try:
                with np.load(cpath, allow_pickle=False) as z:
                    if [str(i) for i in z["ids"]] == cids:
                        parts.append((z["train"], z["eval"]))
                        bar.update(len(cids))
                        continue
            except (OSError, ValueError, KeyError):
                pass  # unreadable leftover: recompute it
        inputs, per_item = [], []
        for item_id, src in zip(cids, sources[start:start + CHUNK_ITEMS]):
            x = make_inputs(backbone, item_id, src)
            inputs.extend(x)
            per_item.append(len(x))
        feats = feature_views.forward(backbone, inputs, batch_size, dev)
        tr, ev, pos = [], [], 0
        for k in per_item:
            f = feats[pos:pos + k]
            pos += k
            ev.append(feature_views.pool_eval(f, n_per_item_eval))
            tr.append(f[n_per_item_eval:])
        tr = np.stack(tr).astype(np.float32).reshape(len(cids), n_train, backbone.dim)
        ev = np.stack(ev).astype(np.float32)
        save_npz(cpath, ids=np.array(cids), train=tr, eval=ev)
        parts.append((tr, ev))
        computed += len(cids)
        bar.update(len(cids))
    bar.close()
    train = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, n_train, backbone.dim), np.float32)
    ev = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, backbone.dim), np.float32)
    seconds = time.perf_counter() - t0
    meta = _meta(backbone, spec, key, n_train, seed, dev, seconds, computed)
    save_npz(folder / "features.npz", ids=np.array([str(i) for i in ids]), train=train, eval=ev)
    write_json(folder / "meta.json", meta)  # last: marks the entry complete
    shutil.rmtree(chunk_dir, ignore_errors=True)
    return FeatureSet([str(i) for i in ids], train, ev, meta, folder, computed == 0, seconds, computed)


def _meta(backbone: Backbone, spec: dict, key: str, n_train: int, seed: int, device, seconds: float,
          computed: int) -> dict:
    import torch

    versions = {"torch": torch.__version__}
    for mod in ("torchvision", "torchaudio"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {
        "key": key,
        "spec": spec,
        "backbone": backbone.name,
        "arm": backbone.kind,
        "weights": backbone.weights,
        "preprocessing": backbone.preprocessing,
        "dim": backbone.dim,
        ("views" if backbone.kind == "image" else "crops"): n_train,
        "seed": seed,
        "n_items": spec["n_items"],
        "description": backbone.describe(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": str(device),
        "runtime": frozen_runtime.runtime_name(backbone.module, device),
        "seconds": round(seconds, 2),
        "items_computed_in_last_run": computed,
        "versions": versions,
    }


def _resolve(backbone, weights: str, arm: str, seed: int) -> Backbone:
    from . import models

    if isinstance(backbone, Backbone):
        if backbone.kind != arm:
            raise ImuseError(f"{backbone.name} is an {backbone.kind} backbone, not an {arm} one")
        return backbone
    if arm == "image":
        return models.build_image_backbone(backbone, weights=weights, seed=seed)
    return models.build_audio_backbone(backbone, weights=weights, seed=seed)


def image_features(backbone="mobilenet_v2", views: int = DEFAULT_VIEWS, seed: int = config.SEED,
                   weights: str = "pretrained", *, images=None, batch_size: int = 32,
                   progress: bool = True, device=None) -> FeatureSet:
    """Features of every OASIS image (``data.load_images()`` order, or the rows of
    ``images``, a frame with ``image_id`` and ``path``): ``train`` [N, views, D], ``eval`` [N, D]."""
    from . import data

    if views < 0:
        raise ImuseError(f"views must be >= 0, not {views}")
    bb = _resolve(backbone, weights, "image", seed)
    frame = data.load_images() if images is None else images
    ids, paths = [str(i) for i in frame["image_id"]], list(frame["path"])
    if len(set(ids)) != len(ids):
        raise DataError("image_features: duplicate image ids")
    spec = feature_spec(bb, ids, paths, views, seed)

    def make(backbone_, item_id, src):
        return feature_views.image_inputs(backbone_, item_id, src, views, seed)

    return _extract(bb, ids, paths, views, seed, spec, batch_size, progress, device, make, 1,
                    f"{bb.name} features")


def audio_features(backbone="musicnn", crops: int | None = None, seed: int = config.SEED,
                   weights: str = "pretrained", *, catalog=None, eval_crops: int | None = None,
                   batch_size: int = 8, progress: bool = True, device=None) -> FeatureSet:
    """Features of every 4Q clip (``data.load_catalog()`` order, or the rows of ``catalog``,
    a frame with ``song_id`` and ``path``): ``train`` [N, crops, D] random crops, ``eval``
    [N, D] the mean over the backbone's fixed evaluation crops. ``crops=None`` takes
    ``DEFAULT_CROPS[backbone]``; ``eval_crops=None`` the backbone's own number."""
    from . import data

    bb = _resolve(backbone, weights, "audio", seed)
    crops = DEFAULT_CROPS.get(bb.name, 4) if crops is None else int(crops)
    if crops < 0:
        raise ImuseError(f"crops must be >= 0, not {crops}")
    n_eval = int(eval_crops or bb.eval_crops or 1)
    frame = data.load_catalog() if catalog is None else catalog
    ids, paths = [str(i) for i in frame["song_id"]], list(frame["path"])
    if len(set(ids)) != len(ids):
        raise DataError("audio_features: duplicate song ids")
    spec = feature_spec(bb, ids, paths, crops, seed, {"eval_crops": n_eval})

    def make(backbone_, item_id, src):
        return feature_views.audio_inputs(backbone_, item_id, src, crops, seed, n_eval)

    return _extract(bb, ids, paths, crops, seed, spec, batch_size, progress, device, make, n_eval,
                    f"{bb.name} features")


# --------------------------------------------------------------------------- no store


def embed_images(backbone: Backbone, images, batch_size: int = 32, device=None) -> np.ndarray:
    """Evaluation-view features [n, D] of image paths or PIL images (not stored)."""
    dev = feature_views.pick_device(device)
    backbone.to(dev)
    inputs = [backbone.eval_transform(media.load_image(im) if isinstance(im, (str, Path))
                                      else media.to_rgb(im, "<in-memory image>"))
              for im in images]
    return feature_views.forward(backbone, inputs, batch_size, dev)


def embed_audio(backbone: Backbone, paths, batch_size: int = 8, device=None, eval_crops: int | None = None) -> np.ndarray:
    """Features [n, D] of audio files: the mean over the fixed evaluation crops (not stored)."""
    dev = feature_views.pick_device(device)
    backbone.to(dev)
    n_eval = int(eval_crops or backbone.eval_crops or 1)
    out = []
    for p in paths:
        inputs = feature_views.audio_inputs(backbone, str(p), p, 0, 0, n_eval)
        feats = feature_views.forward(backbone, inputs, batch_size, dev)
        out.append(feature_views.pool_eval(feats, n_eval))
    return np.stack(out).astype(np.float32) if out else np.zeros((0, backbone.dim), np.float32)


def list_store() -> list[dict]:
    """One dict per complete store entry: key, backbone, weights kind, views/crops, items, MB."""
    rows = []
    root = store_root()
    if not root.is_dir():
        return rows
    for folder in sorted(root.iterdir()):
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            continue
        meta = read_json(meta_path)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        rows.append({"key": meta.get("key"), "backbone": meta.get("backbone"),
                     "weights": meta.get("weights", {}).get("kind"),
                     "n_train": meta.get("views", meta.get("crops")), "seed": meta.get("seed"),
                     "items": meta.get("n_items"), "dim": meta.get("dim"), "MB": round(size / 1e6, 2),
                     "seconds": meta.get("seconds")})
    return rows


# --------------------------------------------------------------------------- feature sources
#
# A *source* is one named block of per-item evaluation features that a per-item VA model can
# stack: a backbone's last layer, a derived view of one (the taggers' 50 tag probabilities),
# pooled intermediate layers, or hand-made descriptors. Backbone sources are served from the
# entry with the default views/crops when the store has it (its ``eval`` is the same), else
# computed with no training views (eval only: what a per-item model needs, a fraction of
# the cost), under their own key.

TAG_SUFFIX = "_tags"
IMAGE_SOURCES = ("mobilenet_v2", "efficientnet_lite0", "mobilenet_v2_mid", "efficientnet_lite0_mid", "image_stats")
# The taggers trained on mood-bearing tag sets (MSD last.fm, MTG-Jamendo; models.TAGGERS) are
# evaluation-only sources: their embedding and, as "<name>_tags", their 50 tag probabilities.
TAGGER_SOURCES = tuple(name + suffix for name in TAGGERS for suffix in ("", TAG_SUFFIX))
AUDIO_SOURCES = ("musicnn", "fcn", "musicnn_tags", "fcn_tags", "audio_descriptors") + TAGGER_SOURCES


def _descriptor_backbone(name: str, seed: int) -> Backbone:
    from .models import descriptors

    if name == "image_stats":
        return descriptors.build_image_stats()
    if name == "mobilenet_v2_mid":
        return descriptors.build_mobilenet_v2_mid(seed)
    if name == "efficientnet_lite0_mid":
        return descriptors.build_efficientnet_lite0_mid(seed)
    if name == "audio_descriptors":
        return descriptors.build_audio_descriptors()
    raise ImuseError(f"unknown descriptor source {name!r}")


def source_backbone(name: str, seed: int = config.SEED) -> Backbone:
    """The (frozen) module behind a source: what turns an image or clip into its features."""
    from . import models

    if name in DESCRIPTOR_SOURCES:
        return _descriptor_backbone(name, seed)
    if name.endswith(TAG_SUFFIX):
        return models.build_audio_backbone(name[: -len(TAG_SUFFIX)], seed=seed)
    return models.build_backbone(name, seed=seed)


def _stored_default(bb: Backbone, frame, arm: str, seed: int):
    """The complete default-views entry of a backbone, if the store has it (else None)."""
    id_col = "image_id" if arm == "image" else "song_id"
    ids, paths = [str(i) for i in frame[id_col]], list(frame["path"])
    if arm == "image":
        spec = feature_spec(bb, ids, paths, DEFAULT_VIEWS, seed)
    else:
        n_eval = int(bb.eval_crops or 1)
        spec = feature_spec(bb, ids, paths, DEFAULT_CROPS.get(bb.name, 4), seed, {"eval_crops": n_eval})
    key = feature_key(spec)
    hit = load_entry(store_root() / key, key)
    if hit is None:
        return None
    got_ids, train, ev, meta = hit
    return FeatureSet(got_ids, train, ev, meta, store_root() / key, True, 0.0, 0)


def source_features(name: str, seed: int = config.SEED, *, progress: bool = False, frame=None,
                    compute: bool = True) -> FeatureSet:
    """Evaluation features of every item for one source (see :data:`IMAGE_SOURCES`,
    :data:`AUDIO_SOURCES`). ``compute=False`` raises instead of computing a missing entry."""
    from . import data

    if name not in IMAGE_SOURCES + AUDIO_SOURCES:
        raise ImuseError(f"unknown feature source {name!r}; choose from {', '.join(IMAGE_SOURCES + AUDIO_SOURCES)}")
    if name.endswith(TAG_SUFFIX):
        return tag_probabilities(name[: -len(TAG_SUFFIX)], seed, progress=progress, frame=frame, compute=compute)
    arm = "image" if name in IMAGE_SOURCES else "audio"
    frame = (data.load_images() if arm == "image" else data.load_catalog()) if frame is None else frame
    bb = source_backbone(name, seed)
    if name in ("mobilenet_v2", "efficientnet_lite0", "musicnn", "fcn"):
        hit = _stored_default(bb, frame, arm, seed)
        if hit is not None:
            return hit
    id_col = "image_id" if arm == "image" else "song_id"
    ids, paths = [str(i) for i in frame[id_col]], list(frame["path"])
    if name == "audio_descriptors":
        from .models.descriptors import audio_descriptor_inputs

        spec = feature_spec(bb, ids, paths, 0, seed)

        def make(backbone_, item_id, src):
            return audio_descriptor_inputs(item_id, src)

        n_eval = 1
    elif arm == "image":
        spec = feature_spec(bb, ids, paths, 0, seed)

        def make(backbone_, item_id, src):
            return feature_views.image_inputs(backbone_, item_id, src, 0, seed)

        n_eval = 1
    else:
        n_eval = int(bb.eval_crops or 1)
        spec = feature_spec(bb, ids, paths, 0, seed, {"eval_crops": n_eval})

        def make(backbone_, item_id, src):
            return feature_views.audio_inputs(backbone_, item_id, src, 0, seed, n_eval)

    if not compute:
        key = feature_key(spec)
        hit = load_entry(store_root() / key, key)
        if hit is None:
            raise ImuseError(f"feature source {name}: not in the store {store_root()} "
                             f"(compute it with imuse_lib.features.source_features({name!r}))")
        got_ids, train, ev, meta = hit
        return FeatureSet(got_ids, train, ev, meta, store_root() / key, True, 0.0, 0)
    return _extract(bb, ids, paths, 0, seed, spec, 8 if arm == "audio" else 32, progress, None, make, n_eval,
                    f"{name} features")


def tag_probabilities(backbone: str, seed: int = config.SEED, *, progress: bool = False, frame=None,
                      compute: bool = True) -> FeatureSet:
    """A tagger's 50 tag probabilities (MagnaTagATune, MSD or MTG-Jamendo, as it was trained;
    named in ``meta["labels"]``), from its stored evaluation embedding through its own (frozen)
    classifier: sigmoid(W e + b) of the crop-mean embedding. Derived in memory (milliseconds),
    so it needs no store entry of its own."""
    import torch

    base = source_features(backbone, seed, progress=progress, frame=frame, compute=compute)
    bb = source_backbone(backbone, seed)
    with torch.inference_mode():
        probs = bb.head(torch.from_numpy(np.asarray(base.eval, np.float32))).numpy()
    meta = {"derived_from": base.meta.get("key"), "backbone": f"{backbone}{TAG_SUFFIX}",
            "weights": bb.weights, "labels": bb.labels,
            "definition": "tag probabilities = the tagger's own head on the crop-mean evaluation embedding"}
    return FeatureSet(list(base.ids), np.zeros((len(base.ids), 0, probs.shape[1]), np.float32),
                      probs.astype(np.float32), meta, base.path, True, base.seconds, 0)

