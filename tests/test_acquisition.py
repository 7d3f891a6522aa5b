"""Acquisition pipeline, offline: Spotify and YouTube are fakes fed recorded-style answers,
and any attempt to open a network connection fails the test."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from spotipy.exceptions import SpotifyException, SpotifyOauthError

from imuse_lib.acquisition import chorus, pipeline, spotify, validation, youtube
from imuse_lib.cli import main
from imuse_lib.errors import CredentialsError, DataError, ImuseError, MediaError

@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------- fakes

def track(track_id, name, *artists, popularity=50):
    """A search hit shaped like the Web API's (trimmed to the fields we read)."""
    return {"id": track_id, "name": name, "popularity": popularity, "type": "track",
            "artists": [{"name": a, "type": "artist"} for a in artists]}


class FakeSpotify:
    """Recorded answers for search and audio-features; ``errors`` are raised first, in order."""

    def __init__(self, catalogue=None, features=None, errors=(), features_status=None):
        self.catalogue = catalogue or {}  # lower-case "artist title" -> list of items
        self.features = features or {}
        self.errors = list(errors)
        self.features_status = features_status
        self.calls = []

    def search(self, q, limit=10, offset=0, type="track", market=None):
        self.calls.append(("search", q))
        if self.errors:
            raise self.errors.pop(0)
        plain = q.replace('track:"', "").replace('artist:"', "").replace('"', "").lower()
        for words, items in self.catalogue.items():
            if set(words.split()) <= set(plain.split()):
                return {"tracks": {"items": items[:limit], "total": len(items)}}
        return {"tracks": {"items": [], "total": 0}}

    def audio_features(self, tracks=()):
        self.calls.append(("audio_features", list(tracks)))
        if self.errors:
            raise self.errors.pop(0)
        if self.features_status:
            raise SpotifyException(self.features_status, -1, "https://api.spotify.com/v1/audio-features/:\n Forbidden")
        assert len(tracks) <= 100
        return [self.features.get(t) for t in tracks]


class NoCalls:
    def __getattr__(self, name):
        raise AssertionError(f"unexpected Spotify call {name}")


# --------------------------------------------------------------------------- Spotify


def test_missing_credentials_is_one_clear_message(monkeypatch):
    monkeypatch.delenv("SPOTIPY_CLIENT_ID", raising=False)
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET", raising=False)
    with pytest.raises(CredentialsError) as err:
        spotify.connect()
    msg = str(err.value)
    assert "SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET" in msg and "\n" not in msg
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", "abc")
    with pytest.raises(CredentialsError, match="SPOTIPY_CLIENT_SECRET") as err:
        spotify.connect()
    assert "SPOTIPY_CLIENT_ID" not in str(err.value)


def test_connect_builds_spotipy_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", "id")
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", "secret")
    import spotipy

    api = spotify.connect()
    assert isinstance(api, spotipy.Spotify)
    assert 429 not in api.status_forcelist  # rate limits are ours to handle (Retry-After)


def test_search_picks_the_matching_track_and_caches(tmp_path):
    items = [track("t-live", "Hello - Live", "Adele"), track("t-1", "Hello", "Adele"),
             track("t-2", "Hello", "Lionel Richie")]
    api = FakeSpotify({"adele hello": items})
    client = spotify.SpotifyClient(api, cache_path=tmp_path / "cache.json")
    assert client.search_track("Adele", "Hello")["id"] == "t-1"
    assert client.search_track("Nobody", "Unknown Song") is None  # both queries tried
    assert [c for c in api.calls if c[0] == "search"][-2:] == [
        ("search", 'track:"Unknown Song" artist:"Nobody"'), ("search", "Nobody Unknown Song")]
    again = spotify.SpotifyClient(NoCalls(), cache_path=tmp_path / "cache.json")
    assert again.search_track("ADELE", "Hello (Remastered)")["id"] == "t-1"  # normalised key
    assert again.search_track("Nobody", "Unknown Song") is None


def test_audio_features_are_fetched_in_batches_of_100(tmp_path):
    ids = [f"id{i}" for i in range(250)]
    api = FakeSpotify(features={i: {"id": i, "valence": 0.5, "energy": 0.25} for i in ids})
    client = spotify.SpotifyClient(api, cache_path=tmp_path / "c.json")
    got = client.audio_features(ids + ids[:10])  # duplicates asked once
    assert [len(c[1]) for c in api.calls] == [100, 100, 50]
    assert got["id7"] == {"valence": 0.5, "energy": 0.25, "danceability": None, "tempo": None}
    client.audio_features(ids)
    assert len(api.calls) == 3  # all cached


