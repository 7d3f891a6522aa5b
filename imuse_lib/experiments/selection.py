"""Choices made on the validation split: every learned run (and ridge) scored there
(validation.csv), each run judged against the random level of its split (random_level.csv:
a run at that level FAILED and is left out of Table 2's means) and the default network chosen
by validation NSG@10. The test split plays no part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from ..errors import ImuseError
from ..profiles import VARIANTS, Profile
from . import inputs
from .paths import profile_dir, run_dir
from .predictors import feature_baselines, network_predictors

VALIDATION_COLUMNS = ["nsg@10", "ndcg@10", "quadrant@10", "rev_nsg@10", "mae", "map_a@10",
                      # the spread of the predicted VA (1: the truth's; 0: one value for every item)
                      "image_item_valence_sd_ratio", "image_item_arousal_sd_ratio",
                      "song_item_valence_sd_ratio", "song_item_arousal_sd_ratio"]
# Random rankings (Table 2's random baseline, seeds 0..RANDOM_DRAWS-1) behind a split's random
# level, and how many of their standard deviations above their mean the level sits.
RANDOM_DRAWS = 100
RANDOM_LEVEL_SDS = 3.0
LEVEL_COLUMNS = ["split", "draws", "random_mean", "random_sd", "random_level"]
# A run whose predicted image or song VA spreads less than this share of the truth's (predicted sd
# / true sd, in either dimension) has collapsed to nearly one value for every item: it failed even
# when a few lucky songs lift its NSG@10 just above the random level.
COLLAPSE_SD_RATIO = 0.1
SPREAD_COLUMNS = {"image_item_valence_sd_ratio": "image valence", "image_item_arousal_sd_ratio": "image arousal",
                  "song_item_valence_sd_ratio": "song valence", "song_item_arousal_sd_ratio": "song arousal"}
JUDGED_COLUMNS = ["config", "split", "variant", "seed", "selected_epoch", "val_nsg@10", "random_level", "failed",
                  "failure"]


def run_validation(prof: Profile, configs, progress: bool = False) -> pd.DataFrame:
    """Every learned run of the profile, and ridge, scored on the VALIDATION split (point
    estimates): what model choices read. Written to validation.csv."""
    from tqdm import tqdm

    from .. import metrics

    rows = []
    for image, audio in tqdm(configs, desc="validation", disable=not progress):
        name = inputs.config_name(image, audio)
        data = inputs.feature_data(image, audio)
        for split in prof.splits:
            ev = inputs.evalset(data, split, "val")
            preds = [(n, s, p, {}) for n, s, p in feature_baselines(data, split)]
            preds += network_predictors(prof, name, split, data, tta=False)
            for pname, seed, pred, meta in preds:
                summary, _ = metrics.score(pred, ev, seed=seed)
                rows.append({"config": name, "split": split, "predictor": pname, "seed": seed,
                             "selected_epoch": meta.get("selected_epoch"),
                             **{k: summary.get(k) for k in VALIDATION_COLUMNS},
                             "n_queries": summary["n_queries"], "n_candidates": summary["n_candidates"]})
    frame = pd.DataFrame(rows)
    io.write_csv(profile_dir(prof) / "validation.csv", frame)
    io.write_csv(profile_dir(prof) / "random_level.csv", random_levels(prof, configs))
    return frame


def random_levels(prof: Profile, configs=None) -> pd.DataFrame:
    """Per split, NSG@10 of :data:`RANDOM_DRAWS` random rankings on the validation split (the
    random baseline of Table 2, one seed each: a random training item's VA for every item): their
    mean, sd and the split's random level, mean + :data:`RANDOM_LEVEL_SDS` sd. Random rankings use
    no features, so the first configuration's rows serve every configuration."""
    from .. import baselines, metrics

    image, audio = (configs or inputs.configurations(prof))[0]
    data = inputs.feature_data(image, audio)
    rows = []
    for split in prof.splits:
        ev = inputs.evalset(data, split, "val")
        ti, ts = inputs.train_rows(data, split)
        nsg = np.array([metrics.score(baselines.random_va(data.image_va, data.song_va, ti, ts, seed=s), ev,
                                      seed=s)[0]["nsg@10"] for s in range(RANDOM_DRAWS)])
        mean, sd = float(nsg.mean()), float(nsg.std(ddof=1))
        rows.append({"split": split, "draws": RANDOM_DRAWS, "random_mean": mean, "random_sd": sd,
                     "random_level": mean + RANDOM_LEVEL_SDS * sd})
    return pd.DataFrame(rows, columns=LEVEL_COLUMNS)


def load_random_levels(prof: Profile) -> pd.DataFrame:
    """random_level.csv of the profile (written with validation.csv); computed here, without
    writing, for results trained before it existed."""
    path = profile_dir(prof) / "random_level.csv"
    return pd.read_csv(path) if path.exists() else random_levels(prof)


def judge_runs(validation: pd.DataFrame, levels: pd.DataFrame, variants=VARIANTS) -> pd.DataFrame:
    """Every trained network (configuration x split x variant x seed) of ``validation``, judged.

    A run FAILED when its validation NSG@10 is at or below its split's random level (mean + 3 sd of 100 random rankings' NSG@10 on the same validation items), or when its predicted VA collapsed (spread under :data:`COLLAPSE_SD_RATIO` of the truth's).

    The rule reads the scores of a finished run, so it holds for any number of epochs. Columns:
    :data:`JUDGED_COLUMNS` (``failed`` a bool, ``failure`` why in words, empty when kept)."""
    nets = validation[validation.predictor.isin(variants)]
    missing = sorted(set(nets.split) - set(levels.split))
    if missing:
        raise ImuseError(f"no random level for the {', '.join(missing)} split: run `imuse train` again")
    out = nets.merge(levels[["split", "random_level"]], on="split", how="left")
    out = out.rename(columns={"predictor": "variant", "nsg@10": "val_nsg@10"})
    out["failure"] = [_failure(r) for _, r in out.iterrows()]
    out["failed"] = out.failure != ""
    if "selected_epoch" not in out:
        out["selected_epoch"] = np.nan
    return out[JUDGED_COLUMNS].reset_index(drop=True)


def _failure(run: pd.Series) -> str:
    """Why a validation row failed, in words ("" when it did not)."""
    from ..report import fmt_metric

    nsg, level = run["val_nsg@10"], run.random_level
    if not nsg > level:  # NaN (no score) counts as failed too
        return f"validation NSG@10 {fmt_metric(nsg)}, random level {fmt_metric(level)}"
    spread = {name: run[col] for col, name in SPREAD_COLUMNS.items() if col in run and pd.notna(run[col])}
    low = min(spread, key=spread.get) if spread else None
    if low is not None and spread[low] < COLLAPSE_SD_RATIO:
        return (f"its predicted {low} collapsed (spread {fmt_metric(spread[low])} of the truth's; validation "
                f"NSG@10 {fmt_metric(nsg)})")
    return ""


def judged_runs(prof: Profile) -> pd.DataFrame:
    """:func:`judge_runs` on the profile's validation.csv and random levels; empty (no run
    judged) when the profile has no validation scores yet."""
    path = profile_dir(prof) / "validation.csv"
    if not path.exists():
        return pd.DataFrame(columns=JUDGED_COLUMNS)
    return judge_runs(pd.read_csv(path), load_random_levels(prof), prof.variants)


def failure_summary(judged: pd.DataFrame) -> str:
    """"1 of 12 runs failed (factorised network, cold split, seed 1: validation NSG@10 0.042, random
    level 0.070)" or "none of the 12 runs failed (...)": the sentence both chapters glue."""
    n = len(judged)
    if n == 0:
        return "no run has been judged yet (no validation scores)"
    failed = judged[judged.failed]
    if failed.empty:
        return (f"none of the {n} runs failed: every one scores above its split's random level on validation "
                f"NSG@10")
    which = "; ".join(f"{r.variant} network, {r.split} split, seed {r.seed}: {r.failure}" for _, r in failed.iterrows())
    return f"{len(failed)} of {n} runs failed ({which})"


def write_default_model(prof: Profile, configs, validation: pd.DataFrame | None = None) -> Path | None:
    """The network with the best validation NSG@10 among the cold-split runs (new images and
    songs, as at deployment; the paper split when the profile has no cold split), copied to
    training.default_model_path(). The test split plays no part. A quick-profile model never
    replaces a full-profile one."""
    from .. import training

    target = training.default_model_path()
    if target.exists() and prof.name == "quick":
        try:
            _, meta = training.load_checkpoint(target)
            if meta.get("profile") == "full":
                return None
        except ImuseError:
            pass
    if validation is None:
        path = profile_dir(prof) / "validation.csv"
        validation = pd.read_csv(path) if path.exists() else run_validation(prof, configs)
    split = "cold" if "cold" in prof.splits else prof.splits[0]
    nets = validation[(validation.split == split) & validation.predictor.isin(prof.variants)]
    nets = nets.sort_values(["nsg@10", "config", "predictor", "seed"], ascending=[False, True, True, True])
    if nets.empty:
        return None
    best = nets.iloc[0]
    src = run_dir(prof, best.config, split, best.predictor, int(best.seed)) / "model.pt"
    model, meta = training.load_checkpoint(src)
    meta["default_model_source"] = str(src)
    meta["selected_by"] = (f"highest validation NSG@10 ({best['nsg@10']:.3f}) among the {len(nets)} "
                           f"{split}-split networks of the {prof.name} profile")
    return training.save_model(target, model, meta)


def diagnose_runs(prof: Profile, judged: pd.DataFrame) -> pd.DataFrame:
    """``judged`` with :func:`training.collapse_diagnosis` of each run on its split's validation
    pairs: dead units, saturated outputs and the spread of the predictions, to tell a run that
    collapsed from one that learned little."""
    from .. import training

    rows = []
    for _, r in judged.iterrows():
        image, audio = r.config.split("+", 1)
        data = inputs.feature_data(image, audio)
        pairs_ = inputs.split_pairs(r.split)
        model, _ = training.load_checkpoint(run_dir(prof, r.config, r.split, r.variant, int(r.seed)) / "model.pt")
        rows.append({**r.to_dict(), **training.collapse_diagnosis(model, data, *data.rows(pairs_[pairs_.split == "val"]))})
    return pd.DataFrame(rows)
