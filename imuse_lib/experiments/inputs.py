"""What the experiments read: the configurations a profile runs (backbone pairs whose weights
are here), the fixed pairs and their splits, a configuration's feature data and the evaluation
sets. Cached per process; tests replace these functions on this module."""

from __future__ import annotations

import itertools
from functools import lru_cache

import pandas as pd

from .. import config
from ..errors import ImuseError
from ..profiles import Profile

# The paper's own configurations (Table 1/2); they run only where their weights are present.
PAPER_CONFIGS = [("mobilenet_v3_large", "samplecnn"), ("resnet18", "samplecnn"), ("efficientnet_b4", "samplecnn")]
# Published numbers (Table 2 of the paper: MobileNetV3 + SampleCNN).
PAPER_TABLE2 = {"config": "mobilenet_v3_large+samplecnn", "map@10": 0.855, "mae": 0.225, "rmse": 0.246}


def config_name(image: str, audio: str) -> str:
    return f"{image}+{audio}"


def configurations(profile: Profile) -> list[tuple[str, str]]:
    """(image, audio) pairs to run: the profile's choice, restricted to backbones whose
    pretrained weights are here (asking for one that is not raises WeightsError-like errors)."""
    from .. import models

    avail_i, avail_a = models.available_image_backbones(), models.available_audio_backbones()
    want_i = profile.image_backbones or avail_i
    want_a = profile.audio_backbones or avail_a
    for name, known, avail in [(n, models.IMAGE_BACKBONES, avail_i) for n in want_i] + \
                              [(n, models.AUDIO_BACKBONES, avail_a) for n in want_a]:
        if name not in known:
            raise ImuseError(f"unknown backbone {name!r}; known: {', '.join(known)}")
        if name not in avail:
            from ..errors import WeightsError

            raise WeightsError(f"{name}: pretrained weights are not available on this machine "
                               f"(available: {', '.join(avail_i + avail_a)}); see `imuse features --help`")
    pairs_ = [(i, a) for i, a in itertools.product(want_i, want_a)]
    # The paper's configurations first when present, then the rest in backbone order.
    return sorted(pairs_, key=lambda c: (PAPER_CONFIGS.index(c) if c in PAPER_CONFIGS else len(PAPER_CONFIGS),
                                         models.IMAGE_BACKBONES.index(c[0]), models.AUDIO_BACKBONES.index(c[1])))


def paper_configurations_status() -> pd.DataFrame:
    """The paper's configurations and whether their pretrained weights are here."""
    from .. import models

    ai, aa = models.available_image_backbones(), models.available_audio_backbones()
    return pd.DataFrame([{"config": config_name(i, a), "image_weights_here": i in ai, "audio_weights_here": a in aa,
                          "runs_here": i in ai and a in aa} for i, a in PAPER_CONFIGS])


@lru_cache(maxsize=None)
def labels():
    from .. import data

    return data.load_images(), data.load_catalog()


@lru_cache(maxsize=None)
def split_pairs(split: str) -> pd.DataFrame:
    """The real pairs with ``split`` (train / val / test / none; fixed: config.SEED)."""
    from .. import pairs

    images, songs = labels()
    return pairs.split_pairs(pairs.form_pairs(images, songs, config.SEED), split, config.SEED,
                             images=images, songs=songs)


@lru_cache(maxsize=8)
def feature_data(image: str, audio: str):
    """FeatureData of a configuration from the feature store (computed there if missing)."""
    from .. import features
    from ..training import FeatureData

    images, songs = labels()
    ifs = features.image_features(image, progress=True)
    afs = features.audio_features(audio, progress=True)
    return FeatureData(ifs, afs, images, songs)


@lru_cache(maxsize=None)
def item_roles(split: str):
    """Role (train / val / test) of every image and song under ``split`` (fixed: config.SEED)."""
    from .. import pairs

    images, songs = labels()
    return pairs.item_roles(split, images, songs, config.SEED)


def evalset(data, split: str, part: str = "test"):
    """The EvalSet of ``part`` (``val`` or ``test``) of a split, on a configuration's rows."""
    from .. import metrics

    songs = data.songs.set_index(data.songs.song_id.astype(str))
    q4 = songs.quadrant.astype(str).str[1:].astype(int).loc[data.song_ids].to_numpy() \
        if "quadrant" in songs else None
    return metrics.make_evalset(split_pairs(split), data.image_row, data.song_row, data.image_va, data.song_va,
                                split, part, roles=item_roles(split), song_quadrant_4q=q4)


def train_rows(data, split: str):
    pairs_ = split_pairs(split)
    return data.rows(pairs_[pairs_.split == "train"])


def weights_label(meta: dict) -> str:
    w = meta.get("weights") or {}
    if w.get("kind") == "random":
        return f"RANDOM (seed {w.get('init_seed')})"
    src = w.get("source") or w.get("file") or "?"
    return f"pretrained: {src} (sha256 {str(w.get('sha256', ''))[:12]})"
