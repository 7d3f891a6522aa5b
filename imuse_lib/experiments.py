"""The paper's experiments: configurations, quick/full profiles, training and evaluation
runs, and the result files the book and the CLI share.

Layout under ``results_dir()/<profile>/``::

    runs/<config>/<split>/<variant>/seed<k>/checkpoint.pt   training state (resume)
    runs/<config>/<split>/<variant>/seed<k>/model.pt        the trained network + meta
    history/<config>__<split>__<variant>__seed<k>.json      loss per epoch and per batch, timings
    table1.csv      seconds per epoch / total, cached vs end-to-end, per configuration
    table2_runs.csv one row per (configuration, split, predictor, seed)
    table2.csv      mean and spread over seeds, bootstrap 95 % intervals over test images
    map_at_k.csv    MAP@k, k = 1..10, both ranking protocols
    results.json    what was run: profile, device, backbones and weights provenance, baselines

A configuration is an (image backbone, audio backbone) pair, named ``<image>+<audio>``.
Variants: ``joint`` (the paper's network) and ``factorised``. The pairs and their splits
are fixed (``config.SEED``); the seeds vary the network's initialisation, shuffling,
view/crop draws and dropout.
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

from . import config, io
from .errors import ImuseError, ModelMismatchError

VARIANTS = ("joint", "factorised")
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
    n_boot: int = 1000
    jobs: int = 2  # parallel training processes (one thread each)
    device: str = "auto"
    checkpoint_every: int = 5
    variants: list = field(default_factory=lambda: list(VARIANTS))

    def seeds_for(self, variant: str) -> list:
        if variant == "factorised" and self.factorised_seeds is not None:
            return [s for s in self.factorised_seeds if s in self.seeds] or self.seeds[:1]
        return list(self.seeds)


PROFILES = {
    # One configuration, both splits, one seed, 5 epochs: the book's default (minutes on a CPU).
    # End to end it times one training batch and no validation batch (a musicnn validation batch
    # decodes 32 clips and runs 5 evaluation crops of each: the full profile times it).
    "quick": Profile("quick", ["mobilenet_v2"], ["musicnn"], list(SPLITS), [0], 5, e2e_batches=1,
                     e2e_val_batches=0, n_boot=500, jobs=1),
    # Every available configuration, both splits, 3 seeds of the paper's network and 1 of the
    # factorised one (CPU budget: 20 minutes in all), the paper's 50 epochs.
    "full": Profile("full", None, None, list(SPLITS), [0, 1, 2], 50, factorised_seeds=[0], e2e_batches=2,
                    n_boot=1000),
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
    if "epochs" in overrides and int(overrides["epochs"]) < 1:
        raise ImuseError(f"epochs must be at least 1, not {overrides['epochs']}")
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
    """The real pairs with ``split`` (fixed: config.SEED)."""
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
    tcfg = training.TrainConfig(epochs=task["epochs"], factorised=variant == "factorised", seed=seed,
                                device=task["device"])
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
            "final_train_loss": ep[-1]["train_loss"], "final_val_loss": ep[-1]["val_loss"]}


def run_training(profile: str | Profile = "quick", *, force: bool = False, timing: bool = True,
                 retime: bool = False, write_default: bool = True, progress: bool = True, log: bool = False,
                 **overrides) -> dict:
    """Train every run of the profile (resuming or reusing finished ones), time cached vs
    end-to-end epochs, write Table 1, the histories and the default model.

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
              "checkpoint_every": prof.checkpoint_every}
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

    if jobs == 1:
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
    io.write_csv(profile_dir(prof) / "training_runs.csv", runs)
    table1 = write_table1(prof, configs, runs, timing=timing, retime=retime, progress=progress)
    if write_default:
        write_default_model(prof, configs)
    return {"runs": runs, "table1": table1, "seconds": time.perf_counter() - t0}


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
    n_val = int((pairs_.split == "test").sum())
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


# --------------------------------------------------------------------------- default model


def write_default_model(prof: Profile, configs) -> Path | None:
    """The factorised model (paper split, seed 0) of the configuration with the lowest final
    validation loss, copied to training.default_model_path(). The choice uses the held-out
    split's loss (recorded in the meta as ``selected_by``): a deployment choice, made after
    Table 2's runs, not part of them. A quick-profile model never replaces a full-profile one."""
    from . import training

    if "factorised" not in prof.variants or "paper" not in prof.splits or 0 not in prof.seeds_for("factorised"):
        return None
    target = training.default_model_path()
    if target.exists() and prof.name == "quick":
        try:
            _, meta = training.load_checkpoint(target)
            if meta.get("profile") == "full":
                return None
        except ImuseError:
            pass
    candidates = []
    for order, (image, audio) in enumerate(configs):
        name = config_name(image, audio)
        src = run_dir(prof, name, "paper", "factorised", 0) / "model.pt"
        if not src.exists():
            continue
        try:
            val = load_history(prof, name, "paper", "factorised", 0)["epochs"][-1]["val_loss"]
        except (ImuseError, IndexError, KeyError):
            val = None
        candidates.append((float("inf") if val is None else float(val), order, name, src))
    if not candidates:
        return None
    val, _, name, src = min(candidates)
    model, meta = training.load_checkpoint(src)
    meta["default_model_source"] = str(src)
    meta["selected_by"] = (f"lowest final validation loss of the factorised paper-split seed-0 models "
                           f"({val:.4f}, among {', '.join(c[2] for c in candidates)})")
    return training.save_model(target, model, meta)


