"""How much valence/arousal the music taggers carry (issue 21): the MagnaTagATune Musicnn and
FCN against the Million Song Dataset and MTG-Jamendo taggers, alone and combined.

On the 500 catalog clips, 5-fold cross-validated standardised ridge (folds stratified by
the official 4Q quadrant, seeded; the penalty chosen inside each training fold by
generalised cross-validation) from each tagger's evaluation-crop embedding plus its tag
probabilities (``imuse_lib.taggers``) to the clips' derived valence and arousal. Reported
on the out-of-fold predictions: valence r, arousal r, the official 4Q quadrant recovered
from the predicted VA, the predicted/true sd ratio per dimension, the same after the VA
model's calibration (each dimension stretched around the training mean by sd(true) /
sd(prediction), the latter from an inner cross-validation on the training fold), and, for
reference, a direct quadrant classifier (logistic regression, same folds).

Also the sanity check that the taggers are really pretrained: the correlation of their mood
tags' probabilities with the clips' valence and arousal.

    .venv/bin/python benchmarks/taggers_va.py [--compute] [--folds 5]

Writes ``results/benchmarks/taggers_va.csv`` and ``results/benchmarks/tagger_mood_tags.csv``.
Without ``--compute`` a tagger whose embeddings are not in the store is left out (listed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imuse_lib import config, data, taggers  # noqa: E402
from imuse_lib.errors import ImuseError  # noqa: E402
from imuse_lib.io import write_csv  # noqa: E402
from imuse_lib.metrics import pearson_r, sd_ratio, va_quadrant  # noqa: E402

NEW3 = ("msd_fcn", "jamendo_musicnn", "jamendo_fcn")
CONFIGS = [
    ("MTAT Musicnn", ("musicnn",)),
    ("MTAT FCN", ("fcn",)),
    ("MTAT Musicnn + FCN (today)", ("musicnn", "fcn")),
    ("MSD FCN", ("msd_fcn",)),
    ("MSD CRNN", ("msd_crnn",)),
    ("Jamendo Musicnn", ("jamendo_musicnn",)),
    ("Jamendo FCN", ("jamendo_fcn",)),
    ("Jamendo CRNN", ("jamendo_crnn",)),
    ("MSD FCN + Jamendo Musicnn", NEW3[:2]),
    ("MSD FCN + Jamendo Musicnn + MTAT Musicnn", NEW3[:2] + ("musicnn",)),
    ("MSD FCN + Jamendo Musicnn + Jamendo FCN", NEW3),
    ("+ MSD CRNN + Jamendo CRNN", NEW3 + ("msd_crnn", "jamendo_crnn")),
    ("MSD FCN + Jamendo Musicnn + Jamendo FCN + MTAT Musicnn", NEW3 + ("musicnn",)),
    ("all seven", ("musicnn", "fcn") + NEW3 + ("msd_crnn", "jamendo_crnn")),
]
# mood-bearing tags whose correlation with VA is reported for every tagger that has them
MOOD_TAGS = ("happy", "sad", "Mellow", "chill", "chillout", "party", "beautiful", "sexy", "metal", "emotional",
             "energetic", "relaxing", "film", "ambient", "dance")


def cv_scores(x: np.ndarray, va: np.ndarray, quadrant: np.ndarray, folds: int, seed: int) -> dict:
    """Out-of-fold ridge VA (and a direct quadrant classifier) from the feature matrix ``x``."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred, pred_cal = np.zeros_like(va), np.zeros_like(va)
    q_pred = np.empty(len(x), dtype=object)
    alphas = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, quadrant):
        ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 25)))
        ridge.fit(x[tr], va[tr])
        pred[te] = ridge.predict(x[te])
        alphas.append(float(ridge[-1].alpha_))
        # calibration as the VA model's: stretch around the training mean by sd(true) / sd(out-of-sample
        # prediction), the latter from an inner cross-validation on the training fold
        inner = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 25))),
                                  x[tr], va[tr], cv=KFold(folds, shuffle=True, random_state=seed))
        centre = va[tr].mean(0)
        pred_cal[te] = centre + (pred[te] - centre) * va[tr].std(0) / inner.std(0)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        clf.fit(x[tr], quadrant[tr])
        q_pred[te] = clf.predict(x[te])
    q_from_va = np.array([f"Q{q}" for q in va_quadrant(np.clip(pred, 0, 1))])
    q_from_cal = np.array([f"Q{q}" for q in va_quadrant(np.clip(pred_cal, 0, 1))])
    return {"valence_r": pearson_r(pred[:, 0], va[:, 0]), "arousal_r": pearson_r(pred[:, 1], va[:, 1]),
            "quadrant_acc_from_va": float(np.mean(q_from_va == quadrant)),
            "quadrant_acc_from_calibrated_va": float(np.mean(q_from_cal == quadrant)),
            "sd_ratio_valence_calibrated": sd_ratio(pred_cal[:, 0], va[:, 0]),
            "sd_ratio_arousal_calibrated": sd_ratio(pred_cal[:, 1], va[:, 1]),
            "quadrant_acc_classifier": float(np.mean(q_pred == quadrant)),
            "sd_ratio_valence": sd_ratio(pred[:, 0], va[:, 0]), "sd_ratio_arousal": sd_ratio(pred[:, 1], va[:, 1]),
            "ridge_alpha_median": float(np.median(alphas))}


