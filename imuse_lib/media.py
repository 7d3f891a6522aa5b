"""Decoding images and audio into what the backbones take, with one-line errors.

* :func:`load_image` -> an RGB ``PIL.Image`` whatever the file's mode (CMYK, palette,
  alpha, grayscale, 16-bit, float) and EXIF orientation; decoded by content, not by the
  file name (OASIS ``Monkey 3.jpg`` is a PNG with alpha).
* :func:`load_audio` -> mono float32 samples at the asked sample rate: soundfile decodes
  (it reads the 4Q MP3s), channels are mixed by their mean, torchaudio resamples.
* :func:`fit_length` applies the short-clip rule (see there) before cropping.

Budgets, checked from the file's header BEFORE anything is decoded:

* images: :func:`image_working_set` estimates the bytes that decoding, mode conversion,
  EXIF rotation and the backbones' resize (shorter side to ``RESIZE_SHORT``) hold at once,
  from width, height and the mode's channels and bit depth; over
  :func:`image_memory_budget` the image is refused. (A 143-byte PNG of 20000 x 1 pixels resizes to 5,120,000 x 256:
  4 GB; counting pixels alone let it through.)
* audio: :func:`audio_working_set` counts the bytes of decoded data (frames x channels,
  float32) and the resampler's buffers, from the header; over :func:`audio_memory_budget`
  the file is refused. A file longer than :func:`max_audio_seconds` is refused unless asked
  (``max_seconds=None``; on the command line ``--max-audio-seconds``).

The budgets can be set by environment: ``IMUSE_IMAGE_MEMORY_MB``, ``IMUSE_AUDIO_MEMORY_MB``,
``IMUSE_MAX_AUDIO_SECONDS``; each is read and range-checked when a file is decoded.

Every failure is a :class:`~imuse_lib.errors.MediaError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import image_view
from .errors import MediaError

# Largest image we decode (pixels): PIL's own default guard against decompression bombs.
MAX_IMAGE_PIXELS = 89_478_485
# A clip whose peak stays below this (about -80 dBFS) is treated as silent.
SILENCE_PEAK = 1e-4
# Short-clip rule: a clip shorter than a crop is looped to the crop length when it lasts
# at least min(half the crop, MIN_LOOP_SECONDS); a shorter one is rejected.
MIN_LOOP_SECONDS = 5.0
# Transparent pixels are composited onto this background (white, like a page or viewer).
BACKGROUND = (255, 255, 255)
# The image backbones resize the shorter side to this before cropping (the image-view spec).
RESIZE_SHORT = image_view.RESIZE
# Defaults of the budgets; the environment variables below override them, read (and checked)
# when a file is decoded, not at import, so that a bad value never breaks `imuse --help`.
# Bytes one image may hold in memory while decoded and resized (see image_working_set).
IMAGE_MEMORY_MB, IMAGE_MEMORY_ENV = 1024, "IMUSE_IMAGE_MEMORY_MB"
# Bytes one audio file may hold in memory while decoded, mixed and resampled (audio_working_set).
AUDIO_MEMORY_MB, AUDIO_MEMORY_ENV = 1024, "IMUSE_AUDIO_MEMORY_MB"
# Longest audio decoded without being asked (seconds): a full song fits, an hour-long mix does not.
# `--max-audio-seconds` sets MAX_AUDIO_SECONDS, which then wins over the environment.
DEFAULT_MAX_AUDIO_SECONDS, MAX_AUDIO_SECONDS_ENV = 15 * 60, "IMUSE_MAX_AUDIO_SECONDS"
MAX_AUDIO_SECONDS = DEFAULT_MAX_AUDIO_SECONDS
# The largest values the variables take (a budget past the machine's memory is no budget).
MAX_MEMORY_MB, MAX_SECONDS = 1024 * 1024, 24 * 3600
# Frames decoded at a time: channels are mixed to mono block by block, so a many-channel
# file never sits in memory whole.
AUDIO_BLOCK = 1 << 16
# Float samples this far past full scale (+60 dB) are a corrupt file, not a loud recording:
# the backbones turn them into inf/NaN.
MAX_SAMPLE = 1000.0


def image_memory_budget() -> int:
    """Bytes an image may take to decode and resize ($IMUSE_IMAGE_MEMORY_MB, default 1024 MiB)."""
    from .config import env_number

    return int(env_number(IMAGE_MEMORY_ENV, IMAGE_MEMORY_MB, 1, MAX_MEMORY_MB) * 2**20)


def audio_memory_budget() -> int:
    """Bytes an audio file may take to decode, mix and resample ($IMUSE_AUDIO_MEMORY_MB, default 1024 MiB)."""
    from .config import env_number

    return int(env_number(AUDIO_MEMORY_ENV, AUDIO_MEMORY_MB, 1, MAX_MEMORY_MB) * 2**20)


def max_audio_seconds() -> float:
    """Longest audio decoded unless asked: --max-audio-seconds, else $IMUSE_MAX_AUDIO_SECONDS, else 900 s."""
    from .config import env_number

    if MAX_AUDIO_SECONDS != DEFAULT_MAX_AUDIO_SECONDS:
        return float(MAX_AUDIO_SECONDS)
    return env_number(MAX_AUDIO_SECONDS_ENV, DEFAULT_MAX_AUDIO_SECONDS, 1, MAX_SECONDS)


def check_file(path, what: str = "media") -> Path:
    """A clear error for a path that cannot be a media file, before any decoder sees it."""
    from .io import regular_file_problem

    path = Path(path)
    problem = regular_file_problem(path, f"an {what} file")
    if problem:
        raise MediaError(f"{path}: {problem}")
    st = os.stat(path)
    if st.st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes), not an {what} file")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{path}: no permission to read it")
    return path


# --------------------------------------------------------------------------- images


def to_rgb(img, path: Path):
    """Any PIL mode -> 8-bit RGB."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit-depth grayscale: scale by the format's range (float: by its own range), a
        # band of rows at a time into one 8-bit array: float64 copies of the whole image
        # (four of them before) took 1.4 GB above the budget for a 7694 x 7694 16-bit PNG.
        arr = np.asarray(img)
        if arr.dtype.kind in "iu":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        else:
            lo, hi = _finite_range(arr)
        by_range = mode == "F" or hi > 65535 or lo < 0
        out = np.empty(arr.shape, np.uint8)
        for start in range(0, arr.shape[0], 256):  # the same float64 arithmetic as a whole-image pass
            band = arr[start:start + 256].astype(np.float64)
            if not by_range:
                band /= 257.0  # 0..65535 -> 0..255
            elif hi > lo:
                band = (band - lo) / (hi - lo) * 255.0
            else:
                band[:] = 0.0
            out[start:start + 256] = np.clip(np.nan_to_num(band), 0, 255)
        del arr
        return Image.fromarray(out, "L").convert("RGB")
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")  # keeps palette transparency, if any
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    except (ValueError, OSError) as exc:
        raise MediaError(f"{path}: cannot convert image mode {mode} to RGB ({exc})") from None


