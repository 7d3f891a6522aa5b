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
  from width, height and the mode's channels and bit depth; over ``IMAGE_MEMORY_BUDGET``
  the image is refused. (A 143-byte PNG of 20000 x 1 pixels resizes to 5,120,000 x 256:
  4 GB; counting pixels alone let it through.)
* audio: a file longer than ``MAX_AUDIO_SECONDS`` is refused unless asked
  (``max_seconds=None``; on the command line ``--max-audio-seconds``).

Both budgets can be set by environment: ``IMUSE_IMAGE_MEMORY_MB``, ``IMUSE_MAX_AUDIO_SECONDS``.

Every failure is a :class:`~imuse_lib.errors.MediaError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
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
# Bytes one image may hold in memory while decoded and resized (see image_working_set).
IMAGE_MEMORY_BUDGET = int(float(os.environ.get("IMUSE_IMAGE_MEMORY_MB", 1024)) * 2**20)
# Longest audio decoded without being asked (seconds): a full song fits, an hour-long mix does not.
MAX_AUDIO_SECONDS = float(os.environ.get("IMUSE_MAX_AUDIO_SECONDS", 15 * 60))


def check_file(path, what: str = "media") -> Path:
    """A clear error for a path that cannot be a media file, before any decoder sees it."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise MediaError(f"{path}: broken symbolic link (to {os.readlink(path)}), not an {what} file") from None
        raise MediaError(f"{path}: file not found (expected an {what} file)") from None
    except NotADirectoryError:
        raise MediaError(f"{path}: a parent of this path is a file, not a folder") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError(f"{path}: symbolic link loop, not an {what} file") from None
        raise MediaError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{path}: is a directory, not an {what} file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        kind = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(st.st_mode), "special")
        raise MediaError(f"{path}: is {kind}, not an {what} file")
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
        # High bit-depth grayscale: scale by the format's range (float: by its own range).
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F" or arr.max(initial=0) > 65535 or arr.min(initial=0) < 0:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:
            arr = arr / 257.0  # 0..65535 -> 0..255
        img = Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8), "L")
        return img.convert("RGB")
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
    composite too; 16-bit/float: a float64 copy and an 8-bit one) + the resize to
    ``resize_short`` on the shorter side (PIL resizes in two passes: an intermediate,
    then the result), all at PIL's in-memory pixel sizes (RGB is 4 bytes a pixel).
    """
    w, h = max(int(width), 1), max(int(height), 1)
    pixels = w * h
    decoded = pixels * _pixel_bytes(mode)
    if mode.startswith("I") or mode == "F":
        convert = pixels * (8 + 1 + 4)
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
    ``IMAGE_MEMORY_BUDGET``), judged from its header before decoding.
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
                need, limit = image_working_set(w, h, img.mode), IMAGE_MEMORY_BUDGET if budget is None else budget
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


def load_audio(path, sample_rate: int, max_seconds: float | None = -1.0) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate`` Hz.

    Raises MediaError naming the file when it is missing, empty, not audio, corrupt,
    longer than ``max_seconds`` (default ``MAX_AUDIO_SECONDS``; None: no limit), has no
    samples, holds non-finite values, or is silent (peak below ``SILENCE_PEAK``), saying
    when its channels cancel each other out in the mono mix.
    """
    import soundfile as sf

    if not isinstance(sample_rate, (int, np.integer)) or not 1 <= int(sample_rate) <= 384_000:
        raise MediaError(f"sample rate must be an integer from 1 to 384000 Hz, not {sample_rate!r}")
    if max_seconds is not None and max_seconds < 0:
        max_seconds = MAX_AUDIO_SECONDS
    path = check_file(path, "audio")
    problem = _sniff_audio(path)
    if problem:
        raise MediaError(f"{path}: {problem}")
    try:
        with _decoder_noise_captured():
            info = sf.info(os.fspath(path))
            seconds = info.frames / info.samplerate if info.samplerate else 0.0
            if max_seconds is not None and seconds > max_seconds:
                raise MediaError(f"{path}: audio lasts {seconds / 60:.1f} min, over the {max_seconds / 60:.1f} min "
                                 f"limit; cut it, or raise the limit (--max-audio-seconds, IMUSE_MAX_AUDIO_SECONDS)")
            data, sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise MediaError(f"{path}: not a readable audio file ({msg})") from None
    if data.shape[0] == 0:
        raise MediaError(f"{path}: audio file holds no samples")
    if not np.isfinite(data).all():
        raise MediaError(f"{path}: audio holds non-finite samples (corrupt decode)")
    wave = data.mean(axis=1)  # mono by mean of the channels
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        if data.shape[1] > 1 and float(np.abs(data).max()) >= SILENCE_PEAK:
            raise MediaError(f"{path}: its {data.shape[1]} channels cancel out when mixed to mono (one is the "
                             f"other inverted: a wiring or export fault); the mono mix is silent")
        raise MediaError(f"{path}: silent clip (peak amplitude below {SILENCE_PEAK:g})")
    if sr != sample_rate:
        import torch
        import torchaudio.functional as AF

        wave = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), int(sr), int(sample_rate)).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


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
