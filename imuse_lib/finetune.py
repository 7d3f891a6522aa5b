"""The image arm fine-tuned on the CPU: MobileNetV2's last stage trained to predict VA.

MobileNetV2's ``features[:14]`` (the stem and inverted-residual blocks 1-13, ImageNet
weights) stay frozen; their output ([96, 14, 14] per view) is computed once per image
and view and stored. What is trained is the rest: blocks 14-17, the 1x1 convolution to
1280 channels (``features[14:]``, ImageNet initialisation), global average pooling and a
two-unit VA layer (initialised by ridge on the frozen network's pooled features, so the
starting point is the linear probe). An epoch is then a pass of the small tail over the
stored activations (seconds on one core), not of the whole network over images.

Views: the feature store's own (``imuse_lib.features``): the evaluation view (Resize 256 +
centre crop 224) and ``views`` random training views (Resize 256 + random 224 crop +
flip), each seeded by (seed, image, view), so the fine-tuning sees exactly the views the
frozen-feature models were built from. Each epoch draws one training view per training
image; predictions average the tail's output over all stored views of an image
(test-time averaging).

Protocol: the cold split's roles (:func:`imuse_lib.pairs.item_roles`, as
:func:`imuse_lib.va_model.fit` gets them). The network is trained on ``train``, early
stopping on the validation images' loss (mean squared error in training-sd units, the VA
model's validation loss); the calibration stretch (as the VA model's: predictions keep the
true spread) comes from the validation predictions; with ``refit=True`` the tail is then
trained again from the same start on train + val for the chosen number of epochs. Labels of
test images are never read. BatchNorm keeps its ImageNet statistics (batches of 32 from
~500 images would only add noise); dropout before the VA layer.

    acts = finetune.activations()             # stored; minutes the first time
    model = finetune.fit()                    # FineTuned: seconds per epoch
    model.predict()                           # [900, 2] calibrated VA of every OASIS image
    model.predict_images(paths)               # new images (views computed on the fly)
    model.save(path); finetune.load(path)

Deterministic for a seed: one thread by default (``threads``), seeded initialisation,
view draws and batch order.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config
from .errors import ImuseError, ModelMismatchError
from .io import atomic_path, read_json, write_json

SPLIT_AT = 14  # features[:SPLIT_AT] frozen and stored; features[SPLIT_AT:] trained
ACT_SHAPE = (96, 14, 14)
CHUNK_IMAGES = 100  # images per resumable chunk of the activation store
FORMAT = "imuse-finetuned-image-arm"
FORMAT_VERSION = 1
DIMS = ("valence", "arousal")


@contextlib.contextmanager
def _threads(n: int | None):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- stored activations


@dataclass
class Activations:
    """Frozen ``features[:14]`` output of every image: ``acts`` float16 [N, 1 + views, 96, 14, 14],
    view 0 the evaluation view, 1.. the store's random training views."""

    ids: list
    acts: np.ndarray
    meta: dict
    path: Path | None = None

    def rows(self, ids) -> np.ndarray:
        index = {i: n for n, i in enumerate(self.ids)}
        missing = [i for i in ids if str(i) not in index]
        if missing:
            raise ImuseError(f"no stored activations for {len(missing)} image(s), e.g. {missing[0]!r}")
        return np.array([index[str(i)] for i in ids], dtype=np.int64)


def _backbone(seed: int):
    from . import models

    return models.build_image_backbone("mobilenet_v2", seed=seed)


def activations_root() -> Path:
    return config.cache_dir() / "finetune"


def _spec(bb, ids, paths, views: int, seed: int) -> dict:
    from . import features

    return features.feature_spec(bb, ids, paths, views, seed,
                                 {"stored": f"features[:{SPLIT_AT}] output, float16", "shape": list(ACT_SHAPE)})


