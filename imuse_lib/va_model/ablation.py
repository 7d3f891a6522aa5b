"""The VA model's ablation (issues 10 and 21): each idea fitted on train, tuned on val, scored per part."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from .. import config
from ..errors import ImuseError
from .arm import KERNELS
from .blocks import load_blocks
from .fitting import DEFAULT_TRIALS, item_labels, item_roles_of, fit
from .model import jsonable


def part_metrics(image_va_pred: np.ndarray, song_va_pred: np.ndarray, images, songs, roles, part: str,
                 k: int = 10) -> dict:
    """Point metrics of predicted VA (rows = ``images`` / ``songs`` frames) on the items whose
    role is ``part``: NSG@k both ways (queries x candidates of the part), and from
    :func:`imuse_lib.metrics.item_va_metrics` the per-dimension r and sd ratio and the songs'
    official 4Q quadrant recovered from the predicted VA."""
    from ..metrics import EvalSet, item_va_metrics, nsg_at_k

    irows, srows = _part_rows(images, songs, roles, part)
    image_va, song_va = images[["valence", "arousal"]].to_numpy(float), songs[["valence", "arousal"]].to_numpy(float)
    pi, ps = np.asarray(image_va_pred, float)[irows], np.asarray(song_va_pred, float)[srows]
    pred_m, true_m = _similarities(pi, ps, image_va[irows], song_va[srows])
    out = {"part": part, "n_images": len(irows), "n_songs": len(srows),
           "nsg@10": float(np.nanmean(nsg_at_k(pred_m, true_m, k))),
           "rev_nsg@10": float(np.nanmean(nsg_at_k(pred_m.T, true_m.T, k)))}
    none = np.zeros(0, np.int64)
    quadrant_4q = np.array([int(str(q).removeprefix("Q")) for q in songs.quadrant])  # "Q1".."Q4" -> 1..4
    ev = EvalSet(image_va, song_va, irows, srows, none, none, none, part=part, song_quadrant_4q=quadrant_4q)
    item = item_va_metrics(ev, pi, ps)
    for dim, name in (("v", "valence"), ("a", "arousal")):
        out[f"image_r_{dim}"] = item[f"image_item_{name}_r"]
        out[f"song_r_{dim}"] = item[f"song_item_{name}_r"]
        out[f"image_sd_ratio_{dim}"] = item[f"image_item_{name}_sd_ratio"]
        out[f"song_sd_ratio_{dim}"] = item[f"song_item_{name}_sd_ratio"]
    out["song_4q_acc"] = item["song_item_quadrant_4q_acc"]
    return out


def _part_rows(images, songs, roles, part: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.flatnonzero(images.image_id.map(roles.images).to_numpy() == part),
            np.flatnonzero(songs.song_id.map(roles.songs).to_numpy() == part))


def _similarities(pi, ps, ti, ts) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 between every (image, song): from the VA they are ranked with, and from the true VA."""
    from ..pairs import similarity

    return (similarity(pi[:, None, 0], pi[:, None, 1], ps[None, :, 0], ps[None, :, 1]),
            similarity(ti[:, None, 0], ti[:, None, 1], ts[None, :, 0], ts[None, :, 1]))


def ranking_nsg(image_va_pred: np.ndarray, song_va_ranked: np.ndarray, images, songs, roles, part: str,
                k: int = 10) -> float:
    """Mean NSG@k of the part's images ranking the part's songs, the images placed at their
    predicted VA and the songs at ``song_va_ranked`` (rows = ``songs``): the songs' rated VA,
    or a prediction (calibrated or not). Scored against the true VA of both."""
    from ..metrics import nsg_at_k

    irows, srows = _part_rows(images, songs, roles, part)
    image_va, song_va = images[["valence", "arousal"]].to_numpy(float), songs[["valence", "arousal"]].to_numpy(float)
    pred_m, true_m = _similarities(np.asarray(image_va_pred, float)[irows], np.asarray(song_va_ranked, float)[srows],
                                   image_va[irows], song_va[srows])
    return float(np.nanmean(nsg_at_k(pred_m, true_m, k)))


