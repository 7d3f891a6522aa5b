"""``imuse acquire SONGLIST.csv --out DIR``: the paper's acquisition pipeline (section 3.1)."""

from __future__ import annotations

import logging
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "acquire",
        help="build a music catalog from a song list: Spotify valence/energy, YouTube audio, chorus clips",
        description="For each artist,title of SONGLIST.csv: valence and energy from Spotify (credentials "
                    "from SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET; the frozen snapshot answers when "
                    "Spotify refuses audio features), audio from YouTube (yt-dlp), 30 s from the first "
                    "chorus at 22050 Hz mono. Writes DIR/catalog.csv and DIR/audio/<song_id>.wav; "
                    "resumable; songs it cannot acquire are listed in DIR/skipped.csv. Needs the network.",
    )
    p.add_argument("songlist", metavar="SONGLIST.csv", help="CSV with columns artist,title")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N songs of the list")
    p.add_argument("--features", choices=("spotify", "snapshot"), default="spotify",
                   help="where valence/energy come from: the Spotify Web API (default) or only the frozen "
                        "snapshot in the data mirror (no credentials needed)")
    p.add_argument("--clip-seconds", type=float, default=30.0, help="clip length (default 30, as the paper)")
    p.add_argument("--sample-rate", type=int, default=22050, help="clip sample rate (default 22050)")
    p.add_argument("--min-repeat", type=float, default=8.0,
                   help="shortest repeated section (s) the chorus detector counts (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..acquisition import pipeline
    from ..errors import ImuseError

    if args.limit is not None and args.limit < 1:
        raise ImuseError(f"--limit must be at least 1, not {args.limit}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("imuse: %(message)s"))
    logger = logging.getLogger("imuse.acquisition")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        report = pipeline.acquire(args.songlist, args.out, features=args.features, limit=args.limit,
                                  clip_seconds=args.clip_seconds, sample_rate=args.sample_rate,
                                  min_repeat=args.min_repeat, progress=not args.no_progress)
    finally:
        logger.removeHandler(handler)
    print(report.summary())
    for item in report.skipped[:10]:
        print(f"  skipped: {item['artist']} - {item['title']} ({item['stage']}: {item['reason']})")
    if len(report.skipped) > 10:
        print(f"  ... and {len(report.skipped) - 10} more")
    return 0
