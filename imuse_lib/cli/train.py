"""`imuse train` and `imuse evaluate`: the paper's training and evaluation runs (Tables 1, 2).

Both write the result files the notebooks read (``results_dir()/<profile>/``); a profile
(quick | full) sets the configurations, splits, seeds and epochs, and flags narrow it to
single configurations. A JSON config file can carry the same keys as the flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import profiles
from ..profiles import INT_RANGES, PROFILES, SETTINGS, check_setting
from . import bounded_int
from .engine_args import add_engine_args, check_engine_args


def _common(p) -> None:
    p.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                   help="; ".join(f"{n}: {profiles.profile_summary(n)}" for n in PROFILES) + " (default: quick)")
    p.add_argument("--image-backbone", action="append", choices=profiles.IMAGE_BACKBONES, dest="image_backbones",
                   help="only this image backbone (repeatable; default: the profile's)")
    p.add_argument("--audio-backbone", action="append", choices=profiles.AUDIO_BACKBONES, dest="audio_backbones",
                   help="only this audio backbone (repeatable)")
    p.add_argument("--split", action="append", choices=profiles.SPLITS, dest="splits",
                   help="split protocol (repeatable; default: both)")
    p.add_argument("--variant", action="append", choices=profiles.VARIANTS, dest="variants",
                   help="network variant (repeatable; default: the profile's); joint_item: item-weighted loss")
    p.add_argument("--seeds", type=_int_list, help="comma-separated training seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=bounded_int(*INT_RANGES["epochs"], "epochs"),
                   help="epochs per run, {}..{} (default: the profile's)".format(*INT_RANGES["epochs"]))
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--config", type=Path,
                   help="JSON file with any of these settings, checked as the flags are (keys: "
                        + ", ".join(SETTINGS) + "; flags win)")
    p.add_argument("--jobs", type=bounded_int(*INT_RANGES["jobs"], "jobs"),
                   help="parallel processes, {}..{} (default: the profile's)".format(*INT_RANGES["jobs"]))


def _int_list(text: str) -> list[int]:
    """--seeds: comma-separated integers, checked as a --config file's list is."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    try:
        return check_setting("seeds", seeds)
    except ValueError as exc:  # argparse turns this into a one-line usage error
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub) -> None:
    p = sub.add_parser("train", help="train the network for Tables 1 and 2 (cached features; timed vs end-to-end)",
                       description="Train every run of a profile from the feature store (resuming finished or "
                                   "interrupted runs), time cached vs end-to-end epochs (Table 1) and write the "
                                   "default model used by `imuse recommend`.")
    _common(p)
    p.add_argument("--force", action="store_true", help="retrain runs that are already done")
    add_engine_args(p, "the training runs (one Ray task each)", workers=False)
    p.add_argument("--no-timing", action="store_true", help="skip the cached vs end-to-end timing (Table 1)")
    p.add_argument("--retime", action="store_true", help="measure Table 1 again even if it was measured here")
    p.add_argument("--tune-va", action="store_true",
                   help="search the deployed VA model's hyperparameters again on the validation items (Optuna, "
                        "minutes; with --engine ray its trials run as Ray tasks) instead of reusing the recorded ones")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score the trained runs and the baselines on the test split; print Table 2",
                       description="Evaluate every trained run of a profile and the baselines (ridge, kNN, "
                                   "quadrant-only, image-agnostic, lookup, constant, mean similarity, random, "
                                   "oracle) on the test splits: NSG@10 and NDCG@10 first, then the paper's "
                                   "MAP@10 (a), MAE and RMSE, with two-way bootstrap intervals; write "
                                   "table2.csv, margins.csv, map_at_k.csv, results.json and print Table 2.")
    _common(p)
    p.add_argument("--n-boot", type=bounded_int(*INT_RANGES["n_boot"], "n-boot"),
                   help="two-way bootstrap resamples, {}..{} (default: ".format(*INT_RANGES["n_boot"])
                        + ", ".join(f"{prof.n_boot} {name}" for name, prof in PROFILES.items()) + ")")
    p.set_defaults(func=cmd_evaluate)


def _overrides(args) -> dict:
    """The settings of --config (each checked as the flags are), then the flags, which win."""
    extra = profiles.read_settings(args.config) if getattr(args, "config", None) else {}
    out = {k: extra.get(k) for k in SETTINGS}
    for k in SETTINGS:
        if getattr(args, k, None) is not None:
            out[k] = getattr(args, k)
    return out


def cmd_train(args) -> int:
    from .. import experiments, training

    overrides = _overrides(args)
    prof = experiments.get_profile(args.profile, **overrides)
    device = training.device_name(training.resolve_device(prof.device))
    print(profiles.profile_line(prof, experiments.configurations(prof), device), file=sys.stderr)
    check_engine_args(args)
    out = experiments.run_training(prof, force=args.force, timing=not args.no_timing, retime=args.retime,
                                   progress=sys.stderr.isatty(), log=not sys.stderr.isatty(),
                                   engine=args.engine, ray_address=args.ray_address, tune_va=args.tune_va)
    t1 = out["table1"]
    cols = [c for c in ["config", "split", "mode", "train_s_per_epoch", "val_s_per_epoch", "train_s_total",
                        "speedup_vs_end_to_end"] if c in t1]
    print("Table 1 (seconds; end_to_end rows are timed over a few batches and extrapolated per epoch):")
    print(t1[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"results: {experiments.profile_dir(prof)}  ({out['seconds']:.0f} s)")
    if out.get("va_model"):
        print(f"deployed model (imuse recommend): {out['va_model']}  ({out['va_model_seconds']:.1f} s)")
    if training.default_model_path().exists():
        print(f"best network on validation: {training.default_model_path()}")
    return 0


def cmd_evaluate(args) -> int:
    from .. import experiments

    prof = experiments.get_profile(args.profile, **_overrides(args))
    out = experiments.run_evaluation(prof, progress=sys.stderr.isatty())
    print(f"Table 2 ({prof.name} profile, {out['results']['device']}):")
    print(experiments.format_table2(out["table2"]))
    print(f"results: {experiments.profile_dir(prof)}")
    return 0