# Each idea of issue 10, cumulative where it says "+": (name, image sources, audio sources,
# kernels searched (None: baselines.ridge), calibrated, tuned).
_IMG = ("mobilenet_v2", "mobilenet_v2_mid", "image_stats")
MOBILENET_IMAGE_ARM = ("mobilenet_v2", "image_stats")  # deployed before the "images:" rows; the song rows sit beside it
TAGGER_COMBINATION = ("msd_fcn", "jamendo_musicnn", "jamendo_fcn")  # issue 21's best ridge combination
ABLATION = [
    ("ridge (baselines.ridge)", ("mobilenet_v2",), ("musicnn",), None, False, False),
    ("linear, LOO penalty", ("mobilenet_v2",), ("musicnn",), ("linear",), False, False),
    ("+ calibration", ("mobilenet_v2",), ("musicnn",), ("linear",), True, False),
    ("+ RBF kernel (tuned on val)", ("mobilenet_v2",), ("musicnn",), KERNELS, True, True),
    ("+ image statistics", ("mobilenet_v2", "image_stats"), ("musicnn",), KERNELS, True, True),
    ("+ MobileNetV2 intermediate blocks", _IMG, ("musicnn",), KERNELS, True, True),
    ("+ Musicnn tag probabilities", _IMG, ("musicnn", "musicnn_tags"), KERNELS, True, True),
    ("+ librosa descriptors", _IMG, ("musicnn", "musicnn_tags", "audio_descriptors"), KERNELS, True, True),
    ("+ FCN (+ its tags)", _IMG, ("musicnn", "musicnn_tags", "audio_descriptors", "fcn", "fcn_tags"),
     KERNELS, True, True),
    ("+ EfficientNet-Lite0 (second image backbone)", _IMG + ("efficientnet_lite0",),
     ("musicnn", "musicnn_tags", "audio_descriptors"), KERNELS, True, True),
] + [  # issue 21: the songs' arm on the taggers trained on mood-bearing tags (MSD, MTG-Jamendo),
    # each with its tag probabilities (features.TAG_SUFFIX; the literal keeps this module free of
    # torch at import), beside the deployed image arm ("+ image statistics")
    (f"songs: {label}", MOBILENET_IMAGE_ARM, sum(((t, f"{t}_tags") for t in taggers), ()), KERNELS, True, True)
    for label, taggers in (
        ("MSD FCN", ("msd_fcn",)), ("MSD CRNN", ("msd_crnn",)), ("Jamendo Musicnn", ("jamendo_musicnn",)),
        ("Jamendo FCN", ("jamendo_fcn",)), ("Jamendo CRNN", ("jamendo_crnn",)),
        ("MSD FCN + Jamendo Musicnn + Jamendo FCN", TAGGER_COMBINATION),
        ("MSD FCN + Jamendo Musicnn + Jamendo FCN + MTAT Musicnn", TAGGER_COMBINATION + ("musicnn",)),
        ("all five MSD and Jamendo taggers", TAGGER_COMBINATION + ("msd_crnn", "jamendo_crnn")))
] + [  # issue 21: the image arm with the second ImageNet backbone, beside the songs' chosen taggers
    (f"images: {label}", isrc, sum(((t, f"{t}_tags") for t in TAGGER_COMBINATION), ()), KERNELS, True, True)
    for label, isrc in (
        ("+ EfficientNet-Lite0", MOBILENET_IMAGE_ARM + ("efficientnet_lite0",)),
        ("EfficientNet-Lite0 + image statistics", ("efficientnet_lite0", "image_stats")),
        ("EfficientNet-Lite0 + its sixth stage + image statistics",
         ("efficientnet_lite0", "image_stats", "efficientnet_lite0_mid")),
        ("+ EfficientNet-Lite0's sixth stage", MOBILENET_IMAGE_ARM + ("efficientnet_lite0_mid",)))
]


