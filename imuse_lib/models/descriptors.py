"""Feature sources that are not a backbone's last layer: hand-made affect cues and pooled
intermediate layers. Each is wrapped as a :class:`~.base.Backbone` so the feature store
(key, provenance, resume) serves it like any other.

* ``image_stats``: colour, brightness, saturation, composition and texture statistics of
  the evaluation view (known image-affect cues: brightness and saturation raise valence,
  saturation and edge density raise arousal; Valdez & Mehrabian 1994, Machajdik & Hanbury
  2010). Pure torch ops on RGB in [0, 1], so the deployed image pipeline computes them
  inside its ONNX-exportable module.
* ``mobilenet_v2_mid``: mean- and sd-pooled outputs of MobileNetV2's intermediate blocks
  (texture and colour live in the early layers; the last layer keeps object identity). Same
  forward pass as ``mobilenet_v2``, so it costs nothing extra at query time.
* ``efficientnet_lite0_mid``: the mean-pooled output of EfficientNet-Lite0's sixth
  stage (192 channels, before its last stage and 1x1 head): a second network's mid-level view
  at no extra cost when ``efficientnet_lite0`` is a source too (the same forward pass).
* ``audio_descriptors``: librosa's tempo, mode (Krumhansl key profiles), loudness and
  dynamics, spectral shape, MFCC and chroma statistics of a clip (the cue families of
  Panda et al. 2020, the paper's reference [19]). Computed once per catalog clip; never used
  on the query path of ``imuse recommend``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import config, media
from .base import Backbone, freeze

DESCRIPTOR_SOURCES = ("image_stats", "mobilenet_v2_mid", "efficientnet_lite0_mid", "audio_descriptors")
# Bumped whenever a descriptor's definition changes: part of the store key (no stale entries).
IMAGE_STATS_VERSION = 1
AUDIO_DESCRIPTORS_VERSION = 1
MID_BLOCKS = (3, 6, 10, 13, 16, 17)  # MobileNetV2 ``features`` indices pooled (24..320 channels)
LITE0_MID_BLOCK = 14  # EfficientNet-Lite0 ``_blocks`` index pooled: the end of its sixth stage
LITE0_MID_CHANNELS = 192
HUE_BINS = 8
GRID = 3

# --------------------------------------------------------------------------- image statistics


def _rgb_to_hsv(x: torch.Tensor):
    """[B, 3, H, W] RGB in [0, 1] -> hue in [0, 1), saturation, value (each [B, H, W])."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    value = x.amax(dim=1)
    low = x.amin(dim=1)
    delta = value - low
    sat = delta / value.clamp_min(1e-6)
    safe = delta.clamp_min(1e-6)
    hr = ((g - b) / safe) % 6.0
    hg = (b - r) / safe + 2.0
    hb = (r - g) / safe + 4.0
    hue = torch.where(value == r, hr, torch.where(value == g, hg, hb)) / 6.0
    hue = torch.where(delta > 1e-6, hue, torch.zeros_like(hue))
    return hue, sat, value


def _moments(v: torch.Tensor) -> list[torch.Tensor]:
    """Mean, sd and skewness over the pixels of each image ([B, H, W] -> 3 x [B])."""
    flat = v.flatten(1)
    mean = flat.mean(1)
    centred = flat - mean[:, None]
    sd = centred.pow(2).mean(1).clamp_min(1e-12).sqrt()
    skew = centred.pow(3).mean(1) / sd.pow(3)
    return [mean, sd, skew]


