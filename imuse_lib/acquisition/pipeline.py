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
again; skipped songs are retried on the next run. The catalog is rewritten (atomically)
after every song, so an interrupted run loses at most the song in hand.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, io
from ..errors import DataError, ImuseError
from . import chorus, spotify, youtube

log = logging.getLogger("imuse.acquisition")

SONGLIST_COLUMNS = ("artist", "title")
CATALOG_COLUMNS = ["song_id", "artist", "title", "quadrant", "valence", "arousal", "energy",
                   "features_source", "spotify_id", "youtube_id", "youtube_title", "chorus_start",
                   "chorus_method", "duration", "path"]
SAMPLE_RATE = 22050
CLIP_SECONDS = 30.0


def read_songlist(path: str | Path) -> pd.DataFrame:
    """``artist, title`` rows of a CSV song list (other columns are kept), blank and
    duplicate songs dropped. DataError names the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: song list not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV song list with columns artist,title")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV song list ({str(exc).strip()})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in SONGLIST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(frame.columns)}); "
                        "a song list needs columns artist,title")
    frame["artist"] = frame["artist"].str.strip()
    frame["title"] = frame["title"].str.strip()
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
    frame = pd.read_csv(path, dtype={"song_id": str, "spotify_id": str, "youtube_id": str},
                        keep_default_na=False, na_values={"valence": [""], "arousal": [""]})
    missing = [c for c in CATALOG_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; not an `imuse acquire` catalog")
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
    songs = songlist.copy() if isinstance(songlist, pd.DataFrame) else read_songlist(songlist)
    if "song_id" not in songs.columns:
        songs.insert(0, "song_id", [song_id(a, t) for a, t in zip(songs.artist, songs.title)])
    if limit is not None:
        songs = songs.head(limit)
    out = Path(out)
    if features == "spotify" and client is None:
        client = spotify.SpotifyClient(cache_path=out / "spotify_cache.json")
        client.api  # fail now, with the credentials message, before anything is written
    (out / "audio").mkdir(parents=True, exist_ok=True)
    report = Report(requested=len(songs), out=out)

    catalog = load_acquired(out)
    done = {sid for sid, p in zip(catalog.song_id, catalog.path) if Path(p).is_file()}
    catalog = catalog[catalog.song_id.isin(done)]
    rows = [dict(r) for r in catalog.to_dict("records")]
    for r in rows:
        r["path"] = Path(r["path"]).relative_to(out).as_posix()
    todo = songs[~songs.song_id.isin(done)].reset_index(drop=True)
    report.already_done = len(songs) - len(todo)
    if todo.empty:
        _write(out, rows, report)
        return report

    todo = spotify.song_features(todo, client if features == "spotify" else None, progress=progress)
    source = source or youtube.YtDlpSource()

    for song in tqdm(todo.itertuples(index=False), total=len(todo), desc="acquire", disable=not progress):
        def skip(stage, reason):
            report.skipped.append({"song_id": song.song_id, "artist": song.artist, "title": song.title,
                                   "stage": stage, "reason": reason})
            log.info("skipped %s - %s: %s", song.artist, song.title, reason)

        if not np.isfinite(song.valence):
            where = "the Spotify snapshot" if features == "snapshot" else "Spotify"
            skip("features", f"no valence/energy: not found in {where}")
            continue
        try:
            video = source.search(youtube.search_query(song.artist, song.title))
            if video is None:
                skip("youtube", "no YouTube result")
                continue
            with tempfile.TemporaryDirectory(prefix="imuse-acquire-") as tmp:
                y = decoder(source.download(video, Path(tmp)), sample_rate)
            found = chorus.detect_chorus(y, sample_rate, min_repeat=min_repeat, clip_length=clip_seconds)
            start = chorus.clip_start(len(y), sample_rate, found.start, clip_seconds) / sample_rate
            clip = chorus.cut_clip(y, sample_rate, start, clip_seconds)
            relpath = f"audio/{song.song_id}.wav"
            youtube.write_wav(out / relpath, clip, sample_rate)
        except ImuseError as exc:
            skip("audio", str(exc))
            continue
        except Exception as exc:  # one odd file must not end a long run; it is reported
            skip("audio", f"{type(exc).__name__}: {exc}")
            continue
        quadrant = str(data.quadrant_of(song.valence, song.arousal))
        rows.append({"song_id": song.song_id, "artist": song.artist, "title": song.title,
                     "quadrant": quadrant, "valence": song.valence, "arousal": song.arousal,
                     "energy": song.energy, "features_source": song.features_source,
                     "spotify_id": song.spotify_id, "youtube_id": video.id, "youtube_title": video.title,
                     "chorus_start": round(float(start), 3), "chorus_method": found.method,
                     "duration": round(len(clip) / sample_rate, 3), "path": relpath})
        report.acquired.append(song.song_id)
        _write(out, rows, report)
    _write(out, rows, report)
    return report


def _write(out: Path, rows: list[dict], report: Report) -> None:
    io.write_csv(out / "catalog.csv", pd.DataFrame(rows, columns=CATALOG_COLUMNS))
    io.write_csv(out / "skipped.csv", pd.DataFrame(report.skipped,
                                                   columns=["song_id", "artist", "title", "stage", "reason"]))