def test_rate_limit_waits_retry_after_then_backs_off():
    waits = []
    limited = SpotifyException(429, -1, "rate limited", headers={"Retry-After": "7"})
    no_header = SpotifyException(429, -1, "rate limited")
    api = FakeSpotify({"adele hello": [track("t-1", "Hello", "Adele")]}, errors=[limited, no_header, no_header])
    client = spotify.SpotifyClient(api, sleep=waits.append, backoff=1.0)
    assert client.search_track("Adele", "Hello")["id"] == "t-1"
    assert waits == [7.0, 2.0, 4.0]  # Retry-After honoured, else exponential back-off


def test_rate_limit_gives_up_after_max_retries():
    api = FakeSpotify(errors=[SpotifyException(503, -1, "unavailable")] * 5)
    client = spotify.SpotifyClient(api, sleep=lambda s: None, max_retries=2)
    with pytest.raises(ImuseError, match="Spotify search failed"):
        client.search_track("Adele", "Hello")
    assert len(api.calls) == 3


def test_rejected_credentials_become_credentials_error():
    api = FakeSpotify(errors=[SpotifyOauthError("error: invalid_client, error_description: Invalid client")])
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        spotify.SpotifyClient(api).search_track("Adele", "Hello")


SNAPSHOT = pd.DataFrame({"artist": ["Adele", "Coldplay"], "title": ["Hello", "Yellow"],
                         "valence": [0.289, 0.285], "energy": [0.431, 0.661]})
SNAPSHOT["key"] = [spotify.song_key(a, t) for a, t in zip(SNAPSHOT.artist, SNAPSHOT.title)]


def test_forbidden_audio_features_fall_back_to_the_snapshot(caplog):
    api = FakeSpotify({"adele hello": [track("t-1", "Hello", "Adele")],
                       "unknown band": [track("t-9", "Song", "Unknown Band")]}, features_status=403)
    songs = pd.DataFrame({"artist": ["Adele", "Unknown Band", "Coldplay"], "title": ["Hello", "Song", "Yellow"]})
    with caplog.at_level(logging.WARNING, logger="imuse.acquisition"):
        out = spotify.song_features(songs, spotify.SpotifyClient(api), spotify.Snapshot(SNAPSHOT))
    assert list(out.features_source) == ["snapshot", "", "snapshot"]
    assert out.valence.iloc[0] == pytest.approx(0.289) and np.isnan(out.valence.iloc[1])
    assert list(out.arousal.iloc[[0, 2]]) == [0.431, 0.661]  # arousal = energy, as the paper
    assert out.spotify_id.iloc[0] == "t-1"  # the search still worked
    warnings = [r.getMessage() for r in caplog.records if "403" in r.getMessage()]
    assert len(warnings) == 1 and "November 2024" in warnings[0] and "snapshot" in warnings[0]


def test_features_from_the_api_when_it_answers():
    api = FakeSpotify({"adele hello": [track("t-1", "Hello", "Adele")]},
                      features={"t-1": {"id": "t-1", "valence": 0.9, "energy": 0.1}})
    songs = pd.DataFrame({"artist": ["Adele"], "title": ["Hello"]})
    out = spotify.song_features(songs, spotify.SpotifyClient(api), spotify.Snapshot(SNAPSHOT))
    assert out.features_source.iloc[0] == "spotify-api"
    assert (out.valence.iloc[0], out.arousal.iloc[0]) == (0.9, 0.1)


def test_snapshot_lookup_in_the_mirror(mirror):
    snap = spotify.Snapshot()
    assert snap.lookup("Britney Spears", "Oops!...I Did It Again") == {"valence": 0.894, "energy": 0.834}
    assert snap.lookup("britney spears", "oops i did it again (radio edit)") is not None
    assert snap.lookup("Nobody", "Unknown Song") is None


# --------------------------------------------------------------------------- YouTube

# The shape of yt-dlp's answer to "ytsearch1:..." with extract_flat (trimmed).
SEARCH_ANSWER = {"_type": "playlist", "id": "Adele Hello audio", "entries": [
    {"_type": "url", "ie_key": "Youtube", "id": "YQHsXMglC9A", "title": "Adele - Hello (Official Audio)",
     "url": "https://www.youtube.com/watch?v=YQHsXMglC9A", "duration": 295.0, "channel": "AdeleVEVO"}]}


