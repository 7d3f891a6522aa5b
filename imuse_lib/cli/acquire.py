"""``imuse acquire SONGLIST.csv --out DIR``: the paper's acquisition pipeline (section 3.1)."""

from __future__ import annotations

import logging
import sys

from . import bounded_float, bounded_int


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
    p.add_argument("--limit", type=bounded_int(1, 10_000_000, "limit"), default=None, metavar="N",
                   help="only the first N songs of the list")
    p.add_argument("--features", choices=("spotify", "snapshot"), default="spotify",
                   help="where valence/energy come from: the Spotify Web API (default) or only the frozen "
                        "snapshot in the data mirror (no credentials needed)")
    p.add_argument("--clip-seconds", type=bounded_float(1.0, 600.0, "seconds"), default=30.0,
                   help="clip length, 1..600 s (default 30, as the paper)")
    p.add_argument("--sample-rate", type=bounded_int(8000, 192000, "sample rate"), default=22050,
                   help="clip sample rate, 8000..192000 Hz (default 22050)")
    p.add_argument("--min-repeat", type=bounded_float(1.0, 120.0, "seconds"), default=8.0,
                   help="shortest repeated section (s) the chorus detector counts, 1..120 (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import io
    from ..acquisition import pipeline
    from ..errors import printable

    io.check_output_folder(args.out, inputs=[args.songlist], writes=pipeline.OUTPUT_FILES)
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
    for item in report.skipped:  # one line per song that failed
        print(f"  skipped: {printable(item['artist'])} - {printable(item['title'])} "
              f"({item['stage']}: {pipeline.short_reason(printable(item['reason']))})")
    if report.requested and not report.acquired and not report.already_done:
        print("imuse: error: no song could be acquired (reasons above and in skipped.csv)", file=sys.stderr)
        return 1
    return 0
