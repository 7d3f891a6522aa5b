"""Final scoring of the deployed VA model on the cold split's TEST items (issue 10), against
ridge on MobileNetV2 + Musicnn: NSG@10 (both directions) with two-way bootstrap intervals and
the paired difference, image and song r, sd ratios and the songs' official 4Q quadrant.

Run once, after the model was chosen on validation (benchmarks/va_ablation.py --save-params):

    .venv/bin/python benchmarks/va_final.py [--boot 1000]
    .venv/bin/python benchmarks/va_final.py --params OLD.json --candidates "songs:"   # issue 21

``--params`` scores another parameter file's model as ``va_model`` (e.g. the one deployed
before a new search: ``git show REV:imuse_lib/va_model_params.json``); ``--candidates`` also
scores the ablation's ideas whose name contains one of the given strings, each tuned on
validation and refitted on train + val as the default build would be, with the paired
difference (candidate - va_model) on the same bootstrap draws. ``--songs-uncalibrated`` also
scores the same model with the songs ranked at their uncalibrated predicted VA.

Writes ``results/va_final.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imuse_lib import baselines, config, experiments, metrics, va_model  # noqa: E402
from imuse_lib.io import read_json, write_json  # noqa: E402

SHOW = ("nsg@10", "ndcg@10", "quadrant@10", "rev_nsg@10", "image_item_valence_r", "image_item_arousal_r",
        "song_item_valence_r", "song_item_arousal_r", "image_item_valence_sd_ratio", "image_item_arousal_sd_ratio",
        "song_item_valence_sd_ratio", "song_item_arousal_sd_ratio", "song_item_quadrant_4q_acc")


UNCALIBRATED = "va_model, songs ranked uncalibrated"


class _WithItems(baselines.ItemVAPredictor):
    """ItemVAPredictor plus the item-level VA the metrics read (one VA per item)."""

    def item_va(self, img_rows, song_rows):
        return self.image_va[img_rows], self.song_va[song_rows]


def _matches(given: str, idea: str) -> bool:
    """An idea is named by its whole name, or by a part of it that names no idea whole."""
    whole = {c[0] for c in va_model.ABLATION}
    return given == idea if given in whole else given in idea


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boot", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--params", type=Path, default=None,
                   help="the VA-model parameter file scored as va_model (default: imuse_lib/va_model_params.json)")
    p.add_argument("--candidates", nargs="*", default=[],
                   help="also score these ablation ideas (a whole name, or a part: every idea containing it), tuned on val")
    p.add_argument("--trials", type=int, default=va_model.DEFAULT_TRIALS)
    p.add_argument("--songs-uncalibrated", action="store_true",
                   help="also score the model ranking the songs at their uncalibrated predicted VA (not deployed: "
                        "their spread is then about 0.7 of the true one), paired with va_model")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    images, songs = experiments.labels()
    roles = va_model.fitting.item_roles_of(None, images, songs, config.SEED)
    chosen = read_json(args.params) if args.params else va_model.tuned_params()
    model = va_model.fit(tuple(chosen["image"]["sources"]), tuple(chosen["audio"]["sources"]), roles,
                         params={"image": chosen["image"], "audio": chosen["audio"]})
    ns = SimpleNamespace(image_row={str(i): n for n, i in enumerate(images.image_id)},
                         song_row={str(s): n for n, s in enumerate(songs.song_id)},
                         image_va=images[["valence", "arousal"]].to_numpy(float),
                         song_va=songs[["valence", "arousal"]].to_numpy(float), songs=songs,
                         song_ids=[str(s) for s in songs.song_id])
    ev = experiments.evalset(ns, "cold", "test")
    ib, ab = va_model.load_blocks(("mobilenet_v2",), "image"), va_model.load_blocks(("musicnn",), "audio")
    fit_rows = {}
    for who, frame, col, role in (("image", images, "image_id", roles.images), ("song", songs, "song_id", roles.songs)):
        r = frame[col].map(role).to_numpy()
        fit_rows[who] = {"train": np.flatnonzero(r == "train"), "train+val": np.flatnonzero(np.isin(r, ["train", "val"]))}
    predictors = {"va_model": _WithItems("va_model", model.predict_images(), model.predict_songs())}
    if args.songs_uncalibrated:  # the same model, songs ranked at their uncalibrated (shrunk) predicted VA
        predictors[UNCALIBRATED] = _WithItems(UNCALIBRATED, model.predict_images(), model.predict_songs(calibrated=False))
    candidates = [c for c in va_model.ABLATION if c[3] is not None and any(_matches(n, c[0]) for n in args.candidates)]
    for name, isrc, asrc, kernels, calibrate, tune in candidates:
        fitted = va_model.fit(isrc, asrc, roles, n_trials=args.trials, kernels=kernels, tune=tune, calibrate=calibrate)
        predictors[name] = _WithItems(name, fitted.predict_images(), fitted.predict_songs())
        print(f"{name}: fitted ({fitted.label()})", flush=True)
    for on in ("train", "train+val"):
        rp = baselines.ridge(ib.arrays[0], ab.arrays[0], ns.image_va, ns.song_va, fit_rows["image"][on],
                             fit_rows["song"][on])
        predictors[f"ridge ({on})"] = _WithItems(f"ridge ({on})", rp.image_va, rp.song_va)
    draws = metrics.draw_resamples(len(ev.query_images), len(ev.candidate_songs), args.boot, seed=0)
    summary, reps = {}, {}
    for name, pred in predictors.items():
        point, scored = metrics.score(pred, ev)
        summary[name] = {k: point.get(k) for k in SHOW}
        reps[name] = metrics.replicates(ev, [scored], draws)
        for m in ("nsg@10", "rev_nsg@10", "ndcg@10"):
            summary[name][f"{m} 95%"] = metrics.interval(reps[name][m])
    for name, base in [("va_model", "ridge (train)"), ("va_model", "ridge (train+val)")] + \
            [(c[0], "va_model") for c in candidates] + ([(UNCALIBRATED, "va_model")] if args.songs_uncalibrated else []):
        for m in ("nsg@10", "rev_nsg@10"):
            d = metrics.paired_difference(reps[name], reps[base], m)
            d["point"] = summary[name][m] - summary[base][m]
            summary[name][f"{m} - {base}"] = d
    out = {"model": model.describe(), "params": str(args.params or va_model.PARAMS_FILE),
           "n_test_images": int(len(ev.query_images)),
           "n_test_songs": int(len(ev.candidate_songs)), "n_boot": args.boot, "results": summary,
           "seconds": round(time.perf_counter() - t0, 1)}
    path = args.out or config.results_dir() / "va_final.json"
    write_json(path, json.loads(json.dumps(out, default=lambda o: o.item() if hasattr(o, "item") else str(o))))
    for name, s in summary.items():
        print(name)
        for k, v in s.items():
            print(f"  {k:40s} {v}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