# --------------------------------------------------------------------------- evaluation


def _predictors_for_split(data, pairs_: pd.DataFrame, seeds) -> list:
    """(name, seed, predictor) of the baselines on one split."""
    from . import baselines

    train = pairs_[pairs_.split == "train"]
    ti, ts = data.rows(train)
    out = [("constant", 0, baselines.constant(data.image_va, data.song_va, ti, ts)),
           ("mean_similarity", 0, baselines.mean_similarity(train.similarity)),
           ("oracle", 0, baselines.oracle(data.image_va, data.song_va))]
    out += [("random", s, baselines.random_va(data.image_va, data.song_va, ti, ts, seed=s)) for s in seeds]
    return out


def run_evaluation(profile: str | Profile = "quick", progress: bool = True, **overrides) -> dict:
    """Score every trained run of the profile and the baselines on the test splits; write
    table2_runs.csv, table2.csv, map_at_k.csv and results.json. Returns the frames."""
    from tqdm import tqdm  # plain: no ipywidgets warning in notebooks

    from . import baselines, metrics, training

    prof = profile if isinstance(profile, Profile) else get_profile(profile, **overrides)
    t0 = time.perf_counter()
    configs = configurations(prof)
    rows, per_image, meta_runs, ridge_info = [], {}, {}, {}
    common_done = set()
    todo = [(i, a, s) for (i, a) in configs for s in prof.splits]
    for image, audio, split in tqdm(todo, desc=f"evaluating ({prof.name})", disable=not progress):
        name = config_name(image, audio)
        data = feature_data(image, audio)
        pairs_ = split_pairs(split)
        ev = metrics.make_evalset(pairs_, data.image_row, data.song_row, data.image_va, data.song_va, split)
        predictors = []
        train = pairs_[pairs_.split == "train"]
        ti, ts = data.rows(train)
        rp = baselines.ridge(data.image_eval.numpy(), data.audio_eval.numpy(), data.image_va, data.song_va, ti, ts)
        ridge_info[f"{name}/{split}"] = rp.info
        predictors.append((name, "ridge", 0, rp))
        if split not in common_done:  # feature-free baselines: once per split
            predictors += [("(none)", n, s, p) for n, s, p in _predictors_for_split(data, pairs_, prof.seeds)]
            common_done.add(split)
        for variant in prof.variants:
            for seed in prof.seeds_for(variant):
                path = run_dir(prof, name, split, variant, seed) / "model.pt"
                if not path.exists():
                    raise ImuseError(f"{path}: run not trained yet; run `imuse train --profile {prof.name}` first")
                model, meta = training.load_checkpoint(path)
                meta_runs[run_id(name, split, variant, seed)] = {k: meta.get(k) for k in
                                                                ("image_weights", "audio_weights", "epochs", "device")}
                predictors.append((name, variant, seed, training.NetworkPredictor(model, data)))
        for cfg_label, pname, seed, pred in predictors:
            summary, per = metrics.score(pred, ev, seed=seed)
            cfg_image, cfg_audio = (image, audio) if cfg_label != "(none)" else ("", "")
            rows.append({"config": cfg_label, "image_backbone": cfg_image, "audio_backbone": cfg_audio,
                         "image_weights": _weights_label(data.image_meta) if cfg_image else "",
                         "audio_weights": _weights_label(data.audio_meta) if cfg_audio else "",
                         "split": split, "predictor": pname, "seed": seed, **summary})
            per_image.setdefault((cfg_label, split, pname), []).append(per)
    runs = pd.DataFrame(rows)
    table2 = _aggregate(runs, per_image, prof.n_boot)
    mapk = _map_at_k(runs)
    out_dir = profile_dir(prof)
    io.write_csv(out_dir / "table2_runs.csv", runs)
    io.write_csv(out_dir / "table2.csv", table2)
    io.write_csv(out_dir / "map_at_k.csv", mapk)
    import torch

    results = {"profile": asdict(prof), "configs": [config_name(i, a) for i, a in configs],
               "device": training.device_name(training.resolve_device(prof.device)),
               "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.perf_counter() - t0, 2), "paper_table2": PAPER_TABLE2,
               "paper_configs": paper_configurations_status().to_dict("records"), "ridge": ridge_info,
               "runs": meta_runs, "pairs_seed": config.SEED, "n_boot": prof.n_boot,
               "versions": {"torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                            "python": platform.python_version()},
               "features": {config_name(i, a): {"image": feature_data(i, a).image_meta,
                                                "audio": feature_data(i, a).audio_meta} for i, a in configs}}
    io.write_json(out_dir / "results.json", results)
    return {"table2": table2, "runs": runs, "map_at_k": mapk, "results": results}


METRIC_COLUMNS = ["map_a@10", "map_b@10", "mae", "rmse", "image_va_mae", "music_va_mae", "image_valence_r",
                  "image_arousal_r", "music_valence_r", "music_arousal_r"]


def _aggregate(runs: pd.DataFrame, per_image: dict, n_boot: int) -> pd.DataFrame:
    from . import metrics

    rows = []
    for (cfg, split, pred), g in runs.groupby(["config", "split", "predictor"], sort=False):
        row = {"config": cfg, "split": split, "predictor": pred, "seeds": len(g),
               "image_weights": g.image_weights.iloc[0], "audio_weights": g.audio_weights.iloc[0],
               "n_test_pairs": int(g.n_test_pairs.iloc[0]), "n_queries_a": int(g.n_queries_a.iloc[0]),
               "n_queries_b": int(g.n_queries_b.iloc[0]), "n_candidates_b": int(g.n_candidates_b.iloc[0])}
        for col in METRIC_COLUMNS:
            row[col] = float(g[col].mean())
            row[f"{col}_sd"] = float(g[col].std(ddof=1)) if len(g) > 1 else float("nan")
        ci = metrics.bootstrap(per_image[(cfg, split, pred)], n_boot=n_boot, seed=config.SEED)
        for name, col in (("map_a", "map_a@10"), ("map_b", "map_b@10"), ("mae", "mae"), ("rmse", "rmse")):
            row[f"{col}_lo"], row[f"{col}_hi"] = ci[name]
        rows.append(row)
    return pd.DataFrame(rows)


def _map_at_k(runs: pd.DataFrame) -> pd.DataFrame:
    from .metrics import KS

    rows = []
    for (cfg, split, pred), g in runs.groupby(["config", "split", "predictor"], sort=False):
        for proto in ("a", "b"):
            for k in KS:
                vals = g[f"map_{proto}@{k}"]
                rows.append({"config": cfg, "split": split, "predictor": pred, "protocol": proto, "k": k,
                             "map": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- reading results


def _read(profile, name: str) -> pd.DataFrame:
    path = profile_dir(profile) / name
    if not path.exists():
        cmd = "train" if name in ("table1.csv", "training_runs.csv") else "evaluate"
        raise ImuseError(f"{path}: no results yet; run `imuse {cmd} --profile "
                         f"{profile.name if isinstance(profile, Profile) else profile}` first")
    return pd.read_csv(path)


def load_table1(profile="quick") -> pd.DataFrame:
    return _read(profile, "table1.csv")


def load_table2(profile="quick") -> pd.DataFrame:
    return _read(profile, "table2.csv")


def load_map_at_k(profile="quick") -> pd.DataFrame:
    return _read(profile, "map_at_k.csv")


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
    """Table 2 as text: MAP@10 (protocols a, b), MAE, RMSE per configuration, split and predictor,
    mean +- sd over seeds and [bootstrap 95 % interval]."""
    def cell(r, col):
        sd = r.get(f"{col}_sd")
        sd_txt = f"±{sd:.3f}" if pd.notna(sd) else ""
        return f"{r[col]:.3f}{sd_txt} [{r[f'{col}_lo']:.3f},{r[f'{col}_hi']:.3f}]"

    head = ["split", "config", "predictor", "seeds", "MAP@10 (a)", "MAP@10 (b)", "MAE", "RMSE"]
    lines = []
    order = {"joint": 0, "factorised": 1, "ridge": 2, "constant": 3, "mean_similarity": 4, "random": 5, "oracle": 6}
    t = table2.assign(_o=table2.predictor.map(order).fillna(9),
                      _c=(table2.config == "(none)").astype(int)).sort_values(["split", "_c", "config", "_o"])
    body = [[r.split, r.config, r.predictor, str(r.seeds), cell(r, "map_a@10"), cell(r, "map_b@10"),
             cell(r, "mae"), cell(r, "rmse")] for _, r in t.iterrows()]
    if paper:
        body.append(["paper", PAPER_TABLE2["config"], "joint (published)", "-", f"{PAPER_TABLE2['map@10']:.3f}",
                     "-", f"{PAPER_TABLE2['mae']:.3f}", f"{PAPER_TABLE2['rmse']:.3f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*head))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt.format(*row) for row in body]
    lines.append("MAP (a): each test image's own test pairs ranked, relevant = its best pairs; MAP (b): the "
                 "candidate songs ranked, relevant = its 10 truly nearest. mean±sd over seeds [95% bootstrap "
                 "interval over test images].")
    return "\n".join(lines)
