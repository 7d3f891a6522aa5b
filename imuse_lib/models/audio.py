"""The audio arm: raw-waveform and mel-spectrogram music taggers, frozen and headless.

* ``samplecnn``: SampleCNN (Lee et al. 2018, "SampleCNN: end-to-end deep convolutional
  neural networks using very small filters for music classification"; the MagnaTagATune
  3^9 model): 59049 samples at 22050 Hz (2.68 s), a strided 3-sample convolution
  (stride 3, 128 filters), nine blocks of 3-tap convolution + BatchNorm + ReLU + max-pool 3
  (128, 128, 256 x 6, 512 filters), a 1x1 convolution of 512, then the 50-tag classifier.
  Parameter names follow minzwon/sota-music-tagging-models (``layer1..layer11``,
  ``dense``), so a MagnaTagATune-trained checkpoint from that code loads strictly. No such
  checkpoint can be had here: it is looked for at ``$IMUSE_SAMPLECNN_WEIGHTS``,
  ``cache_dir()/weights/samplecnn_mtat.pth`` or ``<data>/weights/mtat/samplecnn_best_model.pth``.
* ``musicnn`` and ``fcn``: Won et al. 2020, "Evaluation of CNN-based automatic music
  tagging models" (MagnaTagATune, 50 tags), with the mirror's state_dicts
  (``weights/mtat/*_best_model.pth``, which carry the mel filterbank and window).
  Front end: 16 kHz, 512-point FFT, hop 256, 96 mel bands 0-8 kHz, power -> dB, BatchNorm.
  Input lengths as upstream (``training/eval.py``): Musicnn 3 s (48000 samples), FCN
  29 s (464000 samples).

* The same authors' taggers trained on other tag sets (:data:`TAGGERS`, mirror folders
  ``weights/msd/`` and ``weights/jamendo/``, tag names in output order beside them):
  ``msd_fcn`` and ``msd_crnn`` (Million Song Dataset, top-50 last.fm tags: happy, sad,
  Mellow, chill...), ``jamendo_musicnn``, ``jamendo_fcn`` and ``jamendo_crnn`` (MTG-Jamendo
  top-50: emotional, energetic, film, happy, relaxing...). FCN and Musicnn are the classes
  above (the Jamendo Musicnn has the MTAT-sized back end, as upstream builds every dataset
  but MSD); CRNN (Choi et al. 2017, as upstream builds it) is the same mel front end, four
  3x3 conv blocks (64, 128, 128, 128 channels, pooled to one frequency bin) and a two-layer
  GRU of 32 units whose last time step feeds the tag layer; input 29 s like FCN.

The feature is the penultimate embedding, before the tag classifier: SampleCNN 512-d,
Musicnn 200-d (after dense1 + BatchNorm + ReLU), FCN 64-d (after the last conv block),
CRNN 32-d (the GRU's output at the last time step).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .. import config
from ..errors import DataError, WeightsError
from .base import Backbone, flush_denormals, freeze, random_init, sha256_file

AUDIO_BACKBONES = ("samplecnn", "musicnn", "fcn")

# name -> (sample rate, input length in samples, embedding size, fixed evaluation crops)
# The evaluation crops are spread evenly over the clip (SampleCNN 10 x 2.7 s and Musicnn
# 5 x 3 s sample a 30 s clip; FCN's one 29 s crop covers it).
SPECS = {
    "samplecnn": (22050, 59049, 512, 10),
    "musicnn": (16000, 3 * 16000, 200, 5),
    "fcn": (16000, 29 * 16000, 64, 1),
}

MTAT_FILES = {"musicnn": "musicnn_best_model.pth", "fcn": "fcn_best_model.pth"}
SAMPLECNN_ENV = "IMUSE_SAMPLECNN_WEIGHTS"

# The taggers trained on other tag sets: backbone name -> (tag set, architecture). They are
# not in AUDIO_BACKBONES (the experiment grid's audio arms): they serve the VA model's
# feature sources (see imuse_lib.taggers).
TAGGERS = {
    "msd_fcn": ("msd", "fcn"),
    "msd_crnn": ("msd", "crnn"),
    "jamendo_musicnn": ("jamendo", "musicnn"),
    "jamendo_fcn": ("jamendo", "fcn"),
    "jamendo_crnn": ("jamendo", "crnn"),
}
# tag set -> (data asset, tag-name file, what the tags are)
TAG_SETS = {
    "msd": ("msd_weights", "msd_tags.txt", "Million Song Dataset top-50 last.fm tags"),
    "jamendo": ("jamendo_weights", "jamendo_tags.txt", "MTG-Jamendo top-50 tags"),
}
SPECS.update({name: SPECS["fcn"] if arch == "fcn" else SPECS["musicnn"] if arch == "musicnn"
              else (16000, 29 * 16000, 32, 1) for name, (_, arch) in TAGGERS.items()})


# --------------------------------------------------------------------------- building blocks


class Conv1dBlock(nn.Module):
    """Conv1d + BatchNorm + ReLU + MaxPool (upstream ``Conv_1d``)."""

    def __init__(self, cin, cout, shape=3, stride=1, pooling=2):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, shape, stride=stride, padding=shape // 2)
        self.bn = nn.BatchNorm1d(cout)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool1d(pooling)

    def forward(self, x):
        return self.mp(self.relu(self.bn(self.conv(x))))


class Conv2dBlock(nn.Module):
    """Conv2d 3x3 + BatchNorm + ReLU + MaxPool (upstream ``Conv_2d``)."""

    def __init__(self, cin, cout, shape=3, stride=1, pooling=2):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, shape, stride=stride, padding=shape // 2)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool2d(pooling)

    def forward(self, x):
        return self.mp(self.relu(self.bn(self.conv(x))))


class VerticalConv(nn.Module):
    """Musicnn timbral filter: tall kernel over frequency, then max over frequency."""

    def __init__(self, cin, cout, shape):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, shape, padding=(0, shape[1] // 2))
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        return x.amax(dim=2)


class HorizontalConv(nn.Module):
    """Musicnn temporal filter: mean over frequency, then a long 1-D kernel over time."""

    def __init__(self, cin, cout, length):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, length, padding=length // 2)
        self.bn = nn.BatchNorm1d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x.mean(dim=2))))


class MelFrontEnd(nn.Module):
    """Waveform [B, T] -> normalised log-mel [B, 1, 96, frames] (mel matrix and window are
    buffers, loaded from the checkpoints)."""

    def __init__(self, sample_rate=16000, n_fft=512, f_min=0.0, f_max=8000.0, n_mels=96):
        super().__init__()
        import torchaudio

        self.spec = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft,
                                                         f_min=f_min, f_max=f_max, n_mels=n_mels)
        self.to_db = torchaudio.transforms.AmplitudeToDB()
        self.spec_bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return self.spec_bn(self.to_db(self.spec(x)).unsqueeze(1))


MEL_SPEC = {"sample_rate": 16000, "n_fft": 512, "hop": 256, "n_mels": 96, "f_min": 0.0, "f_max": 8000.0,
            "db": "10*log10(power), no top_db"}


# --------------------------------------------------------------------------- models


class SampleCNN(nn.Module):
    """SampleCNN 3^9 (see the module docstring). ``forward``: [B, 59049] -> [B, 512];
    ``classify``: -> [B, n_class] tag probabilities."""

    def __init__(self, n_class: int = 50):
        super().__init__()
        self.layer1 = Conv1dBlock(1, 128, shape=3, stride=3, pooling=1)
        widths = [128, 128, 128, 256, 256, 256, 256, 256, 256, 512]
        for i in range(9):  # layer2..layer10: the nine 3x blocks
            setattr(self, f"layer{i + 2}", Conv1dBlock(widths[i], widths[i + 1], shape=3, stride=1, pooling=3))
        self.layer11 = Conv1dBlock(512, 512, shape=1, stride=1, pooling=1)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(512, n_class)

    def forward(self, x):
        x = x.unsqueeze(1)
        for i in range(1, 12):
            x = getattr(self, f"layer{i}")(x)
        return x.squeeze(-1)

    def classify(self, x):
        return torch.sigmoid(self.dense(self.dropout(self.forward(x))))


class MelModel(nn.Module):
    """A tagger on the mel front end: ``forward(x) = body(mel(x))``. The split lets
    :mod:`imuse_lib.frozen_runtime` run the body (the convolutions) on ONNX Runtime while
    torch computes the spectrogram, which the ONNX exporter does not take."""

    def mel(self, x):
        return self.spec_bn(self.to_db(self.spec(x)).unsqueeze(1))

    def forward(self, x):
        return self.body(self.mel(x))


class Musicnn(MelModel):
    """Musicnn (Pons et al. 2017; Won et al. 2020's MTAT version). [B, 48000] -> [B, 200]."""

    def __init__(self, n_class: int = 50, dataset: str = "mtat"):
        super().__init__()
        front = MelFrontEnd()
        self.spec, self.to_db, self.spec_bn = front.spec, front.to_db, front.spec_bn
        self.layers = nn.ModuleList([
            VerticalConv(1, 204, (int(0.7 * 96), 7)), VerticalConv(1, 204, (int(0.4 * 96), 7)),
            HorizontalConv(1, 51, 129), HorizontalConv(1, 51, 65), HorizontalConv(1, 51, 33)])
        backend = 512 if dataset == "msd" else 64
        self.layer1 = Conv1dBlock(561, backend, 7, 1, 1)
        self.layer2 = Conv1dBlock(backend, backend, 7, 1, 1)
        self.layer3 = Conv1dBlock(backend, backend, 7, 1, 1)
        dense = 500 if dataset == "msd" else 200
        self.dense1 = nn.Linear((561 + backend * 3) * 2, dense)
        self.bn = nn.BatchNorm1d(dense)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)
        self.dense2 = nn.Linear(dense, n_class)

    def body(self, x):
        out = torch.cat([layer(x) for layer in self.layers], dim=1)  # [B, 561, frames]
        res1 = self.layer1(out)
        res2 = self.layer2(res1) + res1
        res3 = self.layer3(res2) + res2
        out = torch.cat([out, res1, res2, res3], dim=1)
        out = torch.cat([out.amax(dim=2), out.mean(dim=2)], dim=1)  # max and mean over time
        return self.relu(self.bn(self.dense1(out)))

    def classify(self, x):
        return torch.sigmoid(self.dense2(self.dropout(self.forward(x))))


