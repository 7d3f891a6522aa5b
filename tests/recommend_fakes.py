"""Small, fast stand-ins for the real backbones and catalog, shared by the recommender tests.

The network is the real ``IMUSENet`` (tiny inputs); the backbones are real
``models.base.Backbone`` objects with cheap deterministic modules, so that the real
``features.embed_images`` / ``embed_audio`` and ``media`` decoders are exercised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from PIL import Image
from torch import nn

from imuse_lib import deployed
from imuse_lib.models.base import Backbone, freeze
from imuse_lib.network import IMUSENet

IMAGE_DIM, AUDIO_DIM = 12, 8
SR, CROP = 8000, 4000


class _ImageStats(nn.Module):
    """[B, 3, 32, 32] -> [B, 12]: mean colour of each image quarter."""

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


class _AudioStats(nn.Module):
    """[B, L] waveform -> [B, 8]: energy in 8 frequency bands."""

    def forward(self, x):
        spec = torch.fft.rfft(x, dim=1).abs()
        bands = torch.stack([b.mean(dim=1) for b in torch.tensor_split(spec, AUDIO_DIM, dim=1)], dim=1)
        return torch.log1p(bands)


def _image_transform(img):
    arr = np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def image_backbone() -> Backbone:
    return Backbone(name="fake_image", kind="image", dim=IMAGE_DIM, weights={"kind": "random", "init_seed": 0},
                    module=freeze(_ImageStats()), preprocessing={"size": 32},
                    train_transform=_image_transform, eval_transform=_image_transform)


def audio_backbone() -> Backbone:
    return Backbone(name="fake_audio", kind="audio", dim=AUDIO_DIM, weights={"kind": "random", "init_seed": 0},
                    module=freeze(_AudioStats()), preprocessing={"sr": SR, "crop": CROP},
                    sample_rate=SR, input_length=CROP, eval_crops=2)


def make_model(factorised: bool, seed: int = 0) -> deployed.DeployedModel:
    torch.manual_seed(seed)
    net = IMUSENet(IMAGE_DIM, AUDIO_DIM, factorised=factorised)
    meta = {"image_backbone": "fake_image", "audio_backbone": "fake_audio",
            "image_weights": {"kind": "random", "init_seed": 0}, "audio_weights": {"kind": "random", "init_seed": 0},
            "factorised": factorised, "image_dim": IMAGE_DIM, "audio_dim": AUDIO_DIM}
    return deployed.DeployedModel(net=net.eval(), meta=meta, image_backbone=image_backbone(),
                           audio_backbone=audio_backbone())


def write_tone(path, freq: float, seconds: float = 1.0, sr: int = 16000) -> str:
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3.1 * freq * t)
    sf.write(str(path), wave.astype(np.float32), sr)
    return str(path)


def make_catalog(n_songs: int = 40, n_images: int = 30, seed: int = 1):
    """A synthetic catalog and image set with random backbone features."""
    rng = np.random.default_rng(seed)
    catalog = pd.DataFrame({
        "song_id": [f"S{i:04d}" for i in rng.permutation(n_songs)],  # not in id order, on purpose
        "artist": [f"Artist {i % 7}" for i in range(n_songs)],
        "title": [f"Title {i}" for i in range(n_songs)],
        "valence": rng.random(n_songs), "arousal": rng.random(n_songs),
        "path": [f"/nowhere/S{i}.mp3" for i in range(n_songs)],
    })
    images = pd.DataFrame({
        "image_id": [f"Img {i}" for i in range(n_images)],
        "category": ["Object", "Scene", "Person", "Animal", "Object", "Scene"] * (n_images // 6) +
                    ["Object"] * (n_images % 6),
        "valence": rng.random(n_images), "arousal": rng.random(n_images),
        "path": [f"/nowhere/Img {i}.jpg" for i in range(n_images)],
    })
    song_feats = np.log1p(rng.gamma(2.0, 1.0, (n_songs, AUDIO_DIM))).astype(np.float32)
    image_feats = rng.random((n_images, IMAGE_DIM)).astype(np.float32)
    return catalog, song_feats, images, image_feats


def write_image(path, size=(40, 30), mode="RGB", seed: int = 0, **save):
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **save)
    return str(path)
