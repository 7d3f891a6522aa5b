"""Ablation of the deployed VA model's ideas (issue 10): each idea's NSG@10, r, sd ratio and
the songs' 4Q accuracy, every model fitted on the cold split's training items and tuned on
its validation items.

    .venv/bin/python benchmarks/va_ablation.py              # validation only (exploration)
    .venv/bin/python benchmarks/va_ablation.py --test       # also the test split (final scoring)
    .venv/bin/python benchmarks/va_ablation.py --save-params  # the best idea on validation -> default build
    .venv/bin/python benchmarks/va_ablation.py --cv           # nested 5-fold cross-validation over train + val

Writes ``results/va_ablation.csv`` (``--out`` to change). Ideas whose feature sources are not
in the store are listed as missing (``--compute`` computes them: minutes each).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imuse_lib import config, va_model  # noqa: E402
from imuse_lib.io import atomic_path  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--test", action="store_true", help="score the test split too (do this once, at the end)")
    p.add_argument("--trials", type=int, default=va_model.DEFAULT_TRIALS)
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--compute", action="store_true", help="compute missing feature sources")
    p.add_argument("--only", nargs="*", help="run only the ideas whose name contains one of these")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--save-params", action="store_true",
                   help="record the idea with the best validation NSG@10 as the default build's sources and "
                        "hyperparameters (imuse_lib/va_model_params.json)")
    p.add_argument("--cv", action="store_true",
                   help="score each fitted idea by nested 5-fold cross-validation over train + val instead (each fold "
                        "scored with hyperparameters searched while it was hidden; a steadier comparison than "
                        "the one validation part; never reads test); writes va_ablation_cv.csv")
    p.add_argument("--why", default=None,
                   help="with --save-params: why these candidates (recorded in the file's chosen_on)")
    args = p.parse_args(argv)
    configs = [c for c in va_model.ABLATION if not args.only or any(o in c[0] for o in args.only)]
    parts = ("val", "test") if args.test else ("val",)
    t0 = time.perf_counter()
    if args.cv:
        return cross_validated([c for c in configs if c[3] is not None], args, t0)
    table, models = va_model.run_ablation(configs, seed=args.seed, n_trials=args.trials, parts=parts,
                                  skip_missing=not args.compute, progress=True)
    cols = ["idea", "part", "nsg@10", "rev_nsg@10", "image_r_v", "image_r_a", "song_r_v", "song_r_a",
            "song_4q_acc", "image_sd_ratio_v", "image_sd_ratio_a", "song_sd_ratio_v", "song_sd_ratio_a", "seconds"]
    shown = table[[c for c in cols if c in table.columns]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = args.out or config.results_dir() / ("va_ablation.csv" if args.test else "va_ablation_val.csv")
    with atomic_path(out) as tmp:
        keep_others(table, out, args.only).to_csv(tmp, index=False)
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")
    if args.save_params:
        val = table[(table.part == "val") & table.idea.isin(list(models))]
        best = val.sort_values("nsg@10", ascending=False).idea.iloc[0]  # chosen on validation only
        among = (f"the best validation NSG@10 among the ideas {', '.join(repr(i) for i in val.idea)}"
                 + (f" ({args.why})" if args.why else ""))
        print(f"default build: {best!r} -> {va_model.save_tuned_params(models[best], among)}")
    return 0


def keep_others(table: pd.DataFrame, out: Path, only) -> pd.DataFrame:
    """A run of some ideas (``--only``) keeps the other ideas' rows already in ``out``."""
    if not only or not out.is_file():
        return table
    kept = pd.read_csv(out)
    return pd.concat([kept[~kept.idea.isin(table.idea)], table], ignore_index=True)


def cross_validated(configs, args, t0) -> int:
    """Each fitted idea's mean and spread over the folds (one row per fold in the file)."""
    table = va_model.cross_validate(configs, seed=args.seed, n_trials=args.trials, progress=True)
    out = args.out or config.results_dir() / "va_ablation_cv.csv"
    table = keep_others(table, out, args.only)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    cols = ["nsg@10", "rated_nsg@10", "nsg@10_songs_uncalibrated", "rev_nsg@10", "image_r_v", "image_r_a",
            "song_r_v", "song_r_a", "song_4q_acc"]
    cols = [c for c in cols if c in table.columns]  # rows of an older run lack the newer columns
    by_idea = table.groupby("idea", sort=False)
    summary = by_idea[cols].mean().join(by_idea["nsg@10"].std().rename("nsg@10 sd over folds"))
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
