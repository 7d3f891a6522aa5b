"""Spotify valence and energy for a song list: the paper's music labels (section 3.1).

The network sits behind :class:`SpotifyAPI`, the two methods of ``spotipy.Spotify`` we
use, so tests pass a fake. :class:`SpotifyClient` adds what the paper's pipeline needs
around them: search by artist and title, audio features in batches of 100, retry with
back-off on rate limits (HTTP 429, honouring ``Retry-After``) and on server errors, and a
JSON cache so that a rerun asks Spotify nothing it already answered.

Spotify stopped serving ``audio-features`` to applications registered after 27 November
2024 (HTTP 403). :func:`song_features` recognises that answer, says so once, and takes
valence and energy from the frozen snapshot in the data mirror (``data.load_spotify()``),
matched by normalised artist and title.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Protocol

import pandas as pd

from .. import data, io
from ..errors import CredentialsError, ImuseError, NetworkError

log = logging.getLogger("imuse.acquisition")

BATCH = 100  # Spotify's limit of ids per audio-features call
ENV_ID, ENV_SECRET = "SPOTIPY_CLIENT_ID", "SPOTIPY_CLIENT_SECRET"

FORBIDDEN_MESSAGE = (
    "Spotify answered HTTP 403 to audio-features: since 27 November 2024 Spotify no longer "
    "serves audio features (valence, energy) to newly registered applications. Valence and "
    "energy are taken from the frozen snapshot in the data mirror "
    "(spotify/top_hits_2000_2019.csv) instead, matched by artist and title; songs not in it "
    "get none."
)


class SpotifyAPI(Protocol):
    """What we call on ``spotipy.Spotify`` (which satisfies this protocol as it is)."""

    def search(self, q: str, limit: int = 10, offset: int = 0, type: str = "track",
               market: str | None = None) -> dict: ...

    def audio_features(self, tracks: list[str] = ...) -> list[dict | None]: ...


class AudioFeaturesForbidden(ImuseError):
    """Spotify refuses audio-features to this application (HTTP 403)."""


def connect(client_id: str | None = None, client_secret: str | None = None) -> SpotifyAPI:
    """A ``spotipy.Spotify`` on the client-credentials flow, credentials from the arguments or
    the standard SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET environment variables."""
    client_id = client_id or os.environ.get(ENV_ID)
    client_secret = client_secret or os.environ.get(ENV_SECRET)
    missing = [name for name, value in ((ENV_ID, client_id), (ENV_SECRET, client_secret)) if not value]
    if missing:
        raise CredentialsError(
            f"Spotify credentials missing: set {' and '.join(missing)} (create an app at "
            "https://developer.spotify.com/dashboard and copy its client id and secret), "
            "or use the frozen snapshot instead (`imuse acquire ... --features snapshot`)"
        )
    import spotipy
    from spotipy.oauth2 import SpotifyClientCredentials

    auth = SpotifyClientCredentials(client_id=client_id, client_secret=client_secret)
    # 429 is left to SpotifyClient (so Retry-After is honoured and visible); spotipy's own
    # urllib3 retries handle connection errors and 5xx.
    return spotipy.Spotify(auth_manager=auth, requests_timeout=15, retries=3,
                           status_forcelist=(500, 502, 503, 504), backoff_factor=0.5)


def _http_status(exc: Exception) -> int | None:
    return getattr(exc, "http_status", None)


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except (TypeError, ValueError):
                return None
    return None


def _is_auth_error(exc: Exception) -> bool:
    return type(exc).__name__ == "SpotifyOauthError" or _http_status(exc) == 401


class SpotifyClient:
    """Search and audio features with batching, retry/back-off and a JSON cache.

    ``api``: anything with :class:`SpotifyAPI`'s methods (``connect()`` by default, called
    only when a request is actually needed, so a full cache works without credentials).
    ``cache_path``: JSON file of every answer (written atomically after each request).
    ``sleep``: injected so tests do not wait.
    """

    def __init__(self, api: SpotifyAPI | None = None, cache_path: str | os.PathLike | None = None,
                 max_retries: int = 5, backoff: float = 1.0, max_wait: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep):
        self._api = api
        self.cache_path = Path(cache_path) if cache_path else None
        self.max_retries, self.backoff, self.max_wait = max_retries, backoff, max_wait
        self.sleep = sleep
        self.waits: list[float] = []  # every back-off taken, for reporting and tests
        self.cache: dict[str, dict] = {"search": {}, "features": {}}
        if self.cache_path and self.cache_path.exists():
            try:
                loaded = io.read_json(self.cache_path)
                self.cache = {"search": dict(loaded.get("search", {})),
                              "features": dict(loaded.get("features", {}))}
            except (ValueError, AttributeError):
                log.warning("%s: unreadable Spotify cache, starting afresh", self.cache_path)

    @property
    def api(self) -> SpotifyAPI:
        if self._api is None:
            self._api = connect()
        return self._api

    def _save(self) -> None:
        if self.cache_path:
            io.write_json(self.cache_path, self.cache)

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        """Call ``fn``, retrying rate limits (429, waiting Retry-After when given) and server
        errors with exponential back-off."""
        for attempt in range(self.max_retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # spotipy raises SpotifyException / SpotifyOauthError
                status = _http_status(exc)
                if _is_auth_error(exc):
                    raise CredentialsError(
                        f"Spotify rejected the credentials in {ENV_ID} / {ENV_SECRET} ({exc}); "
                        "check the client id and secret of your app"
                    ) from None
                if status == 403 and what == "audio-features":
                    raise AudioFeaturesForbidden(FORBIDDEN_MESSAGE) from None
                if status is None:
                    from .youtube import network_failure

                    if network_failure(exc):
                        raise NetworkError(f"Spotify {what}: the network is unreachable "
                                           f"({' '.join(str(exc).split())[:120]}); check the connection "
                                           "and run again (finished songs are kept)") from None
                retryable = status == 429 or (status is not None and 500 <= status < 600)
                if not retryable or attempt == self.max_retries:
                    raise ImuseError(f"Spotify {what} failed: {exc}") from None
                wait = _retry_after(exc) if status == 429 else None
                wait = min(wait if wait is not None else self.backoff * 2**attempt, self.max_wait)
                log.info("Spotify %s: HTTP %s, retrying in %.1f s", what, status, wait)
                self.waits.append(wait)
                self.sleep(wait)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ search

    def search_track(self, artist: str, title: str) -> dict | None:
        """The best Spotify track for artist + title: ``{id, name, artists, popularity}``, or
        None when nothing fits. A strict field query first, then a loose one; among the hits
        the first whose normalised title and artist match, else the first hit."""
        key = f"{data.normalise_name(artist)} - {data.normalise_name(title)}"
        if key in self.cache["search"]:
            return self.cache["search"][key]
        best = None
        for query in (f'track:"{title}" artist:"{artist}"', f"{artist} {title}"):
            items = (self._call("search", self.api.search, q=query, limit=5, type="track")
                     or {}).get("tracks", {}).get("items", [])
            best = _pick(items, artist, title)
            if best:
                break
        self.cache["search"][key] = best
        self._save()
        return best

    # ------------------------------------------------------------------ features

    def audio_features(self, ids: Iterable[str], progress: bool = False) -> dict[str, dict | None]:
        """Audio features of track ids, ``BATCH`` per request, cached. Raises
        AudioFeaturesForbidden on Spotify's 403."""
        from tqdm import tqdm

        ids = list(dict.fromkeys(i for i in ids if i))
        todo = [i for i in ids if i not in self.cache["features"]]
        batches = [todo[k:k + BATCH] for k in range(0, len(todo), BATCH)]
        for batch in tqdm(batches, desc="Spotify audio features", disable=not progress):
            answer = self._call("audio-features", self.api.audio_features, batch) or []
            for track_id, feats in zip(batch, answer):
                self.cache["features"][track_id] = (
                    {k: feats.get(k) for k in ("valence", "energy", "danceability", "tempo")}
                    if feats else None)
            self._save()
        return {i: self.cache["features"].get(i) for i in ids}