def activations(views: int | None = None, seed: int = config.SEED, *, images=None, progress: bool = True,
                threads: int | None = 1, batch_size: int = 32) -> Activations:
    """The stored activations (computed, chunk by chunk and resumably, when missing; every
    write atomic, ``meta.json`` last). ``images``: a frame with ``image_id`` and ``path``
    (default every OASIS image)."""
    import torch
    from tqdm import tqdm

    from . import data, feature_views, features

    views = features.DEFAULT_VIEWS if views is None else int(views)
    if views < 1:
        raise ImuseError(f"fine-tuning needs at least one training view, not {views}")
    frame = data.load_images() if images is None else images
    ids, paths = [str(i) for i in frame["image_id"]], list(frame["path"])
    bb = _backbone(seed)
    spec = _spec(bb, ids, paths, views, seed)
    key = features.feature_key(spec)
    folder = activations_root() / key
    meta_path, arr_path = folder / "meta.json", folder / "activations.npy"
    if meta_path.is_file() and arr_path.is_file() and read_json(meta_path).get("key") == key:
        return Activations(ids, np.load(arr_path), read_json(meta_path), folder)

    frozen = bb.module.features[:SPLIT_AT].eval()
    t0 = time.perf_counter()
    parts = []
    bar = tqdm(total=len(ids), desc="MobileNetV2 blocks 0-13 activations", unit="image", disable=not progress,
               leave=False)
    with _threads(threads), torch.inference_mode():
        for c, start in enumerate(range(0, len(ids), CHUNK_IMAGES)):
            cids = ids[start:start + CHUNK_IMAGES]
            cpath = folder / "chunks" / f"{c:05d}.npz"
            if cpath.is_file():  # resume an interrupted run
                try:
                    with np.load(cpath, allow_pickle=False) as z:
                        if [str(i) for i in z["ids"]] == cids:
                            parts.append(z["acts"])
                            bar.update(len(cids))
                            continue
                except (OSError, ValueError, KeyError):
                    pass
            inputs = []
            for item_id, src in zip(cids, paths[start:start + CHUNK_IMAGES]):
                inputs.extend(feature_views.image_inputs(bb, item_id, src, views, seed))  # [eval, train 1..views]
            out = []
            for b in range(0, len(inputs), batch_size):
                out.append(frozen(torch.stack(inputs[b:b + batch_size])).numpy().astype(np.float16))
            acts = np.concatenate(out).reshape(len(cids), 1 + views, *ACT_SHAPE)
            with atomic_path(cpath) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, ids=np.array(cids), acts=acts)
            parts.append(acts)
            bar.update(len(cids))
    bar.close()
    acts = np.concatenate(parts)
    with atomic_path(arr_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, acts)
    meta = {"key": key, "spec": spec, "weights": bb.weights, "views": views, "seed": seed,
            "n_items": len(ids), "dtype": "float16", "shape": list(acts.shape),
            "seconds": round(time.perf_counter() - t0, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__}
    write_json(meta_path, meta)  # last: marks the entry complete
    shutil.rmtree(folder / "chunks", ignore_errors=True)
    return Activations(ids, acts, meta, folder)


# --------------------------------------------------------------------------- the trained tail


def _tail_module(seed: int, dropout: float):
    import torch.nn as nn

    class VATail(nn.Module):
        """MobileNetV2 ``features[14:]`` + global average pooling + dropout + VA layer."""

        def __init__(self, tail):
            super().__init__()
            self.tail = tail
            self.dropout = nn.Dropout(dropout)
            self.va = nn.Linear(1280, 2)

        def pooled(self, x):
            return self.tail(x).mean(dim=(2, 3))

        def forward(self, x):
            return self.va(self.dropout(self.pooled(x)))

    bb = _backbone(seed)
    tail = copy.deepcopy(bb.module.features[SPLIT_AT:])
    for p in tail.parameters():
        p.requires_grad_(True)
    return VATail(tail)


def _freeze_bn(module) -> None:
    import torch.nn as nn

    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def _over_views(fn, acts: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``fn`` (a module's forward) over every stored view of each image: [N, views, ...]."""
    import torch

    n, v = acts.shape[:2]
    flat = acts.reshape(n * v, *ACT_SHAPE)
    out = []
    with torch.inference_mode():
        for b in range(0, len(flat), batch_size):
            out.append(fn(torch.from_numpy(flat[b:b + batch_size].astype(np.float32))).numpy())
    return np.concatenate(out).reshape(n, v, -1)


def _predict_std(net, acts: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Standardised predictions [N, 2], averaged over every stored view of each image."""
    net.eval()
    return _over_views(net, acts, batch_size).mean(axis=1)


def _pooled(net, acts: np.ndarray, batch_size: int = 64) -> np.ndarray:
    net.eval()
    return _over_views(net.pooled, acts, batch_size)


def _init_head(net, acts_train: np.ndarray, y_std: np.ndarray) -> float:
    """Ridge of the standardised targets on the frozen tail's pooled features of every
    training view (penalty by generalised cross-validation); written into the VA layer."""
    import torch
    from sklearn.linear_model import RidgeCV

    pooled = _pooled(net, acts_train)  # [n, v, 1280]
    n, v, d = pooled.shape
    x = pooled.reshape(n * v, d)
    y = np.repeat(y_std, v, axis=0)
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 16)).fit(x, y)
    with torch.no_grad():
        net.va.weight.copy_(torch.from_numpy(ridge.coef_.astype(np.float32)))
        net.va.bias.copy_(torch.from_numpy(np.asarray(ridge.intercept_, np.float32)))
    return float(ridge.alpha_)


def _loss_sd(pred_std: np.ndarray, y_std: np.ndarray) -> float:
    """The VA model's validation loss: mean squared error in training-sd units."""
    return float(np.mean((pred_std - y_std) ** 2))


def _train(net, acts_train: np.ndarray, y_std: np.ndarray, epochs: int, seed: int, lr: float, head_lr: float,
           weight_decay: float, batch_size: int, on_epoch=None, desc: str = "fine-tuning",
           progress: bool = True) -> list[dict]:
    """Train the tail: each epoch one random stored training view (1..views) per image,
    shuffled, Adam; ``on_epoch(epoch, net)`` returns a dict of validation scores and whether
    to stop."""
    import torch
    from tqdm import tqdm

    params = [{"params": list(net.tail.parameters()), "lr": lr},
              {"params": list(net.va.parameters()), "lr": head_lr}]
    opt = torch.optim.AdamW(params, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    n, v = acts_train.shape[:2]
    history = []
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        net.train()
        _freeze_bn(net)
        order = rng.permutation(n)
        view = rng.integers(1, v, size=n) if v > 1 else np.zeros(n, int)
        total = 0.0
        for b in range(0, n, batch_size):
            rows = order[b:b + batch_size]
            x = torch.from_numpy(acts_train[rows, view[rows]].astype(np.float32))
            y = torch.from_numpy(y_std[rows].astype(np.float32))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # dropout masks
                loss = torch.nn.functional.mse_loss(net(x), y)
                opt.zero_grad()
                loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        row = {"epoch": epoch, "train_loss": total / n, "seconds": round(time.perf_counter() - t0, 2)}
        stop = False
        if on_epoch is not None:
            extra, stop = on_epoch(epoch, net)
            row.update(extra)
        history.append(row)
        bar.set_postfix({k: round(val, 3) for k, val in row.items() if k.startswith("val")})
        if stop:
            break
    bar.close()
    return history


@dataclass
class FineTuned:
    """The fine-tuned image arm: the tail's weights, the target standardisation and the
    calibration stretch; predictions from stored activations or from image files."""

    state: dict
    y_mean: np.ndarray
    y_sd: np.ndarray
    scale: np.ndarray  # calibration stretch per dimension (around the training mean)
    info: dict
    dropout: float = 0.2
    seed: int = config.SEED
    history: list = field(default_factory=list)
    val_ids: list = field(default_factory=list)  # validation images and the train-only
    val_pred: np.ndarray | None = None            # network's calibrated VA of them (the choice's basis)
    _net: object = None
    _acts: Activations | None = None

    def net(self):
        if self._net is None:
            net = _tail_module(self.seed, self.dropout)
            net.load_state_dict(self.state, strict=True)
            self._net = net.eval()
        return self._net

    def _to_va(self, pred_std: np.ndarray, calibrated: bool) -> np.ndarray:
        scale = self.scale if calibrated else np.ones(2)
        return np.clip(self.y_mean + pred_std * scale * self.y_sd, 0.0, 1.0)

    def predict(self, ids=None, calibrated: bool = True, threads: int | None = 1) -> np.ndarray:
        """VA [n, 2] of OASIS images from the stored activations (default: every image, in
        ``data.load_images()`` order), averaged over their stored views."""
        if self._acts is None:
            self._acts = activations(self.info["views"], self.seed, progress=False)
        acts = self._acts
        rows = np.arange(len(acts.ids)) if ids is None else acts.rows([str(i) for i in ids])
        with _threads(threads):
            return self._to_va(_predict_std(self.net(), acts.acts[rows]), calibrated)

    def predict_images(self, images, calibrated: bool = True, threads: int | None = 1) -> np.ndarray:
        """VA [n, 2] of image files or PIL images (not stored): the same views (evaluation +
        ``views`` seeded training views) through the frozen and the tuned blocks, averaged."""
        import torch

        from . import feature_views, media

        bb = _backbone(self.seed)
        frozen = bb.module.features[:SPLIT_AT].eval()
        out = []
        with _threads(threads), torch.inference_mode():
            for n, im in enumerate(images):
                src = im if isinstance(im, (str, Path)) else media.to_rgb(im, "<in-memory image>")
                x = torch.stack(feature_views.image_inputs(bb, str(im) if isinstance(im, (str, Path)) else f"image{n}",
                                                       src, self.info["views"], self.seed))
                acts = frozen(x).numpy()[None]
                out.append(_predict_std(self.net(), acts)[0])
        return self._to_va(np.stack(out), calibrated) if out else np.zeros((0, 2))

    def describe(self) -> dict:
        return {k: v for k, v in self.info.items() if k != "history"}

    def save(self, path) -> Path:
        """One torch file (state dict, standardisation, calibration, provenance), atomic."""
        import torch

        path = Path(path)
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "state": self.state,
                   "y_mean": self.y_mean.tolist(), "y_sd": self.y_sd.tolist(), "scale": self.scale.tolist(),
                   "dropout": self.dropout, "seed": self.seed, "info": json.loads(json.dumps(self.info, default=str)),
                   "history": self.history}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        write_json(path.with_suffix(".json"), {k: v for k, v in payload.items() if k != "state"})
        return path


def load(path) -> FineTuned:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ImuseError(f"{path}: fine-tuned image arm not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelMismatchError(f"{path}: not a readable fine-tuned image arm ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelMismatchError(f"{path}: not an IMUSE fine-tuned image arm file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelMismatchError(f"{path}: format {payload.get('format_version')}, this code reads {FORMAT_VERSION}")
    return FineTuned(payload["state"], np.asarray(payload["y_mean"]), np.asarray(payload["y_sd"]),
                     np.asarray(payload["scale"]), payload["info"], payload["dropout"], payload["seed"],
                     payload.get("history", []))


def _roles(roles, seed):
    from . import data, pairs

    if roles is not None:
        return roles
    return pairs.item_roles("cold", data.load_images(), data.load_catalog(), seed)


def fit(roles=None, *, seed: int = config.SEED, views: int | None = None, epochs: int = 30, patience: int = 5,
        lr: float = 3e-4, head_lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 32,
        dropout: float = 0.2, refit: bool = True, threads: int | None = 1, images=None,
        progress: bool = True) -> FineTuned:
    """Fine-tune the tail on the training images, early stopping on validation (see the module
    docstring). ``roles``: an :class:`imuse_lib.pairs.ItemRoles` (default the cold split of
    ``seed``); ``images``: a frame with ``image_id``, ``path``, ``valence``, ``arousal``
    (default the OASIS images; tests swap it). Labels are read for train and val only."""
    import torch

    from . import data
    from .metrics import pearson_r

    t_start = time.perf_counter()
    frame = data.load_images() if images is None else images
    roles = _roles(roles, seed)
    role = frame.image_id.astype(str).map({str(k): v for k, v in roles.images.items()}).to_numpy()
    ids = frame.image_id.astype(str).to_numpy()
    tr, va = ids[role == "train"], ids[role == "val"]
    if len(tr) < 5 or len(va) < 5:
        raise ImuseError(f"fine-tuning needs at least 5 training and 5 validation images, got {len(tr)} and {len(va)}")
    by_id = frame.set_index(frame.image_id.astype(str))
    y_tr = by_id.loc[tr, ["valence", "arousal"]].to_numpy(float)
    y_va = by_id.loc[va, ["valence", "arousal"]].to_numpy(float)
    acts = activations(views, seed, images=frame[["image_id", "path"]], progress=progress, threads=threads)
    a_tr, a_va = acts.acts[acts.rows(tr)], acts.acts[acts.rows(va)]
    y_mean, y_sd = y_tr.mean(0), y_tr.std(0)
    std = lambda y: (y - y_mean) / y_sd  # noqa: E731

    with _threads(threads):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _tail_module(seed, dropout)
        alpha = _init_head(net, a_tr, std(y_tr))
        start_state = copy.deepcopy(net.state_dict())
        best = {"loss": _loss_sd(_predict_std(net, a_va), std(y_va)), "epoch": 0, "state": copy.deepcopy(start_state)}
        waited = [0]

        def on_epoch(epoch, net_):
            pred = _predict_std(net_, a_va)
            loss = _loss_sd(pred, std(y_va))
            if loss < best["loss"]:
                best.update(loss=loss, epoch=epoch, state=copy.deepcopy(net_.state_dict()))
                waited[0] = 0
            else:
                waited[0] += 1
            return ({"val_loss": loss, "val_r_v": pearson_r(pred[:, 0], y_va[:, 0]),
                     "val_r_a": pearson_r(pred[:, 1], y_va[:, 1])}, waited[0] >= patience)

        probe_pred = _predict_std(net, a_va)
        history = [{"epoch": 0, "train_loss": None, "val_loss": best["loss"],
                    "val_r_v": pearson_r(probe_pred[:, 0], y_va[:, 0]),
                    "val_r_a": pearson_r(probe_pred[:, 1], y_va[:, 1]), "seconds": 0.0}]
        history += _train(net, a_tr, std(y_tr), epochs, seed, lr, head_lr, weight_decay, batch_size, on_epoch,
                          "fine-tuning (train)", progress)
        net.load_state_dict(best["state"])
        pred_va = _predict_std(net, a_va)
        scale = np.array([y_va[:, j].std() / max(pred_va[:, j].std() * y_sd[j], 1e-9) for j in range(2)])
        val_scores = {"val_r_v": pearson_r(pred_va[:, 0], y_va[:, 0]), "val_r_a": pearson_r(pred_va[:, 1], y_va[:, 1]),
                      "val_loss": best["loss"], "val_sd_ratio_raw": [float(pred_va[:, j].std() * y_sd[j] / y_va[:, j].std())
                                                                   for j in range(2)]}
        state, refit_on = best["state"], "train"
        if refit and best["epoch"] > 0:
            # again from the same start, on train + val, for the epochs validation chose
            net.load_state_dict(start_state)
            both = np.concatenate([tr, va])
            a_both = acts.acts[acts.rows(both)]
            y_both = np.concatenate([y_tr, y_va])
            _init_head(net, a_both, std(y_both))
            _train(net, a_both, std(y_both), best["epoch"], seed, lr, head_lr, weight_decay, batch_size, None,
                   "fine-tuning (train + val)", progress)
            state, refit_on = copy.deepcopy(net.state_dict()), "train+val"
    info = {"backbone": "mobilenet_v2", "weights": {k: acts.meta["weights"].get(k) for k in ("source", "sha256")},
            "trained": f"features[{SPLIT_AT}:] (blocks 14-17 + 1x1 conv to 1280) + VA layer; BatchNorm statistics frozen",
            "activations_key": acts.meta["key"], "views": int(acts.meta["views"]), "split": roles.protocol,
            "n_train": int(len(tr)), "n_val": int(len(va)), "best_epoch": int(best["epoch"]),
            "epochs_max": int(epochs), "patience": int(patience), "lr": lr, "head_lr": head_lr,
            "weight_decay": weight_decay, "batch_size": batch_size, "dropout": dropout, "head_init_alpha": alpha,
            "refit_on": refit_on, "calibration": "sd(val true) / sd(val prediction), train-only network",
            "scale": scale.tolist(), **val_scores, "seconds": round(time.perf_counter() - t_start, 1),
            "threads": threads, "seed": int(seed)}
    val_va = np.clip(y_mean + pred_va * scale * y_sd, 0.0, 1.0)
    model = FineTuned(state, y_mean, y_sd, scale, info, dropout, seed, history, list(va), val_va, _acts=acts)
    model.info["fingerprint"] = _fingerprint(state)
    return model


def _fingerprint(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k].detach().cpu().numpy()).tobytes())
    return h.hexdigest()
