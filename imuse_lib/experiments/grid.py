"""The training grid: every (configuration, split, variant, seed) run of a profile, trained
in parallel processes or as Ray tasks (resumed or reused when done), the timing of cached vs
end-to-end epochs (Table 1) and, after it, the validation scores and the default models."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from .. import config, io
from ..errors import ModelMismatchError
from ..profiles import VARIANT_SETTINGS, Profile, get_profile
from . import inputs
from .paths import history_path, profile_dir, run_dir, run_id
from .selection import run_validation, write_default_model


def train_one(task: dict) -> dict:
    """Train (or resume, or reuse) one run; returns its summary. Runs in worker processes."""
    import torch

    from .. import training

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    prof, cfg_name, split, variant, seed = task["profile"], task["config"], task["split"], task["variant"], task["seed"]
    image, audio = task["image"], task["audio"]
    data = inputs.feature_data(image, audio)
    pairs_ = inputs.split_pairs(split)
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

    from .. import training

    prof = profile if isinstance(profile, Profile) else get_profile(profile, **overrides)
    t0 = time.perf_counter()
    configs = inputs.configurations(prof)
    device = training.resolve_device(prof.device)
    # Make sure every feature set is in the store before workers start (they would race to build it).
    for image, audio in configs:
        inputs.feature_data(image, audio)
        for split in prof.splits:
            inputs.split_pairs(split)
    tasks = [{"profile": prof.name, "config": inputs.config_name(i, a), "image": i, "audio": a, "split": s,
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

    if engine == "ray":  # each cell a Ray task (imuse_lib.parallel); never imported on the local path
        from .. import parallel

        with parallel.session(ray_address):
            for summary in parallel.map_tasks(train_one, tasks, use_gpu=device.type == "cuda"):
                done(summary)
    elif jobs == 1:
        for task in tqdm(tasks, desc=f"training ({prof.name})", disable=not progress):
            done(train_one(task))
    else:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // jobs)
        for task in tasks:
            task["threads"] = threads
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            for summary in tqdm(pool.map(train_one, tasks), total=len(tasks), desc=f"training ({prof.name}, "
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
            from .. import va_model

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

    from .. import models, training

    data = inputs.feature_data(image, audio)
    pairs_ = inputs.split_pairs(split)
    tcfg = training.TrainConfig(epochs=1, seed=0, device=profile.device)
    cached = training.train(data, pairs_, tcfg).history["epochs"][0]
    ib = models.build_image_backbone(image)
    ab = models.build_audio_backbone(audio)
    e2e = training.time_end_to_end(ib, ab, data, pairs_, tcfg, n_batches=profile.e2e_batches,
                                   n_val_batches=profile.e2e_val_batches, progress=progress)
    dev = training.device_name(training.resolve_device(profile.device))
    n_train = int((pairs_.split == "train").sum())
    n_val = int((pairs_.split == "val").sum())
    base = {"config": inputs.config_name(image, audio), "image_backbone": image, "audio_backbone": audio,
            "image_weights": inputs.weights_label(data.image_meta),
            "audio_weights": inputs.weights_label(data.audio_meta),
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


def write_table1(prof: Profile, configs, runs: pd.DataFrame | None = None, timing: bool = True,
                 retime: bool = False, progress: bool = False) -> pd.DataFrame:
    """Table 1: the side-by-side timing rows per configuration (measured unless already
    there for this device), plus the measured totals of the actual training runs."""
    from .. import training

    path = profile_dir(prof) / "table1.csv"
    old = pd.read_csv(path) if path.exists() else pd.DataFrame()
    dev = training.device_name(training.resolve_device(prof.device))
    rows = []
    for image, audio in configs:
        name = inputs.config_name(image, audio)
        prev = old[(old.config == name) & (old["mode"].isin(["cached", "end_to_end"]))
                   & (old.device == dev)] if len(old) else old
        if timing and (retime or len(prev) < 2):
            rows += time_configuration(image, audio, prof, progress=progress)
        elif len(prev):
            rows += prev.to_dict("records")
        if runs is not None and len(runs):
            sub = runs[(runs.config == name)]
            fd = inputs.feature_data(image, audio)
            for (split, variant), g in sub.groupby(["split", "variant"]):
                rows.append({"config": name, "image_backbone": image, "audio_backbone": audio,
                             "image_weights": inputs.weights_label(fd.image_meta),
                             "audio_weights": inputs.weights_label(fd.audio_meta), "split": split,
                             "mode": f"cached, {variant} training runs", "device": g.device.iloc[0],
                             "epochs": int(g.epochs.iloc[0]), "seeds": len(g),
                             "train_s_per_epoch": float((g.train_s_total / g.epochs).mean()),
                             "val_s_per_epoch": float((g.val_s_total / g.epochs).mean()),
                             "train_s_total": float(g.train_s_total.mean()), "val_s_total": float(g.val_s_total.mean()),
                             "extrapolated": False, "parallel_processes": int(runs.parallel_processes.iloc[0])})
    table = pd.DataFrame(rows)
    keep = old[~old.config.isin([inputs.config_name(i, a) for i, a in configs])] if len(old) else old
    table = pd.concat([keep, table], ignore_index=True) if len(keep) else table
    io.write_csv(path, table)
    return table
