"""Decoding images and audio: every mode to RGB, mono resampled audio, one-line errors."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imuse_lib import config, media
from imuse_lib.errors import MediaError

sf = pytest.importorskip("soundfile")


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "P", "1"])
def test_image_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (40, 30), (200, 30, 60)).convert(mode)
    path = _save(img, tmp_path / f"x_{mode}.{'jpg' if mode in ('RGB', 'L', 'CMYK') else 'png'}")
    out = media.load_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_alpha_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    out = media.load_image(_save(img, tmp_path / "a.png"))
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 0
    out = media.load_image(_save(img, tmp_path / "p.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (10, 200, 10)


def test_16bit_grayscale_scaled(tmp_path):
    arr = np.full((6, 6), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    img = Image.fromarray(arr)
    out = media.load_image(_save(img, tmp_path / "g16.png"))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 0)


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    out = media.load_image(_save(img, tmp_path / "r.jpg", exif=exif))
    assert out.size == (20, 40)


def test_tiny_image(tmp_path):
    out = media.load_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "t.png"))
    assert out.size == (1, 1)


def test_png_with_jpg_name_decoded_by_content(tmp_path):
    path = _save(Image.new("RGBA", (5, 5), (9, 9, 9, 255)), tmp_path / "monkey.jpg", format="PNG")
    assert media.load_image(path).getpixel((2, 2)) == (9, 9, 9)


def test_real_oasis_png_in_jpg_if_mirrored():
    root = config.data_root()
    path = root / "oasis" / "images" / "Monkey 3.jpg" if root else None
    if path is None or not path.exists():
        pytest.skip("data mirror not available")
    img = media.load_image(path)
    assert img.mode == "RGB" and img.size[0] > 100


def _bad_image_cases(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(good, quality=95)
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    return {"corrupt": corrupt, "garbage": garbage, "non-image": text, "empty": empty,
            "directory": folder, "missing": tmp_path / "missing.jpg"}


@pytest.mark.parametrize("case", ["corrupt", "garbage", "non-image", "empty", "directory", "missing"])
def test_bad_images_raise_naming_the_file(tmp_path, case):
    path = _bad_image_cases(tmp_path)[case]
    with pytest.raises(MediaError) as err:
        media.load_image(path)
    msg = str(err.value)
    assert path.name in msg and "\n" not in msg


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 50 * 50)
    with pytest.raises(MediaError, match="big.png.*decompression bomb"):
        media.load_image(path)


# --------------------------------------------------------------------------- audio


def _tone(seconds, sr, channels=2, amp=0.3, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    mono = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([mono, 0.5 * mono][:channels], axis=1).astype(np.float32)


def test_audio_mono_mean_and_resampled(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(2.0, 32000), 32000)
    wave = media.load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 32000) <= 1
    # mean of channels 1.0 and 0.5 of the tone: peak ~ 0.75 * 0.3
    assert 0.2 < np.abs(wave).max() < 0.25


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_mono_mix_is_the_channel_mean_bit_for_bit(channels):
    # the fast mono mix must give exactly what block.mean(axis=1) gives (the stored features
    # were computed with it), on odd values too: tiny, huge, negative zero, opposite signs
    rng = np.random.default_rng(channels)
    block = (rng.standard_normal((5000, channels)) * rng.choice([1e-7, 0.3, 1e3], (5000, channels)))
    block = block.astype(np.float32)
    block[0] = -0.0
    block[1, 0], block[1, -1] = 3.4e38, 3.4e38  # overflows to inf in float32 either way
    with np.errstate(over="ignore"):  # that overflow is the point, not a warning
        assert np.array_equal(media._mono(block), block.mean(axis=1), equal_nan=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("channel", [0, 1])
def test_non_finite_sample_in_any_channel_refused(tmp_path, bad, channel):
    path = tmp_path / "bad.wav"
    tone = _tone(6.0, 16000)  # two blocks of 65,536 frames: the bad sample is in the second
    tone[70_000, channel] = bad
    sf.write(path, tone, 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match="bad.wav: audio holds non-finite samples at 0:04.1"):
        media.load_audio(path, 16000)


def test_audio_same_rate_unchanged(tmp_path):
    path = tmp_path / "mono.wav"
    sf.write(path, _tone(1.0, 16000, channels=1), 16000)
    wave = media.load_audio(path, 16000)
    assert len(wave) == 16000


def test_real_mp3_decodes_if_mirrored():
    root = config.data_root()
    clips = sorted((root / "4q" / "audio" / "Q1").glob("*.mp3"))[:1] if root else []
    if not clips:
        pytest.skip("data mirror not available")
    wave = media.load_audio(clips[0], 16000)
    assert 5 * 16000 < len(wave) < 40 * 16000 and np.abs(wave).max() > 0.01


def test_silent_clip_rejected(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros((16000, 2), np.float32), 16000)
    with pytest.raises(MediaError, match="silence.wav.*silent"):
        media.load_audio(path, 16000)


@pytest.mark.parametrize("case", ["text", "empty", "garbage", "missing", "no-samples"])
def test_bad_audio_raises_naming_the_file(tmp_path, case):
    path = tmp_path / f"{case}.mp3"
    if case == "text":
        path.write_text("not audio at all\n" * 20)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    elif case == "no-samples":
        path = tmp_path / "no-samples.wav"
        sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(MediaError) as err:
        media.load_audio(path, 16000)
    assert path.name in str(err.value) and "\n" not in str(err.value)


def test_image_file_is_not_audio(tmp_path):
    path = _save(Image.new("RGB", (8, 8)), tmp_path / "cover.png")
    with pytest.raises(MediaError, match="cover.png: is an image file \\(PNG\\), not audio"):
        media.load_audio(path, 16000)


# --------------------------------------------------------------------------- the short-clip rule


def test_long_clip_unchanged():
    wave = np.arange(100, dtype=np.float32)
    assert media.fit_length(wave, 80, 10) is wave


def test_short_clip_looped_when_at_least_half_the_crop():
    wave = np.arange(60, dtype=np.float32)
    out = media.fit_length(wave, 100, 1000)  # 60 >= min(50, 5 s) -> looped
    assert len(out) == 100 and np.array_equal(out[:60], wave) and np.array_equal(out[60:], wave[:40])


def test_long_crop_loops_clips_of_five_seconds():
    sr = 100
    wave = np.ones(6 * sr, np.float32)  # 6 s clip, 29 s crop: 6 s >= min(14.5, 5) s
    assert len(media.fit_length(wave, 29 * sr, sr)) == 29 * sr


def test_too_short_clip_rejected_naming_the_file():
    with pytest.raises(MediaError, match=r"short\.mp3: clip lasts 0\.04 s, shorter than the 0\.10 s crop"):
        media.fit_length(np.ones(40, np.float32), 100, 1000, path="short.mp3")


# --------------------------------------------------------------------------- budgets and odd files


def test_tiny_file_huge_resize_is_refused_before_decoding(tmp_path):
    """The issue's 143-byte PNG of 20000 x 1 pixels: 4 GB once resized; refused from its header."""
    import time

    path = tmp_path / "wide.png"
    Image.new("L", (20000, 1)).save(path)
    assert path.stat().st_size < 200
    t0 = time.perf_counter()
    with pytest.raises(MediaError, match=r"wide.png: image of 20000x1 pixels \(L\) would need about [\d,]+ MiB"):
        media.load_image(path)
    assert time.perf_counter() - t0 < 1.0


