"""The paper's experiments: configurations, quick/full profiles, training and evaluation
runs, and the result files the book and the CLI share.

Layout under ``results_dir()/<profile>/``::

    runs/<config>/<split>/<variant>/seed<k>/checkpoint.pt   training state (resume)
    runs/<config>/<split>/<variant>/seed<k>/model.pt        the trained network + meta
    history/<config>__<split>__<variant>__seed<k>.json      loss per epoch and per batch, timings
    table1.csv      seconds per epoch / total, cached vs end-to-end, per configuration
    validation.csv  every learned run scored on the validation split (model choice reads this)
    table2_runs.csv one row per (configuration, split, predictor, seed), on the test split
    table2.csv      mean and spread over seeds, two-way bootstrap 95 % intervals
    margins.csv     paired differences learned predictor - baseline, with intervals and verdicts
    map_at_k.csv    NSG@k and the paper's MAP@k (a), k = 1..10
    results.json    what was run: profile, device, git commit, backbones and weights provenance, baselines

A configuration is an (image backbone, audio backbone) pair, named ``<image>+<audio>``.
Variants: ``joint`` (the paper's network), ``factorised`` (a VA head on each arm) and
``joint_item`` (the joint network with item-weighted loss); ``joint_tta`` is the joint
network scored with its training views and crops averaged. The pairs and their splits are
fixed (``config.SEED``); the seeds vary the network's initialisation, shuffling, view/crop
draws and dropout. Every choice is made on the validation split; the test split is read
once, by :func:`run_evaluation`.
"""

from __future__ import annotations

import itertools
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, io, provenance
from .errors import ImuseError, ModelMismatchError

VARIANTS = ("joint", "factorised", "joint_item")
# What each variant trains: (factorised, loss weighting).
VARIANT_SETTINGS = {"joint": (False, "pair"), "factorised": (True, "pair"), "joint_item": (False, "item")}
SPLITS = ("paper", "cold")
# The paper's own configurations (Table 1/2); they run only where their weights are present.
PAPER_CONFIGS = [("mobilenet_v3_large", "samplecnn"), ("resnet18", "samplecnn"), ("efficientnet_b4", "samplecnn")]
# Published numbers (Table 2 of the paper: MobileNetV3 + SampleCNN).
PAPER_TABLE2 = {"config": "mobilenet_v3_large+samplecnn", "map@10": 0.855, "mae": 0.225, "rmse": 0.246}


@dataclass
class Profile:
    name: str
    image_backbones: list | None  # None: every available one
    audio_backbones: list | None
    splits: list
    seeds: list
    epochs: int
    factorised_seeds: list | None = None  # None: the same seeds as the joint network
    e2e_batches: int = 2  # training batches timed end to end (then extrapolated per epoch)
    e2e_val_batches: int = 1  # validation batches timed end to end
    n_boot: int = 1000  # two-way bootstrap replicates
    select: str = "best_val"  # which epoch's weights a run keeps (training.TrainConfig.select)
    deploy_va_model: bool = True  # also fit the deployed VA model (imuse_lib.va_model): seconds
    jobs: int = 2  # parallel training processes (one thread each)
    device: str = "auto"
    checkpoint_every: int = 5
    variants: list = field(default_factory=lambda: list(VARIANTS))

    def seeds_for(self, variant: str) -> list:
        if variant == "factorised" and self.factorised_seeds is not None:
            return [s for s in self.factorised_seeds if s in self.seeds] or self.seeds[:1]
        return list(self.seeds)


PROFILES = {
    # One configuration, both splits, 3 seeds of the joint and factorised networks, 20 epochs
    # (the validation loss has flattened by then): the book's default (minutes on a CPU).
    # End to end it times one training batch and no validation batch (a musicnn validation batch
    # decodes 32 clips and runs 5 evaluation crops of each: the full profile times it).
    "quick": Profile("quick", ["mobilenet_v2"], ["musicnn"], list(SPLITS), [0, 1, 2], 20, e2e_batches=1,
                     e2e_val_batches=0, n_boot=200, jobs=2, variants=["joint", "factorised"]),
    # Every available configuration, both splits, 3 seeds of every variant, the paper's 50 epochs.
    "full": Profile("full", None, None, list(SPLITS), [0, 1, 2], 50, e2e_batches=2, n_boot=1000),
}