class FCN(MelModel):
    """FCN (Choi et al. 2016; Won et al. 2020's MTAT version). [B, 464000] -> [B, 64]."""

    def __init__(self, n_class: int = 50):
        super().__init__()
        front = MelFrontEnd()
        self.spec, self.to_db, self.spec_bn = front.spec, front.to_db, front.spec_bn
        self.layer1 = Conv2dBlock(1, 64, pooling=(2, 4))
        self.layer2 = Conv2dBlock(64, 128, pooling=(2, 4))
        self.layer3 = Conv2dBlock(128, 128, pooling=(2, 4))
        self.layer4 = Conv2dBlock(128, 128, pooling=(3, 5))
        self.layer5 = Conv2dBlock(128, 64, pooling=(4, 4))
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(64, n_class)

    def body(self, x):
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = layer(x)
        return x.reshape(x.size(0), -1)

    def classify(self, x):
        return torch.sigmoid(self.dense(self.dropout(self.forward(x))))


class CRNN(MelModel):
    """CRNN (Choi et al. 2017; Won et al. 2020's version). [B, 464000] -> [B, 32]: four conv
    blocks pool the 96 mel bands to one, a two-layer GRU runs over the frames, and its output
    at the last frame is the embedding."""

    def __init__(self, n_class: int = 50):
        super().__init__()
        front = MelFrontEnd()
        self.spec, self.to_db, self.spec_bn = front.spec, front.to_db, front.spec_bn
        self.layer1 = Conv2dBlock(1, 64, pooling=(2, 2))
        self.layer2 = Conv2dBlock(64, 128, pooling=(3, 3))
        self.layer3 = Conv2dBlock(128, 128, pooling=(4, 4))
        self.layer4 = Conv2dBlock(128, 128, pooling=(4, 4))
        self.layer5 = nn.GRU(128, 32, 2, batch_first=True)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(32, n_class)

    def body(self, x):
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        x, _ = self.layer5(x.squeeze(2).permute(0, 2, 1))  # [B, frames, 32]
        return x[:, -1, :]

    def classify(self, x):
        return torch.sigmoid(self.dense(self.dropout(self.forward(x))))


