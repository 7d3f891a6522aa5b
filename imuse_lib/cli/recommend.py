"""`imuse recommend`, `imuse recommend-images` and `imuse index ...`: the deployed recommender.

    imuse recommend IMAGE [--top N] [--json] [--model PATH] [--index PATH] [--threads N]
    imuse recommend-images AUDIO [--top N] [--json] [--model PATH] [--index PATH] [--threads N]
                           [--max-audio-seconds S]
    imuse index build [--model PATH] [--index PATH] [--drop-added] [--replace-broken]
    imuse index add AUDIO... [--title T]... [--artist A]... [--id ID]... [--model PATH] [--index PATH]
                    [--valence V --arousal A]... | [--tags "happy,calm"]... [--no-lookup] [--max-audio-seconds S]
    imuse index remove SONG_ID... [--model PATH] [--index PATH]
    imuse index list [--json] [--model PATH] [--index PATH]

``--json`` prints a JSON list, one object per result (best first). Songs carry
``rank, song_id, artist, title, similarity, valence, arousal`` (the VA the song was ranked
with), ``va_source`` (where that VA comes from: ``predicted`` from its audio, or the source of
its rated VA, e.g. ``allmusic-tags``, ``pmemo``, ``spotify``, ``user``), ``image_valence,
image_arousal`` (the image's predicted VA in that pair), the song's rated ``true_valence, true_arousal`` (null when it has
none) and its ``predicted_valence, predicted_arousal``; images carry ``rank, image_id, category,
similarity, valence, arousal, song_valence, song_arousal, true_valence, true_arousal, path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

from ..errors import ImuseError
from . import bounded_float, bounded_int, plain_text, printable
from .engine_args import add_engine_args, check_engine_args

MAX_THREADS = max(8, 4 * (os.cpu_count() or 1))  # more only thrashes (100000 once ran for minutes)
MAX_TOP = 100_000


def _threads_arg(p) -> None:
    p.add_argument("--threads", type=bounded_int(1, MAX_THREADS, "threads"), default=1, metavar="N",
                   help=f"CPU threads for the backbone, 1..{MAX_THREADS} (default 1: a single query gains little "
                        "from more, and loses much when the cores are busy; see benchmarks/bench_recommend.py)")


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run with ``n`` torch threads, then restore (in-process callers keep their setting)."""
    if not 1 <= n <= MAX_THREADS:
        raise ImuseError(f"--threads must be from 1 to {MAX_THREADS}, not {n}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _audio_limit_arg(p) -> None:
    from ..media import MAX_AUDIO_SECONDS

    p.add_argument("--max-audio-seconds", type=bounded_float(1.0, 24 * 3600.0, "seconds"), default=None,
                   metavar="S", help=f"decode audio up to S seconds long (default {MAX_AUDIO_SECONDS:g}; longer "
                                     "files are refused before decoding: they would take much memory)")


def _apply_audio_limit(args) -> None:
    if getattr(args, "max_audio_seconds", None) is not None:
        from .. import media

        media.MAX_AUDIO_SECONDS = args.max_audio_seconds


def _model_index_args(p, index_help: str = "song index file (default: the model's index in the cache)") -> None:
    p.add_argument("--model", metavar="PATH", help="trained model (default: the one `imuse train` wrote)")
    p.add_argument("--index", metavar="PATH", help=index_help)


def register(sub) -> None:
    p = sub.add_parser("recommend", help="songs for an image (top N by predicted similarity)",
                       description="Rank the indexed songs for IMAGE with the trained IMUSE model.")
    p.add_argument("image", metavar="IMAGE", help="image file (any common format)")
    p.add_argument("--top", type=bounded_int(1, MAX_TOP, "top"), default=10, metavar="N",
                   help=f"how many songs, 1..{MAX_TOP} (default 10)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    _model_index_args(p)
    _threads_arg(p)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("recommend-images", help="OASIS images for a song (the reverse direction)",
                       description="Rank the 900 OASIS images of the index for the audio clip AUDIO.")
    p.add_argument("audio", metavar="AUDIO", help="audio file (MP3, WAV, FLAC, ...)")
    _audio_limit_arg(p)
    p.add_argument("--top", type=bounded_int(1, MAX_TOP, "top"), default=10, metavar="N",
                   help=f"how many images, 1..{MAX_TOP} (default 10)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    _model_index_args(p)
    _threads_arg(p)
    p.set_defaults(func=cmd_recommend_images)

    p = sub.add_parser("index", help="build and edit the song index",
                       description="The song index: music vectors and VA of every song (rated where known, else predicted), "
                                   "stored once (SQLite) for the model that made them.")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True

    q = isub.add_parser("build", help="(re)build the index over the 500-clip catalog")
    _model_index_args(q, "where to write the index (default: the model's index in the cache)")
    q.add_argument("--drop-added", action="store_true",
                   help="drop the songs added to the existing index with `imuse index add` (default: keep "
                        "them, re-embedded from their audio when the model changed)")
    q.add_argument("--replace-broken", action="store_true",
                   help="replace a file at --index that is not a sound song index (damaged, truncated, another "
                        "schema, not SQLite at all); default: refuse it. A sound index is rebuilt in place either way")
    q.set_defaults(func=cmd_index_build)

    q = isub.add_parser("add", help="add songs from audio files (nothing else is recomputed)")
    q.add_argument("audio", nargs="+", metavar="AUDIO", help="audio file(s)")
    _audio_limit_arg(q)
    q.add_argument("--title", action="append", type=plain_text("title"), metavar="T",
                   help="title (once per file; default: file name)")
    q.add_argument("--artist", action="append", type=plain_text("artist"), metavar="A",
                   help="artist (once per file); with --title, the song's rated VA is looked up (see --no-lookup)")
    q.add_argument("--id", action="append", type=plain_text("id"), dest="song_id", metavar="ID",
                   help="song id (once per file; default: file name without extension)")
    q.add_argument("--valence", action="append", type=bounded_float(0.0, 1.0, "valence"), metavar="V",
                   help="the song's rated valence on the index's [0, 1] scale (0 negative, 1 positive), with "
                        "--arousal; once per file. The recommender ranks the song with it instead of the VA "
                        "predicted from its audio (both are stored)")
    q.add_argument("--arousal", action="append", type=bounded_float(0.0, 1.0, "arousal"), metavar="A",
                   help="the song's rated arousal on [0, 1] (0 calm, 1 aroused), with --valence; once per file")
    q.add_argument("--tags", action="append", type=plain_text("tags"), metavar="TAGS",
                   help='mood tags, comma-separated (e.g. "happy,calm"): the rated VA is their mean Warriner '
                        "norms, as the catalog's VA is made from its AllMusic tags; once per file")
    q.add_argument("--no-lookup", action="store_true",
                   help="do not look the songs up by --artist and --title in PMEmo's listener ratings and the "
                        "Spotify snapshot (default: a song found there is ranked with that rated VA; one not "
                        "found, or given --valence/--arousal or --tags, is not affected)")
    _model_index_args(q)
    add_engine_args(q, "embedding the songs")
    q.set_defaults(func=cmd_index_add)

    q = isub.add_parser("remove", help="remove songs by id")
    q.add_argument("song_ids", nargs="+", type=plain_text("song id"), metavar="SONG_ID")
    _model_index_args(q)
    q.set_defaults(func=cmd_index_remove)

    q = isub.add_parser("list", help="list the songs of the index")
    q.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    _model_index_args(q)
    q.set_defaults(func=cmd_index_list)


# --------------------------------------------------------------------------- output


def _clip(text, width: int) -> str:
    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "~"


def _num(x) -> str:
    return "   -  " if x is None or x != x else f"{x:6.3f}"


def print_songs(rec, out=None) -> None:
    from ..index.files import va_source_label

    out = out or sys.stdout
    print(f"Songs for {rec.query}", file=out)
    print(f"model: {rec.model_label}", file=out)
    how = "" if rec.model_label.startswith("factorised") else " (mean over the indexed songs; joint model)"
    print(f"image predicted VA: valence {rec.query_va[0]:.3f}, arousal {rec.query_va[1]:.3f}{how}", file=out)
    print(f"{'rank':>4}  {'artist':<24} {'title':<32} {'similarity':>10} {'valence':>7} {'arousal':>7}  VA", file=out)
    for r in rec.items.itertuples():
        print(f"{r.rank:>4}  {_clip(r.artist, 24):<24} {_clip(r.title, 32):<32} {r.similarity:>10.4f} "
              f"{r.valence:>7.3f} {r.arousal:>7.3f}  {va_source_label(r.va_source)}", file=out)


def print_images(rec, out=None) -> None:
    out = out or sys.stdout
    print(f"OASIS images for {rec.query}", file=out)
    print(f"model: {rec.model_label}", file=out)
    how = "" if rec.model_label.startswith("factorised") else " (mean over the indexed images; joint model)"
    print(f"song predicted VA: valence {rec.query_va[0]:.3f}, arousal {rec.query_va[1]:.3f}{how}", file=out)
    print(f"{'rank':>4}  {'image':<24} {'category':<10} {'similarity':>10} {'valence':>7} {'arousal':>7}", file=out)
    for r in rec.items.itertuples():
        print(f"{r.rank:>4}  {_clip(r.image_id, 24):<24} {_clip(r.category, 10):<10} {r.similarity:>10.4f} "
              f"{r.valence:>7.3f} {r.arousal:>7.3f}", file=out)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------- commands


def _index_path(args, model=None) -> Path:
    from ..deployed import load_deployed
    from ..index.reading import default_index_path

    if args.index:
        return Path(args.index)
    return default_index_path(model or load_deployed(args.model))


def _note_top(top: int, rec, what: str) -> None:
    if len(rec.items) < top:  # said, not silently capped
        print(f"imuse: note: --top {top}, but the index holds {len(rec.items)} {what}; showing all of them",
              file=sys.stderr)


def cmd_recommend(args) -> int:
    from .. import recommend

    with _torch_threads(args.threads):
        rec = recommend.Recommender.load(args.model, args.index).recommend(args.image, args.top)
    _note_top(args.top, rec, "songs")
    _print_json(rec.to_records()) if args.json else print_songs(rec)
    return 0


def cmd_recommend_images(args) -> int:
    from .. import recommend

    _apply_audio_limit(args)
    with _torch_threads(args.threads):
        rec = recommend.Recommender.load(args.model, args.index).recommend_images(args.audio, args.top)
    _note_top(args.top, rec, "images")
    _print_json(rec.to_records()) if args.json else print_images(rec)
    return 0


def cmd_index_build(args) -> int:
    import time

    from ..deployed import load_deployed
    from ..index.building import build_index
    from ..index.files import read_meta
    from ..index.reading import open_index

    model = load_deployed(args.model)
    start = time.perf_counter()
    path = build_index(model, args.index, keep_added=not args.drop_added, replace_broken=args.replace_broken)
    meta = read_meta(path)
    n = open_index(path)
    kept = int(meta.get("added_kept", 0))
    if kept:
        print(f"kept {kept} song(s) added with `imuse index add` (--drop-added drops them)")
    print(f"song index: {path}\n  {len(n)} songs, {len(n.images)} images, built in "
          f"{time.perf_counter() - start:.1f} s\n  model: {meta['model_label']}\n"
          f"  fingerprint: {meta['fingerprint'][:16]}")
    return 0


def cmd_index_add(args) -> int:
    from ..deployed import load_deployed
    from ..index.building import add_songs
    from ..index.files import PREDICTED, va_source_label

    check_engine_args(args)
    _apply_audio_limit(args)
    rated_va, va_source = _rated_args(args)
    if rated_va is not None and args.engine == "ray":
        raise ImuseError("--valence/--arousal and --tags are not taken with --engine ray; add rated songs "
                         "with the local engine")
    found, looked_in = None, None  # the ratings found by artist and title, where no rating was given
    if rated_va is None and _lookup_wanted(args):
        if args.engine == "ray":
            warnings.warn("rated VA is not looked up with --engine ray (add the songs with the local engine for "
                          "PMEmo / Spotify ratings); their VA is predicted from the audio")
        else:
            found, looked_in = _looked_up(args)
        if found is not None:
            rated_va = [None if r is None else (r.valence, r.arousal) for r in found]
            va_source = [PREDICTED if r is None else r.source for r in found]
    model = load_deployed(args.model)
    path = _index_path(args, model)
    if args.engine == "ray":
        return _index_add_on_ray(args, model, path)
    ids = add_songs(path, model, args.audio, titles=args.title, artists=args.artist, song_ids=args.song_id,
                    rated_va=rated_va, va_source=va_source)
    if found is None:
        print(f"added {len(ids)} song(s) to {path}: {', '.join(ids)} (VA: "
              f"{va_source_label(va_source or PREDICTED)})")
    else:  # said per song: where its VA came from, and which rated song it was matched to
        said = [f"{i} (VA: {va_source_label(r.source)}, matched {r.match})" if r else
                f"{i} (VA: {va_source_label(PREDICTED)}; not in {looked_in})"
                for i, r in zip(ids, found)]
        print(f"added {len(ids)} song(s) to {path}: {', '.join(said)}")
    return 0


def _lookup_wanted(args) -> bool:
    """A song's rating is looked up by the artist and title the user gave, one of each per file."""
    n = len(args.audio)
    return not args.no_lookup and bool(args.title and args.artist) and len(args.title) == len(args.artist) == n


def _looked_up(args) -> tuple[list, str] | tuple[None, None]:
    """Per file, its rating in PMEmo or the Spotify snapshot (:func:`data.find_rating`) or None,
    and where it was looked for. A rating file that cannot be read is said in one warning and
    skipped: ratings are optional here ((None, None) when none can be read)."""
    from .. import data

    tables, problems = data.rating_tables()
    if problems:
        missing = [data.RATING_SOURCE_NAMES[s] for s in data.RATING_SOURCES if s not in tables]
        warnings.warn(f"rated VA not looked up in {' or '.join(missing)}: {'; '.join(problems)}")
    if not tables:
        return None, None
    looked_in = " or ".join(data.RATING_SOURCE_NAMES[s] for s in data.RATING_SOURCES if s in tables)
    return [data.find_rating(a, t, tables) for a, t in zip(args.artist, args.title)], looked_in


def _rated_args(args) -> tuple[list | None, str | None]:
    """(rated (valence, arousal) per file, its VA source) from --valence/--arousal or --tags;
    (None, None) without them (the songs' VA is then predicted from their audio)."""
    n = len(args.audio)
    given = [name for name in ("valence", "arousal") if getattr(args, name)]
    if args.tags and given:
        raise ImuseError("give either --valence/--arousal or --tags, not both")
    if len(given) == 1:
        missing = ({"valence", "arousal"} - set(given)).pop()
        raise ImuseError(f"--{given[0]} needs --{missing} too (a rated VA has both)")
    if given:
        if len(args.valence) != len(args.arousal):
            raise ImuseError(f"{len(args.valence)} --valence but {len(args.arousal)} --arousal value(s); give them in pairs")
        if len(args.valence) != n:
            raise ImuseError(f"{len(args.valence)} --valence/--arousal pair(s) for {n} audio file(s); give one per file")
        return list(zip(args.valence, args.arousal)), "user"
    if args.tags:
        from .. import data

        if len(args.tags) != n:
            raise ImuseError(f"{len(args.tags)} --tags value(s) for {n} audio file(s); give one per file")
        lexicon = data.load_lexicon()
        return [data.lexicon_va(t, lexicon) for t in args.tags], "user-tags"
    return None, None


def _index_add_on_ray(args, model, path) -> int:
    """Many files: embedded by a Ray actor pool, committed in batches; bad files skipped and
    listed; a rerun after an interruption embeds only the songs not yet added."""
    from .. import engine, parallel

    with parallel.session(args.ray_address):
        rep = engine.index_add(path, model, args.audio, titles=args.title, artists=args.artist,
                               song_ids=args.song_id, workers=args.workers)
    ids = rep.result
    print(f"added {len(ids)} song(s) to {path}{': ' + ', '.join(ids[:20]) if ids else ''}"
          f"{' ...' if len(ids) > 20 else ''} (engine ray, {rep.seconds:.1f} s; {rep.reused} already there)")
    for line in rep.skipped_lines():
        print(f"  skipped: {line}", file=sys.stderr)
    if rep.skipped:
        raise ImuseError(f"{len(rep.skipped)} file(s) could not be decoded and were skipped (listed above); "
                         f"the others are in the index")
    return 0


def cmd_index_remove(args) -> int:
    from ..index.editing import remove_songs

    path = _index_path(args)
    ids = remove_songs(path, args.song_ids)
    print(f"removed {len(ids)} song(s) from {path}: {', '.join(ids)}")
    return 0


def cmd_index_list(args) -> int:
    from ..index.integrity import check_integrity
    from ..index.reading import open_index

    path = _index_path(args)
    problems = check_integrity(path)
    if problems:
        raise ImuseError(f"{path}: integrity check FAILED: {'; '.join(problems[:3])}; rebuild it with "
                         f"`imuse index build --replace-broken --index {path}` (add the added songs again if "
                         f"it cannot read them)")
    index = open_index(path)
    cols = ["song_id", "artist", "title", "valence", "arousal", "true_valence", "true_arousal", "va_source", "added"]
    if args.json:
        from ..recommend import Recommendation

        _print_json(Recommendation("", (0, 0), index.songs[cols], "", "songs").to_records())
        return 0
    meta = index.meta
    print(f"song index: {index.path}\n  model: {meta.get('model_label')}\n  fingerprint: "
          f"{meta.get('fingerprint', '')[:16]}, created {meta.get('created')}"
          f"{', modified ' + meta['modified'] if meta.get('modified') else ''}\n"
          f"  {len(index)} songs, {len(index.images)} images\n"
          f"  integrity: ok (SQLite integrity_check; {len(index) + len(index.images)} stored vectors checked)")
    print("  valence, arousal: predicted from the audio; rated: the VA the recommender ranks with, where known")
    print(f"{'song_id':<16} {'artist':<24} {'title':<32} {'valence':>7} {'arousal':>7}  {'rated':>13}  VA source")
    for r in index.songs.itertuples():
        rated = "" if r.va_source == "predicted" else f"{r.true_valence:.3f}, {r.true_arousal:.3f}"
        print(f"{_clip(r.song_id, 16):<16} {_clip(r.artist, 24):<24} {_clip(r.title, 32):<32} "
              f"{r.valence:>7.3f} {r.arousal:>7.3f}  {rated:>13}  {r.va_source}")
    return 0
