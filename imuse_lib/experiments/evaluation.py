"""The test split, read once: every trained run and the baselines scored with two-way
bootstrap intervals, aggregated into Table 2, paired margins against the baselines, NSG@k and
MAP@k, and what was run (results.json). A run judged FAILED on validation
(:func:`.selection.judge_runs`) keeps its row in table2_runs.csv but is left out of the means,
intervals and margins, and Table 2 names it beside the mean."""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import numpy as np
import pandas as pd

from .. import config, io, provenance
from ..errors import ImuseError
from ..profiles import SPLITS, Profile, get_profile
from . import inputs
from .paths import profile_dir, run_dir, run_id
from .predictors import FEATURE_BASELINES, feature_baselines, free_baselines, network_predictors
from .selection import judged_runs

# What every learned predictor is compared with (paired differences in margins.csv).
MARGIN_BASELINES = ("ridge", "knn", "quadrant", "image_agnostic", "constant", "random")
MARGIN_METRICS = ("nsg@10", "ndcg@10", "rev_nsg@10", "map_a@10", "mae")


def _draws(prof: Profile, ev, split: str, resample_songs: bool = True):
    from .. import metrics

    seed = config.SEED + SPLITS.index(split)
    config.check_bootstrap(prof.n_boot, len(ev.query_images), len(ev.candidate_songs))
    return metrics.draw_resamples(len(ev.query_images), len(ev.candidate_songs), prof.n_boot, seed,
                                  resample_songs=resample_songs)


def _cell_label(image: str, audio: str, data) -> dict:
    return {"image_backbone": image, "audio_backbone": audio, "image_weights": inputs.weights_label(data.image_meta),
            "audio_weights": inputs.weights_label(data.audio_meta)}


def _score_group(prof, ev, split, preds, image_only: bool = False, failed: dict | None = None) -> tuple[list, dict]:
    """Score predictors (name, seed, predictor) grouped by name: the run rows and, per name,
    the seed-averaged bootstrap replicates (and the image-only ones, when asked). ``failed``:
    {(name, seed): (validation NSG@10, random level, why)} of runs judged failed, whose rows say so
    and whose replicates are left out (unless every seed of the name failed)."""
    from .. import metrics

    failed = failed or {}
    rows, scored, kept = [], {}, {}
    for pname, seed, pred in preds:
        summary, sc = metrics.score(pred, ev, seed=seed)
        val_nsg, level, why = failed.get((pname, seed), (np.nan, np.nan, ""))
        rows.append({"predictor": pname, "seed": seed, **summary, "failed": (pname, seed) in failed,
                     "failed_val_nsg@10": val_nsg, "random_level": level, "failure": why})
        scored.setdefault(pname, []).append(sc)
        if (pname, seed) not in failed:
            kept.setdefault(pname, []).append(sc)
    scored = {n: kept.get(n, runs) for n, runs in scored.items()}
    draws = _draws(prof, ev, split)
    reps = {n: metrics.replicates(ev, runs, draws) for n, runs in scored.items()}
    if image_only:
        d_img = _draws(prof, ev, split, resample_songs=False)
        for n, runs in scored.items():
            reps[n]["image_only"] = metrics.replicates(ev, runs, d_img)
    return rows, reps


def _evaluate_free(task: dict) -> dict:
    """The feature-free baselines of one split (any configuration's rows serve)."""
    prof, split = get_profile(task["profile"], **task["overrides"]), task["split"]
    data = inputs.feature_data(task["image"], task["audio"])
    ev = inputs.evalset(data, split)
    rows, reps = _score_group(prof, ev, split, free_baselines(data, split, prof.seeds), image_only=True)
    for r in rows:
        r.update({"config": "(none)", "split": split, "image_backbone": "", "audio_backbone": "",
                  "image_weights": "", "audio_weights": ""})
    return {"split": split, "rows": rows, "reps": reps, "ids": (data.image_ids, data.song_ids)}