def _gradient(gray: torch.Tensor):
    """Sobel gradients of [B, 1, H, W]: magnitude and the two components."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=gray.dtype) / 8.0
    ky = kx.t()
    gx = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kx.view(1, 1, 3, 3))
    gy = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), ky.view(1, 1, 3, 3))
    return (gx.pow(2) + gy.pow(2) + 1e-12).sqrt(), gx, gy


class ImageStats(nn.Module):
    """RGB in [0, 1] [B, 3, H, W] -> hand-made statistics [B, DIM] (see :data:`STAT_NAMES`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(0.0, 1.0)
        hue, sat, val = _rgb_to_hsv(x)
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        lum = 0.299 * r + 0.587 * g + 0.114 * b
        feats = []
        for channel in (r, g, b):
            feats.append(channel.flatten(1).mean(1))
        feats += _moments(lum) + _moments(sat) + _moments(val)
        # Hasler & Suesstrunk colourfulness
        rg, yb = r - g, 0.5 * (r + g) - b
        rg_m, rg_s = _moments(rg)[:2]
        yb_m, yb_s = _moments(yb)[:2]
        feats.append((rg_s.pow(2) + yb_s.pow(2)).sqrt() + 0.3 * (rg_m.pow(2) + yb_m.pow(2)).sqrt())
        # hue: saturation-weighted circular mean and a weighted histogram
        w = (sat * val).flatten(1)
        wsum = w.sum(1).clamp_min(1e-6)
        ang = hue.flatten(1) * (2 * np.pi)
        feats += [(w * torch.cos(ang)).sum(1) / wsum, (w * torch.sin(ang)).sum(1) / wsum]
        h = hue.flatten(1)
        for k in range(HUE_BINS):
            inside = ((h >= k / HUE_BINS) & (h < (k + 1) / HUE_BINS)).to(x.dtype)
            feats.append((inside * w).sum(1) / wsum)
        # shares of dark, bright and grey (unsaturated) pixels
        feats += [(lum < 0.2).to(x.dtype).flatten(1).mean(1), (lum > 0.8).to(x.dtype).flatten(1).mean(1),
                  (sat < 0.1).to(x.dtype).flatten(1).mean(1)]
        # texture at three scales: Sobel magnitude mean/sd, edge density, orientation balance
        gray = lum.unsqueeze(1)
        for scale in (1, 2, 4):
            gs = gray if scale == 1 else F.avg_pool2d(gray, scale)
            mag, gx, gy = _gradient(gs)
            feats += _moments(mag[:, 0])[:2]
            feats.append((mag > 0.05).to(x.dtype).flatten(1).mean(1))
            ax, ay = gx.abs().flatten(1).mean(1), gy.abs().flatten(1).mean(1)
            feats.append((ax - ay) / (ax + ay + 1e-6))
        # Laplacian energy (sharpness / fine detail)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype).view(1, 1, 3, 3)
        feats.append(F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), lap).abs().flatten(1).mean(1))
        # composition: brightness and saturation on a 3x3 grid
        for plane in (lum, sat):
            feats += _grid_means(plane, GRID)
        return torch.stack(feats, dim=1)