class FakeYDL:
    """Stands in for yt_dlp.YoutubeDL: records options, answers from ``answers``."""

    instances = []

    def __init__(self, opts):
        self.opts = opts
        FakeYDL.instances.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def extract_info(self, url, download=False):
        if url.startswith("ytsearch1:"):
            return FakeYDL.answer
        template = self.opts["outtmpl"]["default"]
        path = template.replace("%(id)s", "YQHsXMglC9A").replace("%(ext)s", "webm")
        with open(path, "wb") as fh:
            fh.write(b"\x1aE\xdf\xa3 not really webm")
        return {"id": "YQHsXMglC9A", "ext": "webm", "requested_downloads": [{"filepath": path}]}


def test_ytdlp_search_and_download(tmp_path):
    FakeYDL.answer, FakeYDL.instances = SEARCH_ANSWER, []
    source = youtube.YtDlpSource(ydl_class=FakeYDL)
    video = source.search(youtube.search_query("Adele", "Hello"))
    assert video == youtube.Video("YQHsXMglC9A", "Adele - Hello (Official Audio)",
                                  "https://www.youtube.com/watch?v=YQHsXMglC9A", 295.0, "AdeleVEVO")
    path = source.download(video, tmp_path)
    assert path == tmp_path / "YQHsXMglC9A.webm" and path.is_file()
    opts = FakeYDL.instances[-1].opts
    assert opts["format"] == "bestaudio/best" and opts["postprocessors"] == []  # no ffmpeg needed


def test_ytdlp_search_skips_long_videos_and_reports_failures():
    long = {"entries": [{**SEARCH_ANSWER["entries"][0], "duration": 3 * 3600}]}
    FakeYDL.answer = long
    assert youtube.YtDlpSource(ydl_class=FakeYDL).search("x") is None
    FakeYDL.answer = {"entries": []}
    assert youtube.YtDlpSource(ydl_class=FakeYDL).search("x") is None

    class Broken(FakeYDL):
        def extract_info(self, url, download=False):
            raise RuntimeError("ERROR: Unable to download API page\nmore detail")

    with pytest.raises(MediaError, match="YouTube search 'x' failed: ERROR: Unable to download API page$"):
        youtube.YtDlpSource(ydl_class=Broken).search("x")


def test_decode_wav_to_mono_22050(tmp_path):
    sr = 44100
    t = np.arange(2 * sr) / sr
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 220 * t)], 1)
    sf.write(tmp_path / "a.wav", stereo, sr)
    y = youtube.decode_audio(tmp_path / "a.wav", 22050)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 44100
    assert np.abs(y).max() == pytest.approx(0.3, abs=0.02)  # mean of the channels


def test_decode_youtube_opus_webm(tmp_path):
    av = pytest.importorskip("av")
    sr = 48000
    x = (0.4 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)
    path = tmp_path / "song.webm"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libopus", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    y = youtube.decode_audio(path, 22050)
    assert abs(len(y) - 22050) < 1500
    spectrum = np.abs(np.fft.rfft(y[2000:20000]))
    assert np.argmax(spectrum) * 22050 / len(y[2000:20000]) == pytest.approx(440, abs=3)


def test_decode_errors_name_the_file_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(MediaError, match="no such audio file"):
        youtube.decode_audio(tmp_path / "missing.webm")
    junk = tmp_path / "song.webm"
    junk.write_bytes(b"this is not audio")

    def absent(*a):
        raise ImportError("av")

    monkeypatch.setattr(youtube, "_pyav", absent)
    monkeypatch.setattr(youtube.shutil, "which", lambda name: None)
    with pytest.raises(MediaError) as err:
        youtube.decode_audio(junk)
    assert str(junk) in str(err.value) and "PyAV" in str(err.value) and "ffmpeg" in str(err.value)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(22050), 22050)
    with pytest.raises(MediaError, match="silent"):
        youtube.decode_audio(silent)


def test_write_wav_is_atomic_pcm(tmp_path):
    path = youtube.write_wav(tmp_path / "x" / "a.wav", np.full(100, 2.0, np.float32), 22050)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.wav"]


# --------------------------------------------------------------------------- pipeline


