"""Choices made on the validation split: every learned run (and ridge) scored there
(validation.csv) and the default network chosen by validation NSG@10. The test split plays no
part."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import io
from ..errors import ImuseError
from ..profiles import Profile
from . import inputs
from .paths import profile_dir, run_dir
from .predictors import feature_baselines, network_predictors

VALIDATION_COLUMNS = ["nsg@10", "ndcg@10", "quadrant@10", "rev_nsg@10", "mae", "map_a@10"]


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
    return frame


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
