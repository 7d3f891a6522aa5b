"""Decoding images and audio into what the backbones take, with one-line errors.

* :func:`load_image` -> an RGB ``PIL.Image`` whatever the file's mode (CMYK, palette,
  alpha, grayscale, 16-bit, float) and EXIF orientation; decoded by content, not by the
  file name (OASIS ``Monkey 3.jpg`` is a PNG with alpha).
* :func:`load_audio` -> mono float32 samples at the asked sample rate: soundfile decodes
  (it reads the 4Q MP3s), channels are mixed by their mean, torchaudio resamples.
* :func:`fit_length` applies the short-clip rule (see there) before cropping.

Every failure is a :class:`~imuse_lib.errors.MediaError` naming the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

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


def check_file(path, what: str = "media") -> Path:
    """A clear error for a path that cannot be a media file, before any decoder sees it."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found (expected an {what} file)")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not an {what} file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes), not an {what} file")
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


def load_image(path):
    """Decode ``path`` into an RGB ``PIL.Image`` (EXIF rotation applied).

    Raises MediaError naming the file when it is missing, a directory, empty, not an
    image, truncated/corrupt, or larger than ``MAX_IMAGE_PIXELS`` (decompression bomb).
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


def load_audio(path, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate`` Hz.

    Raises MediaError naming the file when it is missing, empty, not audio, corrupt,
    has no samples, holds non-finite values, or is silent (peak below ``SILENCE_PEAK``).
    """
    import soundfile as sf

    path = check_file(path, "audio")
    try:
        data, sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MediaError(f"{path}: not a readable audio file ({msg})") from None
    if data.shape[0] == 0:
        raise MediaError(f"{path}: audio file holds no samples")
    wave = data.mean(axis=1)  # mono by mean of the channels
    if not np.isfinite(wave).all():
        raise MediaError(f"{path}: audio holds non-finite samples (corrupt decode)")
    if float(np.abs(wave).max()) < SILENCE_PEAK:
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