def _grid_means(plane: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Means of [B, H, W] over an n x n grid of windows, row by row: the windows of
    ``F.adaptive_avg_pool2d`` (start floor(i H / n), end ceil((i + 1) H / n)), written as slices
    because the ONNX exporter unrolls adaptive pooling into ~10,000 Gather nodes per call."""
    h, w = plane.shape[-2:]
    rows = [(i * h // n, -(-(i + 1) * h // n)) for i in range(n)]
    cols = [(j * w // n, -(-(j + 1) * w // n)) for j in range(n)]
    return [plane[:, r0:r1, c0:c1].mean(dim=(1, 2)) for r0, r1 in rows for c0, c1 in cols]


def stat_names() -> list[str]:
    names = ["r_mean", "g_mean", "b_mean"]
    for p in ("lum", "sat", "val"):
        names += [f"{p}_mean", f"{p}_sd", f"{p}_skew"]
    names += ["colourfulness", "hue_cos", "hue_sin"] + [f"hue_bin{k}" for k in range(HUE_BINS)]
    names += ["dark_share", "bright_share", "grey_share"]
    for s in (1, 2, 4):
        names += [f"grad{s}_mean", f"grad{s}_sd", f"edges{s}", f"orient{s}"]
    names.append("laplacian")
    for p in ("lum", "sat"):
        names += [f"{p}_grid{i}" for i in range(GRID * GRID)]
    return names


STAT_NAMES = stat_names()


def build_image_stats() -> Backbone:
    from ..image_view import EVAL_VIEW, TRAIN_VIEW, UNIT_MEAN, UNIT_STD, make_transforms

    # No normalisation: the statistics read RGB in [0, 1] (ToTensor's range).
    train_t, eval_t = make_transforms(UNIT_MEAN, UNIT_STD)
    pre = {"eval": f"{EVAL_VIEW}, RGB in [0, 1]",
           "train": TRAIN_VIEW,
           "statistics": STAT_NAMES, "version": IMAGE_STATS_VERSION}
    return Backbone(name="image_stats", kind="image", dim=len(STAT_NAMES),
                    weights={"kind": "handmade", "sha256": f"image_stats-v{IMAGE_STATS_VERSION}",
                             "source": "imuse_lib.models.descriptors.ImageStats"},
                    module=freeze(ImageStats()), preprocessing=pre, labels=STAT_NAMES,
                    train_transform=train_t, eval_transform=eval_t)


# --------------------------------------------------------------------------- intermediate layers


class PooledBlocks(nn.Module):
    """MobileNetV2's ``features`` run block by block; the outputs of ``blocks`` are pooled
    (mean and sd over space) and concatenated."""

    def __init__(self, features: nn.Module, blocks=MID_BLOCKS):
        super().__init__()
        self.features = features[: max(blocks) + 1]
        self.blocks = tuple(blocks)

    def forward(self, x):
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.blocks:
                out += pool_block(x)
        return torch.cat(out, dim=1)


def pool_block(x: torch.Tensor) -> list[torch.Tensor]:
    """An intermediate block's activations [B, C, H, W] -> their mean and sd over positions
    (2 x [B, C]): the one pooling rule of the feature store and of the query path (va_model.torch_path)."""
    flat = x.flatten(2)
    return [flat.mean(2), flat.std(2)]


def mid_dim(blocks=MID_BLOCKS) -> int:
    channels = {3: 24, 6: 32, 10: 64, 13: 96, 16: 160, 17: 320}
    return 2 * sum(channels[b] for b in blocks)


def build_mobilenet_v2_mid(seed: int = config.SEED) -> Backbone:
    from .image import build_image_backbone

    full = build_image_backbone("mobilenet_v2", seed=seed)
    module = freeze(PooledBlocks(full.module.features))
    pre = dict(full.preprocessing, pooled_blocks=list(MID_BLOCKS), pooling="mean and sd over space")
    return Backbone(name="mobilenet_v2_mid", kind="image", dim=mid_dim(), weights=full.weights, module=module,
                    preprocessing=pre, train_transform=full.train_transform, eval_transform=full.eval_transform)


class Lite0Taps(nn.Module):
    """EfficientNet-Lite0 (input already normalised) run once: its pooled last layer (the
    ``efficientnet_lite0`` features) and/or the mean over space of its sixth stage's output
    (``efficientnet_lite0_mid``; the sd too was measured and left out: it lowered the
    leave-one-out r). Only the layers a wanted output needs are kept."""

    def __init__(self, net: nn.Module, want_last: bool, want_mid: bool):
        super().__init__()
        self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net.act
        self.blocks = net._blocks if want_last else net._blocks[: LITE0_MID_BLOCK + 1]
        self.head = nn.Sequential(net._conv_head, net._bn1) if want_last else None
        self.want_mid = want_mid

    def forward(self, x):
        x = self.act(self.bn0(self.stem(x)))
        mid = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.want_mid and i == LITE0_MID_BLOCK:
                mid = x.mean(dim=(2, 3))
        last = self.act(self.head(x)).mean(dim=(2, 3)) if self.head is not None else None
        return last, mid


class _Lite0Mid(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.taps = Lite0Taps(net, want_last=False, want_mid=True)

    def forward(self, x):
        return self.taps(x)[1]


def build_efficientnet_lite0_mid(seed: int = config.SEED) -> Backbone:
    from .image import build_image_backbone

    full = build_image_backbone("efficientnet_lite0", seed=seed)
    module = freeze(_Lite0Mid(full.module))
    pre = dict(full.preprocessing, pooled_blocks=[LITE0_MID_BLOCK], pooling="mean over space")
    return Backbone(name="efficientnet_lite0_mid", kind="image", dim=LITE0_MID_CHANNELS, weights=full.weights,
                    module=module, preprocessing=pre, train_transform=full.train_transform,
                    eval_transform=full.eval_transform)


# --------------------------------------------------------------------------- audio descriptors

AUDIO_SR = 22050
HOP = 512
N_MFCC = 20
# Krumhansl-Kessler key profiles (major, minor), C first
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _key_strengths(chroma_mean: np.ndarray) -> tuple[float, float]:
    """Best correlation of the mean chroma with any major and any minor key profile."""
    def best(profile):
        return max(np.corrcoef(np.roll(profile, k), chroma_mean)[0, 1] for k in range(12))
    if np.std(chroma_mean) < 1e-9:
        return 0.0, 0.0
    return float(best(_MAJOR)), float(best(_MINOR))


def _stats(name: str, m: np.ndarray, out: dict) -> None:
    m = np.atleast_2d(m)
    for i, row in enumerate(m):
        tag = name if len(m) == 1 else f"{name}{i}"
        out[f"{tag}_mean"] = float(np.mean(row))
        out[f"{tag}_sd"] = float(np.std(row))


def audio_descriptor_dict(wave: np.ndarray, sr: int = AUDIO_SR) -> dict:
    """Named descriptors of one mono clip (see the module docstring)."""
    import librosa

    out: dict = {}
    y = np.asarray(wave, np.float32)
    stft = np.abs(librosa.stft(y, n_fft=2048, hop_length=HOP))
    power = stft ** 2
    onset = librosa.onset.onset_strength(S=librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr)), sr=sr)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=HOP)
    out["tempo"] = float(np.atleast_1d(tempo)[0])
    out["log_tempo"] = float(np.log(max(out["tempo"], 1.0)))
    _stats("onset", onset, out)
    out["onset_rate"] = float(len(librosa.onset.onset_detect(onset_envelope=onset, sr=sr, hop_length=HOP))
                              / (len(y) / sr))
    rms = librosa.feature.rms(S=stft, frame_length=2048, hop_length=HOP)[0]
    db = 20 * np.log10(rms + 1e-6)
    _stats("rms_db", db, out)
    out["dynamic_range_db"] = float(np.percentile(db, 95) - np.percentile(db, 5))
    out["low_energy_share"] = float(np.mean(rms < rms.mean()))
    _stats("centroid", librosa.feature.spectral_centroid(S=stft, sr=sr), out)
    _stats("bandwidth", librosa.feature.spectral_bandwidth(S=stft, sr=sr), out)
    _stats("rolloff", librosa.feature.spectral_rolloff(S=stft, sr=sr), out)
    _stats("flatness", librosa.feature.spectral_flatness(S=stft), out)
    _stats("contrast", librosa.feature.spectral_contrast(S=stft, sr=sr), out)
    _stats("zcr", librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=HOP), out)
    flux = np.sqrt(np.mean(np.diff(stft, axis=1).clip(min=0) ** 2, axis=0))
    _stats("flux", flux, out)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_mels=64))
    _stats("mfcc", librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC), out)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr)
    cm = chroma.mean(axis=1)
    _stats("chroma", chroma, out)
    major, minor = _key_strengths(cm)
    out["key_major"], out["key_minor"] = major, minor
    out["mode"] = major - minor  # > 0: major-like (higher valence, Panda et al.)
    # harmonic share via a median-filtering split on the magnitude (percussive music: high arousal)
    harm, perc = librosa.decompose.hpss(stft)
    out["harmonic_share"] = float(harm.sum() / (harm.sum() + perc.sum() + 1e-9))
    return out


def audio_descriptor_names() -> list[str]:
    rng = np.random.default_rng(0)
    return list(audio_descriptor_dict(rng.standard_normal(AUDIO_SR * 3).astype(np.float32) * 0.1))


class _Identity(nn.Module):
    def forward(self, x):
        return x


def build_audio_descriptors() -> Backbone:
    """Descriptors as a store source: the 'module' is the identity over the precomputed
    descriptor vector (the store's batching stacks them)."""
    names = audio_descriptor_names()
    pre = {"decode": "media.load_audio (soundfile, mean of channels, torchaudio resample)",
           "sample_rate": AUDIO_SR, "hop": HOP, "n_fft": 2048, "whole_clip": True,
           "descriptors": names, "version": AUDIO_DESCRIPTORS_VERSION}
    import librosa

    return Backbone(name="audio_descriptors", kind="audio", dim=len(names),
                    weights={"kind": "handmade", "sha256": f"audio_descriptors-v{AUDIO_DESCRIPTORS_VERSION}",
                             "source": f"librosa {librosa.__version__}"},
                    module=_Identity(), preprocessing=pre, labels=names, sample_rate=AUDIO_SR,
                    input_length=None, eval_crops=1)


def audio_descriptor_inputs(item_id: str, path) -> list:
    """The store's per-item input list: one tensor, the whole clip's descriptors."""
    wave = media.load_audio(path, AUDIO_SR)
    d = audio_descriptor_dict(wave, AUDIO_SR)
    return [torch.tensor([d[k] for k in d], dtype=torch.float32)]
