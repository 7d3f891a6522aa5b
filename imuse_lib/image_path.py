"""The image path in torch: from the evaluation crop to predicted VA, as one module.

What ``imuse recommend`` computes for an image and what the book's page runs (exported to
ONNX by :mod:`imuse_lib.export`): a float RGB crop [N, 3, 224, 224] in [0, 1] (the
evaluation view of :mod:`imuse_lib.image_view` without normalisation: :func:`load_crop`),
then the backbone's own normalisation, the frozen backbone and the VA head, all inside one
module, so that the page only decodes, resizes and crops.

* :class:`ImagePipeline` (:func:`image_pipeline`): a factorised IMUSE network on a
  backbone whose evaluation view is exactly the spec's crop + ``Normalize``
  (:func:`split_eval_transform` refuses anything else: the page could not reproduce it);
* :class:`Normalise`: torchvision's ``Normalize`` arithmetic as a module, for other image
  paths (the VA model's, :mod:`imuse_lib.va_model.torch_path`).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import image_view, media
from .errors import ModelMismatchError


def normalise(x, mean, std):
    """torchvision's Normalize arithmetic: subtract, then divide."""
    return (x - mean) / std


class Normalise(nn.Module):
    """:func:`normalise` with fixed per-channel ``mean``/``std`` (buffers of shape [1, 3, 1, 1])."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        return normalise(x, self.mean, self.std)


def load_crop(image, label: str = "<image>"):
    """The image path's input for ``image`` (a path or PIL image, named ``label`` in errors):
    float [3, 224, 224] in [0, 1], decoded as ``imuse recommend`` decodes it (``media.load_image``)."""
    img = media.load_image(image) if isinstance(image, (str, os.PathLike)) else media.to_rgb(image, label)
    return image_view.crop_transform()(img)


def _describe(t) -> str:
    return " ".join(repr(t).split())


def split_eval_transform(backbone):
    """(mean, std) of a backbone whose evaluation view is the spec's crop + Normalize;
    anything else cannot be reproduced by the page and is refused."""
    from torchvision import transforms as T

    steps = list(getattr(backbone.eval_transform, "transforms", []))
    expected = image_view.crop_steps()
    ok = (len(steps) == 4 and isinstance(steps[3], T.Normalize)
          and [_describe(s) for s in steps[:3]] == [_describe(s) for s in expected])
    if not ok:
        raise ModelMismatchError(
            f"image backbone {backbone.name}: its evaluation view ({_describe(backbone.eval_transform)}) is not "
            f"Resize({image_view.RESIZE}) + CenterCrop({image_view.CROP}) + ToTensor + Normalize, "
            f"which the page reproduces")
    return tuple(float(m) for m in steps[3].mean), tuple(float(s) for s in steps[3].std)


class ImagePipeline(nn.Module):
    """``x`` float [N, 3, 224, 224] RGB in [0, 1] -> predicted VA [N, 2]: the backbone's own
    normalisation, the frozen backbone, the image arm and the VA head of a factorised IMUSE
    network."""

    def __init__(self, backbone, net):
        super().__init__()
        mean, std = split_eval_transform(backbone)
        self.backbone, self.net = backbone.module.eval(), net.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net.image_va(self.backbone(normalise(x, self.mean, self.std)))


def image_pipeline(backbone, net):
    """The image path of a factorised IMUSE network on ``backbone`` as one module (eval mode)."""
    if not getattr(net, "factorised", False):
        raise ModelMismatchError("the page needs a factorised model: in the joint network an image's VA "
                                 "depends on the song it is paired with")
    return ImagePipeline(backbone, net).eval()
