"""The paper's acquisition pipeline, song list in, catalog out (``imuse acquire``).

For each ``artist, title`` of a song list: valence and energy from Spotify (or the frozen
snapshot), audio from YouTube, the first chorus found, 30 s cut from it and written as
22050 Hz mono WAV. The output folder is laid out like a music catalog the rest of the
library reads::

    DIR/catalog.csv      song_id, artist, title, quadrant, valence, arousal, energy,
                         features_source, spotify_id, youtube_id, youtube_title,
                         chorus_start, chorus_method, duration, path (relative)
    DIR/audio/<song_id>.wav
    DIR/skipped.csv      songs of the last run that could not be acquired, and why
    DIR/spotify_cache.json

Runs are resumable: a song whose row is in the catalog and whose WAV exists is not fetched
again; skipped songs are retried on the next run. Songs are processed in batches of
``BATCH`` (Spotify, then YouTube song by song), and ``catalog.csv`` and ``skipped.csv`` are
rewritten (atomically) as the run goes, at most ``WRITE_EVERY`` seconds apart and on any
exit Python sees (Ctrl-C, SIGTERM), so an interrupted run keeps what it did; a SIGKILL
loses at most the last ``WRITE_EVERY`` seconds. A network failure (no connection, DNS)
stops the run at once with one line (:class:`~imuse_lib.errors.NetworkError`): every
other song would fail the same way. Song-list rows whose artist or title is overlong or
holds control characters are skipped (stage ``songlist``), not fetched.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, io
from ..errors import DataError, ImuseError, NetworkError, text_problem
from . import chorus, spotify, youtube

log = logging.getLogger("imuse.acquisition")

SONGLIST_COLUMNS = ("artist", "title")
CATALOG_COLUMNS = ["song_id", "artist", "title", "quadrant", "valence", "arousal", "energy",
                   "features_source", "spotify_id", "youtube_id", "youtube_title", "chorus_start",
                   "chorus_method", "duration", "path"]
SAMPLE_RATE = 22050
CLIP_SECONDS = 30.0
BATCH = 50  # songs per Spotify round (search + audio features) before their audio is fetched
WRITE_EVERY = 1.0  # seconds between rewrites of catalog.csv / skipped.csv
SKIPPED_COLUMNS = ["song_id", "artist", "title", "stage", "reason"]
MAX_REASON = 160  # characters of a skip reason (downloader messages can run to pages)
MAX_ECHO = 80  # characters of a refused artist or title echoed into skipped.csv and the terminal
OUTPUT_FILES = ("catalog.csv", "skipped.csv")  # what a run (re)writes in its folder, besides audio/


def _clean_field(text: str) -> str:
    """Whitespace controls (tab, newline) become spaces, other control characters go."""
    text = "".join(" " if c in "\t\n\r\v\f\x85\u2028\u2029" else c for c in str(text)
                   if unicodedata.category(c) not in ("Cc", "Cf") or c in "\t\n\r\v\f\x85")
    return re.sub(r"\s+", " ", text).strip()


def excerpt(text: str, limit: int = MAX_ECHO) -> str:
    """The start of a field too long to echo (a 50 MB title went whole into skipped.csv and the terminal)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text):,} characters)"