_CLASSES = {"samplecnn": SampleCNN, "musicnn": Musicnn, "fcn": FCN, "crnn": CRNN}
_HEAD = {"samplecnn": ("dropout", "dense"), "musicnn": ("dropout", "dense2"), "fcn": ("dropout", "dense"),
         "crnn": ("dropout", "dense")}


class TagHead(nn.Module):
    """The removed classifier: embedding -> tag probabilities (sanity checks only)."""

    def __init__(self, dropout, dense):
        super().__init__()
        self.dropout, self.dense = dropout, dense

    def forward(self, x):
        return torch.sigmoid(self.dense(self.dropout(x)))


# --------------------------------------------------------------------------- weights


def samplecnn_candidates() -> list[Path]:
    paths = []
    if os.environ.get(SAMPLECNN_ENV):
        paths.append(Path(os.environ[SAMPLECNN_ENV]).expanduser())
    paths.append(config.cache_dir() / "weights" / "samplecnn_mtat.pth")
    root = config.data_root()
    if root is not None:
        paths.append(root / "weights" / "mtat" / "samplecnn_best_model.pth")
    return paths


def weights_file(name: str) -> Path | None:
    """The pretrained weight file of ``name`` if present here (checksum verified for the
    mirrored taggers), else None."""
    if name == "samplecnn":
        return next((p for p in samplecnn_candidates() if p.is_file()), None)
    from .. import data

    try:
        if name in TAGGERS:
            return tagger_weights(name)
        return data.asset_path("mtat_weights", MTAT_FILES[name])
    except DataError:
        return None