def get_profile(name: str = "quick", **overrides) -> Profile:
    """A profile with ``overrides`` (None values ignored): image_backbones, audio_backbones,
    splits, seeds, epochs, device, jobs, variants, factorised_seeds..."""
    if name not in PROFILES:
        raise ImuseError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    prof = replace(PROFILES[name])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("splits", "variants"):
        bad = [v for v in overrides.get(key, []) if v not in (SPLITS if key == "splits" else VARIANTS)]
        if bad:
            raise ImuseError(f"unknown {key[:-1]} {bad[0]!r}; choose from "
                             f"{', '.join(SPLITS if key == 'splits' else VARIANTS)}")
    for key, lo, hi in (("epochs", 1, 10_000), ("n_boot", 1, 1_000_000), ("jobs", 1, 64)):
        if key in overrides and not (isinstance(overrides[key], int) and lo <= overrides[key] <= hi):
            raise ImuseError(f"{key} must be an integer from {lo} to {hi}, not {overrides[key]!r}")
    return replace(prof, **overrides)


def config_name(image: str, audio: str) -> str:
    return f"{image}+{audio}"


def configurations(profile: Profile) -> list[tuple[str, str]]:
    """(image, audio) pairs to run: the profile's choice, restricted to backbones whose
    pretrained weights are here (asking for one that is not raises WeightsError-like errors)."""
    from . import models

    avail_i, avail_a = models.available_image_backbones(), models.available_audio_backbones()
    want_i = profile.image_backbones or avail_i
    want_a = profile.audio_backbones or avail_a
    for name, known, avail in [(n, models.IMAGE_BACKBONES, avail_i) for n in want_i] + \
                              [(n, models.AUDIO_BACKBONES, avail_a) for n in want_a]:
        if name not in known:
            raise ImuseError(f"unknown backbone {name!r}; known: {', '.join(known)}")
        if name not in avail:
            from .errors import WeightsError

            raise WeightsError(f"{name}: pretrained weights are not available on this machine "
                               f"(available: {', '.join(avail_i + avail_a)}); see `imuse features --help`")
    pairs_ = [(i, a) for i, a in itertools.product(want_i, want_a)]
    # The paper's configurations first when present, then the rest in backbone order.
    return sorted(pairs_, key=lambda c: (PAPER_CONFIGS.index(c) if c in PAPER_CONFIGS else len(PAPER_CONFIGS),
                                         models.IMAGE_BACKBONES.index(c[0]), models.AUDIO_BACKBONES.index(c[1])))


def paper_configurations_status() -> pd.DataFrame:
    """The paper's configurations and whether their pretrained weights are here."""
    from . import models

    ai, aa = models.available_image_backbones(), models.available_audio_backbones()
    return pd.DataFrame([{"config": config_name(i, a), "image_weights_here": i in ai, "audio_weights_here": a in aa,
                          "runs_here": i in ai and a in aa} for i, a in PAPER_CONFIGS])


# --------------------------------------------------------------------------- paths


def profile_dir(profile: str | Profile) -> Path:
    name = profile.name if isinstance(profile, Profile) else profile
    return config.results_dir() / name


def run_dir(profile, cfg: str, split: str, variant: str, seed: int) -> Path:
    return profile_dir(profile) / "runs" / cfg / split / variant / f"seed{seed}"


def run_id(cfg: str, split: str, variant: str, seed: int) -> str:
    return f"{cfg}__{split}__{variant}__seed{seed}"


def history_path(profile, cfg: str, split: str, variant: str, seed: int) -> Path:
    return profile_dir(profile) / "history" / f"{run_id(cfg, split, variant, seed)}.json"


# --------------------------------------------------------------------------- inputs (cached per process)


@lru_cache(maxsize=None)
def _labels():
    from . import data

    return data.load_images(), data.load_catalog()


@lru_cache(maxsize=None)
def split_pairs(split: str) -> pd.DataFrame:
    """The real pairs with ``split`` (train / val / test / none; fixed: config.SEED)."""
    from . import pairs

    images, songs = _labels()
    return pairs.split_pairs(pairs.form_pairs(images, songs, config.SEED), split, config.SEED,
                             images=images, songs=songs)


@lru_cache(maxsize=8)
def feature_data(image: str, audio: str):
    """FeatureData of a configuration from the feature store (computed there if missing)."""
    from . import features
    from .training import FeatureData

    images, songs = _labels()
    ifs = features.image_features(image, progress=True)
    afs = features.audio_features(audio, progress=True)
    return FeatureData(ifs, afs, images, songs)


# --------------------------------------------------------------------------- training