def test_working_set_counts_channels_depth_and_shape():
    ws = media.image_working_set
    assert ws(1000, 1000, "L") < ws(1000, 1000, "RGB") < ws(1000, 1000, "RGBA")
    assert ws(1000, 1000, "I;16") > ws(1000, 1000, "L")
    assert ws(20000, 1, "L") > 100 * ws(200, 100, "L")  # same pixels, far more once resized
    assert ws(256, 256, "RGB") == int((2 * 256 * 256 * 4 + 2 * 256 * 256 * 4) * 1.05) + 8 * 2**20  # no resize


def test_budget_admits_what_fits_and_names_the_limit(tmp_path):
    path = _save(Image.new("RGB", (600, 400), (10, 20, 30)), tmp_path / "ok.png")
    need = media.image_working_set(600, 400, "RGB")
    assert media.load_image(path, budget=need).size == (600, 400)
    with pytest.raises(MediaError, match=r"ok.png: image of 600x400 pixels \(RGB\) would need .* MiB budget"):
        media.load_image(path, budget=need - 1)


def test_long_audio_refused_unless_asked(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, (0.1 * np.sin(np.arange(16000 * 3) / 5)).astype(np.float32), 16000)
    with pytest.raises(MediaError, match=r"long.wav: audio lasts 0.1 min, over the 0.0 min limit"):
        media.load_audio(path, 16000, max_seconds=2)
    assert len(media.load_audio(path, 16000, max_seconds=None)) == 16000 * 3


