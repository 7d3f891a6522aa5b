"""Feature extraction benchmark and sanity checks of the frozen backbones.

    python benchmarks/bench_features.py                 # throughput, store timings, sanity checks
    python benchmarks/bench_features.py --recompute     # also time a full extraction from scratch
                                                        # (in a temporary store; takes long on a CPU)
    python benchmarks/bench_features.py --out results/bench_features.json

Prints, for this machine:
1. throughput of each backbone (items/s: decode + preprocess + forward of the evaluation
   view / crops; pretrained weights where they exist here, else random weights, labelled);
2. full extraction with the default views/crops: estimated from a from-scratch run over a
   sample of items (or measured in full with --recompute), the time recorded by the store
   entry's own run, and the time of a run served from the store (cache hit, measured now);
3. sanity checks: top-5 ImageNet classes of a few OASIS photographs for the offline image
   backbones, top-5 MagnaTagATune tags of a few 4Q clips for the taggers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from imuse_lib import config, data, features, io, media, models
from imuse_lib import feature_views

PHOTOS = ["Acorns 1", "Monkey 3", "Car 1", "Beach 1", "Dog 4", "Lake 1"]
STORE_BACKBONES = [("image", "mobilenet_v2"), ("image", "efficientnet_lite0"), ("audio", "musicnn"), ("audio", "fcn")]


def environment() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "load_average_1min": round(load[0], 2)}


def image_throughput(name: str, n: int) -> dict:
    weights = "pretrained" if name in models.available_image_backbones() else "random"
    bb = models.build_image_backbone(name, weights=weights)
    paths = list(data.load_images().path[:n])
    features.embed_images(bb, paths[:2])  # warm-up
    t = time.perf_counter()
    features.embed_images(bb, paths, batch_size=32)
    dt = time.perf_counter() - t
    return {"backbone": name, "weights": weights, "items": n, "seconds": dt, "items_per_s": n / dt,
            "views_per_s": n / dt}


def audio_throughput(name: str, n: int) -> dict:
    weights = "pretrained" if name in models.available_audio_backbones() else "random"
    ab = models.build_audio_backbone(name, weights=weights)
    paths = list(data.load_catalog().path[:n])
    features.embed_audio(ab, paths[:1])  # warm-up
    t = time.perf_counter()
    features.embed_audio(ab, paths)
    dt = time.perf_counter() - t
    return {"backbone": name, "weights": weights, "items": n, "seconds": dt, "items_per_s": n / dt,
            "views_per_s": n * ab.eval_crops / dt}


def _in_temp_store(fn):
    """Run ``fn`` with the feature store in a temporary folder (nothing served from the real one)."""
    old = os.environ.get("IMUSE_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMUSE_CACHE"] = tmp
        try:
            return fn()
        finally:
            if old is None:
                del os.environ["IMUSE_CACHE"]
            else:
                os.environ["IMUSE_CACHE"] = old


def store_timings(recompute: bool, sample_images: int, sample_clips: int) -> list[dict]:
    rows = []
    images, catalog = data.load_images(), data.load_catalog()
    for arm, name in STORE_BACKBONES:
        available = models.available_image_backbones() if arm == "image" else models.available_audio_backbones()
        if name not in available:
            continue
        run = features.image_features if arm == "image" else features.audio_features
        frame, n_sample = (images, sample_images) if arm == "image" else (catalog, sample_clips)
        sub = frame.head(n_sample)
        kwargs = {"images": sub} if arm == "image" else {"catalog": sub}
        # Extraction of a sample of items with the default views/crops, from scratch, extrapolated.
        t = time.perf_counter()
        _in_temp_store(lambda: run(name, progress=False, **kwargs))
        per_item = (time.perf_counter() - t) / n_sample
        full_now = None
        if recompute:
            t = time.perf_counter()
            _in_temp_store(lambda: run(name))
            full_now = time.perf_counter() - t
        else:
            run(name)  # computes the entry if the store lacks it
        t = time.perf_counter()
        hit = run(name, progress=False)
        cache = time.perf_counter() - t
        assert hit.from_cache
        n, k = hit.train.shape[:2]
        n_eval = 1 if arm == "image" else hit.meta["spec"]["eval_crops"]
        rows.append({"backbone": name, "items": n, "train_views": k, "eval_views": n_eval,
                     "forwards": n * (k + n_eval), "sample_items": n_sample,
                     "seconds_per_item": round(per_item, 3), "full_extraction_estimate_s": round(per_item * n, 1),
                     "full_extraction_measured_s": None if full_now is None else round(full_now, 1),
                     "store_entry_seconds": hit.meta.get("seconds"),
                     "store_entry_items_computed": hit.meta.get("items_computed_in_last_run"),
                     "store_entry_created": hit.meta.get("created"), "device": hit.meta.get("device"),
                     "cache_hit_s": round(cache, 2), "store_key": hit.meta["key"]})
    return rows


def sanity_images(top: int = 5) -> dict:
    out = {}
    root = config.data_root() / "oasis" / "images"
    for name in [n for n in ("mobilenet_v2", "efficientnet_lite0") if n in models.available_image_backbones()]:
        bb = models.build_image_backbone(name)
        x = torch.stack([bb.eval_transform(media.load_image(root / f"{p}.jpg")) for p in PHOTOS])
        with torch.inference_mode():
            probs = bb.head(bb.module(x)).softmax(-1)
        out[name] = {p: [(bb.labels[i], round(float(v), 3)) for v, i in zip(*row.topk(top))]
                     for p, row in zip(PHOTOS, probs)}
    return out


def sanity_audio(n: int = 4, top: int = 5, seed: int = config.SEED) -> dict:
    out = {}
    catalog = data.load_catalog()
    quadrants = sorted(catalog.quadrant.unique())[:n]
    picks = pd.concat([catalog[catalog.quadrant == q].sample(1, random_state=seed) for q in quadrants])
    for name in [n for n in ("musicnn", "fcn") if n in models.available_audio_backbones()]:
        ab = models.build_audio_backbone(name)
        res = {}
        for row in picks.itertuples():
            wave = media.fit_length(media.load_audio(row.path, ab.sample_rate), ab.input_length, ab.sample_rate, row.path)
            starts = feature_views.eval_starts(len(wave), ab.input_length, ab.eval_crops)
            x = torch.from_numpy(np.stack([wave[s:s + ab.input_length] for s in starts]))
            with torch.inference_mode():
                probs = ab.head(ab.module(x)).mean(0)
            res[f"{row.song_id} ({row.quadrant}; {row.artist} - {row.title}; {row.genres})"] = [
                (ab.labels[i], round(float(v), 3)) for v, i in zip(*probs.topk(top))]
        out[name] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="images for the throughput test")
    ap.add_argument("--clips", type=int, default=4, help="clips for the throughput test")
    ap.add_argument("--recompute", action="store_true", help="time full extraction from scratch (temporary store)")
    ap.add_argument("--sample-images", type=int, default=25, help="images extracted from scratch to estimate full time")
    ap.add_argument("--sample-clips", type=int, default=10, help="clips extracted from scratch to estimate full time")
    ap.add_argument("--skip-store", action="store_true", help="skip the full-extraction / cache-hit part")
    ap.add_argument("--backbones", nargs="*", default=None, help="limit the throughput test to these")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)

    results = {"environment": environment()}
    print("environment:", results["environment"])

    print("\n== throughput (decode + preprocess + forward, evaluation view / crops) ==")
    rows = []
    for name in models.IMAGE_BACKBONES + models.AUDIO_BACKBONES:
        if args.backbones and name not in args.backbones:
            continue
        row = (image_throughput(name, args.images) if name in models.IMAGE_BACKBONES
               else audio_throughput(name, args.clips))
        rows.append(row)
        unit = "views" if name in models.IMAGE_BACKBONES else "crops"
        print(f"{name:<20} {row['weights']:<10} {row['items_per_s']:7.2f} items/s  "
              f"({row['views_per_s']:6.2f} {unit}/s; {row['items']} items in {row['seconds']:.1f} s)", flush=True)
    results["throughput"] = rows

    if not args.skip_store:
        print("\n== full extraction with the defaults, and a second run served from the store ==")
        print(f"defaults: {features.DEFAULT_VIEWS} views + 1 eval view per image; crops per clip "
              f"{features.DEFAULT_CROPS} + fixed eval crops")
        results["store"] = store_timings(args.recompute, args.sample_images, args.sample_clips)
        for r in results["store"]:
            measured = (f"; measured now {r['full_extraction_measured_s']:.0f} s"
                        if r["full_extraction_measured_s"] is not None else "")
            print(f"{r['backbone']:<20} {r['items']} items x ({r['train_views']} + {r['eval_views']}) = "
                  f"{r['forwards']} forwards: full extraction ~{r['full_extraction_estimate_s']:.0f} s "
                  f"({r['seconds_per_item']:.2f} s/item over {r['sample_items']} items from scratch{measured}); "
                  f"store entry: {r['store_entry_seconds']} s for {r['store_entry_items_computed']} items computed "
                  f"in its last run ({r['store_entry_created']}, {r['device']}); "
                  f"cache hit {r['cache_hit_s']:.2f} s", flush=True)

    print("\n== sanity: top-5 ImageNet classes of OASIS photos ==")
    results["sanity_images"] = sanity_images()
    for name, res in results["sanity_images"].items():
        print(name)
        for photo, top in res.items():
            print(f"  {photo:<10} " + ", ".join(f"{c} {p:.2f}" for c, p in top))
    print("\n== sanity: top-5 MagnaTagATune tags of 4Q clips ==")
    results["sanity_audio"] = sanity_audio()
    for name, res in results["sanity_audio"].items():
        print(name)
        for clip, top in res.items():
            print(f"  {clip}\n      " + ", ".join(f"{t} {p:.2f}" for t, p in top))
    if args.out:
        io.write_json(Path(args.out), results)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
