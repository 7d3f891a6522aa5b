"""`imuse features`: compute (or load from the store) the frozen backbone features."""

from __future__ import annotations

import sys
import time

from .. import config
from . import bounded_int
from .engine_args import add_engine_args, check_engine_args

IMAGE_CHOICES = ("mobilenet_v2", "mobilenet_v3_large", "resnet18", "efficientnet_b4", "efficientnet_lite0")
AUDIO_CHOICES = ("samplecnn", "musicnn", "fcn")


def register(sub) -> None:
    p = sub.add_parser(
        "features",
        help="compute the frozen image/audio features once into the feature store",
        description="Compute the frozen backbone features of all 900 images and/or 500 clips into the "
                    "feature store (cache_dir()/features), or load them when already there.",
    )
    p.add_argument("--image-backbone", choices=IMAGE_CHOICES, help="image arm (torchvision name)")
    p.add_argument("--audio-backbone", choices=AUDIO_CHOICES, help="audio arm")
    p.add_argument("--views", type=bounded_int(0, 100, "views"), default=None,
                   help="random training views per image, 0..100 (default 2)")
    p.add_argument("--crops", type=bounded_int(0, 100, "crops"), default=None,
                   help="random training crops per clip (default: samplecnn 2, musicnn 2, fcn 1)")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1, "seed"), default=config.SEED, help=f"seed of the random views/crops (default {config.SEED})")
    p.add_argument("--random-weights", action="store_true",
                   help="use seeded RANDOM weights instead of pretrained ones (recorded as random)")
    p.add_argument("--download-weights", action="store_true",
                   help="let torchvision download missing ImageNet weights (needs internet)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--list", action="store_true", help="list available pretrained backbones and stored feature sets")
    add_engine_args(p, "computing the features")
    p.set_defaults(func=cmd_features)


def _report(fs, arm: str, total: float) -> None:
    n_train = fs.train.shape[1]
    what = ("view" if arm == "image" else "crop") + ("s" if n_train != 1 else "")
    how = ("loaded from the store (cache hit)" if fs.from_cache
           else f"computed {fs.computed_items} item(s), {len(fs.ids) - fs.computed_items} reused from an earlier run")
    print(f"  {fs.meta['description']}")
    print(f"  {len(fs.ids)} items x ({n_train} random {what} + eval) -> train {tuple(fs.train.shape)}, "
          f"eval {tuple(fs.eval.shape)}")
    print(f"  {how}: {fs.seconds:.1f} s ({total:.1f} s including loading the backbone)")
    print(f"  store: {fs.path}")


def cmd_features(args) -> int:
    from .. import features, models
    from ..errors import ImuseError

    if args.list:
        print("pretrained image backbones here:", ", ".join(models.available_image_backbones()) or "(none)")
        print("pretrained audio backbones here:", ", ".join(models.available_audio_backbones()) or "(none)")
        rows = features.list_store()
        print(f"feature store {features.store_root()}: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}")
        for r in rows:
            print(f"  {r['key']:<36} {r['weights']:<10} n_train={r['n_train']} items={r['items']} dim={r['dim']} "
                  f"{r['MB']} MB")
        if not (args.image_backbone or args.audio_backbone):
            return 0
    if not (args.image_backbone or args.audio_backbone):
        raise ImuseError("features: give --image-backbone and/or --audio-backbone (or --list)")
    check_engine_args(args)
    weights = "random" if args.random_weights else "pretrained"
    progress = sys.stderr.isatty()
    if args.engine == "ray":
        return _features_on_ray(args, weights)
    if args.image_backbone:
        t0 = time.perf_counter()
        bb = models.build_image_backbone(args.image_backbone, weights=weights, seed=args.seed,
                                         download=args.download_weights)
        views = features.DEFAULT_VIEWS if args.views is None else args.views
        print(f"image features: {args.image_backbone}")
        fs = features.image_features(bb, views=views, seed=args.seed, progress=progress, device=args.device)
        _report(fs, "image", time.perf_counter() - t0)
    if args.audio_backbone:
        t0 = time.perf_counter()
        ab = models.build_audio_backbone(args.audio_backbone, weights=weights, seed=args.seed)
        print(f"audio features: {args.audio_backbone}")
        fs = features.audio_features(ab, crops=args.crops, seed=args.seed, progress=progress, device=args.device)
        _report(fs, "audio", time.perf_counter() - t0)
    return 0


def _features_on_ray(args, weights: str) -> int:
    """The same store entries, computed by a Ray actor pool (imuse_lib.engine)."""
    from .. import engine, features, models, parallel
    from ..errors import ImuseError

    jobs = []
    if args.image_backbone:
        bb = models.build_image_backbone(args.image_backbone, weights=weights, seed=args.seed,
                                         download=args.download_weights)
        jobs.append(("image", bb, features.DEFAULT_VIEWS if args.views is None else args.views))
    if args.audio_backbone:
        ab = models.build_audio_backbone(args.audio_backbone, weights=weights, seed=args.seed)
        jobs.append(("audio", ab, features.DEFAULT_CROPS.get(ab.name, 4) if args.crops is None else args.crops))
    skipped = []
    with parallel.session(args.ray_address):
        for arm, bb, n_train in jobs:
            t0 = time.perf_counter()
            print(f"{arm} features: {bb.name} (engine ray, {args.workers} workers)")
            rep = engine.feature_store(bb, arm, n_train, args.seed, workers=args.workers)
            if rep.result is not None:
                _report(rep.result, arm, time.perf_counter() - t0)
            print(f"  ray: {rep.computed} item(s) computed, {rep.reused} reused from an earlier run, "
                  f"{len(rep.skipped)} skipped, {rep.seconds:.1f} s")
            skipped += rep.skipped_lines()
    if skipped:
        for line in skipped:
            print(f"  skipped: {line}", file=sys.stderr)
        raise ImuseError(f"{len(skipped)} file(s) could not be decoded (listed above); the other items are "
                         f"stored: fix or replace those files and run the command again to finish the entry")
    return 0
