"""The deployed VA model (:mod:`imuse_lib.va_model`) behind ``imuse recommend``: a
:class:`~imuse_lib.deployed.model.DeployedModel` whose two arms are per-item VA regressors.

It is *factorised* (each side predicts VA alone), so the recommender ranks by Eq. 1 between
the query's predicted VA and the stored predicted VA of every song (or image) in the index.
"Features" on this model's interface are the arm's feature sources concatenated in order;
an image query runs :meth:`VAModel.image_pipeline_module` (one MobileNetV2 pass plus the
image statistics) on the evaluation crop, a song query the audio sources (tagger embedding,
tag probabilities, librosa descriptors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import va_model
from ..errors import ModelMismatchError
from .model import DeployedModel


def _split(feats: np.ndarray, dims: list[int]) -> list[np.ndarray]:
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or feats.shape[1] != sum(dims):
        raise ModelMismatchError(f"features of shape {feats.shape} do not fit the VA model's sources "
                                 f"({sum(dims)} columns)")
    return np.split(feats, np.cumsum(dims)[:-1], axis=1)


@dataclass
class VADeployedModel(DeployedModel):
    """A :class:`~imuse_lib.deployed.model.DeployedModel` wrapping a :class:`~imuse_lib.va_model.VAModel`."""

    va: va_model.VAModel | None = None

    def __post_init__(self):  # no network to put in eval mode; the VA model's own fingerprint
        if self.va is None:
            raise ModelMismatchError("VADeployedModel needs a VA model")
        if not self.fingerprint:
            self.fingerprint = self.va.fingerprint()
        self._pipeline = None

    @classmethod
    def from_va(cls, model: va_model.VAModel, path: Path | None = None) -> "VADeployedModel":
        prov = model.provenance.get("sources", {})
        meta = {"factorised": True, "kind": "va_model",
                "image_backbone": "+".join(model.image.sources), "audio_backbone": "+".join(model.audio.sources),
                "image_weights": _first_weights(prov.get("image")), "audio_weights": _first_weights(prov.get("audio")),
                "split": model.provenance.get("split", "cold"), "seed": model.provenance.get("seed"),
                "profile": model.provenance.get("profile")}
        return cls(net=None, meta=meta, path=path or model.path, va=model)

    @property
    def factorised(self) -> bool:
        return True

    def label(self) -> str:
        return self.va.label()

    # -- the image side ------------------------------------------------------------------
    def image_pipeline_module(self):
        """RGB [N, 3, 224, 224] in [0, 1] -> VA [N, 2] (see :meth:`VAModel.image_pipeline_module`)."""
        if self._pipeline is None:
            self._pipeline = self.va.image_pipeline_module()
        return self._pipeline

    def image_bb(self):
        return self.image_pipeline_module()

    def audio_bb(self):
        return None

    def embed_image(self, image) -> np.ndarray:
        """The image sources' features [1, D] of an image path or PIL image."""
        import torch

        from .. import image_path

        x = image_path.load_crop(image, "<in-memory image>").unsqueeze(0)  # the evaluation crop, RGB in [0, 1]
        with torch.inference_mode():
            return self.image_pipeline_module().features(x).numpy().astype(np.float64)

    def image_side(self, feats: np.ndarray):
        blocks = _split(feats, [len(m) for m in self.va.image.mean])
        return None, self.va.image.predict(blocks)

    # -- the song side -------------------------------------------------------------------
    def embed_audio(self, paths) -> np.ndarray:
        from .. import media

        paths = [media.check_file(p, "audio") for p in paths]
        return np.concatenate(self.va.embed_song_sources(paths), axis=1)

    def music_side(self, feats: np.ndarray):
        blocks = _split(feats, [len(m) for m in self.va.audio.mean])
        return None, self.va.audio.predict(blocks)

    # -- what the index is built from: the feature store's evaluation features ------------
    def catalog_features(self, catalog) -> np.ndarray:
        b = self.va.audio_blocks()
        return np.concatenate(b.take(b.rows([str(s) for s in catalog.song_id])), axis=1)

    def oasis_features(self, images) -> np.ndarray:
        b = self.va.image_blocks()
        return np.concatenate(b.take(b.rows([str(i) for i in images.image_id])), axis=1)


def _first_weights(sources: dict | None) -> dict:
    """The weights provenance of the first learned source (what the index's meta shows)."""
    for info in (sources or {}).values():
        w = (info or {}).get("weights") or {}
        if w.get("kind") == "pretrained":
            return w
    return {"kind": "handmade"}


def load_va(path) -> VADeployedModel:
    """A saved VA model file as a deployed model."""
    return VADeployedModel.from_va(va_model.load(path), Path(path))