def run_ablation(configs=ABLATION, *, seed: int = config.SEED, n_trials: int = DEFAULT_TRIALS,
                 parts=("val", "test"), skip_missing: bool = True, progress: bool = False):
    """One row per (idea, part): each model fitted on ``train`` (tuned on ``val``) and scored on
    the ``parts``. Ideas whose feature sources are not in the store are listed with part
    ``missing`` unless ``skip_missing=False`` computes them. Returns (table, {idea: fitted
    model (refitted on train + val)})."""
    from .. import baselines

    images, songs = item_labels()
    roles = item_roles_of(None, images, songs, seed)
    rows, models = [], {}
    for name, isrc, asrc, kernels, calibrate, tune in configs:
        t0 = time.perf_counter()
        try:
            if kernels is None:
                ib, ab = load_blocks(isrc, "image"), load_blocks(asrc, "audio")
                tr_i = np.flatnonzero(images.image_id.map(roles.images).to_numpy() == "train")
                tr_s = np.flatnonzero(songs.song_id.map(roles.songs).to_numpy() == "train")
                pred = baselines.ridge(np.concatenate(ib.arrays, 1), np.concatenate(ab.arrays, 1),
                                       images[["valence", "arousal"]].to_numpy(float),
                                       songs[["valence", "arousal"]].to_numpy(float), tr_i, tr_s)
                iva, sva, detail = pred.image_va, pred.song_va, pred.info
            else:
                final, model = fit(isrc, asrc, roles, seed=seed, n_trials=n_trials, kernels=kernels,
                                   tune=tune, calibrate=calibrate, images=images, songs=songs,
                                   compute=not skip_missing, return_train_only=True)
                models[name] = final
                iva, sva = model.predict_images(), model.predict_songs()
                detail = {"image": model.image.describe(), "audio": model.audio.describe()}
        except ImuseError as exc:
            if not skip_missing:
                raise
            rows.append({"idea": name, "part": "missing", "detail": str(exc)})
            if progress:
                print(f"{name}: missing ({exc})", flush=True)
            continue
        for part in parts:
            rows.append({"idea": name, **part_metrics(iva, sva, images, songs, roles, part),
                         "image_sources": "+".join(isrc), "audio_sources": "+".join(asrc),
                         "seconds": round(time.perf_counter() - t0, 1), "detail": json.dumps(jsonable(detail))})
        if progress:
            print(f"{name}: " + ", ".join(f"{r['part']} NSG@10 {r['nsg@10']:.3f}" for r in rows[-len(parts):]),
                  flush=True)
    return pd.DataFrame(rows), models


CV_FOLDS = 5


def fold_roles(roles, images, songs, fold: int, folds: int = CV_FOLDS, seed: int = config.SEED):
    """The roles of cross-validation fold ``fold``: the non-test items (train + val) dealt into
    ``folds`` parts by stratum (images by OASIS category, songs by 4Q quadrant, as the split
    itself), part ``fold`` as ``val`` and the rest as ``train``; test items keep their role, so
    their labels are never read."""
    from ..pairs import ItemRoles

    def deal(role: pd.Series, strata: pd.Series, salt: int) -> pd.Series:
        rng = np.random.default_rng([seed, salt])
        out = role.copy()
        pool = role.index[role.isin(["train", "val"])]
        for _, ids in strata.loc[pool].groupby(strata.loc[pool]).groups.items():
            ids = np.array(ids)[rng.permutation(len(ids))]
            for n, item in enumerate(ids):  # dealt in turn: every fold holds its share of each stratum
                out[item] = "val" if n % folds == fold else "train"
        return out

    return ItemRoles(roles.protocol, deal(roles.images, images.set_index("image_id").category, 0),
                     deal(roles.songs, songs.set_index("song_id").quadrant, 1))


