"""The image arm fine-tuned on the CPU (issue 21) against the deployed VA model's image arm.

Fine-tunes MobileNetV2's last stage (``imuse_lib.finetune``: blocks 14-17 + the 1x1 conv + a
VA layer, from stored activations of the frozen blocks 0-13 over the feature store's views,
early stopping on the cold split's validation images) and scores, on the cold split:

* validation images: the networks fitted on ``train`` only (what the choice is made on);
* test images: the models refitted on train + val (as deployed), read only here, at the end;

valence r, arousal r and predicted/true sd ratio, for the fine-tuned arm (calibrated and raw)
and for the deployed image arm (kernel ridge on ``va_model_params.json``'s sources and
hyperparameters), plus the fine-tuned arm's starting point (the linear probe, epoch 0).

    .venv/bin/python benchmarks/finetune_image.py [--epochs 30] [--patience 5] [--threads 1]

Writes ``results/benchmarks/finetune_image.csv`` (scores), ``finetune_image_epochs.csv``
(the training history) and the fitted arm to ``results/models/finetuned_image_arm.pt``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imuse_lib import config, data, finetune, pairs, va_model  # noqa: E402
from imuse_lib.io import write_csv  # noqa: E402
from imuse_lib.metrics import pearson_r, sd_ratio  # noqa: E402


def scores(name: str, part: str, pred: np.ndarray, true: np.ndarray, **extra) -> dict:
    return {"model": name, "part": part, "n": len(true),
            "valence_r": pearson_r(pred[:, 0], true[:, 0]), "arousal_r": pearson_r(pred[:, 1], true[:, 1]),
            "sd_ratio_valence": sd_ratio(pred[:, 0], true[:, 0]), "sd_ratio_arousal": sd_ratio(pred[:, 1], true[:, 1]),
            **extra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=config.SEED)
    ap.add_argument("--out", default=None, help="folder for the CSVs (default results/benchmarks)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    images, songs = data.load_images(), data.load_catalog()
    roles = pairs.item_roles("cold", images, songs, args.seed)
    role = images.image_id.map(roles.images).to_numpy()
    ids = images.image_id.astype(str).to_numpy()
    val_ids, test_ids = ids[role == "val"], ids[role == "test"]
    print(f"cold split images: train {np.sum(role == 'train')}, val {len(val_ids)}, test {len(test_ids)}", flush=True)

    # ---- the deployed image arm (kernel ridge, hyperparameters chosen earlier on validation)
    chosen = va_model.tuned_params()["image"]
    blocks = va_model.load_blocks(tuple(chosen["sources"]), "image", compute=True, progress=True)
    (final, train_only), _ = va_model.fit_arm_tuned(blocks, images, "image_id", roles.images, 0, args.seed,
                                                     params=chosen, tune=False)

    # ---- the fine-tuned arm
    t0 = time.perf_counter()
    model = finetune.fit(roles, seed=args.seed, epochs=args.epochs, patience=args.patience, lr=args.lr,
                         head_lr=args.head_lr, threads=args.threads, progress=True)
    fit_s = time.perf_counter() - t0
    info = model.info
    history = pd.DataFrame(model.history)
    epoch_s = history.seconds[history.epoch > 0]
    print(f"fine-tuned in {fit_s:.0f} s: best epoch {info['best_epoch']} of {len(history) - 1} run "
          f"({epoch_s.mean():.1f} s an epoch over {info['n_train']} images), refit on {info['refit_on']}", flush=True)

    # check: the stored activations through the ImageNet tail give the store's own features
    acts = finetune.activations(info["views"], args.seed, progress=False)
    probe = finetune._tail_module(args.seed, 0.0)
    rows_chk = acts.rows(ids[:20])
    pooled = finetune._pooled(probe, acts.acts[rows_chk][:, :1])[:, 0]
    stored = blocks.arrays[0][blocks.rows(ids[:20])]
    print(f"check: eval-view features from the stored float16 activations vs the feature store: max |diff| "
          f"{np.abs(pooled - stored).max():.4f} (feature sd {stored.std():.3f})", flush=True)

    # ---- scores: validation by the train-only fits, test by the refitted ones (labels read here)
    by_id = images.set_index(images.image_id.astype(str))
    y_val = by_id.loc[val_ids, ["valence", "arousal"]].to_numpy(float)
    y_test = by_id.loc[test_ids, ["valence", "arousal"]].to_numpy(float)
    ib = blocks.take(blocks.rows(val_ids)), blocks.take(blocks.rows(test_ids))
    deployed = "deployed image arm (" + "+".join(chosen["sources"]) + f", {chosen['kernel']} kernel ridge)"
    tuned = "fine-tuned MobileNetV2 blocks 14-18 + VA layer, views averaged"
    assert list(model.val_ids) == list(val_ids)
    probe0 = history.iloc[0]
    rows = [
        scores(deployed, "val", train_only.predict(ib[0]), y_val, fitted_on="train"),
        {"model": "fine-tuning's start: ridge probe on the frozen tail (epoch 0)", "part": "val",
         "n": len(val_ids), "valence_r": probe0.val_r_v, "arousal_r": probe0.val_r_a, "fitted_on": "train"},
        scores(tuned, "val", model.val_pred, y_val, fitted_on="train", best_epoch=info["best_epoch"],
               note="sd ratio 1 by construction: calibrated on these predictions"),
        scores(deployed, "test", final.predict(ib[1]), y_test, fitted_on="train+val"),
        scores(tuned, "test", model.predict(test_ids), y_test, fitted_on=info["refit_on"],
               best_epoch=info["best_epoch"]),
        scores(tuned + ", uncalibrated", "test", model.predict(test_ids, calibrated=False), y_test,
               fitted_on=info["refit_on"]),
    ]
    table = pd.DataFrame(rows)
    out_dir = Path(args.out) if args.out else config.results_dir() / "benchmarks"
    write_csv(out_dir / "finetune_image.csv", table)
    write_csv(out_dir / "finetune_image_epochs.csv", history)
    path = model.save(config.results_dir() / "models" / "finetuned_image_arm.pt")
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.precision", 3):
        print(history.to_string(index=False))
        print(table.to_string(index=False))
    print(f"wrote {out_dir / 'finetune_image.csv'}, {out_dir / 'finetune_image_epochs.csv'} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