def _train_one(task: dict) -> dict:
    """Train (or resume, or reuse) one run; returns its summary. Runs in worker processes."""
    import torch

    from . import training

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    prof, cfg_name, split, variant, seed = task["profile"], task["config"], task["split"], task["variant"], task["seed"]
    image, audio = task["image"], task["audio"]
    data = feature_data(image, audio)
    pairs_ = split_pairs(split)
    folder = run_dir(prof, cfg_name, split, variant, seed)
    factorised, weighting = VARIANT_SETTINGS[variant]
    tcfg = training.TrainConfig(epochs=task["epochs"], factorised=factorised, weighting=weighting, seed=seed,
                                device=task["device"], select=task.get("select", "best_val"))
    meta = {"config": cfg_name, "split": split, "variant": variant, "profile": prof, "pairs_seed": config.SEED,
            "epochs": task["epochs"]}
    ckpt = folder / "checkpoint.pt"
    kwargs = dict(checkpoint=ckpt, checkpoint_every=task["checkpoint_every"], meta=meta)
    if task.get("force") and ckpt.exists():
        ckpt.unlink()
    try:
        res = training.train(data, pairs_, tcfg, **kwargs)
    except ModelMismatchError:  # stale checkpoint (other settings / more epochs): start afresh
        ckpt.unlink(missing_ok=True)
        res = training.train(data, pairs_, tcfg, **kwargs)
    training.save_model(folder / "model.pt", res.model, res.meta)
    io.write_json(history_path(prof, cfg_name, split, variant, seed),
                  {"meta": res.meta, "epochs": res.history["epochs"], "batches": res.history["batches"]})
    ep = res.history["epochs"]
    return {"config": cfg_name, "split": split, "variant": variant, "seed": seed, "epochs": len(ep),
            "resumed_from": res.resumed_from, "device": res.meta["device"],
            "train_s_total": float(sum(e["train_seconds"] for e in ep)),
            "val_s_total": float(sum(e["val_seconds"] for e in ep)),
            "final_train_loss": ep[-1]["train_loss"], "final_val_loss": ep[-1]["val_loss"],
            "selected_epoch": res.meta.get("selected_epoch"), "best_val_loss": res.meta.get("best_val_loss")}


def run_training(profile: str | Profile = "quick", *, force: bool = False, timing: bool = True,
                 retime: bool = False, write_default: bool = True, progress: bool = True, log: bool = False,
                 engine: str = "local", ray_address: str | None = None, tune_va: bool = False,
                 **overrides) -> dict:
    """Train every run of the profile (resuming or reusing finished ones), time cached vs
    end-to-end epochs, write Table 1, the histories and the default model. ``tune_va``: search
    the deployed VA model's hyperparameters again on validation (on ``engine``) instead of
    reusing the recorded choice.

    Returns ``{"runs": DataFrame, "table1": DataFrame, "seconds": wall time}``."""
    from tqdm import tqdm  # plain: no ipywidgets warning in notebooks

    from . import training

    prof = profile if isinstance(profile, Profile) else get_profile(profile, **overrides)
    t0 = time.perf_counter()
    configs = configurations(prof)
    device = training.resolve_device(prof.device)
    # Make sure every feature set is in the store before workers start (they would race to build it).
    for image, audio in configs:
        feature_data(image, audio)
        for split in prof.splits:
            split_pairs(split)
    tasks = [{"profile": prof.name, "config": config_name(i, a), "image": i, "audio": a, "split": s,
              "variant": v, "seed": seed, "epochs": prof.epochs, "device": prof.device, "force": force,
              "checkpoint_every": prof.checkpoint_every, "select": prof.select}
             for (i, a) in configs for s in prof.splits for v in prof.variants for seed in prof.seeds_for(v)]
    jobs = max(1, min(prof.jobs, len(tasks), os.cpu_count() or 1))
    if device.type == "cuda":
        jobs = 1  # one GPU: processes would only queue on it
    summaries = []

    def done(summary: dict) -> None:
        summaries.append(summary)
        if log:  # one line per run where there is no progress bar (e.g. a log file)
            s = summary
            resumed = f" (resumed at epoch {s['resumed_from']})" if s["resumed_from"] else ""
            print(f"[{len(summaries)}/{len(tasks)}] {run_id(s['config'], s['split'], s['variant'], s['seed'])}: "
                  f"{s['epochs']} epochs, train {s['train_s_total']:.1f} s, final val loss "
                  f"{s['final_val_loss'] if s['final_val_loss'] is not None else float('nan'):.4f}{resumed}",
                  file=sys.stderr, flush=True)

    if engine == "ray":  # each cell a Ray task (imuse_lib.engine); never imported on the local path
        from . import engine as ray_engine

        with ray_engine.session(ray_address):
            for summary in ray_engine.map_tasks(_train_one, tasks, use_gpu=device.type == "cuda"):
                done(summary)
    elif jobs == 1:
        for task in tqdm(tasks, desc=f"training ({prof.name})", disable=not progress):
            done(_train_one(task))
    else:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // jobs)
        for task in tasks:
            task["threads"] = threads
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            for summary in tqdm(pool.map(_train_one, tasks), total=len(tasks), desc=f"training ({prof.name}, "
                                f"{jobs} processes)", disable=not progress):
                done(summary)
    runs = pd.DataFrame(summaries)
    runs["parallel_processes"] = jobs
    runs["engine"] = engine
    io.write_csv(profile_dir(prof) / "training_runs.csv", runs)
    table1 = write_table1(prof, configs, runs, timing=timing, retime=retime, progress=progress)
    validation = run_validation(prof, configs, progress=progress)
    out = {"runs": runs, "table1": table1}
    if write_default:
        write_default_model(prof, configs, validation)
        if prof.deploy_va_model:
            from . import va_model

            t1 = time.perf_counter()
            out["va_model"] = va_model.train_default(prof.name, tune=tune_va, engine=engine,
                                                     ray_address=ray_address)
            out["va_model_seconds"] = time.perf_counter() - t1
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- Table 1