class FakeSource:
    """YouTube stand-in: 'downloads' a constructed 70 s song (as 44.1 kHz stereo WAV)."""

    def __init__(self, missing=()):
        self.missing = {m.lower() for m in missing}
        self.downloads = []

    def search(self, query):
        if any(m in query.lower() for m in self.missing):
            return None
        return youtube.Video("vid" + str(abs(hash(query)) % 1000), query, "https://example.invalid/v", 70.0)

    def download(self, video, dest):
        self.downloads.append(video.title)
        y, sr, _ = chorus.synthetic_song(len(self.downloads), sr=22050)
        path = dest / "song.wav"
        sf.write(path, np.stack([y, y], 1), sr)
        return path


SONGS = [("Adele", "Hello"), ("Coldplay", "Yellow"), ("Nobody", "Unknown Song"), ("Adele", "Hello"),
         ("Missing Band", "Not On YouTube")]


def write_songlist(path, rows=SONGS):
    pd.DataFrame(rows, columns=["artist", "title"]).to_csv(path, index=False)
    return path


_Snapshot = spotify.Snapshot


def snapshot_features(monkeypatch):
    """The pipeline's snapshot becomes the two-song table above (no mirror needed)."""
    monkeypatch.setattr(spotify, "Snapshot", lambda frame=None: _Snapshot(SNAPSHOT))


def test_acquire_builds_a_resumable_catalog(tmp_path, monkeypatch):
    snapshot_features(monkeypatch)
    api = FakeSpotify({"adele hello": [track("t-1", "Hello", "Adele")],
                       "coldplay yellow": [track("t-2", "Yellow", "Coldplay")],
                       "missing band": [track("t-3", "Not On YouTube", "Missing Band")]},
                      features={"t-1": {"valence": 0.8, "energy": 0.7}, "t-2": {"valence": 0.2, "energy": 0.3},
                                "t-3": {"valence": 0.5, "energy": 0.5}})
    source = FakeSource(missing=["not on youtube"])
    out = tmp_path / "music"
    report = pipeline.acquire(write_songlist(tmp_path / "songs.csv"), out, client=spotify.SpotifyClient(api),
                              source=source, progress=False)
    assert report.requested == 4  # the duplicate is dropped
    assert len(report.acquired) == 2 and {s["title"]: s["stage"] for s in report.skipped} == {
        "Unknown Song": "features", "Not On YouTube": "youtube"}
    catalog = pipeline.load_acquired(out)
    assert list(catalog.columns) == pipeline.CATALOG_COLUMNS
    assert list(catalog.title) == ["Hello", "Yellow"] and list(catalog.quadrant) == ["Q1", "Q3"]
    assert list(catalog.features_source) == ["spotify-api"] * 2
    for path in catalog.path:
        info = sf.info(path)
        assert (info.samplerate, info.channels, round(info.duration, 2)) == (22050, 1, 30.0)
    assert (catalog.chorus_method == "repetition").all()
    skipped = pd.read_csv(out / "skipped.csv")
    assert set(skipped.reason) == {"no valence/energy: not found in Spotify", "no YouTube result"}

    # A rerun fetches nothing already done; a lost WAV is fetched again.
    catalog.path.iloc[0].unlink()
    again = pipeline.acquire(tmp_path / "songs.csv", out, client=spotify.SpotifyClient(api), source=source,
                             progress=False)
    assert again.already_done == 1 and again.acquired == [catalog.song_id.iloc[0]]
    assert len(source.downloads) == 3
    assert len(pipeline.load_acquired(out)) == 2


def test_acquire_snapshot_mode_and_limit(tmp_path, monkeypatch):
    snapshot_features(monkeypatch)
    report = pipeline.acquire(write_songlist(tmp_path / "s.csv"), tmp_path / "o", features="snapshot",
                              source=FakeSource(), limit=2, progress=False)
    assert report.requested == 2 and len(report.acquired) == 2
    catalog = pipeline.load_acquired(tmp_path / "o")
    assert list(catalog.features_source) == ["snapshot"] * 2
    assert catalog.valence.tolist() == [0.289, 0.285]


def test_acquire_reports_undecodable_audio(tmp_path, monkeypatch):
    snapshot_features(monkeypatch)

    def decoder(path, sr):
        raise MediaError(f"{path}: cannot decode this .webm audio")

    report = pipeline.acquire(write_songlist(tmp_path / "s.csv", [("Adele", "Hello")]), tmp_path / "o",
                              features="snapshot", source=FakeSource(), decoder=decoder, progress=False)
    assert report.skipped[0]["stage"] == "audio" and "cannot decode" in report.skipped[0]["reason"]
    assert pipeline.load_acquired(tmp_path / "o").empty