def has_pretrained(name: str) -> bool:
    return weights_file(name) is not None


def mtat_tags() -> list[str]:
    from .. import data

    return [str(t) for t in np.load(data.asset_path("mtat_weights", "mtat_tags.npy"))]


def tagger_weights(name: str) -> Path:
    """Verified path of a tagger's checkpoint (DataError naming the file when missing or altered)."""
    from .. import data

    tag_set, arch = TAGGERS[name]
    return data.asset_path(TAG_SETS[tag_set][0], f"{arch}_best_model.pth")


def tag_names(tag_set: str) -> list[str]:
    """The tag names of a tag set (``"msd"``, ``"jamendo"``), in the taggers' output order."""
    from .. import data

    asset, filename, _ = TAG_SETS[tag_set]
    path = data.asset_path(asset, filename)
    tags = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(tags) != 50 or len(set(tags)) != 50:
        raise DataError(f"{path}: expected 50 distinct tag names, one a line; found {len(tags)} "
                        f"({len(set(tags))} distinct)")
    return tags


def _build_tagger(name: str, weights: str, seed: int) -> Backbone:
    """A tagger of :data:`TAGGERS`, frozen and headless, like the MTAT ones."""
    tag_set, arch = TAGGERS[name]
    sr, length, dim, eval_crops = SPECS[name]
    cls = _CLASSES[arch]
    labels = None
    if weights == "random":
        model = random_init(cls, seed)
        info = {"kind": "random", "init_seed": seed}
    else:
        try:
            path = tagger_weights(name) if weights == "pretrained" else Path(weights).expanduser()
            labels = tag_names(tag_set)
        except DataError as exc:
            raise WeightsError(f"{name}: pretrained {TAG_SETS[tag_set][2]} weights unavailable: {exc}") from None
        if not path.is_file():
            raise WeightsError(f"{path}: {name} weights file not found (weights must be 'pretrained', "
                               f"'random' or a checkpoint path)")
        model = cls()
        _load_strict(model, path, name)
        head_out = getattr(model, _HEAD[arch][1]).out_features
        if head_out != len(labels):
            raise WeightsError(f"{path}: {name}'s tag layer has {head_out} outputs, its tag list "
                               f"{TAG_SETS[tag_set][1]} names {len(labels)}")
        flush_denormals(model)  # speed only: see base.flush_denormals
        source = (f"Won et al. 2020 {tag_set} {arch} (minzwon/sota-music-tagging-models "
                  f"models/{tag_set}/{arch}/best_model.pth)" if weights == "pretrained"
                  else f"user checkpoint {path.name}")
        info = {"kind": "pretrained", "source": source, "file": str(path), "sha256": sha256_file(path),
                "dataset": TAG_SETS[tag_set][2], "weights_name": f"{tag_set}/{arch}_best_model.pth"}
    head = TagHead(*(getattr(model, a) for a in _HEAD[arch]))
    preprocessing = {"decode": "soundfile, mean of channels", "resample": f"torchaudio.functional.resample -> {sr} Hz",
                     "sample_rate": sr, "input_length": length, "eval_crops": eval_crops,
                     "short_clip": "looped to the crop when >= min(crop/2, 5 s), else rejected", "mel": MEL_SPEC}
    return Backbone(name=name, kind="audio", dim=dim, weights=info, module=freeze(model),
                    preprocessing=preprocessing, head=freeze(head), labels=labels,
                    sample_rate=sr, input_length=length, eval_crops=eval_crops)


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, not a torch file
        raise WeightsError(f"{path}: not a readable PyTorch state_dict ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    # checkpoints saved from nn.DataParallel prefix every key with 'module.'
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def _load_strict(model: nn.Module, path: Path, name: str) -> None:
    try:
        model.load_state_dict(_load_state(path), strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise WeightsError(f"{path}: does not load strictly into {name} ({first})") from None


def build_audio_backbone(name: str, weights: str = "pretrained", seed: int = config.SEED,
                         sample_rate: int | None = None) -> Backbone:
    """A frozen, headless music tagger (see the module docstring).

    ``weights``: ``"pretrained"`` (WeightsError when the checkpoint is not here),
    ``"random"`` (seeded, recorded as random), or a path to a checkpoint to load strictly.
    ``sample_rate`` overrides SampleCNN's 22050 Hz for checkpoints trained at another rate
    (minzwon's code trains it at 16 kHz).
    """
    if name in TAGGERS:
        if sample_rate is not None and int(sample_rate) != SPECS[name][0]:
            raise WeightsError(f"{name}: its mel front end is fixed at {SPECS[name][0]} Hz; sample_rate cannot change")
        return _build_tagger(name, weights, seed)
    if name not in AUDIO_BACKBONES:
        raise WeightsError(f"unknown audio backbone {name!r}; choose one of "
                           f"{', '.join(AUDIO_BACKBONES + tuple(TAGGERS))}")
    sr, length, dim, eval_crops = SPECS[name]
    if sample_rate is not None:
        if name != "samplecnn":
            raise WeightsError(f"{name}: its mel front end is fixed at {sr} Hz; sample_rate cannot change")
        sr = int(sample_rate)
    cls = _CLASSES[name]
    if weights == "random":
        model = random_init(cls, seed)
        info = {"kind": "random", "init_seed": seed}
    else:
        if weights == "pretrained":
            path = weights_file(name)
            if path is None:
                if name == "samplecnn":
                    where = ", ".join(str(p) for p in samplecnn_candidates())
                    raise WeightsError(
                        f"samplecnn: no MagnaTagATune-trained SampleCNN checkpoint here (looked in {where}); "
                        f"train one with minzwon/sota-music-tagging-models (--model_type sample) or obtain a "
                        f"published one, put it there or set {SAMPLECNN_ENV}; or ask for random weights "
                        f"explicitly (weights='random' / --random-weights). Pretrained audio arms available "
                        f"here: musicnn, fcn")
                from .. import data

                try:
                    data.asset_path("mtat_weights", MTAT_FILES[name])
                except DataError as exc:
                    raise WeightsError(f"{name}: pretrained MTAT weights unavailable: {exc}") from None
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsError(f"{path}: {name} weights file not found (weights must be 'pretrained', "
                                   f"'random' or a checkpoint path)")
        model = cls()
        _load_strict(model, path, name)
        flush_denormals(model)  # speed only: see base.flush_denormals
        source = (f"Won et al. 2020 MTAT {name} (minzwon/sota-music-tagging-models models/mtat/{name}/best_model.pth)"
                  if name in MTAT_FILES and weights == "pretrained" else f"user checkpoint {path.name}")
        info = {"kind": "pretrained", "source": source, "file": str(path), "sha256": sha256_file(path),
                "dataset": "MagnaTagATune (50 tags)"}
    head = TagHead(*(getattr(model, a) for a in _HEAD[name]))
    preprocessing = {"decode": "soundfile, mean of channels", "resample": f"torchaudio.functional.resample -> {sr} Hz",
                     "sample_rate": sr, "input_length": length, "eval_crops": eval_crops,
                     "short_clip": "looped to the crop when >= min(crop/2, 5 s), else rejected"}
    if name != "samplecnn":
        preprocessing["mel"] = MEL_SPEC
    try:
        labels = mtat_tags()
    except DataError:
        labels = None
    return Backbone(name=name, kind="audio", dim=dim, weights=info, module=freeze(model),
                    preprocessing=preprocessing, head=freeze(head), labels=labels,
                    sample_rate=sr, input_length=length, eval_crops=eval_crops)
