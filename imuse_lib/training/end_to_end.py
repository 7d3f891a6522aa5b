"""End-to-end timing (Table 1): a few training and validation batches with the frozen
backbones decoding and running every image and clip, as the paper trained, extrapolated to an
epoch."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ..network import IMUSENet
from .feature_data import FeatureData
from .loop import _sync, huber_components, make_optimiser
from .settings import TrainConfig, device_name, resolve_device


def _random_crop(wave: np.ndarray, length: int, sample_rate: int, path, rng: np.random.Generator) -> np.ndarray:
    """A random crop, as the feature store draws them (short clips looped by media.fit_length)."""
    from .. import media

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
    from .. import features, media

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