def _pick(items: list[dict], artist: str, title: str) -> dict | None:
    if not items:
        return None
    want_title, want_artist = data.normalise_name(title), data.normalise_name(artist)

    def summary(item):
        return {"id": item.get("id"), "name": item.get("name"),
                "artists": [a.get("name") for a in item.get("artists", [])],
                "popularity": item.get("popularity")}

    for item in items:
        names = [data.normalise_name(a.get("name", "")) for a in item.get("artists", [])]
        if data.normalise_name(item.get("name", "")) == want_title and want_artist in names + [" ".join(names)]:
            return summary(item)
    return summary(items[0])


# --------------------------------------------------------------------------- snapshot


def song_key(artist: str, title: str) -> str:
    """The join key the data layer uses for the Spotify snapshot."""
    return f"{data.normalise_name(artist)} - {data.normalise_name(title)}"


class Snapshot:
    """The frozen Spotify snapshot of the data mirror, looked up by artist and title."""

    def __init__(self, frame: pd.DataFrame | None = None):
        frame = data.load_spotify() if frame is None else frame
        self.by_key = {row.key: row for row in frame.itertuples(index=False)}

    def lookup(self, artist: str, title: str) -> dict | None:
        row = self.by_key.get(song_key(artist, title))
        if row is None:
            return None
        return {"valence": float(row.valence), "energy": float(row.energy)}


