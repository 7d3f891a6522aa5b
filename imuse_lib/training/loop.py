"""The training loop: Huber loss on the four outputs, optional item weighting, validation
every epoch, best-epoch selection, and checkpoints that make a resumed run continue exactly as
an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import io
from ..errors import DataError, ModelMismatchError
from ..network import IMUSENet
from .checkpoints import _read
from .feature_data import FeatureData
from .settings import CHECKPOINT_FORMAT, VAL_CHUNK, TrainConfig, _plain, device_name, resolve_device


def make_optimiser(model: IMUSENet, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam (lr, L2 weight decay as torch's Adam applies it). The fused kernel is the same
    update in one pass; it halves the optimiser's share of a CPU step."""
    try:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # a device / build without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def huber_components(image_va, music_va, true_image_va, true_music_va, delta: float = 1.0,
                     image_weight=None, music_weight=None):
    """(image-VA loss, music-VA loss), each the mean Huber loss of its two outputs; with
    per-pair weights (mean 1 over the training set), a weighted mean."""
    huber = nn.functional.huber_loss
    if image_weight is None:
        return huber(image_va, true_image_va, delta=delta), huber(music_va, true_music_va, delta=delta)
    li = huber(image_va, true_image_va, delta=delta, reduction="none").mean(1)
    lm = huber(music_va, true_music_va, delta=delta, reduction="none").mean(1)
    return (li * image_weight).mean(), (lm * music_weight).mean()


def item_weights(rows: np.ndarray) -> np.ndarray:
    """1 / (the item's number of pairs), scaled to mean 1 over the pairs."""
    counts = np.bincount(rows)[rows].astype(np.float64)
    w = 1.0 / counts
    return (w / w.mean()).astype(np.float32)


