"""How an item becomes backbone inputs, and inputs become features (the feature store's views).

Images: the evaluation view (:data:`imuse_lib.image_view.EVAL_VIEW`) plus ``K`` random training
views, each seeded by (seed, image_id, view). Clips: the backbone's fixed evaluation crops
(evenly spaced; the centre one when there is one) plus ``M`` random crops seeded by
(seed, song_id). :func:`forward` runs a frozen backbone over such inputs in batches and
:func:`pool_eval` averages an item's evaluation rows. :mod:`imuse_lib.features` (the store)
and :mod:`imuse_lib.engine` (Ray workers) both make features this way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import frozen_runtime, media
from .errors import ImuseError
from .models.base import Backbone


def stable_int(*parts) -> int:
    """A 63-bit seed from any parts: stable across processes and platforms."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def pick_device(device=None):
    """``device``, or the GPU when there is one, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def forward(backbone: Backbone, batch: list, batch_size: int, device) -> np.ndarray:
    """Run the frozen module over a list of input tensors, in batches (on ONNX Runtime where
    :mod:`imuse_lib.frozen_runtime` can, else PyTorch)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(batch), batch_size):
            x = torch.stack(batch[start:start + batch_size]).to(device)
            run = frozen_runtime.runner(backbone.module, x, device)  # ONNX Runtime on a CPU
            y = run(x) if run is not None else backbone.module(x).float().cpu().numpy()
            if y.ndim != 2 or y.shape[1] != backbone.dim:
                raise ImuseError(f"{backbone.name}: module returned shape {tuple(y.shape)}, expected [B, {backbone.dim}]")
            out.append(np.asarray(y, np.float32))
    return np.concatenate(out) if out else np.zeros((0, backbone.dim), np.float32)


def train_view(backbone: Backbone, img, seed: int, item_id: str, view: int):
    """The view-th random training view of an image, seeded by (seed, item, view)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_int(seed, item_id, "view", view))
        return backbone.train_transform(img)


def image_inputs(backbone: Backbone, item_id: str, source, n_views: int, seed: int) -> list:
    img = source if not isinstance(source, (str, Path)) else media.load_image(source)
    return [backbone.eval_transform(img)] + [train_view(backbone, img, seed, item_id, v) for v in range(n_views)]


def eval_starts(n: int, length: int, count: int) -> np.ndarray:
    """Fixed evaluation crop starts: ``count`` evenly spaced (the centre one when count == 1)."""
    if count == 1:
        return np.array([(n - length) // 2])
    return np.linspace(0, n - length, count).round().astype(int)


def train_starts(n: int, length: int, count: int, seed: int, item_id: str) -> np.ndarray:
    rng = np.random.default_rng(stable_int(seed, item_id, "crops"))
    return rng.integers(0, n - length + 1, size=count)


def audio_inputs(backbone: Backbone, item_id: str, path, n_crops: int, seed: int, n_eval: int) -> list:
    import torch

    wave = media.load_audio(path, backbone.sample_rate)
    wave = media.fit_length(wave, backbone.input_length, backbone.sample_rate, path)
    L = backbone.input_length
    starts = list(eval_starts(len(wave), L, n_eval)) + list(train_starts(len(wave), L, n_crops, seed, item_id))
    return [torch.from_numpy(np.ascontiguousarray(wave[s:s + L])) for s in starts]


def pool_eval(feats: np.ndarray, n_eval: int) -> np.ndarray:
    """An item's ``eval`` features: the mean over its first ``n_eval`` rows (its evaluation
    view, or its fixed evaluation crops), the rest being training views/crops."""
    return feats[:n_eval].mean(axis=0)
