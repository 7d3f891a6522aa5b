"""`imuse data ...` and `imuse pairs`: the inputs and the paper's pairs as CSV files."""

from __future__ import annotations

import sys

from .. import config, data, io, pairs
from . import add_follow_symlinks, bounded_int

SEED_RANGE = (0, 2**32 - 1)  # numpy's seed range


def register(sub) -> None:
    p_data = sub.add_parser("data", help="verify the input data and export it as CSV")
    dsub = p_data.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    p = dsub.add_parser("verify", help="check every registered input file's presence and sha256")
    p.add_argument("--asset", action="append", choices=list(data.ASSETS), help="only this asset (repeatable)")
    p.set_defaults(func=cmd_verify)

    for name, helptext in (("images", "the 900 OASIS images with VA on [0, 1]"),
                           ("catalog", "the 500 4Q clips with tag-derived VA on [0, 1]")):
        p = dsub.add_parser(name, help=f"write {helptext} as CSV")
        p.add_argument("--out", required=True, help="CSV file to write (- for standard output)")
        p.add_argument("--scale", choices=data.SCALES, default="fixed", help="VA normalisation (default: fixed)")
        add_follow_symlinks(p)
        p.set_defaults(func=cmd_images if name == "images" else cmd_catalog)

    p = dsub.add_parser("fetch", help="download an asset's files that have a direct upstream address")
    p.add_argument("asset", choices=[a.name for a in data.ASSETS.values() if a.urls])
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("pairs", help="form the image-song pairs (Eq. 1) and split them")
    p.add_argument("--seed", type=bounded_int(*SEED_RANGE, name="seed"), default=config.SEED,
                   help=f"seed of the random pairs and splits, {SEED_RANGE[0]}..{SEED_RANGE[1]} (default {config.SEED})")
    p.add_argument("--split", choices=pairs.SPLITS, default="paper")
    p.add_argument("--scale", choices=data.SCALES, default="fixed")
    p.add_argument("--out", required=True, help="CSV file to write (- for standard output)")
    add_follow_symlinks(p)
    p.set_defaults(func=cmd_pairs)


def cmd_verify(args) -> int:
    report = data.verify(args.asset, progress=sys.stderr.isatty())
    root = config.data_root()
    print(f"data root: {root if root else '(none found; set IMUSE_DATA)'}")
    for row in report.itertuples():
        status = "ok" if row.verified == row.files else "PROBLEM"
        print(f"{row.asset:<13} {row.verified:>4}/{row.files:<4} files verified  {status}")
        if row.problem:
            print(f"  first problem: {row.problem}")
    if (report.verified == report.files).all():
        images, catalog = data.load_images(), data.load_catalog()
        print(f"images: {len(images)}  songs: {len(catalog)}  "
              f"quadrant agreement of derived VA: {data.quadrant_agreement(catalog):.1%}")
        return 0
    return 1


def _wrote(out: str, what: str, detail: str = "") -> None:
    """The summary line: on stdout after a file, on stderr when the CSV itself went to stdout."""
    if io.is_stdout(out):
        print(f"wrote {what} to standard output{detail}", file=sys.stderr)
    else:
        print(f"wrote {what} to {out}{detail}")


def cmd_images(args) -> int:
    io.check_output(args.out, args.follow_symlinks, stdout=True)  # refuse a bad --out before the work
    frame = data.load_images(args.scale)[["image_id", "theme", "category", "valence", "arousal"]]
    io.write_csv(args.out, frame, args.follow_symlinks)
    _wrote(args.out, f"{len(frame)} images")
    return 0


def cmd_catalog(args) -> int:
    io.check_output(args.out, args.follow_symlinks, stdout=True)  # refuse a bad --out before the work
    frame = data.load_catalog(args.scale)[["song_id", "artist", "title", "quadrant", "valence", "arousal"]]
    io.write_csv(args.out, frame, args.follow_symlinks)
    _wrote(args.out, f"{len(frame)} songs")
    return 0


def cmd_fetch(args) -> int:
    for path in data.fetch(args.asset):
        print(path)
    return 0


def cmd_pairs(args) -> int:
    io.check_output(args.out, args.follow_symlinks, stdout=True)  # refuse a bad --out before the work
    frame = pairs.make_pairs(args.split, args.seed, args.scale)
    io.write_csv(args.out, frame[["image_id", "song_id", "similarity", "group", "split"]], args.follow_symlinks)
    counts = frame.split.value_counts().to_dict()
    _wrote(args.out, f"{len(frame)} pairs", f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0