@torch.no_grad()
def validation_loss(model: IMUSENet, data: FeatureData, img_rows, song_rows, delta: float = 1.0,
                    device: torch.device | None = None) -> tuple[float, float, float]:
    """(loss, image loss, music loss) on pairs, with evaluation views; model in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    n, sums = len(img_rows), np.zeros(2)
    for start in range(0, n, VAL_CHUNK):
        ir = torch.as_tensor(img_rows[start:start + VAL_CHUNK])
        sr = torch.as_tensor(song_rows[start:start + VAL_CHUNK])
        iva, mva = model(data.image_eval[ir].to(device), data.audio_eval[sr].to(device))
        li, lm = huber_components(iva, mva, torch.as_tensor(data.image_va[ir]).to(device),
                                  torch.as_tensor(data.song_va[sr]).to(device), delta)
        sums += np.array([li.item(), lm.item()]) * len(ir)
    model.train(was_training)
    li, lm = sums / max(n, 1)
    return float((li + lm) / 2), float(li), float(lm)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fingerprint(cfg: TrainConfig, data: FeatureData, img_rows, song_rows) -> str:
    h = hashlib.sha256()
    h.update(b"subnormals flushed to zero\n")  # the arithmetic mode of train()
    h.update(json.dumps(cfg.fingerprint_fields(), sort_keys=True).encode())
    h.update(json.dumps([data.image_meta, data.audio_meta], sort_keys=True, default=str).encode())
    h.update(str((tuple(data.image_train.shape), tuple(data.audio_train.shape))).encode())
    h.update(np.ascontiguousarray(img_rows).tobytes() + np.ascontiguousarray(song_rows).tobytes())
    return h.hexdigest()[:16]


def new_history() -> dict:
    return {"epochs": [], "batches": {"epoch": [], "loss": [], "image_loss": [], "music_loss": []}}


@dataclass
class TrainResult:
    model: IMUSENet
    history: dict
    meta: dict = field(default_factory=dict)
    resumed_from: int = 0  # epochs already done in the checkpoint that was resumed


def train(data: FeatureData, pairs: pd.DataFrame, cfg: TrainConfig | None = None, **kwargs) -> TrainResult:
    """Train on ``pairs[split == train_split]`` and report the loss on ``val_split`` per epoch.

    The paper's "validation" curve is its 25 % held-out (test) split; ours is the validation
    split carved out of the training items (``pairs.split_pairs``), and the test split is
    never read here. With ``checkpoint`` the state is saved atomically every
    ``checkpoint_every`` epochs and, if ``resume``, picked up again.
    Keyword arguments: train_split, val_split, checkpoint, resume, checkpoint_every, meta, progress.
    """
    cfg = cfg or TrainConfig()
    prev = torch.get_num_threads()
    flushed = subnormals_flushed()
    if resolve_device(cfg.device).type == "cpu":
        torch.set_num_threads(cfg.threads or 1)
    torch.set_flush_denormal(True)
    try:
        return _train(data, pairs, cfg, **kwargs)
    finally:
        torch.set_num_threads(prev)
        torch.set_flush_denormal(flushed)


def subnormals_flushed() -> bool:
    """Whether this thread's CPU arithmetic flushes subnormal floats (|x| < 1.2e-38) to zero.

    Training sets it: Adam's state and the weights of units that stopped learning decay into
    the subnormal range, where x86 CPUs compute in microcode. Late in a run the factorised
    network's epochs took 7x longer (4.5 s against 0.65 s on a 2-core CPU, its validation pass
    50x), the joint network's 1.3x. Flushed, every epoch costs what the first did. The mode is
    per thread: it covers training's default single CPU thread (``TrainConfig.threads``), not
    the extra threads of a larger pool. The numbers move as they would for any change in the
    last bits, not systematically; checkpoints record the mode (:func:`_fingerprint`), so none
    made without it is resumed with it."""
    return torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0


def _train(data: FeatureData, pairs: pd.DataFrame, cfg: TrainConfig, *,
           train_split: str = "train", val_split: str | None = "val", checkpoint: str | Path | None = None,
           resume: bool = True, checkpoint_every: int = 1, meta: dict | None = None,
           progress: bool = False) -> TrainResult:
    if "split" not in pairs:
        raise DataError("pairs have no `split` column: split them first (pairs.split_pairs)")
    train_pairs = pairs[pairs.split == train_split]
    if train_pairs.empty:
        raise DataError(f"no pairs in split {train_split!r} to train on")
    if cfg.weighting not in ("pair", "item") or cfg.select not in ("last", "best_val"):
        raise DataError(f"weighting must be 'pair' or 'item' and select 'last' or 'best_val', "
                        f"not {cfg.weighting!r} / {cfg.select!r}")
    img_rows, song_rows = data.rows(train_pairs)
    val_rows = data.rows(pairs[pairs.split == val_split]) if val_split else None
    if val_rows is not None and len(val_rows[0]) == 0:
        val_rows = None
    if cfg.select == "best_val" and val_rows is None:
        raise DataError(f"select='best_val' needs validation pairs (split {val_split!r} has none)")
    device = resolve_device(cfg.device)
    fingerprint = _fingerprint(cfg, data, img_rows, song_rows)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = IMUSENet(data.image_dim, data.audio_dim, factorised=cfg.factorised, dropout=cfg.dropout).to(device)
    optimiser = make_optimiser(model, cfg, device)
    history, start_epoch = new_history(), 0
    best = {"epoch": 0, "val_loss": float("inf"), "model": None}  # select="best_val"
    run_meta = {**data.meta(), "factorised": cfg.factorised, "seed": cfg.seed, "train_config": asdict(cfg),
                "train_fingerprint": fingerprint, "device": device_name(device), "threads": torch.get_num_threads(),
                **(meta or {})}

    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and resume and checkpoint.exists():
        state = _read(checkpoint, CHECKPOINT_FORMAT)
        if state.get("fingerprint") != fingerprint:
            raise ModelMismatchError(
                f"{checkpoint}: checkpoint belongs to another run (different settings, features or pairs); "
                f"delete it or train into another folder")
        if state["epoch"] > cfg.epochs:
            raise ModelMismatchError(f"{checkpoint}: checkpoint is at epoch {state['epoch']}, past the "
                                     f"{cfg.epochs} epochs asked for")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history, start_epoch = state["history"], int(state["epoch"])
        best = state.get("best") or best

    n, bs = len(img_rows), cfg.batch_size
    k_img, k_aud = data.image_train.shape[1], data.audio_train.shape[1]
    img_rows_t, song_rows_t = torch.as_tensor(img_rows), torch.as_tensor(song_rows)
    true_iva = torch.as_tensor(data.image_va[img_rows]).to(device)
    true_mva = torch.as_tensor(data.song_va[song_rows]).to(device)
    w_img = w_mus = None
    if cfg.weighting == "item":
        w_img = torch.as_tensor(item_weights(img_rows)).to(device)
        w_mus = torch.as_tensor(item_weights(song_rows)).to(device)
    # Feature tensors go to the device once; each batch is then an index gather.
    img_src = (data.image_train if cfg.augment else data.image_eval).to(device)
    aud_src = (data.audio_train if cfg.augment else data.audio_eval).to(device)

    from tqdm import tqdm  # plain: no ipywidgets warning in notebooks

    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train seed {cfg.seed}", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.as_tensor(rng.permutation(n))
        views = torch.as_tensor(rng.integers(k_img, size=n))
        crops = torch.as_tensor(rng.integers(k_aud, size=n))
        ir, sr = img_rows_t[perm].to(device), song_rows_t[perm].to(device)
        vi, ca, p = views[perm].to(device), crops[perm].to(device), perm.to(device)
        losses = []
        for b in range(0, n, bs):
            sl = slice(b, b + bs)
            if cfg.augment:
                x_img, x_aud = img_src[ir[sl], vi[sl]], aud_src[sr[sl], ca[sl]]
            else:
                x_img, x_aud = img_src[ir[sl]], aud_src[sr[sl]]
            iva, mva = model(x_img, x_aud)
            li, lm = huber_components(iva, mva, true_iva[p[sl]], true_mva[p[sl]], cfg.huber_delta,
                                      None if w_img is None else w_img[p[sl]], None if w_mus is None else w_mus[p[sl]])
            loss = (li + lm) / 2  # = the mean Huber loss over the four outputs
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(torch.stack([li.detach(), lm.detach()]))
        comp = torch.stack(losses).cpu().numpy().astype(float)  # one transfer per epoch
        _sync(device)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        val = validation_loss(model, data, *val_rows, delta=cfg.huber_delta, device=device) if val_rows else None
        _sync(device)
        t_val = time.perf_counter() - t0
        sizes = np.diff(np.r_[np.arange(0, n, bs), n])
        train_img, train_mus = (comp * sizes[:, None]).sum(0) / n
        history["epochs"].append({
            "epoch": epoch + 1, "train_loss": float((train_img + train_mus) / 2),
            "train_image_loss": float(train_img), "train_music_loss": float(train_mus),
            "val_loss": val[0] if val else None, "val_image_loss": val[1] if val else None,
            "val_music_loss": val[2] if val else None, "train_seconds": t_train, "val_seconds": t_val})
        hb = history["batches"]
        hb["epoch"] += [epoch + 1] * len(comp)
        hb["image_loss"] += [round(x, 6) for x in comp[:, 0].tolist()]  # plain floats: weights_only loads
        hb["music_loss"] += [round(x, 6) for x in comp[:, 1].tolist()]
        hb["loss"] += [round(x, 6) for x in comp.mean(1).tolist()]
        if val and val[0] < best["val_loss"]:
            best = {"epoch": epoch + 1, "val_loss": float(val[0]),
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    if cfg.select == "best_val" else None}
        bar.set_postfix(train=f"{history['epochs'][-1]['train_loss']:.4f}",
                        val=f"{val[0]:.4f}" if val else "-")
        if checkpoint and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            io.save_torch(checkpoint, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "fingerprint": fingerprint,
                "model": model.state_dict(), "hparams": model.hparams(), "optimizer": optimiser.state_dict(),
                "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": history, "best": best, "meta": _plain(run_meta)})
    if cfg.select == "best_val" and best["model"] is not None:
        model.load_state_dict(best["model"])
    run_meta.update({"selected_epoch": best["epoch"] if cfg.select == "best_val" else cfg.epochs,
                     "best_val_epoch": best["epoch"], "best_val_loss": best["val_loss"]})
    model.eval()
    return TrainResult(model, history, _plain(run_meta), resumed_from=start_epoch)