def _finite_range(arr: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values of a float image, a band at a time (no full mask copy)."""
    lo, hi = np.inf, -np.inf
    for start in range(0, arr.shape[0], 256):
        band = arr[start:start + 256]
        band = band[np.isfinite(band)]
        if band.size:
            lo, hi = min(lo, float(band.min())), max(hi, float(band.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _pixel_bytes(mode: str) -> int:
    """Bytes PIL holds per pixel of ``mode`` in memory: 1 for L/P/1, 2 for 16-bit, and 4 for
    every multi-band mode (PIL stores RGB as 32-bit RGBX) and for 32-bit int/float."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def image_working_set(width: int, height: int, mode: str = "RGB", resize_short: int = RESIZE_SHORT) -> int:
    """Bytes held at once while an image is decoded, converted, rotated and resized.

    decoded + its EXIF-rotated copy + the RGB conversion (alpha: the RGBA copy and the
    composite too; 16-bit/float: a numpy copy, an 8-bit one and its RGB) + the resize to
    ``resize_short`` on the shorter side (PIL resizes in two passes: an intermediate,
    then the result), all at PIL's in-memory pixel sizes (RGB is 4 bytes a pixel).
    """
    w, h = max(int(width), 1), max(int(height), 1)
    pixels = w * h
    decoded = pixels * _pixel_bytes(mode)
    if mode.startswith("I") or mode == "F":
        convert = pixels * (_pixel_bytes(mode) + 1 + 4)  # numpy copy, 8-bit grey, its RGB
    elif mode in ("RGBA", "LA", "La", "RGBa", "P", "PA"):
        convert = pixels * (4 + 4 + 4 + 4)
    else:
        convert = pixels * 4 if mode != "RGB" else 0
    scale = resize_short / min(w, h)
    rw, rh = math.ceil(w * scale), math.ceil(h * scale)
    resized = (rw * rh + max(rw * h, w * rh)) * 4
    # + 5 % and 8 MiB for what the sum leaves out (allocator slack, the crop and its tensor):
    # measured peaks of the largest admitted images stay under the budget with it
    return int((2 * decoded + convert + resized) * 1.05) + 8 * 2**20


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def load_image(path, budget: int | None = None):
    """Decode ``path`` into an RGB ``PIL.Image`` (EXIF rotation applied).

    Raises MediaError naming the file when it is missing, a directory, empty, not an
    image, truncated/corrupt, larger than ``MAX_IMAGE_PIXELS`` (decompression bomb), or
    when decoding and resizing it would need more than ``budget`` bytes (default
    ``image_memory_budget()``), judged from its header before decoding.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_file(path, "image")
    try:
        with warnings.catch_warnings():
            # Turn PIL's "possible decompression bomb" warning into an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise MediaError(f"{path}: image of {w}x{h} pixels exceeds the limit of "
                                     f"{MAX_IMAGE_PIXELS} (possible decompression bomb)")
                need, limit = image_working_set(w, h, img.mode), image_memory_budget() if budget is None else budget
                if need > limit:
                    raise MediaError(f"{path}: image of {w}x{h} pixels ({img.mode}) would need about {_mib(need)} "
                                     f"to decode and resize (shorter side to {RESIZE_SHORT}), over the "
                                     f"{_mib(limit)} budget; crop or shrink it, or raise IMUSE_IMAGE_MEMORY_MB")
                img.load()  # decode now: truncated or corrupt data fails here
                img = ImageOps.exif_transpose(img)
                img = to_rgb(img, path)
    except MediaError:
        raise
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(f"{path}: corrupt or truncated image ({exc})") from None
    if min(img.size) < 1:
        raise MediaError(f"{path}: image has no pixels ({img.size[0]}x{img.size[1]})")
    return img


# --------------------------------------------------------------------------- audio


# File signatures of the formats libsndfile reads (and MPEG audio frames); a file with
# none of them is not handed to the decoders, whose complaints only confuse.
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"riff", b"fLaC", b"OggS", b"FORM", b"ID3", b".snd", b"wvpk",
                b"caff", b"NIST", b"2BIT", b"MAT", b"\x00\x00\x01\xba")


_IMAGE_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
                (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _mpeg_frame(head: bytes, i: int) -> bool:
    """A plausible MPEG audio frame header at ``head[i]`` (sync, no reserved fields)."""
    b1, b2 = head[i + 1], head[i + 2]
    return (head[i] == 0xFF and b1 & 0xE0 == 0xE0 and (b1 >> 3) & 3 != 1 and (b1 >> 1) & 3 != 0
            and b2 >> 4 != 15 and (b2 >> 2) & 3 != 3)


def _sniff_audio(path: Path) -> str | None:
    """Why ``path`` is clearly not audio (judged by its first bytes), or None if it may be."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if any(head.startswith(m) for m in _AUDIO_MAGIC) or head[4:8] == b"ftyp":
        return None
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return f"is an image file ({kind}), not audio"
    if any(_mpeg_frame(head, i) for i in range(len(head) - 3)):
        return None  # an MPEG/AAC frame header: possibly MP3 after some junk
    try:
        text = head.decode("utf-8")
        if all(c.isprintable() or c in "\r\n\t" for c in text):
            return "is a text file, not audio"
    except UnicodeDecodeError:
        pass
    return "is not in an audio format (no WAV, FLAC, OGG, AIFF or MP3 header)"


@contextlib.contextmanager
def _decoder_noise_captured():
    """Capture what C decoders print on file descriptor 2 (mpg123's "Illegal Audio-MPEG-
    Header ... Trying to resync"): a failure is reported by our one line instead."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def audio_working_set(frames: int, channels: int, rate: int, target_rate: int) -> int:
    """Bytes held at once while ``frames`` x ``channels`` samples at ``rate`` Hz are decoded,
    mixed to mono and resampled to ``target_rate`` (float32 throughout).

    Channels are mixed block by block (:data:`AUDIO_BLOCK` frames), so the decoded file is
    never whole in memory: the mono mix (4 bytes a frame) and one decoded block and its mix;
    then torchaudio's resampler, measured at 11 to 18 bytes per input frame (a padded copy,
    the convolution's working copies) and 12 per output frame: counted as 16 and 12.
    Rate x channels x seconds counted, where seconds alone let 15 min of 192 kHz stereo
    peak at 4.2 GB.
    """
    frames, channels = max(int(frames), 1), max(int(channels), 1)
    mono = frames * 4
    block = AUDIO_BLOCK * channels * 4 * 2
    resample = 0
    if rate != target_rate:
        resample = frames * 16 + math.ceil(frames * target_rate / rate) * 12
    # + 5 % and 16 MiB for what the sum leaves out (decoder state, allocator slack)
    return int((mono + block + resample) * 1.05) + 16 * 2**20


def load_audio(path, sample_rate: int, max_seconds: float | None = -1.0) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate`` Hz.

    Raises MediaError naming the file when it is missing, empty, not audio, corrupt,
    longer than ``max_seconds`` (default :func:`max_audio_seconds`; None: no limit), would
    need more memory than :func:`audio_memory_budget` (see :func:`audio_working_set`), has
    no samples, holds non-finite or absurd (past +60 dB) values, or is silent (peak below
    ``SILENCE_PEAK``), saying when its channels cancel each other out in the mono mix.
    Damage in the middle of a compressed file is reported with where it starts.
    """
    import soundfile as sf

    if not isinstance(sample_rate, (int, np.integer)) or not 1 <= int(sample_rate) <= 384_000:
        raise MediaError(f"sample rate must be an integer from 1 to 384000 Hz, not {sample_rate!r}")
    if max_seconds is not None and max_seconds < 0:
        max_seconds = max_audio_seconds()
    path = check_file(path, "audio")
    problem = _sniff_audio(path)
    if problem:
        raise MediaError(f"{path}: {problem}")
    pos = 0
    try:
        with _decoder_noise_captured(), sf.SoundFile(os.fspath(path)) as fh:
            sr, channels, frames = int(fh.samplerate), int(fh.channels), int(fh.frames)
            if not 1 <= sr <= 10_000_000 or channels < 1:
                raise MediaError(f"{path}: header says {sr} Hz and {channels} channel(s): not a playable file")
            seconds = frames / sr if sr else 0.0
            if max_seconds is not None and seconds > max_seconds:
                raise MediaError(f"{path}: audio lasts {seconds / 60:.1f} min, over the {max_seconds / 60:.1f} min "
                                 f"limit; cut it, or raise the limit (--max-audio-seconds, IMUSE_MAX_AUDIO_SECONDS)")
            need, limit = audio_working_set(frames, channels, sr, int(sample_rate)), audio_memory_budget()
            if need > limit:
                raise MediaError(f"{path}: {seconds / 60:.1f} min of {channels}-channel audio at {sr} Hz would need "
                                 f"about {_mib(need)} to decode and resample to {int(sample_rate)} Hz, over the "
                                 f"{_mib(limit)} budget; cut or downmix it, or raise IMUSE_AUDIO_MEMORY_MB")
            wave = np.empty(frames, np.float32)
            peaks = np.zeros(channels, np.float32)
            while True:
                block = fh.read(AUDIO_BLOCK, dtype="float32", always_2d=True)
                n = len(block)
                if n == 0:
                    break
                # Per channel: numpy reduces a short last axis (axis=0 of [n, 2], or axis=1) about
                # 50 times slower than a column, and this loop ran at 30 ms a clip (issue 19).
                block_peaks = np.array([np.abs(block[:, c]).max() for c in range(channels)], np.float32)
                if not np.isfinite(block_peaks).all():  # max propagates NaN, and abs(inf) is inf
                    raise MediaError(f"{path}: audio holds non-finite samples at {_clock(pos / sr)} (corrupt decode)")
                np.maximum(peaks, block_peaks, out=peaks)
                if pos + n > len(wave):  # the header under-counted its frames (some MP3s)
                    wave = np.concatenate([wave[:pos], np.empty(max(n, len(wave) // 8), np.float32)])
                wave[pos:pos + n] = _mono(block)
                pos += n
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if pos:
            raise MediaError(f"{path}: audio data damaged at {_clock(pos / sr)} of {_clock(seconds)} (decoded "
                             f"up to there, then: {msg}); repair or re-encode the file") from None
        raise MediaError(f"{path}: not a readable audio file ({msg})") from None
    wave = wave[:pos]
    if pos == 0:
        raise MediaError(f"{path}: audio file holds no samples")
    if float(peaks.max()) > MAX_SAMPLE:
        raise MediaError(f"{path}: samples reach {float(peaks.max()):.3g}, far past full scale (1.0): a corrupt "
                         f"float file, not a recording")
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        if channels > 1 and float(peaks.max()) >= SILENCE_PEAK:
            raise MediaError(f"{path}: its {channels} channels cancel out when mixed to mono (one is the "
                             f"other inverted: a wiring or export fault); the mono mix is silent")
        raise MediaError(f"{path}: silent clip (peak amplitude below {SILENCE_PEAK:g})")
    if sr != sample_rate:
        import torch
        import torchaudio.functional as AF

        wave = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), int(sr), int(sample_rate)).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


def _mono(block: np.ndarray) -> np.ndarray:
    """The mean of a float32 block's channels [n, channels] -> [n], bit for bit what
    ``block.mean(axis=1)`` gives (float32 sum, then / channels), without its slow reduction."""
    if block.shape[1] == 1:
        return block[:, 0]
    if block.shape[1] == 2:
        return (block[:, 0] + block[:, 1]) * np.float32(0.5)  # / 2 is exact as * 0.5
    return block.mean(axis=1)


def _clock(seconds: float) -> str:
    seconds = max(float(seconds), 0.0)
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def min_length(crop_length: int, sample_rate: int) -> int:
    """Fewest samples a clip needs for a crop of ``crop_length`` (the short-clip rule)."""
    return int(min(crop_length / 2, MIN_LOOP_SECONDS * sample_rate))


def fit_length(wave: np.ndarray, crop_length: int, sample_rate: int, path="<audio>") -> np.ndarray:
    """Make ``wave`` at least ``crop_length`` samples long, by the stated rule:

    a clip at least as long as the crop is returned unchanged; a shorter clip that lasts at
    least ``min(crop/2, MIN_LOOP_SECONDS)`` is looped (repeated end to end: no silence is
    added, which would shift the embedding) and cut to the crop length; anything shorter
    is rejected with a MediaError naming the file.
    """
    n = len(wave)
    if n >= crop_length:
        return wave
    need = min_length(crop_length, sample_rate)
    if n < need:
        raise MediaError(
            f"{path}: clip lasts {n / sample_rate:.2f} s, shorter than the {crop_length / sample_rate:.2f} s "
            f"crop and than the {need / sample_rate:.2f} s minimum for looping it"
        )
    reps = -(-crop_length // n)
    return np.tile(wave, reps)[:crop_length]