def test_songlist_errors(tmp_path):
    with pytest.raises(DataError, match="song list not found"):
        pipeline.read_songlist(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("name,song\nA,B\n")
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) artist, title"):
        pipeline.read_songlist(tmp_path / "bad.csv")
    (tmp_path / "blank.csv").write_text("artist,title\n,B\n  ,  \n")
    with pytest.raises(DataError, match="no songs"):
        pipeline.read_songlist(tmp_path / "blank.csv")
    (tmp_path / "ok.csv").write_text("Artist , Title,year\nAdele,Hello,2015\n")
    songs = pipeline.read_songlist(tmp_path / "ok.csv")
    assert songs.song_id.iloc[0] == pipeline.song_id("ADELE", "hello") and songs.year.iloc[0] == "2015"


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SPOTIPY_CLIENT_ID", raising=False)
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET", raising=False)
    songs = write_songlist(tmp_path / "songs.csv")
    assert main(["acquire", str(songs), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imuse: error: Spotify credentials missing") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    assert main(["acquire", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.csv: song list not found" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("artist\nAdele\n")
    assert main(["acquire", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "missing column(s) title" in capsys.readouterr().err


def test_cli_acquires_with_the_snapshot(tmp_path, monkeypatch, capsys):
    snapshot_features(monkeypatch)
    monkeypatch.setattr(youtube, "YtDlpSource", lambda: FakeSource(missing=["not on youtube"]))
    songs = write_songlist(tmp_path / "songs.csv")
    assert main(["acquire", str(songs), "--out", str(tmp_path / "o"), "--features", "snapshot",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 song(s) acquired, 0 already done, 2 skipped of 4" in out
    assert "skipped: Missing Band - Not On YouTube (features: no valence/energy" in out
    assert len(pipeline.load_acquired(tmp_path / "o")) == 2


# --------------------------------------------------------------------------- validation


def test_match_and_correlate_on_constructed_tables():
    pmemo = pd.DataFrame({"pmemo_id": [1, 2, 3, 4, 5, 6],
                          "artist": ["Adele", "Fitz", "Nobody", "Zara Larsson", "Sia", "Sia"],
                          "title": ["Hello", "HandClap", "Nothing", "Lush Life", "Chandelier", "Alive"],
                          "valence": [0.2, 0.8, 0.5, 0.7, 0.3, 0.6], "arousal": [0.3, 0.9, 0.5, 0.8, 0.4, 0.5]})
    snap = pd.DataFrame({"artist": ["Adele", "Fitz and The Tantrums", "Zara Larsson, MNEK", "Sia", "Someone Else"],
                         "title": ["Hello", "HandClap", "Lush Life", "Chandelier (Remix)", "Alive"],
                         "valence": [0.1, 0.9, 0.6, 0.2, 0.99], "energy": [0.2, 0.95, 0.7, 0.45, 0.1]})
    matched = validation.match_pmemo_spotify(pmemo, snap)
    assert dict(zip(matched.pmemo_id, matched.match)) == {1: "exact", 2: "title+artist", 4: "title+artist",
                                                           5: "exact"}
    corr = validation.correlations(matched)
    assert corr.loc["valence", "n"] == 4
    assert corr.loc["valence", "r"] == pytest.approx(np.corrcoef([0.1, 0.9, 0.6, 0.2], [0.2, 0.8, 0.7, 0.3])[0, 1])
    assert corr.loc["arousal", "ci_low"] < corr.loc["arousal", "r"] < corr.loc["arousal", "ci_high"]
    assert validation.quadrant_agreement(matched) == 1.0


def test_pmemo_spotify_on_the_mirror(mirror):
    matched = validation.match_pmemo_spotify()
    assert len(matched) > 100 and matched.pmemo_id.is_unique
    corr = validation.correlations(matched)
    assert set(corr.index) == {"valence", "arousal"}
    assert (corr["p"] < 0.05).all()  # both relations exist; how strong is the book's question


# --------------------------------------------------------------------------- hostile conditions


class OfflineYDL:
    """yt_dlp.YoutubeDL as it behaves without a network: a DownloadError wrapping the resolver's."""

    calls = 0

    def __init__(self, opts):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def extract_info(self, url, download=False):
        OfflineYDL.calls += 1
        cause = socket.gaierror(-3, "Temporary failure in name resolution")
        err = Exception("ERROR: [youtube:search] Unable to download API page: <urlopen error [Errno -3] "
                        "Temporary failure in name resolution> (caused by TransportError('...'))" + " x" * 200)
        err.exc_info = (type(cause), cause, None)
        raise err


def test_no_network_stops_at_the_first_request_with_one_line(tmp_path, monkeypatch, capsys):
    snapshot_features(monkeypatch)
    OfflineYDL.calls = 0
    real = youtube.YtDlpSource
    monkeypatch.setattr(youtube, "YtDlpSource", lambda: real(OfflineYDL))
    rows = [("Adele", "Hello"), ("Coldplay", "Yellow")] + [(f"Band {i}", f"Song {i}") for i in range(200)]
    t0 = time.monotonic()
    rc = main(["acquire", str(write_songlist(tmp_path / "s.csv", rows)), "--out", str(tmp_path / "o"),
               "--features", "snapshot", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "network is unreachable" in err and len(err) < 400
    assert OfflineYDL.calls == 1 and time.monotonic() - t0 < 10  # not one try per song
    assert (tmp_path / "o" / "catalog.csv").exists() and (tmp_path / "o" / "skipped.csv").exists()


def test_interrupted_run_keeps_what_it_did(tmp_path, monkeypatch):
    snapshot_features(monkeypatch)

    class Interrupting(FakeSource):
        def download(self, video, dest):
            if len(self.downloads) == 1:
                raise KeyboardInterrupt  # Ctrl-C (or SIGTERM in the CLI) during the second song
            return super().download(video, dest)

    with pytest.raises(KeyboardInterrupt):
        pipeline.acquire(write_songlist(tmp_path / "s.csv"), tmp_path / "o", features="snapshot",
                         source=Interrupting(), progress=False)
    catalog = pipeline.load_acquired(tmp_path / "o")
    assert list(catalog.title) == ["Hello"] and catalog.path.iloc[0].is_file()
    assert (tmp_path / "o" / "skipped.csv").exists()
    assert not list((tmp_path / "o").glob(".*.tmp"))


def test_nothing_acquired_exits_non_zero_one_line_per_song(tmp_path, monkeypatch, capsys):
    snapshot_features(monkeypatch)

    class Failing(FakeSource):
        def download(self, video, dest):
            raise MediaError("YouTube download failed: " + "HTTP Error 403: Forbidden " * 30)

    monkeypatch.setattr(youtube, "YtDlpSource", lambda: Failing())
    rc = main(["acquire", str(write_songlist(tmp_path / "s.csv")), "--out", str(tmp_path / "o"),
               "--features", "snapshot", "--no-progress"])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip().startswith("skipped:")]
    assert rc == 1 and len(lines) == 4 and all(len(line) < 260 for line in lines)
    assert err.strip() == "imuse: error: no song could be acquired (reasons above and in skipped.csv)"


def test_songlist_control_characters_and_overlong_fields(tmp_path, monkeypatch):
    snapshot_features(monkeypatch)
    path = tmp_path / "s.csv"
    pd.DataFrame([("Adele\t", "Hel\x1b[31mlo"), ("Coldplay", "Yel\nlow"), ("A" * 300, "Long")],
                 columns=["artist", "title"]).to_csv(path, index=False)
    songs = pipeline.read_songlist(path)
    assert list(songs.title[:2]) == ["Hel[31mlo", "Yel low"] and songs.artist[0] == "Adele"
    report = pipeline.acquire(path, tmp_path / "o", features="snapshot", source=FakeSource(), progress=False)
    assert {s["stage"] for s in report.skipped if s["title"] == "Long"} == {"songlist"}


def test_spotify_without_network_is_one_network_error():
    import requests

    from imuse_lib.errors import NetworkError

    api = FakeSpotify(errors=[requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='api.spotify.com', port=443): Max retries exceeded (Caused by NameResolutionError"
        "(\"Failed to resolve 'api.spotify.com' ([Errno -3] Temporary failure in name resolution)\"))")])
    with pytest.raises(NetworkError, match="network is unreachable") as err:
        spotify.SpotifyClient(api).search_track("Adele", "Hello")
    assert len(api.calls) == 1 and "\n" not in str(err.value)
