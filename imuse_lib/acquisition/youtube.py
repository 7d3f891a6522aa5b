"""Song audio from YouTube, and decoding it to mono samples.

The paper downloaded audio with pytube, which no longer works against YouTube; we use
yt-dlp, which is maintained. The network sits behind :class:`AudioSource` (search, then
download one result) so tests pass a fake; :class:`YtDlpSource` implements it with
``yt_dlp.YoutubeDL`` (itself injectable: tests hand it a recorded-answer stand-in).

We download the best audio-only stream as it is (no yt-dlp post-processing, which would need
the ffmpeg program). YouTube serves Opus in WebM or AAC in MP4, which libsndfile cannot
read, so :func:`decode_audio` tries, in order: soundfile (WAV/FLAC/OGG/MP3), PyAV (``av``
on PyPI; its wheels carry FFmpeg's libraries), and an ``ffmpeg`` program on the PATH.
With none of the last two a WebM/M4A download fails with a message saying what to install.
Any ``decoder(path, sample_rate) -> mono float32`` can be passed instead.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..errors import MediaError, NetworkError

log = logging.getLogger("imuse.acquisition")

Decoder = Callable[[Path, int], np.ndarray]


@dataclass(frozen=True)
class Video:
    id: str
    title: str
    url: str
    duration: float | None = None
    channel: str | None = None


class AudioSource(Protocol):
    def search(self, query: str) -> Video | None: ...

    def download(self, video: Video, dest: Path) -> Path: ...


def search_query(artist: str, title: str) -> str:
    """What we ask YouTube: ``artist title audio`` (favours audio uploads over videos with
    spoken intros)."""
    return f"{artist} {title} audio"


class _YtDlpLogger:
    """yt-dlp prints its errors even when quiet; we raise them as MediaError instead."""

    def debug(self, msg):
        pass

    info = warning = debug

    def error(self, msg):
        log.debug("yt-dlp: %s", msg)


# What an unreachable network says, in the exception types and texts of urllib, requests,
# yt-dlp (which wraps them in DownloadError) and the resolver.
NETWORK_MARKERS = ("temporary failure in name resolution", "name or service not known", "network is unreachable",
                   "no route to host", "failed to establish a new connection", "getaddrinfo failed",
                   "connection refused", "nodename nor servname", "failed to resolve", "no address associated",
                   "name resolution", "unable to connect", "connection timed out")


def network_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the network cannot be reached at all."""
    import socket

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (socket.gaierror, ConnectionRefusedError)):
            return True
        if any(m in str(exc).lower() for m in NETWORK_MARKERS):
            return True
        info = getattr(exc, "exc_info", None)  # yt_dlp.utils.DownloadError keeps the original
        inner = info[1] if isinstance(info, tuple) and len(info) > 1 else None
        exc = inner or exc.__cause__ or exc.__context__
    return False


def _network_error(what: str, exc: BaseException) -> NetworkError:
    return NetworkError(f"{what}: the network is unreachable ({_first_line(exc)[:120]}); check the "
                        f"connection and run again (finished songs are kept)")


class YtDlpSource:
    """:class:`AudioSource` on yt-dlp. ``ydl_class`` defaults to ``yt_dlp.YoutubeDL``."""

    def __init__(self, ydl_class=None, options: dict | None = None, max_duration: float = 15 * 60):
        if ydl_class is None:
            import yt_dlp

            ydl_class = yt_dlp.YoutubeDL
        self.ydl_class = ydl_class
        self.options = {"quiet": True, "no_warnings": True, "noprogress": True, "noplaylist": True,
                        "logger": _YtDlpLogger(), **(options or {})}
        self.max_duration = max_duration  # skip hour-long compilations and live streams

    def search(self, query: str) -> Video | None:
        opts = {**self.options, "extract_flat": "in_playlist", "skip_download": True}
        try:
            with self.ydl_class(opts) as ydl:
                info = ydl.extract_info(f"ytsearch1:{query}", download=False)
        except Exception as exc:  # yt_dlp.utils.DownloadError and network errors
            if network_failure(exc):
                raise _network_error("YouTube search", exc) from None
            raise MediaError(f"YouTube search {query!r} failed: {_first_line(exc)}") from None
        for entry in (info or {}).get("entries") or []:
            if not entry or not entry.get("id"):
                continue
            duration = entry.get("duration")
            if duration and duration > self.max_duration:
                continue
            url = entry.get("webpage_url") or entry.get("url") or f"https://www.youtube.com/watch?v={entry['id']}"
            return Video(entry["id"], entry.get("title") or "", url, duration,
                         entry.get("channel") or entry.get("uploader"))
        return None

    def download(self, video: Video, dest: Path) -> Path:
        dest = Path(dest)
        opts = {**self.options, "format": "bestaudio/best",
                "outtmpl": {"default": str(dest / "%(id)s.%(ext)s")}, "postprocessors": []}
        try:
            with self.ydl_class(opts) as ydl:
                info = ydl.extract_info(video.url, download=True)
                downloads = (info or {}).get("requested_downloads") or []
                path = Path(downloads[0]["filepath"]) if downloads else Path(ydl.prepare_filename(info))
        except Exception as exc:
            if network_failure(exc):
                raise _network_error("YouTube download", exc) from None
            raise MediaError(f"YouTube download of {video.url} failed: {_first_line(exc)}") from None
        if not path.is_file() or path.stat().st_size == 0:
            raise MediaError(f"YouTube download of {video.url} produced no file ({path})")
        return path


def _first_line(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 160 else text[:157] + "..."


# --------------------------------------------------------------------------- decoding


def _soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return y.mean(1), sr


def _pyav(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), sample_rate


def _ffmpeg(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FileNotFoundError("ffmpeg")
    done = subprocess.run([exe, "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar",
                           str(sample_rate), "-"], capture_output=True, check=False)
    if done.returncode != 0:
        raise MediaError(f"{path}: ffmpeg cannot decode it ({done.stderr.decode(errors='replace').strip()[:200]})")
    return np.frombuffer(done.stdout, dtype="<f4").copy(), sample_rate


def decode_audio(path: str | Path, sample_rate: int = 22050) -> np.ndarray:
    """Decode any audio file to mono float32 at ``sample_rate`` (see the module notes on
    which decoder reads what). MediaError names the file and what to install."""
    import librosa

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such audio file")
    tried = []
    for name, backend in (("soundfile", lambda: _soundfile(path)), ("PyAV", lambda: _pyav(path, sample_rate)),
                          ("ffmpeg", lambda: _ffmpeg(path, sample_rate))):
        try:
            y, sr = backend()
            break
        except (ImportError, FileNotFoundError):
            tried.append(f"{name} not installed")
        except MediaError:
            raise
        except Exception as exc:  # each library has its own error types
            tried.append(f"{name}: {str(exc).strip()[:80]}")
    else:
        raise MediaError(
            f"{path}: cannot decode this {path.suffix or 'file'} audio ({'; '.join(tried)}); YouTube "
            "audio (WebM/Opus, M4A/AAC) needs PyAV (`pip install av`) or the ffmpeg program"
        )
    y = np.asarray(y, dtype=np.float32)
    if y.size == 0 or not np.isfinite(y).all():
        raise MediaError(f"{path}: decoded to no usable samples")
    if sr != sample_rate:
        y = librosa.resample(y, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq").astype(np.float32)
    if np.abs(y).max() < 1e-4:
        raise MediaError(f"{path}: audio is silent")
    return y


def write_wav(path: str | Path, y: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV atomically (the temporary name has no .wav suffix, so the
    format is given explicitly)."""
    import soundfile as sf

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(y, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return Path(path)
