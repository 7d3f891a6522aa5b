"""Hand-made feature sources (imuse_lib.models.descriptors) and their place in the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imuse_lib import features
from imuse_lib.models import base, descriptors


def _stats(img: torch.Tensor) -> dict:
    out = descriptors.ImageStats()(img.unsqueeze(0))[0]
    assert out.shape == (len(descriptors.STAT_NAMES),)
    return dict(zip(descriptors.STAT_NAMES, out.tolist()))


def test_image_statistics_read_colour_brightness_and_texture():
    grey = _stats(torch.full((3, 64, 64), 0.5))
    assert grey["sat_mean"] == pytest.approx(0) and grey["colourfulness"] == pytest.approx(0, abs=1e-5)
    assert grey["lum_mean"] == pytest.approx(0.5) and grey["grad1_mean"] < 1e-4
    red = torch.zeros(3, 64, 64)
    red[0] = 0.9
    r = _stats(red)
    assert r["sat_mean"] == pytest.approx(1) and r["hue_bin0"] == pytest.approx(1)
    assert r["colourfulness"] > 0.25  # 0.3 * |(rg, yb) mean| of a flat red
    stripes = torch.zeros(3, 64, 64)
    stripes[:, :, ::4] = 1.0  # vertical edges: horizontal gradients dominate
    s = _stats(stripes)
    assert s["grad1_mean"] > 0.05 and s["orient1"] > 0.9 and s["edges1"] > 0.3
    bright = _stats(torch.full((3, 64, 64), 0.95))
    assert bright["bright_share"] == 1 and grey["dark_share"] == 0


def _tone(freqs, sr=22050, seconds=6.0):
    t = np.arange(int(sr * seconds)) / sr
    return sum(np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32) / len(freqs)


def test_audio_descriptors_tell_major_from_minor_and_find_the_tempo():
    c4 = 261.63
    major = descriptors.audio_descriptor_dict(_tone([c4, c4 * 2 ** (4 / 12), c4 * 2 ** (7 / 12)]))
    minor = descriptors.audio_descriptor_dict(_tone([c4, c4 * 2 ** (3 / 12), c4 * 2 ** (7 / 12)]))
    assert major["mode"] > minor["mode"]
    assert list(major) == descriptors.audio_descriptor_names()
    sr = 22050
    clicks = np.zeros(sr * 12, np.float32)
    for start in range(0, len(clicks) - 200, sr // 2):  # 120 BPM
        clicks[start:start + 200] = np.hanning(200)
    tempo = descriptors.audio_descriptor_dict(clicks, sr)["tempo"]
    assert min(abs(tempo - t) for t in (60, 120, 240)) / 120 < 0.05
    assert all(np.isfinite(v) for v in major.values())


def test_flush_denormals_zeroes_subnormal_weights_only():
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight[0, 0] = 1e-40
        lin.weight[0, 1] = 1e-30
    assert base.flush_denormals(lin) == 1
    assert lin.weight[0, 0].item() == 0 and lin.weight[0, 1].item() == pytest.approx(1e-30)


def test_image_stats_go_through_the_store_with_resume(tmp_path, monkeypatch):
    from imuse_lib import data

    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    frame = data.load_images().head(3)
    first = features.source_features("image_stats", frame=frame)
    assert first.eval.shape == (3, len(descriptors.STAT_NAMES)) and not first.from_cache
    again = features.source_features("image_stats", frame=frame)
    assert again.from_cache and np.array_equal(again.eval, first.eval)
    assert again.meta["spec"]["weights"]["kind"] == "handmade"
    other = features.source_features("image_stats", frame=data.load_images().head(2))
    assert other.path != first.path  # another item list: another key
    with pytest.raises(Exception, match="not in the store"):
        features.source_features("mobilenet_v2_mid", frame=frame, compute=False)


def test_lite0_mid_is_the_mean_of_the_sixth_stage_and_shares_the_trunk():
    """``efficientnet_lite0_mid`` is EfficientNet-Lite0's block-14 output (end of its sixth
    stage, 192 channels) averaged over space; the taps give it and the last layer in one pass,
    the last layer as the ``efficientnet_lite0`` backbone gives it."""
    torch = pytest.importorskip("torch")
    lite = features.source_backbone("efficientnet_lite0").module
    mid_bb = features.source_backbone("efficientnet_lite0_mid")
    assert mid_bb.dim == descriptors.LITE0_MID_CHANNELS == 192
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        h = lite.act(lite._bn0(lite._conv_stem(x)))
        for block in lite._blocks[: descriptors.LITE0_MID_BLOCK + 1]:
            h = block(h)
        want_mid, want_last = h.mean(dim=(2, 3)), lite(x)
        last, mid = descriptors.Lite0Taps(lite, want_last=True, want_mid=True)(x)
        assert torch.allclose(mid_bb.module(x), want_mid, atol=1e-6)
        assert torch.allclose(mid, want_mid, atol=1e-6) and torch.allclose(last, want_last, atol=1e-6)
    short = descriptors.Lite0Taps(lite, want_last=False, want_mid=True)
    assert short.head is None and len(short.blocks) == descriptors.LITE0_MID_BLOCK + 1  # the cut trunk