def time_configuration(image: str, audio: str, profile: Profile, split: str = "paper", progress: bool = False) -> list:
    """Cached and end-to-end epoch times of one configuration, side by side in this process.

    Cached: one full training epoch (every batch) plus one validation pass, from the store.
    End-to-end: ``profile.e2e_batches`` training and validation batches with the frozen
    backbones decoding and running every image and clip, extrapolated to the epoch."""
    import torch

    from . import models, training

    data = feature_data(image, audio)
    pairs_ = split_pairs(split)
    tcfg = training.TrainConfig(epochs=1, seed=0, device=profile.device)
    cached = training.train(data, pairs_, tcfg).history["epochs"][0]
    ib = models.build_image_backbone(image)
    ab = models.build_audio_backbone(audio)
    e2e = training.time_end_to_end(ib, ab, data, pairs_, tcfg, n_batches=profile.e2e_batches,
                                   n_val_batches=profile.e2e_val_batches, progress=progress)
    dev = training.device_name(training.resolve_device(profile.device))
    n_train = int((pairs_.split == "train").sum())
    n_val = int((pairs_.split == "val").sum())
    base = {"config": config_name(image, audio), "image_backbone": image, "audio_backbone": audio,
            "image_weights": _weights_label(data.image_meta), "audio_weights": _weights_label(data.audio_meta),
            "split": split, "device": dev, "train_pairs": n_train,
            "val_pairs": n_val, "epochs": profile.epochs, "load_average_1min": round(os.getloadavg()[0], 2),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rows = [
        {**base, "mode": "cached", "threads": tcfg.threads or 1, "train_s_per_epoch": cached["train_seconds"],
         "val_s_per_epoch": cached["val_seconds"], "timed_train_batches": -(-n_train // tcfg.batch_size),
         "timed_val_batches": "all", "extrapolated": False},
        {**base, "mode": "end_to_end", "threads": torch.get_num_threads(),
         "train_s_per_epoch": e2e["train_seconds_per_epoch"],
         "val_s_per_epoch": e2e["val_seconds_per_epoch"], "timed_train_batches": e2e["timed_train_batches"],
         "timed_val_batches": e2e["timed_val_batches"], "extrapolated": True,
         "decode_share": e2e["decode_share"]},
    ]
    for r in rows:
        r["train_s_total"] = r["train_s_per_epoch"] * profile.epochs
        r["val_s_total"] = r["val_s_per_epoch"] * profile.epochs
    speed = rows[1]["train_s_per_epoch"] / rows[0]["train_s_per_epoch"]
    rows[0]["speedup_vs_end_to_end"] = rows[1]["speedup_vs_end_to_end"] = speed
    return rows


def _weights_label(meta: dict) -> str:
    w = meta.get("weights") or {}
    if w.get("kind") == "random":
        return f"RANDOM (seed {w.get('init_seed')})"
    src = w.get("source") or w.get("file") or "?"
    return f"pretrained: {src} (sha256 {str(w.get('sha256', ''))[:12]})"


def write_table1(prof: Profile, configs, runs: pd.DataFrame | None = None, timing: bool = True,
                 retime: bool = False, progress: bool = False) -> pd.DataFrame:
    """Table 1: the side-by-side timing rows per configuration (measured unless already
    there for this device), plus the measured totals of the actual training runs."""
    from . import training

    path = profile_dir(prof) / "table1.csv"
    old = pd.read_csv(path) if path.exists() else pd.DataFrame()
    dev = training.device_name(training.resolve_device(prof.device))
    rows = []
    for image, audio in configs:
        name = config_name(image, audio)
        prev = old[(old.config == name) & (old["mode"].isin(["cached", "end_to_end"]))
                   & (old.device == dev)] if len(old) else old
        if timing and (retime or len(prev) < 2):
            rows += time_configuration(image, audio, prof, progress=progress)
        elif len(prev):
            rows += prev.to_dict("records")
        if runs is not None and len(runs):
            sub = runs[(runs.config == name)]
            fd = feature_data(image, audio)
            for (split, variant), g in sub.groupby(["split", "variant"]):
                rows.append({"config": name, "image_backbone": image, "audio_backbone": audio,
                             "image_weights": _weights_label(fd.image_meta),
                             "audio_weights": _weights_label(fd.audio_meta), "split": split,
                             "mode": f"cached, {variant} training runs", "device": g.device.iloc[0],
                             "epochs": int(g.epochs.iloc[0]), "seeds": len(g),
                             "train_s_per_epoch": float((g.train_s_total / g.epochs).mean()),
                             "val_s_per_epoch": float((g.val_s_total / g.epochs).mean()),
                             "train_s_total": float(g.train_s_total.mean()), "val_s_total": float(g.val_s_total.mean()),
                             "extrapolated": False, "parallel_processes": int(runs.parallel_processes.iloc[0])})
    table = pd.DataFrame(rows)
    keep = old[~old.config.isin([config_name(i, a) for i, a in configs])] if len(old) else old
    table = pd.concat([keep, table], ignore_index=True) if len(keep) else table
    io.write_csv(path, table)
    return table


# --------------------------------------------------------------------------- evaluation sets and predictors


@lru_cache(maxsize=None)
def item_roles(split: str):
    """Role (train / val / test) of every image and song under ``split`` (fixed: config.SEED)."""
    from . import pairs

    images, songs = _labels()
    return pairs.item_roles(split, images, songs, config.SEED)


def evalset(data, split: str, part: str = "test"):
    """The EvalSet of ``part`` (``val`` or ``test``) of a split, on a configuration's rows."""
    from . import metrics

    songs = data.songs.set_index(data.songs.song_id.astype(str))
    q4 = songs.quadrant.astype(str).str[1:].astype(int).loc[data.song_ids].to_numpy() \
        if "quadrant" in songs else None
    return metrics.make_evalset(split_pairs(split), data.image_row, data.song_row, data.image_va, data.song_va,
                                split, part, roles=item_roles(split), song_quadrant_4q=q4)


def _train_rows(data, split: str):
    pairs_ = split_pairs(split)
    return data.rows(pairs_[pairs_.split == "train"])


# Baselines without features: their rows carry config "(none)"; scored once per split.
FREE_BASELINES = ("quadrant", "image_agnostic", "lookup", "constant", "mean_similarity", "random", "oracle")
FEATURE_BASELINES = ("ridge", "knn")
# What every learned predictor is compared with (paired differences in margins.csv).
MARGIN_BASELINES = ("ridge", "knn", "quadrant", "image_agnostic", "constant", "random")
MARGIN_METRICS = ("nsg@10", "ndcg@10", "rev_nsg@10", "map_a@10", "mae")


def free_baselines(data, split: str, seeds) -> list:
    """(name, seed, predictor) of the feature-free baselines (lookup only on the paper split,
    where it equals the oracle; on the cold split it would be the constant)."""
    from . import baselines

    pairs_ = split_pairs(split)
    train = pairs_[pairs_.split == "train"]
    ti, ts = data.rows(train)
    out = [("quadrant", 0, baselines.quadrant_only(data.image_va, data.song_va, ti, ts)),
           ("image_agnostic", 0, baselines.image_agnostic(data.image_va, data.song_va, ti))]
    if split == "paper":
        out.append(("lookup", 0, baselines.lookup(data.image_va, data.song_va, ti, ts)))
    out += [("constant", 0, baselines.constant(data.image_va, data.song_va, ti, ts)),
            ("mean_similarity", 0, baselines.mean_similarity(train.similarity))]
    out += [("random", s, baselines.random_va(data.image_va, data.song_va, ti, ts, seed=s)) for s in seeds]
    out.append(("oracle", 0, baselines.oracle(data.image_va, data.song_va)))
    return out


def feature_baselines(data, split: str) -> list:
    """(name, seed, predictor) of ridge and kNN on the evaluation features, fitted on the
    training items only (their hyperparameters by cross-validation on those items)."""
    from . import baselines

    ti, ts = _train_rows(data, split)
    x_i, x_a = data.image_eval.numpy(), data.audio_eval.numpy()
    return [("ridge", 0, baselines.ridge(x_i, x_a, data.image_va, data.song_va, ti, ts)),
            ("knn", 0, baselines.knn(x_i, x_a, data.image_va, data.song_va, ti, ts))]


def network_predictors(prof: Profile, cfg: str, split: str, data, tta: bool = True) -> list:
    """(name, seed, predictor, meta) of every trained run of a configuration and split, plus
    the joint network scored with test-time averaging of its stored views (``joint_tta``)."""
    from . import training

    out = []
    for variant in prof.variants:
        for seed in prof.seeds_for(variant):
            path = run_dir(prof, cfg, split, variant, seed) / "model.pt"
            if not path.exists():
                raise ImuseError(f"{path}: run not trained yet; run `imuse train --profile {prof.name}` first")
            model, meta = training.load_checkpoint(path)
            out.append((variant, seed, training.NetworkPredictor(model, data, name=variant), meta))
            if tta and variant == "joint":
                out.append(("joint_tta", seed, training.NetworkPredictor(model, data, name="joint_tta", tta=True),
                            meta))
    return out


# --------------------------------------------------------------------------- validation and the default model


VALIDATION_COLUMNS = ["nsg@10", "ndcg@10", "quadrant@10", "rev_nsg@10", "mae", "map_a@10"]


def run_validation(prof: Profile, configs, progress: bool = False) -> pd.DataFrame:
    """Every learned run of the profile, and ridge, scored on the VALIDATION split (point
    estimates): what model choices read. Written to validation.csv."""
    from tqdm import tqdm

    from . import metrics

    rows = []
    for image, audio in tqdm(configs, desc="validation", disable=not progress):
        name = config_name(image, audio)
        data = feature_data(image, audio)
        for split in prof.splits:
            ev = evalset(data, split, "val")
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
    from . import training

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


# --------------------------------------------------------------------------- evaluation (the test split, read once)


def _draws(prof: Profile, ev, split: str, resample_songs: bool = True):
    from . import metrics

    seed = config.SEED + SPLITS.index(split)
    return metrics.draw_resamples(len(ev.query_images), len(ev.candidate_songs), prof.n_boot, seed,
                                  resample_songs=resample_songs)


def _cell_label(image: str, audio: str, data) -> dict:
    return {"image_backbone": image, "audio_backbone": audio, "image_weights": _weights_label(data.image_meta),
            "audio_weights": _weights_label(data.audio_meta)}


def _score_group(prof, ev, split, preds, image_only: bool = False) -> tuple[list, dict]:
    """Score predictors (name, seed, predictor) grouped by name: the run rows and, per name,
    the seed-averaged bootstrap replicates (and the image-only ones, when asked)."""
    from . import metrics

    rows, scored = [], {}
    for pname, seed, pred in preds:
        summary, sc = metrics.score(pred, ev, seed=seed)
        rows.append({"predictor": pname, "seed": seed, **summary})
        scored.setdefault(pname, []).append(sc)
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
    data = feature_data(task["image"], task["audio"])
    ev = evalset(data, split)
    rows, reps = _score_group(prof, ev, split, free_baselines(data, split, prof.seeds), image_only=True)
    for r in rows:
        r.update({"config": "(none)", "split": split, "image_backbone": "", "audio_backbone": "",
                  "image_weights": "", "audio_weights": ""})
    return {"split": split, "rows": rows, "reps": reps, "ids": (data.image_ids, data.song_ids)}


def _evaluate_cell(task: dict) -> dict:
    """Ridge, kNN and the trained networks of one configuration on one split, on the test split."""
    prof, split = get_profile(task["profile"], **task["overrides"]), task["split"]
    image, audio = task["image"], task["audio"]
    name = config_name(image, audio)
    data = feature_data(image, audio)
    ev = evalset(data, split)
    nets = network_predictors(prof, name, split, data)
    meta_runs = {run_id(name, split, n, s): {k: m.get(k) for k in ("image_weights", "audio_weights", "epochs",
                                                                  "device", "selected_epoch")}
                 for n, s, _, m in nets}
    fb = feature_baselines(data, split)
    rows, reps = _score_group(prof, ev, split, fb + [(n, s, p) for n, s, p, _ in nets], image_only=True)
    for r in rows:
        r.update({"config": name, "split": split, **_cell_label(image, audio, data)})
    return {"split": split, "config": name, "rows": rows, "reps": reps, "runs": meta_runs,
            "ridge": fb[0][2].info, "knn": fb[1][2].info, "ids": (data.image_ids, data.song_ids)}


DEPLOYED = "deployed"  # the config label of the deployed VA model's rows


def _evaluate_deployed(task: dict) -> dict | None:
    """The deployed VA model (``va_model.train_default``, fitted on the cold split's training and
    validation items) on the cold split's test items; None when there is none."""
    from . import va_model

    path = va_model.default_model_path()
    if task["split"] != "cold" or not path.exists():
        return None
    prof = get_profile(task["profile"], **task["overrides"])
    data = feature_data(task["image"], task["audio"])
    model = va_model.load(path)
    if model.provenance.get("split") != "cold" or model.provenance.get("seed") != config.SEED:
        raise ImuseError(f"{path}: fitted on another split or seed than the cold split of seed {config.SEED}; "
                         f"run `imuse train` again")
    ev = evalset(data, "cold")
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
    from . import training

    prof = profile if isinstance(profile, Profile) else get_profile(profile, **overrides)
    t0 = time.perf_counter()
    configs = configurations(prof)
    missing = [path for (i, a) in configs for sp in prof.splits for v in prof.variants for seed in prof.seeds_for(v)
               if not (path := run_dir(prof, config_name(i, a), sp, v, seed) / "model.pt").exists()]
    if missing:
        raise ImuseError(f"{missing[0]}: run not trained yet ({len(missing)} missing); "
                         f"run `imuse train --profile {prof.name}` first")
    for image, audio in configs:  # fill the store before workers start (they would race to build it)
        feature_data(image, audio)
    ov = {k: getattr(prof, k) for k in ("image_backbones", "audio_backbones", "splits", "seeds", "epochs",
                                        "variants", "n_boot", "factorised_seeds")}
    base = {"profile": prof.name, "overrides": ov}
    free = _parallel(_evaluate_free, [{**base, "split": s, "image": configs[0][0], "audio": configs[0][1]}
                                      for s in prof.splits], prof.jobs, f"baselines ({prof.name})", progress)
    cells = _parallel(_evaluate_cell, [{**base, "split": s, "image": i, "audio": a} for (i, a) in configs
                                       for s in prof.splits], prof.jobs, f"evaluating ({prof.name})", progress)
    deployed = _evaluate_deployed({**base, "split": "cold", "image": configs[0][0], "audio": configs[0][1]}) \
        if "cold" in prof.splits else None
    if deployed is not None:
        cells.append(deployed)
    free_by_split = {f["split"]: f for f in free}
    for c in cells:  # the feature-free baselines' replicates are reused: same items, same rows
        if c["ids"] != free_by_split[c["split"]]["ids"]:
            raise ImuseError(f"{c['config']}: its feature stores order the items differently from "
                             f"{config_name(*configs[0])}; rebuild them")
    runs = pd.DataFrame([r for f in free for r in f["rows"]] + [r for c in cells for r in c["rows"]])
    reps = {("(none)", f["split"], n): v for f in free for n, v in f["reps"].items()}
    reps.update({(c["config"], c["split"], n): v for c in cells for n, v in c["reps"].items()})
    table2 = _aggregate(runs, reps)
    margins = _margins(table2, reps, config_name(*configs[0]))
    mapk = _map_at_k(runs)
    out_dir = profile_dir(prof)
    io.write_csv(out_dir / "table2_runs.csv", runs)
    io.write_csv(out_dir / "table2.csv", table2)
    io.write_csv(out_dir / "margins.csv", margins)
    io.write_csv(out_dir / "map_at_k.csv", mapk)
    import torch

    results = {"profile": asdict(prof), "configs": [config_name(i, a) for i, a in configs],
               "device": training.device_name(training.resolve_device(prof.device)),
               "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.perf_counter() - t0, 2), "paper_table2": PAPER_TABLE2,
               "paper_configs": paper_configurations_status().to_dict("records"),
               "ridge": {f"{c['config']}/{c['split']}": c["ridge"] for c in cells if "ridge" in c},
               "knn": {f"{c['config']}/{c['split']}": c["knn"] for c in cells if "knn" in c},
               "deployed": deployed and deployed["label"],
               "runs": {k: v for c in cells for k, v in c.get("runs", {}).items()}, "pairs_seed": config.SEED,
               "n_boot": prof.n_boot, "commit": provenance.git_commit(),
               "versions": {"torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                            "python": platform.python_version()},
               "features": {config_name(i, a): {"image": feature_data(i, a).image_meta,
                                                "audio": feature_data(i, a).audio_meta} for i, a in configs}}
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


def _aggregate(runs: pd.DataFrame, reps: dict) -> pd.DataFrame:
    from . import metrics

    rows = []
    for (cfg, split, pred), g in runs.groupby(["config", "split", "predictor"], sort=False):
        row = {"config": cfg, "split": split, "predictor": pred, "kind": KIND.get(pred, "learned"),
               "seeds": len(g), "image_weights": g.image_weights.iloc[0], "audio_weights": g.audio_weights.iloc[0],
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
    from . import metrics

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
    from .metrics import KS

    rows = []
    for (cfg, split, pred), g in runs.groupby(["config", "split", "predictor"], sort=False):
        for metric, label in (("nsg", "NSG@k"), ("map_a", "MAP@k (a)")):
            for k in KS:
                vals = g[f"{metric}@{k}"]
                rows.append({"config": cfg, "split": split, "predictor": pred, "metric": label, "k": k,
                             "value": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- reading results


def _read(profile, name: str) -> pd.DataFrame:
    path = profile_dir(profile) / name
    if not path.exists():
        cmd = "train" if name in ("table1.csv", "training_runs.csv", "validation.csv") else "evaluate"
        raise ImuseError(f"{path}: no results yet; run `imuse {cmd} --profile "
                         f"{profile.name if isinstance(profile, Profile) else profile}` first")
    return pd.read_csv(path)


def load_table1(profile="quick") -> pd.DataFrame:
    return _read(profile, "table1.csv")


def load_table2(profile="quick") -> pd.DataFrame:
    return _read(profile, "table2.csv")


def load_map_at_k(profile="quick") -> pd.DataFrame:
    return _read(profile, "map_at_k.csv")


def load_margins(profile="quick") -> pd.DataFrame:
    return _read(profile, "margins.csv")


def load_validation(profile="quick") -> pd.DataFrame:
    path = profile_dir(profile) / "validation.csv"
    if not path.exists():
        raise ImuseError(f"{path}: no validation scores yet; run `imuse train --profile {profile}` first")
    return pd.read_csv(path)


def load_results(profile="quick") -> dict:
    path = profile_dir(profile) / "results.json"
    if not path.exists():
        raise ImuseError(f"{path}: no results yet; run `imuse evaluate --profile {profile}` first")
    return io.read_json(path)


def load_history(profile, cfg: str, split: str, variant: str, seed: int) -> dict:
    path = history_path(profile, cfg, split, variant, seed)
    if not path.exists():
        raise ImuseError(f"{path}: no training history; run `imuse train --profile {profile}` first")
    return io.read_json(path)


def epoch_frame(profile, runs: list[tuple]) -> pd.DataFrame:
    """Long frame of per-epoch losses (train/val) for runs given as (config, split, variant, seed)."""
    rows = []
    for cfg, split, variant, seed in runs:
        for e in load_history(profile, cfg, split, variant, seed)["epochs"]:
            for part in ("train", "val"):
                rows.append({"config": cfg, "split": split, "variant": variant, "seed": seed, "epoch": e["epoch"],
                             "set": part, "loss": e[f"{part}_loss"], "image_loss": e[f"{part}_image_loss"],
                             "music_loss": e[f"{part}_music_loss"]})
    return pd.DataFrame(rows)


def batch_frame(profile, cfg: str, split: str, variant: str, seed: int) -> pd.DataFrame:
    """Per-batch image-VA and music-VA loss components of one run."""
    b = load_history(profile, cfg, split, variant, seed)["batches"]
    frame = pd.DataFrame({"epoch": b["epoch"], "image_loss": b["image_loss"], "music_loss": b["music_loss"],
                          "loss": b["loss"]})
    frame.insert(0, "batch", np.arange(1, len(frame) + 1))
    return frame


# --------------------------------------------------------------------------- text table


def format_table2(table2: pd.DataFrame, paper: bool = True) -> str:
    """Table 2 as text: the recommendation metrics first (NSG@10, NDCG@10, quadrant share of
    the top 10, reverse NSG@10), then the paper's metrics (MAP@10 (a), MAE, RMSE), per split,
    configuration and predictor: mean over seeds [two-way bootstrap 95 % interval]."""
    def cell(r, col):
        lo, hi = r.get(f"{col}_lo"), r.get(f"{col}_hi")
        ci = f" [{lo:.3f},{hi:.3f}]" if pd.notna(lo) else ""
        return f"{r[col]:.3f}{ci}"

    cols = [("NSG@10", "nsg@10"), ("NDCG@10", "ndcg@10"), ("quad@10", "quadrant@10"), ("rev NSG@10", "rev_nsg@10"),
            ("MAP@10 (a)*", "map_a@10"), ("MAE*", "mae"), ("RMSE*", "rmse")]
    head = ["split", "config", "predictor", "seeds"] + [c[0] for c in cols]
    order = {p: i for i, p in enumerate(["joint", "joint_tta", "joint_item", "factorised", "ridge", "knn", "quadrant",
                                         "image_agnostic", "lookup", "constant", "mean_similarity", "random",
                                         "oracle"])}
    t = table2.assign(_o=table2.predictor.map(order).fillna(-1),
                      _c=(table2.config == "(none)").astype(int)).sort_values(["split", "_c", "config", "_o"])
    body = [[r.split, r.config, r.predictor, str(r.seeds)] + [cell(r, c) for _, c in cols] for _, r in t.iterrows()]
    if paper:
        body.append(["paper", PAPER_TABLE2["config"], "joint (published)", "-", "-", "-", "-", "-",
                     f"{PAPER_TABLE2['map@10']:.3f}", f"{PAPER_TABLE2['mae']:.3f}", f"{PAPER_TABLE2['rmse']:.3f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), "  ".join("-" * w for w in widths)] + [fmt.format(*row) for row in body]
    lines.append("NSG@10: (mean true S of the top 10 - candidates' mean) / (oracle's - candidates' mean), random 0, "
                 "oracle 1; candidates: every catalog song (paper split) or every held-out song (cold). "
                 "* the paper's metrics: MAP@10 (a) ranks each test image's own test pairs. "
                 "Mean over seeds [two-way bootstrap 95% interval: images and songs resampled].")
    return "\n".join(lines)
