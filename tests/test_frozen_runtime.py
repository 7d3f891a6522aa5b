"""Frozen backbones on ONNX Runtime give PyTorch's numbers (imuse_lib.frozen_runtime).

Real weights and real inputs (OASIS images, 4Q clips) where the mirror has them; what the
runtime cannot reproduce runs on PyTorch, and the feature store says which runtime ran."""

import numpy as np
import pytest
import torch

from imuse_lib import data, feature_views, features, frozen_runtime, media, models
from imuse_lib.errors import WeightsError

CPU = torch.device("cpu")


def _images(n=3):
    return list(data.load_images()["path"][:n])


def _clips(n=2):
    return list(data.load_catalog()["path"][:n])


def _torch_forward(bb, inputs):
    with torch.inference_mode():
        return bb.module(torch.stack(inputs)).numpy()


def _backbone(kind, name):
    try:
        return models.build_image_backbone(name) if kind == "image" else models.build_audio_backbone(name)
    except WeightsError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("kind,name", [("image", "mobilenet_v2"), ("audio", "musicnn"), ("audio", "fcn")])
def test_onnx_runtime_gives_the_torch_numbers_on_real_inputs(kind, name, tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path))
    bb = _backbone(kind, name)
    if kind == "image":
        inputs = [x for p in _images() for x in feature_views.image_inputs(bb, p, p, 1, 0)]
    else:
        inputs = [x for p in _clips() for x in feature_views.audio_inputs(bb, p, p, 1, 0, 2)]
    got = feature_views.forward(bb, inputs, 4, CPU)
    assert frozen_runtime.runtime_name(bb.module, CPU).startswith("onnxruntime")
    want = _torch_forward(bb, inputs)
    assert got.shape == want.shape == (len(inputs), bb.dim)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert list((tmp_path / "onnx").glob("*.onnx")), "the exported graph is cached on disk"


def test_forced_torch_and_an_unfaithful_export_run_on_pytorch(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path))
    # The image statistics' grid pooling is approximated by the exporter: refused by the
    # parity check, so the store keeps torch's numbers exactly.
    stats = features.source_backbone("image_stats")
    inputs = [stats.eval_transform(media.load_image(p)) for p in _images(2)]
    got = feature_views.forward(stats, inputs, 4, CPU)
    np.testing.assert_array_equal(got, _torch_forward(stats, inputs))
    assert frozen_runtime.runtime_name(stats.module, CPU).startswith("torch")

    monkeypatch.setenv(frozen_runtime.RUNTIME_ENV, "torch")
    bb = _backbone("image", "mobilenet_v2")
    x = torch.rand(2, 3, 224, 224)
    assert frozen_runtime.runner(bb.module, x, CPU) is None
    assert frozen_runtime.runner(bb.module, x, torch.device("meta")) is None  # not a CPU: torch


def test_a_module_the_exporter_refuses_runs_on_pytorch(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path))

    class LeavesTheGraph(torch.nn.Module):  # the exporter fails on it
        def forward(self, x):
            return torch.from_numpy(np.asarray(x.numpy().sum(axis=1, keepdims=True)))

    class FreezesItsInput(torch.nn.Module):  # traced into a constant: the probe catches it
        def forward(self, x):
            return x[:, :1] * 1e-9 + x.new_tensor(x.tolist()).sum(dim=1, keepdim=True)

    x = torch.rand(3, 5)
    for m in (LeavesTheGraph(), FreezesItsInput()):
        assert frozen_runtime.runner(m, x, CPU) is None, type(m).__name__
        assert frozen_runtime.runtime_name(m, CPU).startswith("torch")
        np.testing.assert_allclose(feature_views.forward(
            type("B", (), {"module": m, "dim": 1, "name": "probe"})(), list(x), 2, CPU)[:, 0], x.sum(1).numpy(),
            rtol=1e-6)


def test_the_store_records_the_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path))
    fs = features.image_features("mobilenet_v2", views=1, images=data.load_images().head(3), progress=False)
    assert fs.meta["runtime"].startswith("onnxruntime")
    # not part of the key: the two runtimes' features agree to float rounding (tests above)
    assert "runtime" not in str(fs.meta["spec"])
