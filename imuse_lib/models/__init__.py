"""The frozen backbones of the paper's two arms, with the provenance of their weights.

    from imuse_lib import models
    bb = models.build_image_backbone("mobilenet_v2")            # ImageNet, frozen, headless
    ab = models.build_audio_backbone("musicnn")                 # MagnaTagATune tagger
    models.build_audio_backbone("msd_fcn")                      # a tagger of TAGGERS (MSD, Jamendo)
    models.build_audio_backbone("samplecnn", weights="random")  # random only when asked

Asking for pretrained weights that are not on this machine raises WeightsError naming the
backbone and how to obtain them. See :mod:`.image` and :mod:`.audio` for the details.
"""

from __future__ import annotations

from .audio import AUDIO_BACKBONES, TAGGERS, build_audio_backbone
from .base import Backbone, sha256_file
from .image import IMAGE_BACKBONES, build_image_backbone


def available_image_backbones() -> list[str]:
    """Image backbones whose PRETRAINED weights are on this machine."""
    from . import image

    return [n for n in IMAGE_BACKBONES if image.has_pretrained(n)]


def available_audio_backbones() -> list[str]:
    """Audio backbones whose PRETRAINED weights are on this machine."""
    from . import audio

    return [n for n in AUDIO_BACKBONES if audio.has_pretrained(n)]


def available_taggers() -> list[str]:
    """Taggers of :data:`TAGGERS` (MSD, MTG-Jamendo) whose pretrained weights are here."""
    from . import audio

    return [n for n in TAGGERS if audio.has_pretrained(n)]


def build_backbone(name: str, weights: str = "pretrained", **kwargs) -> Backbone:
    """Either arm by name."""
    if name in IMAGE_BACKBONES:
        return build_image_backbone(name, weights=weights, **kwargs)
    return build_audio_backbone(name, weights=weights, **kwargs)


__all__ = ["IMAGE_BACKBONES", "AUDIO_BACKBONES", "TAGGERS", "Backbone", "available_image_backbones",
           "available_audio_backbones", "available_taggers", "build_image_backbone", "build_audio_backbone", "build_backbone",
           "sha256_file"]