def _evaluate_cell(task: dict) -> dict:
    """Ridge, kNN and the trained networks of one configuration on one split, on the test split."""
    prof, split = get_profile(task["profile"], **task["overrides"]), task["split"]
    image, audio = task["image"], task["audio"]
    name = inputs.config_name(image, audio)
    data = inputs.feature_data(image, audio)
    ev = inputs.evalset(data, split)
    nets = network_predictors(prof, name, split, data)
    failed = {}  # a failed joint run's view-averaged scoring is left out with it
    for variant, seed, val_nsg, level, why in task.get("failed", []):
        failed[(variant, seed)] = (val_nsg, level, why)
        if variant == "joint":
            failed[("joint_tta", seed)] = (val_nsg, level, why)
    meta_runs = {run_id(name, split, n, s): {k: m.get(k) for k in ("image_weights", "audio_weights", "epochs",
                                                                  "device", "selected_epoch")}
                 for n, s, _, m in nets}
    fb = feature_baselines(data, split)
    rows, reps = _score_group(prof, ev, split, fb + [(n, s, p) for n, s, p, _ in nets], image_only=True,
                              failed=failed)
    for r in rows:
        r.update({"config": name, "split": split, **_cell_label(image, audio, data)})
    return {"split": split, "config": name, "rows": rows, "reps": reps, "runs": meta_runs,
            "ridge": fb[0][2].info, "knn": fb[1][2].info, "ids": (data.image_ids, data.song_ids)}


DEPLOYED = "deployed"  # the config label of the deployed VA model's rows


def _evaluate_deployed(task: dict) -> dict | None:
    """The deployed VA model (``va_model.train_default``, fitted on the cold split's training and
    validation items) on the cold split's test items; None when there is none."""
    from .. import va_model

    path = va_model.default_model_path()
    if task["split"] != "cold" or not path.exists():
        return None
    prof = get_profile(task["profile"], **task["overrides"])
    data = inputs.feature_data(task["image"], task["audio"])
    model = va_model.load(path)
    if model.provenance.get("split") != "cold" or model.provenance.get("seed") != config.SEED:
        raise ImuseError(f"{path}: fitted on another split or seed than the cold split of seed {config.SEED}; "
                         f"run `imuse train` again")
    ev = inputs.evalset(data, "cold")
    pred = model.predictor("va_model", image_ids=data.image_ids, song_ids=data.song_ids)
    rows, reps = _score_group(prof, ev, "cold", [("va_model", 0, pred)], image_only=True)
    for r in rows:
        r.update({"config": DEPLOYED, "split": "cold", "image_backbone": "+".join(model.image.sources),
                  "audio_backbone": "+".join(model.audio.sources), "image_weights": "see va_model provenance",
                  "audio_weights": "see va_model provenance"})
    return {"split": "cold", "config": DEPLOYED, "rows": rows, "reps": reps, "label": model.label(),
            "ids": (data.image_ids, data.song_ids)}


def _parallel(fn, tasks: list, jobs: int, desc: str, progress: bool) -> list:
    from tqdm import tqdm

    jobs = max(1, min(jobs, len(tasks), os.cpu_count() or 1))
    if jobs == 1:
        return [fn(t) for t in tqdm(tasks, desc=desc, disable=not progress)]
    import multiprocessing as mp

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        return list(tqdm(pool.map(fn, tasks), total=len(tasks), desc=f"{desc} ({jobs} processes)",
                         disable=not progress))