def mood_table(names, compute: bool) -> pd.DataFrame:
    frames = []
    for name in names:
        table = taggers.mood_correlations(name, compute=compute)
        table["mood_tag"] = table.tag.isin(MOOD_TAGS)
        prov = taggers.provenance(name)
        table["dataset"], table["sha256"] = prov["dataset"], prov["sha256"]
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compute", action="store_true", help="compute taggers missing from the store (minutes each)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=config.SEED)
    ap.add_argument("--threads", type=int, default=1, help="torch threads while computing embeddings")
    ap.add_argument("--out", default=None, help="folder for the CSVs (default results/benchmarks)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    catalog = data.load_catalog()
    va = catalog[["valence", "arousal"]].to_numpy(float)
    quadrant = catalog.quadrant.astype(str).to_numpy()
    ids = [str(i) for i in catalog.song_id]

    here, missing = [], []
    for name in taggers.TAGGER_NAMES:
        try:
            fs = taggers.tagger_features(name, progress=True, compute=args.compute)
        except ImuseError as exc:
            missing.append(name)
            print(f"left out {name}: {str(exc).splitlines()[0]}", flush=True)
            continue
        if list(fs.ids) != ids:
            raise ImuseError(f"{name}: stored clips are not the catalog's")
        here.append(name)

    out_dir = Path(args.out) if args.out else config.results_dir() / "benchmarks"
    moods = mood_table([n for n in here], compute=False)
    if len(moods):
        write_csv(out_dir / "tagger_mood_tags.csv", moods)
        show = moods[moods.mood_tag].pivot_table(index="tag", columns="tagger", values=["r_valence", "r_arousal"])
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 2):
            print("\nmood tags' probability vs the clips' VA (Pearson r, 500 clips):")
            print(show.round(2).to_string())

    rows = []
    for label, names in CONFIGS:
        if any(n not in here for n in names):
            continue
        for with_tags in (True, False):
            t0 = time.perf_counter()
            got_ids, blocks, block_names = taggers.stack(names, with_tags=with_tags, compute=False)
            x = np.concatenate(blocks, axis=1)
            scores = cv_scores(x, va, quadrant, args.folds, args.seed)
            rows.append({"config": label, "taggers": "+".join(names), "tag_probabilities": with_tags,
                         "dims": x.shape[1], **scores, "folds": args.folds, "seed": args.seed,
                         "seconds": round(time.perf_counter() - t0, 2),
                         "weights_sha256": ";".join(taggers.provenance(n)["sha256"][:12] for n in names)})
    table = pd.DataFrame(rows)
    write_csv(out_dir / "taggers_va.csv", table)
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.precision", 3):
        cols = ["config", "tag_probabilities", "dims", "valence_r", "arousal_r", "quadrant_acc_from_va",
                "quadrant_acc_from_calibrated_va", "quadrant_acc_classifier", "sd_ratio_valence", "sd_ratio_arousal",
                "sd_ratio_valence_calibrated", "sd_ratio_arousal_calibrated"]
        print(f"\n{args.folds}-fold standardised ridge on the 500 catalog clips (seed {args.seed}):")
        print(table[cols].to_string(index=False))
    if missing:
        print(f"\nnot measured (embeddings not in the store; run with --compute): {', '.join(missing)}")
    print(f"\nwrote {out_dir / 'taggers_va.csv'} and {out_dir / 'tagger_mood_tags.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
