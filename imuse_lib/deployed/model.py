"""A deployed model: what ``imuse recommend`` and the song index run, whatever its kind.

:class:`DeployedModel` wraps a trained IMUSE network (the paper's joint network or its
factorised variant, :mod:`imuse_lib.network`) with its two frozen backbones and says, in
one interface, what a query needs: ``embed_image`` / ``embed_audio`` (backbone features),
``image_side`` / ``music_side`` (the arms: vectors and, for a factorised model, VA),
``image_pipeline_module`` (the image path as one torch module, for the book's page),
``fingerprint`` (what an index built by it records) and ``label``. The VA model's variant
is :class:`imuse_lib.deployed.va.VADeployedModel`; :func:`imuse_lib.deployed.load_deployed`
loads either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import MAX_EVAL_CROPS, ModelMismatchError, meta_int


def _torch():
    import torch

    return torch


def clean_provenance(weights: Any) -> dict:
    """Weights provenance without machine-specific fields (where the file happens to be)."""
    if not isinstance(weights, dict):
        return {"kind": str(weights)}
    return {k: v for k, v in sorted(weights.items()) if k not in ("file", "path")}


def _weights_identity(weights: Any) -> dict:
    """What identifies backbone weights: their kind and sha256 (or random-init seed)."""
    w = clean_provenance(weights)
    return {k: w[k] for k in ("kind", "sha256", "init_seed") if k in w}


def model_fingerprint(net, meta: dict) -> str:
    """sha256 over the network's tensors and the backbones (names, weights) it was trained on."""
    h = hashlib.sha256()
    identity = {
        "image_backbone": meta.get("image_backbone"),
        "audio_backbone": meta.get("audio_backbone"),
        "image_weights": _weights_identity(meta.get("image_weights")),
        "audio_weights": _weights_identity(meta.get("audio_weights")),
        "factorised": bool(meta.get("factorised", False)),
    }
    h.update(json.dumps(identity, sort_keys=True, default=str).encode())
    for name, tensor in sorted(net.state_dict().items()):
        arr = tensor.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def weights_label(weights: Any) -> str:
    w = clean_provenance(weights)
    kind = w.get("kind", "?")
    if kind == "pretrained":
        src = w.get("source") or ""
        return f"pretrained ({src})" if src else "pretrained"
    return str(kind)


@dataclass
class DeployedModel:
    """A trained IMUSE network (:class:`~imuse_lib.network.IMUSENet`) with what is needed to
    feed it: its two backbones.

    Backbones are built lazily (an index can be listed or edited without them) and are
    checked against the weights the network was trained on.
    """

    net: Any
    meta: dict
    path: Path | None = None
    fingerprint: str = ""
    image_backbone: Any = None
    audio_backbone: Any = None

    def __post_init__(self):
        self.net.eval()
        if not self.fingerprint:
            self.fingerprint = model_fingerprint(self.net, self.meta)

    @property
    def factorised(self) -> bool:
        return bool(self.meta.get("factorised", False))

    def label(self) -> str:
        m = self.meta
        kind = "factorised" if self.factorised else "joint"
        return (f"{kind} IMUSE model; image backbone {m.get('image_backbone')} "
                f"[{weights_label(m.get('image_weights'))}], audio backbone {m.get('audio_backbone')} "
                f"[{weights_label(m.get('audio_weights'))}]")

    def image_pipeline_module(self):
        """The image path as one torch module (what the book's page runs, via ONNX): the
        evaluation crop, float RGB [N, 3, 224, 224] in [0, 1] (:mod:`imuse_lib.image_view`)
        -> predicted VA [N, 2]; normalisation happens inside. Factorised models only."""
        from .. import image_path

        return image_path.image_pipeline(self.image_bb(), self.net)

    # -- backbones ---------------------------------------------------------------------

    def _build(self, which: str):
        from .. import models

        name = self.meta.get(f"{which}_backbone")
        trained = clean_provenance(self.meta.get(f"{which}_weights"))
        builder = models.build_image_backbone if which == "image" else models.build_audio_backbone
        kind = trained.get("kind", "pretrained")
        kwargs = {"seed": int(trained["init_seed"])} if kind == "random" and "init_seed" in trained else {}
        bb = builder(name, weights=kind, **kwargs)
        have = clean_provenance(getattr(bb, "weights", {}))
        key = "sha256" if kind == "pretrained" else "init_seed"
        if trained.get(key) is not None and have.get(key) != trained.get(key):
            where = f" ({self.path})" if self.path else ""
            raise ModelMismatchError(
                f"model{where} was trained on {which} backbone {name} with {kind} weights {key} "
                f"{str(trained.get(key))[:12]}, but the weights built here have {key} "
                f"{str(have.get(key))[:12]}; retrain or install the same weights")
        return bb

    def image_bb(self):
        if self.image_backbone is None:
            self.image_backbone = self._build("image")
        return self.image_backbone

    def audio_bb(self):
        if self.audio_backbone is None:
            self.audio_backbone = self._build("audio")
        return self.audio_backbone

    # -- features -> arms --------------------------------------------------------------

    def embed_image(self, image) -> np.ndarray:
        """Backbone features [1, D] of an image path or PIL image (decoded by media.load_image)."""
        from .. import features

        return np.asarray(features.embed_images(self.image_bb(), [image]), dtype=np.float32)

    def embed_audio(self, paths: Sequence) -> np.ndarray:
        """Backbone features [n, D] of audio files (eval crops, no store)."""
        from .. import features, media

        paths = [media.check_file(p, "audio") for p in paths]
        # the same evaluation crops as the feature store the model was trained on
        eval_crops = store_kwargs(self.meta, "audio").get("eval_crops")
        kw = {"eval_crops": eval_crops} if eval_crops else {}
        return np.asarray(features.embed_audio(self.audio_bb(), paths, **kw), dtype=np.float32)

    def _arm(self, method: str, feats: np.ndarray, batch: int = 4096) -> np.ndarray | None:
        torch = _torch()
        fn = getattr(self.net, method, None)
        if fn is None:
            return None
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(feats), batch):
                out.append(fn(torch.from_numpy(feats[start:start + batch])).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def image_side(self, feats: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(image vectors, image VA or None) for backbone features [n, Di]."""
        vec = self._arm("image_vector", feats)
        va = self._arm("image_va", feats) if self.factorised else None
        return vec, va

    def music_side(self, feats: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        vec = self._arm("music_vector", feats)
        va = self._arm("music_va", feats) if self.factorised else None
        return vec, va


def store_kwargs(meta: dict, which: str) -> dict:
    """Arguments that select the feature store the model was trained on (its meta records
    the store's own meta under ``image_features`` / ``audio_features``)."""
    store = meta.get(f"{which}_features") or {}
    weights = store.get("weights") or meta.get(f"{which}_weights")
    kw = {"backbone": store.get("backbone") or meta.get(f"{which}_backbone"),
          "weights": clean_provenance(weights).get("kind", "pretrained")}
    for key in (("views", "seed") if which == "image" else ("crops", "seed")):
        if store.get(key) is not None:
            kw[key] = meta_int(store[key], key, 0, 2**63 - 1)
    eval_crops = (store.get("spec") or {}).get("eval_crops")
    if which == "audio" and eval_crops is not None:
        kw["eval_crops"] = meta_int(eval_crops, "eval_crops", 1, MAX_EVAL_CROPS)
    return kw