def run_evaluation(profile: str | Profile = "quick", progress: bool = True, **overrides) -> dict:
    """Score every trained run of the profile and the baselines on the TEST split (read here
    and nowhere else); write table2_runs.csv, table2.csv, margins.csv, map_at_k.csv and
    results.json. Returns the frames."""
    from .. import training

    prof = profile if isinstance(profile, Profile) else get_profile(profile, **overrides)
    t0 = time.perf_counter()
    configs = inputs.configurations(prof)
    missing = [path for (i, a) in configs for sp in prof.splits for v in prof.variants for seed in prof.seeds_for(v)
               if not (path := run_dir(prof, inputs.config_name(i, a), sp, v, seed) / "model.pt").exists()]
    if missing:
        raise ImuseError(f"{missing[0]}: run not trained yet ({len(missing)} missing); "
                         f"run `imuse train --profile {prof.name}` first")
    for image, audio in configs:  # fill the store before workers start (they would race to build it)
        inputs.feature_data(image, audio)
    ov = {k: getattr(prof, k) for k in ("image_backbones", "audio_backbones", "splits", "seeds", "epochs",
                                        "variants", "n_boot", "factorised_seeds")}
    base = {"profile": prof.name, "overrides": ov}
    free = _parallel(_evaluate_free, [{**base, "split": s, "image": configs[0][0], "audio": configs[0][1]}
                                      for s in prof.splits], prof.jobs, f"baselines ({prof.name})", progress)
    judged = judged_runs(prof)
    judged = judged[judged.failed]

    def failed_in(cfg: str, split: str) -> list:
        j = judged[(judged.config == cfg) & (judged.split == split)]
        return [(r.variant, int(r.seed), float(r["val_nsg@10"]), float(r.random_level), str(r.failure))
                for _, r in j.iterrows()]

    cells = _parallel(_evaluate_cell, [{**base, "split": s, "image": i, "audio": a,
                                        "failed": failed_in(inputs.config_name(i, a), s)}
                                       for (i, a) in configs for s in prof.splits],
                      prof.jobs, f"evaluating ({prof.name})", progress)
    deployed = _evaluate_deployed({**base, "split": "cold", "image": configs[0][0], "audio": configs[0][1]}) \
        if "cold" in prof.splits else None
    if deployed is not None:
        cells.append(deployed)
    free_by_split = {f["split"]: f for f in free}
    for c in cells:  # the feature-free baselines' replicates are reused: same items, same rows
        if c["ids"] != free_by_split[c["split"]]["ids"]:
            raise ImuseError(f"{c['config']}: its feature stores order the items differently from "
                             f"{inputs.config_name(*configs[0])}; rebuild them")
    runs = pd.DataFrame([r for f in free for r in f["rows"]] + [r for c in cells for r in c["rows"]])
    runs["failed"] = runs["failed"].fillna(False).astype(bool) if "failed" in runs else False
    reps = {("(none)", f["split"], n): v for f in free for n, v in f["reps"].items()}
    reps.update({(c["config"], c["split"], n): v for c in cells for n, v in c["reps"].items()})
    table2 = _aggregate(runs, reps)
    margins = _margins(table2, reps, inputs.config_name(*configs[0]))
    mapk = _map_at_k(runs)
    out_dir = profile_dir(prof)
    io.write_csv(out_dir / "table2_runs.csv", runs)
    io.write_csv(out_dir / "table2.csv", table2)
    io.write_csv(out_dir / "margins.csv", margins)
    io.write_csv(out_dir / "map_at_k.csv", mapk)
    import torch

    results = {"profile": asdict(prof), "configs": [inputs.config_name(i, a) for i, a in configs],
               "device": training.device_name(training.resolve_device(prof.device)),
               "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.perf_counter() - t0, 2), "paper_table2": inputs.PAPER_TABLE2,
               "paper_configs": inputs.paper_configurations_status().to_dict("records"),
               "ridge": {f"{c['config']}/{c['split']}": c["ridge"] for c in cells if "ridge" in c},
               "knn": {f"{c['config']}/{c['split']}": c["knn"] for c in cells if "knn" in c},
               "deployed": deployed and deployed["label"],
               "runs": {k: v for c in cells for k, v in c.get("runs", {}).items()}, "pairs_seed": config.SEED,
               "n_boot": prof.n_boot, "commit": provenance.git_commit(),
               "versions": {"torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                            "python": platform.python_version()},
               "features": {inputs.config_name(i, a): {"image": inputs.feature_data(i, a).image_meta,
                                                       "audio": inputs.feature_data(i, a).audio_meta}
                            for i, a in configs}}
    io.write_json(out_dir / "results.json", results)
    return {"table2": table2, "runs": runs, "margins": margins, "map_at_k": mapk, "results": results}


# Columns of table2.csv: a point estimate (mean over seeds) and its sd over seeds for every one
# of these; the two-way 95 % interval (_lo, _hi) for metrics.BOOT_METRICS; the image-only one
# (_lo_img, _hi_img) for IMAGE_ONLY_METRICS, to show what resampling songs adds.
METRIC_COLUMNS = ["nsg@10", "ndcg@10", "quadrant@10", "rev_nsg@10", "rev_ndcg@10", "rev_quadrant@10",
                  "map_a@10", "mae", "rmse", "image_valence_r", "image_arousal_r", "music_valence_r",
                  "music_arousal_r", "image_item_valence_r", "image_item_arousal_r", "song_item_valence_r",
                  "song_item_arousal_r", "image_item_valence_sd_ratio", "image_item_arousal_sd_ratio",
                  "song_item_valence_sd_ratio", "song_item_arousal_sd_ratio", "song_item_quadrant_4q_acc"]
IMAGE_ONLY_METRICS = ("nsg@10", "map_a@10", "mae")
KIND = {"oracle": "reference", "lookup": "reference", "quadrant": "reference", "image_agnostic": "reference",
        "constant": "baseline", "mean_similarity": "baseline", "random": "baseline", "ridge": "baseline",
        "knn": "baseline"}


def seeds_note(seeds, failed: pd.DataFrame | None = None) -> str:
    """What a Table 2 mean averages, in words: "mean of seeds 0 and 2; seed 1 failed: validation
    NSG@10 0.004 (random level 0.028)"; "seed 0" for a single run. ``failed``: the failed runs
    (``seed``, ``failed_val_nsg@10``, ``random_level``)."""
    from ..report import fmt_metric

    seeds = [int(s) for s in seeds]
    listed = ", ".join(map(str, seeds[:-1])) + f" and {seeds[-1]}" if len(seeds) > 1 else \
        (str(seeds[0]) if seeds else "")
    text = f"mean of seeds {listed}" if len(seeds) > 1 else f"seed {listed}" if seeds else "no run kept"
    if failed is not None and len(failed):
        why = "; ".join(f"seed {int(r.seed)} failed: {r.failure}" if isinstance(r.get("failure"), str) and r.failure
                        else f"seed {int(r.seed)} failed: validation NSG@10 {fmt_metric(r['failed_val_nsg@10'])} "
                        f"(random level {fmt_metric(r.random_level)})" for _, r in failed.iterrows())
        text += f"; {why}"
    return text


def _aggregate(runs: pd.DataFrame, reps: dict) -> pd.DataFrame:
    """One Table 2 row per (configuration, split, predictor): the mean over its runs, failed runs
    left out (all of them kept when every seed failed) and named in ``seeds_note``."""
    from .. import metrics

    if "failed" not in runs:
        runs = runs.assign(failed=False, **{"failed_val_nsg@10": np.nan, "random_level": np.nan})
    rows = []
    for (cfg, split, pred), g_all in runs.groupby(["config", "split", "predictor"], sort=False):
        bad = g_all[g_all.failed.astype(bool)]
        g = g_all[~g_all.failed.astype(bool)] if len(bad) < len(g_all) else g_all
        row = {"config": cfg, "split": split, "predictor": pred, "kind": KIND.get(pred, "learned"),
               "seeds": len(g), "failed_seeds": len(bad), "seeds_note": seeds_note(sorted(g.seed), bad),
               "image_weights": g.image_weights.iloc[0], "audio_weights": g.audio_weights.iloc[0],
               **{c: int(g[c].iloc[0]) for c in ("n_queries", "n_candidates", "n_pairs", "n_queries_a")}}
        for col in METRIC_COLUMNS:
            vals = g[col] if col in g else pd.Series([np.nan] * len(g))
            row[col] = float(vals.mean())
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(g) > 1 else float("nan")
        r = reps[(cfg, split, pred)]
        for col in metrics.BOOT_METRICS:
            row[f"{col}_lo"], row[f"{col}_hi"] = metrics.interval(r[col])
        for col in IMAGE_ONLY_METRICS:
            row[f"{col}_lo_img"], row[f"{col}_hi_img"] = metrics.interval(r["image_only"][col]) \
                if "image_only" in r else (np.nan, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _margins(table2: pd.DataFrame, reps: dict, main_config: str) -> pd.DataFrame:
    """Paired differences (learned predictor - baseline) on the same bootstrap replicates; the
    deployed model is compared with the feature baselines of ``main_config``."""
    from .. import metrics

    rows = []
    for _, r in table2[table2.kind == "learned"].iterrows():
        for base in MARGIN_BASELINES:
            own = main_config if r.config == DEPLOYED else r.config
            cfg = own if base in FEATURE_BASELINES else "(none)"
            other = table2[(table2.config == cfg) & (table2.split == r.split) & (table2.predictor == base)]
            if other.empty:
                continue
            for metric in MARGIN_METRICS:
                d = metrics.paired_difference(reps[(r.config, r.split, r.predictor)], reps[(cfg, r.split, base)], metric)
                rows.append({"config": r.config, "split": r.split, "predictor": r.predictor, "baseline": base,
                             "metric": metric, "difference": float(r[metric] - other[metric].iloc[0]),
                             "lo": d["lo"], "hi": d["hi"], "verdict": d["verdict"]})
    return pd.DataFrame(rows, columns=["config", "split", "predictor", "baseline", "metric", "difference", "lo",
                                       "hi", "verdict"])


def _map_at_k(runs: pd.DataFrame) -> pd.DataFrame:
    """NSG@k and MAP@k (a) per predictor: the mean over the runs Table 2 averages."""
    from ..metrics import KS

    rows = []
    for (cfg, split, pred), g_all in runs.groupby(["config", "split", "predictor"], sort=False):
        ok = ~g_all.failed.astype(bool) if "failed" in g_all else pd.Series(True, index=g_all.index)
        g = g_all[ok] if ok.any() else g_all
        for metric, label in (("nsg", "NSG@k"), ("map_a", "MAP@k (a)")):
            for k in KS:
                vals = g[f"{metric}@{k}"]
                rows.append({"config": cfg, "split": split, "predictor": pred, "metric": label, "k": k,
                             "value": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0})
    return pd.DataFrame(rows)