def tuning_roles(roles, images, songs, fold: int, folds: int = CV_FOLDS, seed: int = config.SEED):
    """The roles fold ``fold``'s hyperparameters are searched with: that fold's items hidden (role
    ``test``, so their labels are never read), the next fold as ``val`` and the remaining
    folds as ``train``. Tuning on the fold that is then scored would report the search's luck
    on it as skill (the nested form of cross-validation)."""
    from ..pairs import ItemRoles

    scored = fold_roles(roles, images, songs, fold, folds, seed)
    inner = fold_roles(roles, images, songs, (fold + 1) % folds, folds, seed)
    return ItemRoles(roles.protocol, inner.images.mask(scored.images == "val", "test"),
                     inner.songs.mask(scored.songs == "val", "test"))


def _chosen(model) -> dict:
    return {name: {"kernel": arm.kernel, "weights": [float(w) for w in arm.weights], "g": float(arm.g)}
            for name, arm in (("image", model.image), ("audio", model.audio))}


def cross_validate(configs=ABLATION, *, folds: int = CV_FOLDS, seed: int = config.SEED,
                   n_trials: int = DEFAULT_TRIALS, progress: bool = False, images=None, songs=None,
                   roles=None) -> pd.DataFrame:
    """Each idea scored by ``folds``-fold cross-validation over the cold split's train + val
    items, nested: per fold, the idea's hyperparameters are searched as :func:`run_ablation`
    does but on :func:`tuning_roles` (the scored fold hidden, the next fold as validation),
    then the idea is fitted with them on every other fold and scored on the held-out one. One
    row per (idea, fold), ``part`` "cv", with the chosen hyperparameters (``params``, JSON) and,
    beside ``nsg@10`` (songs at their predicted VA, as new songs are ranked), the same images
    ranking the fold's songs by their rated VA (``rated_nsg@10``) and by their uncalibrated
    predictions (``nsg@10_songs_uncalibrated``). Five times the validation items of one split: a choice between ideas whose single-split
    scores differ by noise is steadier. Test items are never read. ``images`` / ``songs`` /
    ``roles``: as for :func:`fit` (tests)."""
    if images is None or songs is None:
        images, songs = item_labels()
    roles = item_roles_of(roles, images, songs, seed)
    rows = []
    for fold in range(folds):
        fr = fold_roles(roles, images, songs, fold, folds, seed)
        inner = tuning_roles(roles, images, songs, fold, folds, seed)
        for name, isrc, asrc, kernels, calibrate, tune in configs:
            if kernels is None:
                raise ImuseError(f"{name!r}: cross-validation covers the fitted ideas, not the ridge baseline")
            t0 = time.perf_counter()
            params = None
            if tune:
                searched = fit(isrc, asrc, inner, seed=seed, n_trials=n_trials, kernels=kernels, tune=True,
                               refit=False, calibrate=calibrate, images=images, songs=songs)
                params = _chosen(searched)
            model = fit(isrc, asrc, fr, seed=seed, n_trials=n_trials, kernels=kernels, tune=tune, refit=False,
                        calibrate=calibrate, images=images, songs=songs, params=params)  # scored as fitted on train
            image_va = model.predict_images()
            row = part_metrics(image_va, model.predict_songs(), images, songs, fr, "val")
            # the same images ranking the songs by their rated VA, and by uncalibrated song predictions
            rated = ranking_nsg(image_va, songs[["valence", "arousal"]].to_numpy(float), images, songs, fr, "val")
            raw = ranking_nsg(image_va, model.predict_songs(calibrated=False), images, songs, fr, "val")
            rows.append({"idea": name, "fold": fold, **row, "part": "cv", "rated_nsg@10": rated,
                         "nsg@10_songs_uncalibrated": raw, "params": json.dumps(_chosen(model)),
                         "seconds": round(time.perf_counter() - t0, 1)})
            if progress:
                print(f"fold {fold}: {name}: NSG@10 {row['nsg@10']:.3f}", flush=True)
    return pd.DataFrame(rows)