@pytest.mark.parametrize("case", ["text-mp3", "cancelling", "fifo", "loop", "dangling", "sample-rate"])
def test_odd_audio_gets_the_right_message(tmp_path, case):
    path = tmp_path / "x.mp3"
    sr = 16000
    expect = {"text-mp3": "is a text file, not audio", "cancelling": "channels cancel out",
              "fifo": "FIFO", "loop": "symbolic link loop", "dangling": "broken symbolic link",
              "sample-rate": "sample rate must be"}[case]
    if case == "text-mp3":
        path.write_text("this is a text file\n" * 100)
    elif case == "cancelling":
        path = tmp_path / "x.wav"
        wave = (0.3 * np.sin(np.arange(sr) / 4)).astype(np.float32)
        sf.write(path, np.stack([wave, -wave], 1), sr)
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "loop":
        path.symlink_to(tmp_path / "y.mp3")
        (tmp_path / "y.mp3").symlink_to(path)
    elif case == "dangling":
        path.symlink_to(tmp_path / "gone.mp3")
    elif case == "sample-rate":
        sr = 0
    with pytest.raises(MediaError, match=expect):
        media.load_audio(path, sr)


def test_decoder_noise_does_not_reach_the_terminal(tmp_path, capfd):
    """An MP3-looking file with bad frames: one MediaError, no mpg123 chatter on stderr."""
    path = tmp_path / "junk.mp3"
    path.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 20)
    with pytest.raises(MediaError):
        media.load_audio(path, 16000)
    assert capfd.readouterr().err == ""


