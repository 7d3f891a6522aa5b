"""The image arm of :class:`imuse_lib.va_model.VAModel` as one torch module (query path, ONNX).

Input: RGB [N, 3, 224, 224] in [0, 1], the evaluation crop of :mod:`imuse_lib.image_view`
(``image_path.load_crop``), i.e. ``torchvision ToTensor`` without normalisation. Each
feature source normalises its own input inside the module (ImageNet mean/sd for MobileNetV2,
(x*255 - 127)/128 for EfficientNet-Lite0, none for the image statistics); each network's trunk
runs once when both its last layer and its pooled intermediate blocks are sources. Then the
stored standardisation, block weights, kernel regression and calibration give VA [N, 2].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..errors import ImuseError
from ..image_path import Normalise
from ..image_view import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD
from ..models.descriptors import pool_block


class _MobileNetTaps(nn.Module):
    """MobileNetV2's trunk once: its pooled last layer and/or its pooled intermediate blocks."""

    def __init__(self, want_last: bool, want_mid: bool):
        super().__init__()
        from ..features import source_backbone
        from ..models.descriptors import MID_BLOCKS

        bb = source_backbone("mobilenet_v2")
        self.norm = Normalise(IMAGENET_MEAN, IMAGENET_STD)
        self.features = bb.module.features if want_last else bb.module.features[: max(MID_BLOCKS) + 1]
        self.blocks = tuple(MID_BLOCKS) if want_mid else ()
        self.want_last = want_last

    def forward(self, x):
        x = self.norm(x)
        mid = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.blocks:
                mid += pool_block(x)
        last = x.mean(dim=(2, 3)) if self.want_last else None
        return last, (torch.cat(mid, dim=1) if mid else None)


class _Lite0Taps(nn.Module):
    """EfficientNet-Lite0's trunk once: its pooled last layer and/or its pooled sixth stage."""

    def __init__(self, want_last: bool, want_mid: bool):
        super().__init__()
        from ..features import source_backbone
        from ..models.descriptors import Lite0Taps

        self.norm = Normalise(LITE_MEAN, LITE_STD)
        self.taps = Lite0Taps(source_backbone("efficientnet_lite0").module, want_last, want_mid)

    def forward(self, x):
        return self.taps(self.norm(x))


class ImageVAPipeline(nn.Module):
    """RGB in [0, 1] -> calibrated VA, for one :class:`~imuse_lib.va_model.ArmModel`."""

    def __init__(self, arm):
        super().__init__()
        from ..features import IMAGE_SOURCES
        from ..models.descriptors import ImageStats

        sources = tuple(arm.sources)
        unknown = set(sources) - set(IMAGE_SOURCES)  # every image source has its tap below
        if unknown:
            raise ImuseError(f"image pipeline: no torch path for source(s) {sorted(unknown)}")
        self.sources = sources
        use_last, use_mid = "mobilenet_v2" in sources, "mobilenet_v2_mid" in sources
        self.mobilenet = _MobileNetTaps(use_last, use_mid) if (use_last or use_mid) else None
        lite_last, lite_mid = "efficientnet_lite0" in sources, "efficientnet_lite0_mid" in sources
        self.lite0 = _Lite0Taps(lite_last, lite_mid) if (lite_last or lite_mid) else None
        self.stats = ImageStats() if "image_stats" in sources else None
        f32 = lambda a: torch.tensor(np.asarray(a, np.float64), dtype=torch.float32)  # noqa: E731
        shift, mult = arm.folded_affine()  # standardisation and block weights as one affine map
        self.register_buffer("shift", f32(shift))
        self.register_buffer("mult", f32(mult))
        self.kernel = arm.kernel
        self.gamma = float(arm.gamma)
        if arm.kernel == "rbf":
            basis = np.asarray(arm.basis, np.float64)
            self.register_buffer("basis", f32(basis))
            self.register_buffer("basis_sq", f32((basis ** 2).sum(1)))
        self.register_buffer("coef", f32(arm.coef))
        self.register_buffer("bias", f32(arm.bias))
        self.register_buffer("centre", f32(arm.centre))
        self.register_buffer("scale", f32(arm.scale))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The raw (unstandardised) source features, concatenated in the arm's order."""
        taps = {}
        if self.mobilenet is not None:
            taps["mobilenet_v2"], taps["mobilenet_v2_mid"] = self.mobilenet(x)
        if self.lite0 is not None:
            taps["efficientnet_lite0"], taps["efficientnet_lite0_mid"] = self.lite0(x)
        parts = [self.stats(x) if s == "image_stats" else taps[s] for s in self.sources]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ArmModel.predict's arithmetic in float32 torch (numpy float64 there: both are needed,
        # the store's items are scored in numpy, a query's image goes through this module)
        z = (self.features(x) - self.shift) * self.mult
        if self.kernel == "linear":
            raw = z @ self.coef + self.bias
        else:
            d2 = (z * z).sum(1, keepdim=True) + self.basis_sq[None, :] - 2.0 * z @ self.basis.T
            raw = torch.exp(-self.gamma * d2.clamp_min(0.0)) @ self.coef + self.bias
        return (self.centre + (raw - self.centre) * self.scale).clamp(0.0, 1.0)
