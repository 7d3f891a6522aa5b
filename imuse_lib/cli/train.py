"""`imuse train` and `imuse evaluate`: the paper's training and evaluation runs (Tables 1, 2).

Both write the result files the notebooks read (``results_dir()/<profile>/``); a profile
(quick | full) sets the configurations, splits, seeds and epochs, and flags narrow it to
single configurations. A JSON config file can carry the same keys as the flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ImuseError
from . import bounded_int
from .engine_args import add_engine_args, check_engine_args

IMAGE_CHOICES = ("mobilenet_v2", "mobilenet_v3_large", "resnet18", "efficientnet_b4", "efficientnet_lite0")
AUDIO_CHOICES = ("samplecnn", "musicnn", "fcn")


def _common(p) -> None:
    p.add_argument("--profile", choices=("quick", "full"), default="quick",
                   help="quick: mobilenet_v2+musicnn, joint and factorised, 3 seeds, 20 epochs; full: every "
                        "available configuration and variant, 3 seeds, 50 epochs (default: quick)")
    p.add_argument("--image-backbone", action="append", choices=IMAGE_CHOICES, dest="image_backbones",
                   help="only this image backbone (repeatable; default: the profile's)")
    p.add_argument("--audio-backbone", action="append", choices=AUDIO_CHOICES, dest="audio_backbones",
                   help="only this audio backbone (repeatable)")
    p.add_argument("--split", action="append", choices=("paper", "cold"), dest="splits",
                   help="split protocol (repeatable; default: both)")
    p.add_argument("--variant", action="append", choices=("joint", "factorised", "joint_item"), dest="variants",
                   help="network variant (repeatable; default: the profile's); joint_item: item-weighted loss")
    p.add_argument("--seeds", type=_int_list, help="comma-separated training seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=bounded_int(1, 10_000, "epochs"), help="epochs per run, 1..10000 (default: the profile's)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--config", type=Path, help="JSON file with any of these settings (flags win)")
    p.add_argument("--jobs", type=bounded_int(1, 64, "jobs"),
                   help="parallel processes, 1..64 (default: 2)")


def _int_list(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if any(not 0 <= s < 2**32 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be integers from 0 to {2**32 - 1}, got {text!r}")
    if not seeds:  # argparse turns this into a one-line usage error
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return seeds


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
    p.add_argument("--n-boot", type=bounded_int(1, 1_000_000, "n-boot"), help="two-way bootstrap resamples, 1..1000000 (default: 200 quick, 1000 full)")
    p.set_defaults(func=cmd_evaluate)


def _overrides(args) -> dict:
    extra = {}
    if getattr(args, "config", None):
        try:
            extra = json.loads(args.config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ImuseError(f"{args.config}: no such config file") from None
        except json.JSONDecodeError as exc:
            raise ImuseError(f"{args.config}: not valid JSON ({exc})") from None
        if not isinstance(extra, dict):
            raise ImuseError(f"{args.config}: expected a JSON object of settings")
        allowed = {"image_backbones", "audio_backbones", "splits", "variants", "seeds", "epochs", "device",
                   "jobs", "n_boot", "profile"}
        unknown = sorted(set(extra) - allowed)
        if unknown:
            raise ImuseError(f"{args.config}: unknown setting(s) {', '.join(unknown)} "
                             f"(allowed: {', '.join(sorted(allowed))})")
    keys = ("image_backbones", "audio_backbones", "splits", "variants", "seeds", "epochs", "device", "jobs", "n_boot")
    out = {k: extra.get(k) for k in keys}
    for k in keys:
        if getattr(args, k, None) is not None:
            out[k] = getattr(args, k)
    return out


def cmd_train(args) -> int:
    from .. import experiments, training

    overrides = _overrides(args)
    prof = experiments.get_profile(args.profile, **overrides)
    names = ", ".join(experiments.config_name(i, a) for i, a in experiments.configurations(prof))
    print(f"profile {prof.name}: {names}"
          f" x splits {prof.splits} x {prof.variants} x seeds {prof.seeds}, {prof.epochs} epochs, "
          f"device {training.device_name(training.resolve_device(prof.device))}", file=sys.stderr)
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