PEAK_SCRIPT = r"""
import resource, sys
from PIL import Image
import torchvision.transforms as T
from imuse_lib import media
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = media.load_image(sys.argv[1])
T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])(img)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def _save_big(path: Path, mode: str, size) -> None:
    """A ``mode`` image of ``size`` in the format that keeps its bit depth (PNG, float TIFF)."""
    if mode == "I;16":  # a 16-bit grey PNG, with values over the whole range
        row = (np.arange(size[0], dtype=np.uint32) * 37 % 65536).astype(np.uint16)
        Image.fromarray(np.broadcast_to(row, (size[1], size[0])).copy()).save(path.with_suffix(".png"))
    elif mode == "F":
        row = np.linspace(-3.0, 7.0, size[0], dtype=np.float32)
        Image.fromarray(np.broadcast_to(row, (size[1], size[0])).copy(), "F").save(path.with_suffix(".tif"))
    else:
        Image.new(mode, size).save(path.with_suffix(".png"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "F"])
def test_largest_admitted_image_stays_within_the_budget(tmp_path, mode):
    """Decode + resize + crop of the largest image the budget admits (widest 1-row grey image;
    largest square RGBA, 16-bit grey PNG and float TIFF), measured as the peak RSS added in
    a fresh process."""
    import subprocess
    import sys

    budget = media.image_memory_budget()
    if mode == "L":
        w = max(k for k in range(100, 100_000, 10) if media.image_working_set(k, 1, "L") <= budget)
        size = (w, 1)
    else:
        n = max(k for k in range(100, 20_000, 10)
                if media.image_working_set(k, k, mode) <= budget and k * k <= media.MAX_IMAGE_PIXELS)
        size = (n, n)
    ext = ".tif" if mode == "F" else ".png"
    path = tmp_path / f"big{ext}"
    _save_big(path, mode, size)
    added = int(subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                               check=True).stdout)
    print(f"\nPEAK {mode} {size[0]}x{size[1]}: {added / 2**20:.0f} MiB added (budget {budget / 2**20:.0f} MiB)")
    assert added <= budget
    bigger = tmp_path / f"bigger{ext}"
    _save_big(bigger, mode, (size[0] + 200, size[1] + (200 if mode != "L" else 0)))
    with pytest.raises(MediaError, match="budget|decompression bomb"):
        media.load_image(bigger)


# --------------------------------------------------------------------------- round two (issue 23)


def test_damaged_mp3_says_where(tmp_path):
    """2 kB of an MP3 damaged mid-file: one line saying where, not "Unspecified internal error"."""
    import soundfile as sf

    t = np.arange(16000 * 20) / 16000
    sf.write(tmp_path / "ok.mp3", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="MP3")
    raw = bytearray((tmp_path / "ok.mp3").read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 2048] = bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8))
    (tmp_path / "damaged.mp3").write_bytes(bytes(raw))
    assert len(media.load_audio(tmp_path / "ok.mp3", 16000)) == 16000 * 20
    with pytest.raises(MediaError, match=r"damaged.mp3: audio data damaged at 0:\d\d\.\d of 0:20"):
        media.load_audio(tmp_path / "damaged.mp3", 16000)


def test_audio_budget_counts_rate_and_channels(tmp_path, monkeypatch):
    """Seconds alone let 15 min of 192 kHz stereo through (4.2 GB); bytes do not."""
    mono = media.audio_working_set(16000 * 900, 1, 16000, 16000)
    wide = media.audio_working_set(192000 * 900, 2, 192000, 16000)
    assert wide > 10 * mono and wide > media.audio_memory_budget() > mono
    import soundfile as sf

    sf.write(tmp_path / "eight.wav", np.random.default_rng(0).normal(0, 0.1, (48000, 8)).astype(np.float32), 48000)
    monkeypatch.setenv("IMUSE_AUDIO_MEMORY_MB", "17")
    with pytest.raises(MediaError, match="8-channel audio at 48000 Hz would need about"):
        media.load_audio(tmp_path / "eight.wav", 16000)
    monkeypatch.setenv("IMUSE_AUDIO_MEMORY_MB", "64")
    assert len(media.load_audio(tmp_path / "eight.wav", 16000)) == 16000


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_conversion_matches_the_whole_image_formula(mode):
    """The band-by-band conversion gives the bytes the whole-image float64 formula gave."""
    rng = np.random.default_rng(3)
    if mode == "I;16":
        arr = rng.integers(0, 65536, (600, 300)).astype(np.uint16)
        arr[0, :5] = [0, 257, 514, 65535, 256]
    elif mode == "I":
        arr = rng.integers(-70000, 70000, (600, 300)).astype(np.int32)
    else:
        arr = rng.normal(0, 5, (600, 300)).astype(np.float32)
        arr[1, 1] = np.nan
    img = Image.fromarray(arr) if mode != "I" else Image.fromarray(arr, "I")
    got = np.asarray(media.to_rgb(img, Path("x")))[..., 0]
    ref = np.asarray(img, dtype=np.float64)
    if mode == "F" or ref.max(initial=0) > 65535 or ref.min(initial=0) < 0:
        lo, hi = float(np.nanmin(ref)), float(np.nanmax(ref))
        ref = (ref - lo) / (hi - lo) * 255.0
    else:
        ref = ref / 257.0
    assert np.array_equal(got, np.clip(np.nan_to_num(ref), 0, 255).astype(np.uint8))


AUDIO_PEAK_SCRIPT = r"""
import resource, sys
from imuse_lib import media
media.load_audio(sys.argv[2], 16000)  # the libraries and the resampler warmed on a short clip
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
media.load_audio(sys.argv[1], 16000)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("rate,channels", [(192000, 2), (96000, 8)])
def test_largest_admitted_audio_stays_within_the_budget(tmp_path, rate, channels):
    """Decode + mix + resample to 16 kHz of the longest file the audio budget admits at this
    rate and channel count, measured as the peak RSS added in a fresh process."""
    import subprocess
    import sys

    import soundfile as sf

    budget = media.audio_memory_budget()
    lo, hi = 1, 10**10
    while lo < hi:  # the most frames admitted
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if media.audio_working_set(mid, channels, rate, 16000) <= budget else (lo, mid - 1)
    rng = np.random.default_rng(0)
    with sf.SoundFile(tmp_path / "big.wav", "w", rate, channels, subtype="PCM_16") as fh:
        for start in range(0, lo, 1 << 20):
            fh.write((rng.standard_normal((min(1 << 20, lo - start), channels)) * 0.1).astype(np.float32))
    sf.write(tmp_path / "short.wav", (rng.standard_normal((rate, channels)) * 0.1).astype(np.float32), rate)
    added = int(subprocess.run([sys.executable, "-c", AUDIO_PEAK_SCRIPT, str(tmp_path / "big.wav"),
                                str(tmp_path / "short.wav")], capture_output=True, text=True, check=True).stdout)
    print(f"\nPEAK {rate} Hz x {channels}, {lo / rate:.0f} s: {added / 2**20:.0f} MiB added "
          f"(budget {budget / 2**20:.0f} MiB)")
    assert added <= budget
    with sf.SoundFile(tmp_path / "big.wav", "r+") as fh:  # a little longer: refused before decoding
        fh.seek(0, sf.SEEK_END)
        fh.write(np.zeros((rate, channels), np.float32))
    with pytest.raises(MediaError, match="budget"):
        media.load_audio(tmp_path / "big.wav", 16000)
