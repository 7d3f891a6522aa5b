"""Music taggers as feature sources for the VA model's audio arm.

Two kinds of block per tagger, for every 4Q catalog clip:

* the embedding (:func:`tagger_features`): the tagger's penultimate layer, averaged over its
  fixed evaluation crops (Musicnn 5 x 3 s, FCN and CRNN one centred 29 s crop);
* its tag probabilities (:func:`tagger_tags`): the tagger's own frozen classifier on that
  crop-mean embedding (50 tags, named in :attr:`FeatureSet.meta` ``labels``).

Taggers (:data:`TAGGER_NAMES`): the MagnaTagATune ``musicnn`` and ``fcn`` (the existing
sources) and the five of :data:`imuse_lib.models.audio.TAGGERS` (``msd_fcn``, ``msd_crnn``,
``jamendo_musicnn``, ``jamendo_fcn``, ``jamendo_crnn``), whose tag sets carry moods (MSD:
happy, sad, Mellow, chill...; Jamendo: emotional, energetic, happy, relaxing...).

Both are feature sources of the VA model's audio arm (``imuse_lib.features.AUDIO_SOURCES``:
``msd_fcn``, ``msd_fcn_tags``, ...): embeddings live in the feature store under the key an
evaluation-only audio source gets there (no random training crops), with the weights' sha256
in the key and the full provenance in ``meta.json``; computing resumes chunk by chunk. Tag
probabilities are derived in memory (milliseconds).

    fs = taggers.tagger_features("msd_fcn")       # fs.ids, fs.eval [500, 64], fs.meta
    tags = taggers.tagger_tags("jamendo_musicnn")  # tags.eval [500, 50], tags.meta["labels"]
    x = taggers.stack(["msd_fcn", "jamendo_musicnn"], with_tags=True)  # ids, [500, D] blocks
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import config
from .errors import ImuseError

MTAT_TAGGERS = ("musicnn", "fcn")


def _new_taggers() -> tuple:
    from .models.audio import TAGGERS

    return tuple(TAGGERS)


TAGGER_NAMES = MTAT_TAGGERS + _new_taggers()


def _check(name: str) -> None:
    if name not in TAGGER_NAMES:
        raise ImuseError(f"unknown music tagger {name!r}; choose from {', '.join(TAGGER_NAMES)}")


@lru_cache(maxsize=None)
def tagger_backbone(name: str, seed: int = config.SEED):
    """The frozen, headless tagger (pretrained weights; WeightsError when they are not here)."""
    from . import models

    _check(name)
    return models.build_audio_backbone(name, seed=seed)


def tagger_features(name: str, seed: int = config.SEED, *, progress: bool = False, frame=None,
                    compute: bool = True):
    """Evaluation embeddings of every clip (``data.load_catalog()`` order, or the rows of
    ``frame``): a :class:`~imuse_lib.features.FeatureSet` whose ``eval`` is [N, D]; the feature
    source of the same name (:func:`imuse_lib.features.source_features`). ``compute=False``
    raises instead of computing a missing entry (minutes per tagger)."""
    from . import features

    _check(name)
    return features.source_features(name, seed, progress=progress, frame=frame, compute=compute)


def tagger_tags(name: str, seed: int = config.SEED, *, progress: bool = False, frame=None,
                compute: bool = True):
    """The tagger's 50 tag probabilities of every clip: its own frozen classifier (sigmoid of
    the tag layer) on the crop-mean evaluation embedding; the feature source ``<name>_tags``.
    ``meta["labels"]`` names the columns."""
    from . import features

    _check(name)
    return features.source_features(name + features.TAG_SUFFIX, seed, progress=progress, frame=frame,
                                    compute=compute)


def provenance(name: str, seed: int = config.SEED) -> dict:
    """Weights name, data set and sha256 of a tagger (what a result built on it must cite)."""
    w = tagger_backbone(name, seed).weights
    return {"tagger": name, "weights": w.get("weights_name") or w.get("source"), "dataset": w.get("dataset"),
            "sha256": w.get("sha256"), "source": w.get("source")}


def stack(names, *, with_tags: bool = False, seed: int = config.SEED, frame=None, compute: bool = True,
          progress: bool = False) -> tuple[list, list[np.ndarray], list[str]]:
    """The blocks of several taggers, rows aligned: (ids, [blocks], [block names]); each
    tagger gives its embedding and, with ``with_tags``, its tag probabilities."""
    ids, blocks, names_out = None, [], []
    for name in names:
        parts = [(name, tagger_features(name, seed, progress=progress, frame=frame, compute=compute))]
        if with_tags:
            parts.append((f"{name}_tags", tagger_tags(name, seed, frame=frame, compute=compute)))
        for label, fs in parts:
            if ids is None:
                ids = list(fs.ids)
            elif list(fs.ids) != ids:
                raise ImuseError(f"music tagger {label}: its clips differ from {names_out[0]}'s")
            blocks.append(np.asarray(fs.eval, np.float64))
            names_out.append(label)
    return ids or [], blocks, names_out


def mood_correlations(name: str, catalog=None, seed: int = config.SEED, compute: bool = True):
    """Pearson r of each of a tagger's tag probabilities with the clips' valence and arousal
    (the catalog's derived VA): a frame with columns tag, r_valence, r_arousal. A pretrained
    tagger's mood tags move with VA (e.g. happy with valence); random weights' do not."""
    import pandas as pd

    from . import data
    from .metrics import pearson_r

    catalog = data.load_catalog() if catalog is None else catalog
    tags = tagger_tags(name, seed, frame=catalog, compute=compute)
    by_id = catalog.set_index(catalog.song_id.astype(str))
    va = by_id.loc[tags.ids, ["valence", "arousal"]].to_numpy(float)
    rows = [{"tagger": name, "tag": label, "r_valence": pearson_r(tags.eval[:, j], va[:, 0]),
             "r_arousal": pearson_r(tags.eval[:, j], va[:, 1])}
            for j, label in enumerate(tags.meta["labels"] or range(tags.eval.shape[1]))]
    return pd.DataFrame(rows)
