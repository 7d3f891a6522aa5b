"""Training the IMUSE network (paper section 4.4) from the feature store, with resume.

* **Cached mode** (what we use): the frozen backbones ran once into the feature store
  (``imuse_lib.features``); each epoch every training pair draws one of its image's stored
  training views and one of its song's stored training crops at random (the paper's
  augmentation), and validation uses the evaluation view / eval-crop mean.
* **End-to-end mode** (:func:`time_end_to_end`): the frozen backbones run on every batch,
  decoding each image and clip from disk, as the paper did. It exists to measure what the
  feature store saves (Table 1); on a CPU it is timed over a few batches and extrapolated.

Loss: Huber (delta 1) on the four outputs (image V, A and music V, A against the image's
and the song's true VA), i.e. the mean of an image-VA and a music-VA component, both
recorded per batch. Adam lr 0.01, weight decay 1e-4, batch 32, shuffled, 50 epochs:
the paper's settings. ``weighting="item"`` weighs each pair's image term by 1 / (its
image's number of training pairs) and its music term likewise by its song's, so every item
counts once (the pair sampling puts a few "worst" songs in hundreds of pairs).

The loss is reported every epoch on the validation pairs (``split == "val"``), never on the
test split; ``select="best_val"`` keeps the weights of the epoch with the lowest validation
loss (early stopping without stopping: the curve is still recorded to the end).

Seeds: ``torch.manual_seed(seed)`` (initialisation, dropout) and a
``numpy`` generator (shuffling, view/crop draws); both states go into every checkpoint,
so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import config, io
from .errors import DataError, ModelMismatchError
from .network import DROPOUT, IMUSENet, predicted_similarity

MODEL_FORMAT = "imuse-model/1"
CHECKPOINT_FORMAT = "imuse-checkpoint/1"
VAL_CHUNK = 8192  # pairs per forward pass when validating / predicting


@dataclass
class TrainConfig:
    """The paper's training settings (section 4.4) plus our choices (dropout rate, Huber delta)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-4
    huber_delta: float = 1.0
    dropout: float = DROPOUT
    factorised: bool = False
    seed: int = 0
    device: str = "auto"
    augment: bool = True  # random stored view / crop per pair per epoch; False: eval view always
    weighting: str = "pair"  # "pair" (the paper) or "item": every image and song counts once
    select: str = "last"  # "last" epoch (the paper) or "best_val": lowest validation loss
    threads: int | None = None  # CPU threads while training; None: 1 (the head is too small to gain
    # from more, and a second thread spin-waits badly on a busy 2-core machine)

    def fingerprint_fields(self) -> dict:
        """What must match for a checkpoint to be resumed (not epochs: nothing depends on the
        total, so a 5-epoch run can be extended to 50; not the device)."""
        d = asdict(self)
        d.pop("epochs"), d.pop("device"), d.pop("threads")
        return d


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. An explicit ``cuda`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelMismatchError(f"device {str(device)!r} is not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):  # meta, mps...: no data on meta, and the rest is untested here
        raise ModelMismatchError(f"device {str(device)!r}: IMUSE runs on cpu or cuda, not {dev.type}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelMismatchError(f"device {device!r} asked for, but no CUDA GPU is available here (use --device cpu)")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def default_model_path() -> Path:
    """The model `imuse recommend` uses unless told otherwise (written by `imuse train`)."""
    return config.results_dir() / "models" / "default.pt"


def _plain(obj):
    """JSON-safe copy (numpy scalars, Paths -> str): checkpoints load with weights_only=True."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# --------------------------------------------------------------------------- data


class FeatureData:
    """Stored features of every image and song, aligned with their true VA.

    ``image_fs`` / ``audio_fs``: objects like ``features.image_features(...)`` returns
    (``.ids``, ``.train [N,K,D]``, ``.eval [N,D]``, ``.meta``); ``images`` / ``songs``: frames
    with ``image_id`` / ``song_id``, ``valence``, ``arousal`` (and ``path`` for end-to-end).
    """

    def __init__(self, image_fs, audio_fs, images: pd.DataFrame, songs: pd.DataFrame):
        self.image_ids = [str(i) for i in image_fs.ids]
        self.song_ids = [str(s) for s in audio_fs.ids]
        for what, fs, ids in (("image", image_fs, self.image_ids), ("audio", audio_fs, self.song_ids)):
            tr, ev = np.asarray(fs.train), np.asarray(fs.eval)
            if tr.ndim != 3 or ev.ndim != 2 or tr.shape[0] != len(ids) or ev.shape[0] != len(ids) \
                    or tr.shape[2] != ev.shape[1]:
                raise ModelMismatchError(
                    f"{what} feature set ({(fs.meta or {}).get('backbone', '?')}) has inconsistent shapes: "
                    f"{len(ids)} ids, train {tr.shape}, eval {ev.shape}")
        self.image_train = torch.as_tensor(np.asarray(image_fs.train, dtype=np.float32))
        self.image_eval = torch.as_tensor(np.asarray(image_fs.eval, dtype=np.float32))
        self.audio_train = torch.as_tensor(np.asarray(audio_fs.train, dtype=np.float32))
        self.audio_eval = torch.as_tensor(np.asarray(audio_fs.eval, dtype=np.float32))
        self.image_meta, self.audio_meta = _plain(dict(image_fs.meta or {})), _plain(dict(audio_fs.meta or {}))
        self.image_row = {i: r for r, i in enumerate(self.image_ids)}
        self.song_row = {s: r for r, s in enumerate(self.song_ids)}
        self.image_va = self._va_table(images, "image_id", self.image_ids, "image")
        self.song_va = self._va_table(songs, "song_id", self.song_ids, "song")
        self.images, self.songs = images, songs

    @staticmethod
    def _va_table(frame: pd.DataFrame, key: str, ids: list[str], what: str) -> np.ndarray:
        table = frame.set_index(frame[key].astype(str))[["valence", "arousal"]]
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise DataError(f"{what} feature store holds id(s) with no VA label: {missing[:3]}")
        return table.loc[ids].to_numpy(dtype=np.float32)

    @property
    def image_dim(self) -> int:
        return int(self.image_eval.shape[1])

    @property
    def audio_dim(self) -> int:
        return int(self.audio_eval.shape[1])

    def rows(self, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of each pair's image and song; a pair whose item has no features is an error."""
        try:
            img = np.fromiter((self.image_row[str(i)] for i in pairs.image_id), dtype=np.int64, count=len(pairs))
            song = np.fromiter((self.song_row[str(s)] for s in pairs.song_id), dtype=np.int64, count=len(pairs))
        except KeyError as exc:
            raise ModelMismatchError(f"pair item {exc.args[0]!r} is not in the feature store "
                                     f"({self.image_meta.get('backbone')}/{self.audio_meta.get('backbone')})") from None
        return img, song

    def meta(self) -> dict:
        return {"image_backbone": self.image_meta.get("backbone"), "audio_backbone": self.audio_meta.get("backbone"),
                "image_weights": self.image_meta.get("weights"), "audio_weights": self.audio_meta.get("weights"),
                "image_features": self.image_meta, "audio_features": self.audio_meta,
                "image_dim": self.image_dim, "audio_dim": self.audio_dim}


# --------------------------------------------------------------------------- loss and steps


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


# --------------------------------------------------------------------------- saving / loading


def save_model(path: str | Path, model: IMUSENet, meta: dict) -> Path:
    """The trained network alone (no optimiser), with everything needed to use it: backbones,
    weights provenance, feature preprocessing, split, seed, configuration name."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return io.save_torch(path, {"format": MODEL_FORMAT, "model": state, "hparams": model.hparams(),
                                "meta": _plain({**meta, **model.hparams()})})


def _read(path: Path, *formats: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such model file (train one with `imuse train`)") from None
    except Exception as exc:  # pickle / zip errors: not a checkpoint of ours
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""  # not torch's advice
        raise ModelMismatchError(f"{path}: not a readable IMUSE checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") not in formats:
        raise ModelMismatchError(f"{path}: not an IMUSE model or checkpoint (format "
                                 f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    return state


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[IMUSENet, dict]:
    """``(model, meta)`` from a saved model or a training checkpoint (default: the default
    model). The model is in eval mode on ``device``. ``meta`` has image_backbone,
    audio_backbone, image_weights, audio_weights, factorised, image_dim, audio_dim, seed,
    split, config... Raises ModelMismatchError for a file that is not one or does not fit."""
    path = Path(path) if path else default_model_path()
    if os.path.lexists(path):  # a FIFO there would block torch.load forever
        io.require_regular_file(path, "model checkpoint")
    state = _read(path, MODEL_FORMAT, CHECKPOINT_FORMAT)
    hp = state.get("hparams") or {}
    try:
        model = IMUSENet(hp["image_dim"], hp["audio_dim"], factorised=hp["factorised"],
                         dropout=hp.get("dropout", DROPOUT))
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelMismatchError(f"{path}: weights do not fit the IMUSE network ({str(exc).splitlines()[0]})") from None
    meta = dict(state.get("meta") or {})
    meta.update(hp)
    return model.to(resolve_device(device)).eval(), meta


# --------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict_pairs(model: IMUSENet, image_feats: torch.Tensor, audio_feats: torch.Tensor, img_rows, song_rows,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(image VA [n,2], music VA [n,2]) for pairs given by feature rows (eval features)."""
    model.eval()
    device = next(model.parameters()).device
    out_i, out_m = [], []
    for start in range(0, len(img_rows), VAL_CHUNK):
        ir = torch.as_tensor(np.asarray(img_rows[start:start + VAL_CHUNK]))
        sr = torch.as_tensor(np.asarray(song_rows[start:start + VAL_CHUNK]))
        iva, mva = model(image_feats[ir].to(device), audio_feats[sr].to(device))
        out_i.append(iva.cpu().numpy()), out_m.append(mva.cpu().numpy())
    if not out_i:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    return np.concatenate(out_i), np.concatenate(out_m)


@torch.no_grad()
def predict_matrix(model: IMUSENet, image_feats: torch.Tensor, audio_feats: torch.Tensor,
                   with_va: bool = False):
    """Predicted S for every (image, song) combination: [n_images, n_songs].

    Factorised: each arm scored once, then Eq. 1 by broadcasting. Joint: the arm vectors
    are computed once and only the fusion layers run per combination (in chunks).
    ``with_va``: also each image's predicted VA [n_images, 2] and each song's [n_songs, 2]
    (joint: averaged over the combinations, since the joint heads see both items)."""
    model.eval()
    device = next(model.parameters()).device
    img, aud = image_feats.to(device), audio_feats.to(device)
    if model.factorised:
        iva, mva = model.image_va(img), model.music_va(aud)
        s = predicted_similarity(iva[:, None, :], mva[None, :, :]).cpu().numpy()
        return (s, iva.cpu().numpy(), mva.cpu().numpy()) if with_va else s
    ivec, mvec = model.image_vector(img), model.music_vector(aud)
    # The fusion FC is linear in the concatenation: W [ivec; mvec] + b = (Wi ivec + b) + Wm mvec,
    # so each arm's share is computed once and only the sum, ReLU and heads run per combination.
    fc = model.fusion[0]
    a = nn.functional.linear(ivec, fc.weight[:, :ivec.shape[1]], fc.bias)
    b = nn.functional.linear(mvec, fc.weight[:, ivec.shape[1]:])
    ns = len(b)
    rows_per_chunk = max(1, 65536 // max(ns, 1))
    out, img_va = [], []
    mus_va = torch.zeros(ns, 2, device=device)
    for start in range(0, len(a), rows_per_chunk):
        h = torch.relu(a[start:start + rows_per_chunk, None, :] + b[None, :, :])
        ih, mh = model.image_head(h), model.music_head(h)
        out.append(predicted_similarity(ih, mh).cpu().numpy())
        if with_va:
            img_va.append(ih.mean(1).cpu().numpy())
            mus_va += mh.sum(0)
    s = np.concatenate(out) if out else np.zeros((0, ns), np.float32)
    if not with_va:
        return s
    return s, np.concatenate(img_va) if img_va else np.zeros((0, 2), np.float32), \
        (mus_va / max(len(a), 1)).cpu().numpy()


class NetworkPredictor:
    """A trained network as a predictor for :func:`imuse_lib.metrics.score`.

    Scored on the evaluation features (the centre view, the mean of the evaluation crops),
    or with ``tta=True`` on the stored training views and crops, the predictions averaged:
    view k is paired with crop k mod M, so each stored view and crop is used (the network
    trained on single random views/crops, and this removes that shift)."""

    def __init__(self, model: IMUSENet, data: FeatureData, name: str | None = None, tta: bool = False):
        self.model, self.data, self.tta = model.eval(), data, tta
        self.name = name or ("factorised" if model.factorised else "joint") + ("_tta" if tta else "")
        self.info = {"tta": tta}

    def _views(self):
        d = self.data
        if not self.tta:
            return [(d.image_eval, d.audio_eval)]
        k, m = d.image_train.shape[1], d.audio_train.shape[1]
        return [(d.image_train[:, v], d.audio_train[:, v % m]) for v in range(max(k, m))]

    def pairs(self, img_rows, song_rows):
        outs = [predict_pairs(self.model, i, a, img_rows, song_rows) for i, a in self._views()]
        iva = np.mean([o[0] for o in outs], axis=0).astype(float)
        mva = np.mean([o[1] for o in outs], axis=0).astype(float)
        s = np.mean([predicted_similarity(o[0].astype(float), o[1].astype(float)) for o in outs], axis=0)
        return s, iva, mva

    def _matrix(self, img_rows, song_rows, with_va):
        ir, sr = torch.as_tensor(np.asarray(img_rows)), torch.as_tensor(np.asarray(song_rows))
        outs = [predict_matrix(self.model, i[ir], a[sr], with_va=with_va) for i, a in self._views()]
        if not with_va:
            return np.mean(outs, axis=0)
        return tuple(np.mean([o[j] for o in outs], axis=0) for j in range(3))

    def matrix(self, img_rows, song_rows):
        return self._matrix(img_rows, song_rows, False)

    def item_va(self, img_rows, song_rows):
        _, iva, mva = self._matrix(img_rows, song_rows, True)
        return iva, mva


# --------------------------------------------------------------------------- end-to-end timing


def _random_crop(wave: np.ndarray, length: int, sample_rate: int, path, rng: np.random.Generator) -> np.ndarray:
    """A random crop, as the feature store draws them (short clips looped by media.fit_length)."""
    from . import media

    wave = media.fit_length(wave, length, sample_rate, path)
    start = int(rng.integers(0, len(wave) - length + 1))
    return wave[start:start + length]


def time_end_to_end(image_backbone, audio_backbone, data: FeatureData, pairs: pd.DataFrame,
                    cfg: TrainConfig | None = None, n_batches: int = 2, n_val_batches: int | None = None,
                    progress: bool = False) -> dict:
    """Seconds per training and validation epoch when the frozen backbones run on every batch.

    ``image_backbone`` / ``audio_backbone``: objects of ``models.build_image_backbone`` /
    ``build_audio_backbone``. Each timed training batch decodes its 32 images (random
    training transform) and 32 clips (a random crop), runs both backbones and takes an
    optimiser step of the head network; a validation batch decodes the evaluation view and
    the eval crops. ``n_batches`` batches are timed and the per-batch mean is extrapolated
    to the epoch's batch count (stated in the result)."""
    from . import features, media

    cfg = cfg or TrainConfig()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_pairs, val_pairs = pairs[pairs.split == "train"], pairs[pairs.split == "val"]
    img_rows, song_rows = data.rows(train_pairs)
    vimg_rows, vsong_rows = data.rows(val_pairs)
    img_paths = data.images.set_index(data.images.image_id.astype(str)).loc[data.image_ids, "path"].tolist()
    song_paths = data.songs.set_index(data.songs.song_id.astype(str)).loc[data.song_ids, "path"].tolist()
    ib, ab = image_backbone, audio_backbone
    ib_mod, ab_mod = ib.module.to(device).eval(), ab.module.to(device).eval()
    model = IMUSENet(ib.dim, ab.dim, factorised=cfg.factorised, dropout=cfg.dropout).to(device)
    optimiser = make_optimiser(model, cfg, device)
    bs = cfg.batch_size
    perm = rng.permutation(len(img_rows))
    from tqdm import tqdm  # plain: no ipywidgets warning in notebooks

    train_times, load_times = [], []
    for b in tqdm(range(n_batches), desc="end-to-end train batches", disable=not progress, leave=False):
        idx = perm[b * bs:(b + 1) * bs]
        _sync(device)
        t0 = time.perf_counter()
        x_img = torch.stack([ib.train_transform(media.load_image(img_paths[r])) for r in img_rows[idx]])
        waves = [_random_crop(media.load_audio(song_paths[r], ab.sample_rate), ab.input_length, ab.sample_rate,
                              song_paths[r], rng)
                 for r in song_rows[idx]]
        x_aud = torch.as_tensor(np.stack(waves), dtype=torch.float32)
        t_load = time.perf_counter() - t0
        with torch.no_grad():
            f_img, f_aud = ib_mod(x_img.to(device)), ab_mod(x_aud.to(device))
        model.train()
        iva, mva = model(f_img, f_aud)
        li, lm = huber_components(iva, mva, torch.as_tensor(data.image_va[img_rows[idx]]).to(device),
                                  torch.as_tensor(data.song_va[song_rows[idx]]).to(device), cfg.huber_delta)
        optimiser.zero_grad()
        ((li + lm) / 2).backward()
        optimiser.step()
        _sync(device)
        train_times.append(time.perf_counter() - t0)
        load_times.append(t_load)
    val_times = []
    n_val_timed = n_batches if n_val_batches is None else n_val_batches  # 0: validation not timed
    for b in tqdm(range(n_val_timed), desc="end-to-end val batches", disable=not progress, leave=False):
        sl = slice(b * bs, (b + 1) * bs)
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            f_img = torch.as_tensor(features.embed_images(ib, [img_paths[r] for r in vimg_rows[sl]]))
            f_aud = torch.as_tensor(features.embed_audio(ab, [song_paths[r] for r in vsong_rows[sl]]))
            model.eval()
            model(f_img.to(device).float(), f_aud.to(device).float())
        _sync(device)
        val_times.append(time.perf_counter() - t0)
    n_train_batches = -(-len(img_rows) // bs)
    n_val = -(-len(vimg_rows) // bs)
    return {
        "mode": "end_to_end", "device": device_name(device),
        "train_batch_seconds": float(np.mean(train_times)),
        "val_batch_seconds": float(np.mean(val_times)) if val_times else float("nan"),
        "decode_share": float(np.sum(load_times) / np.sum(train_times)),
        "train_seconds_per_epoch": float(np.mean(train_times) * n_train_batches),
        "val_seconds_per_epoch": float(np.mean(val_times) * n_val) if val_times else float("nan"),
        "timed_train_batches": len(train_times), "timed_val_batches": len(val_times),
        "train_batches_per_epoch": n_train_batches, "val_batches_per_epoch": n_val, "extrapolated": True,
    }