def short_reason(text: str) -> str:
    """One line of at most MAX_REASON characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def read_songlist(path: str | Path) -> pd.DataFrame:
    """``artist, title`` rows of a CSV song list (other columns are kept), blank and
    duplicate songs dropped. DataError names the file and the problem."""
    from ..media import check_file

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{path}: song list not found")
    try:
        check_file(path, "CSV song list")
    except ImuseError as exc:
        raise DataError(str(exc).replace("an CSV", "a CSV")) from None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV song list ({short_reason(exc)})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in SONGLIST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(frame.columns)}); "
                        "a song list needs columns artist,title")
    frame["artist"] = frame["artist"].map(_clean_field)
    frame["title"] = frame["title"].map(_clean_field)
    frame = frame[(frame.artist != "") & (frame.title != "")]
    if frame.empty:
        raise DataError(f"{path}: no songs (every row lacks an artist or a title)")
    frame.insert(0, "song_id", [song_id(a, t) for a, t in zip(frame.artist, frame.title)])
    return frame.drop_duplicates("song_id").reset_index(drop=True)


def song_id(artist: str, title: str) -> str:
    """A stable id from the normalised artist and title (same song, same id, across runs)."""
    return "S" + hashlib.sha1(spotify.song_key(artist, title).encode()).hexdigest()[:10]


def load_acquired(out: str | Path) -> pd.DataFrame:
    """The catalog of an acquisition folder, ``path`` made absolute (like ``data.load_catalog``)."""
    out = Path(out)
    path = out / "catalog.csv"
    if not path.exists():
        return pd.DataFrame(columns=CATALOG_COLUMNS)
    io.require_regular_file(path, "acquisition catalog")
    hint = "delete it (the clips in audio/ are kept and re-listed by the next run) or restore it"
    try:
        frame = pd.read_csv(path, dtype={"song_id": str, "spotify_id": str, "youtube_id": str},
                            keep_default_na=False, na_values={"valence": [""], "arousal": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: damaged acquisition catalog ({short_reason(exc)}); {hint}") from None
    missing = [c for c in CATALOG_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; not an `imuse acquire` catalog")
    audio = (out / "audio").resolve()
    for p in frame.path:  # a clip path outside DIR/audio (absolute, ../) is not one this command wrote
        if not isinstance(p, str) or audio not in (out / p).resolve().parents:
            raise DataError(f"{path}: clip path {excerpt(p)!r} is not inside {out / 'audio'}; {hint}")
    frame["path"] = [out / p for p in frame.path]
    return frame


@dataclass
class Report:
    requested: int = 0
    already_done: int = 0
    acquired: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    out: Path | None = None

    def summary(self) -> str:
        text = (f"{len(self.acquired)} song(s) acquired, {self.already_done} already done, "
                f"{len(self.skipped)} skipped of {self.requested}; catalog: {self.out / 'catalog.csv'}")
        if self.skipped:
            text += f"; skipped songs and reasons: {self.out / 'skipped.csv'}"
        return text


def acquire(songlist: str | Path | pd.DataFrame, out: str | Path, *, features: str = "spotify",
            client: spotify.SpotifyClient | None = None, source: youtube.AudioSource | None = None,
            decoder: youtube.Decoder = youtube.decode_audio, limit: int | None = None,
            clip_seconds: float = CLIP_SECONDS, sample_rate: int = SAMPLE_RATE, min_repeat: float = 8.0,
            progress: bool = True) -> Report:
    """Build or extend the catalog in ``out`` from a song list (see the module notes).

    ``features``: ``"spotify"`` (Web API; the snapshot answers if Spotify refuses audio
    features) or ``"snapshot"`` (the frozen snapshot only, no credentials needed).
    ``client``, ``source``, ``decoder``: the network and decoding, injectable.
    """
    from tqdm import tqdm

    if features not in ("spotify", "snapshot"):
        raise ImuseError(f"features must be 'spotify' or 'snapshot', not {features!r}")
    if not 1 <= int(sample_rate) <= 384_000 or not 0 < float(clip_seconds) <= 3600 or not 0 < float(min_repeat):
        raise ImuseError(f"sample rate {sample_rate}, clip length {clip_seconds} s, shortest repeat {min_repeat} s: "
                         "expected 1..384000 Hz, 0..3600 s and a positive repeat")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, not a folder; --out names the folder to write the catalog in")
    songs = songlist.copy() if isinstance(songlist, pd.DataFrame) else read_songlist(songlist)
    if "song_id" not in songs.columns:
        songs.insert(0, "song_id", [song_id(a, t) for a, t in zip(songs.artist, songs.title)])
    if limit is not None:
        songs = songs.head(limit)
    if features == "spotify" and client is None:
        client = spotify.SpotifyClient(cache_path=out / "spotify_cache.json")
        client.api  # fail now, with the credentials message, before anything is written
    catalog = load_acquired(out)  # a damaged catalog is refused before anything is written
    try:
        (out / "audio").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    report = Report(requested=len(songs), out=out)

    done = {sid for sid, p in zip(catalog.song_id, catalog.path) if Path(p).is_file()}
    catalog = catalog[catalog.song_id.isin(done)]
    rows = [dict(r) for r in catalog.to_dict("records")]
    for r in rows:
        r["path"] = Path(r["path"]).relative_to(out).as_posix()
    todo = songs[~songs.song_id.isin(done)].reset_index(drop=True)
    report.already_done = len(songs) - len(todo)
    writer = _Writer(out, rows, report)
    try:
        bad = [(i, text_problem(a) or text_problem(t)) for i, (a, t) in enumerate(zip(todo.artist, todo.title))]
        for i, problem in bad:
            if problem:
                r = todo.iloc[i]
                report.skipped.append({"song_id": r.song_id, "artist": excerpt(r.artist), "title": excerpt(r.title),
                                       "stage": "songlist", "reason": f"artist or title {problem}"})
        todo = todo[[not p for _, p in bad]].reset_index(drop=True)
        bar = tqdm(total=len(todo), desc="acquire", disable=not progress)
        source = source or (youtube.YtDlpSource() if len(todo) else None)
        for start in range(0, len(todo), BATCH):
            batch = spotify.song_features(todo.iloc[start:start + BATCH], client if features == "spotify" else None)
            for song in batch.itertuples(index=False):
                _acquire_one(song, out, features, source, decoder, clip_seconds, sample_rate, min_repeat,
                             rows, report)
                writer.maybe_write()
                bar.update(1)
        bar.close()
    finally:
        writer.write()  # also on Ctrl-C / SIGTERM / a network failure: keep what was done
    return report


def _acquire_one(song, out: Path, features: str, source, decoder, clip_seconds: float, sample_rate: int,
                 min_repeat: float, rows: list[dict], report: Report) -> None:
    def skip(stage, reason):
        report.skipped.append({"song_id": song.song_id, "artist": song.artist, "title": song.title,
                               "stage": stage, "reason": short_reason(reason)})
        log.info("skipped %s - %s: %s", song.artist, song.title, short_reason(reason))

    if not np.isfinite(song.valence):
        where = "the Spotify snapshot" if features == "snapshot" else "Spotify"
        skip("features", f"no valence/energy: not found in {where}")
        return
    try:
        video = source.search(youtube.search_query(song.artist, song.title))
        if video is None:
            skip("youtube", "no YouTube result")
            return
        with tempfile.TemporaryDirectory(prefix="imuse-acquire-") as tmp:
            y = decoder(source.download(video, Path(tmp)), sample_rate)
        found = chorus.detect_chorus(y, sample_rate, min_repeat=min_repeat, clip_length=clip_seconds)
        start = chorus.clip_start(len(y), sample_rate, found.start, clip_seconds) / sample_rate
        clip = chorus.cut_clip(y, sample_rate, start, clip_seconds)
        relpath = f"audio/{song.song_id}.wav"
        youtube.write_wav(out / relpath, clip, sample_rate)
    except NetworkError:
        raise  # every other song would fail the same way: stop now
    except ImuseError as exc:
        skip("audio", str(exc))
        return
    except Exception as exc:  # one odd file must not end a long run; it is reported
        skip("audio", f"{type(exc).__name__}: {exc}")
        return
    quadrant = str(data.quadrant_of(song.valence, song.arousal))
    rows.append({"song_id": song.song_id, "artist": song.artist, "title": song.title,
                 "quadrant": quadrant, "valence": song.valence, "arousal": song.arousal,
                 "energy": song.energy, "features_source": song.features_source,
                 "spotify_id": song.spotify_id, "youtube_id": video.id, "youtube_title": video.title,
                 "chorus_start": round(float(start), 3), "chorus_method": found.method,
                 "duration": round(len(clip) / sample_rate, 3), "path": relpath})
    report.acquired.append(song.song_id)


class _Writer:
    """Rewrites catalog.csv and skipped.csv when something changed, at most every WRITE_EVERY s."""

    def __init__(self, out: Path, rows: list[dict], report: Report):
        self.out, self.rows, self.report = out, rows, report
        self.last, self.written = 0.0, None

    def maybe_write(self) -> None:
        if time.monotonic() - self.last >= WRITE_EVERY:
            self.write()

    def write(self) -> None:
        state = (len(self.rows), len(self.report.skipped))
        if state != self.written:
            _write(self.out, self.rows, self.report)
            self.written = state
        self.last = time.monotonic()


def _write(out: Path, rows: list[dict], report: Report) -> None:
    io.write_csv(out / "catalog.csv", pd.DataFrame(rows, columns=CATALOG_COLUMNS))
    io.write_csv(out / "skipped.csv", pd.DataFrame(report.skipped, columns=SKIPPED_COLUMNS))