def song_features(songs: pd.DataFrame, client: SpotifyClient | None, snapshot: Snapshot | None = None,
                  progress: bool = False) -> pd.DataFrame:
    """Valence and energy (= arousal, as in the paper) for each ``artist, title`` row.

    ``client=None`` takes everything from the snapshot. With a client, each song is
    searched on Spotify and its audio features fetched; on Spotify's 403 the snapshot
    answers instead (explained once, in the log). Returns ``songs`` plus ``spotify_id,
    spotify_name, valence, energy, arousal, features_source`` (``"spotify-api"``,
    ``"snapshot"`` or ``""`` when no source knows the song).
    """
    from tqdm import tqdm

    out = songs.copy()
    out["spotify_id"], out["spotify_name"] = "", ""
    feats: dict[int, dict | None] = {}
    use_snapshot = client is None
    if client is not None:
        tracks = {}
        for idx, row in tqdm(list(out.iterrows()), desc="Spotify search", disable=not progress):
            track = client.search_track(row.artist, row.title)
            if track:
                tracks[idx] = track
                out.loc[idx, ["spotify_id", "spotify_name"]] = [track["id"], track["name"]]
        try:
            by_id = client.audio_features([t["id"] for t in tracks.values()], progress=progress)
            feats = {idx: by_id.get(t["id"]) for idx, t in tracks.items()}
        except AudioFeaturesForbidden as exc:
            log.warning("%s", exc)
            use_snapshot = True
    source = {idx: "spotify-api" for idx, f in feats.items() if f}
    if use_snapshot:
        snapshot = snapshot or Snapshot()
        for idx, row in out.iterrows():
            found = snapshot.lookup(row.artist, row.title)
            if found:
                feats[idx], source[idx] = found, "snapshot"
    out["valence"] = [float(feats[i]["valence"]) if feats.get(i) else float("nan") for i in out.index]
    out["energy"] = [float(feats[i]["energy"]) if feats.get(i) else float("nan") for i in out.index]
    out["arousal"] = out["energy"]
    out["features_source"] = [source.get(i, "") for i in out.index]
    return out

