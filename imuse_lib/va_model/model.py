"""The two-arm VA model: predictions, the query-time paths, and its file (``.npz`` + JSON header)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImuseError, ModelMismatchError
from ..io import atomic_path, open_npz, write_json
from .arm import ArmModel
from .blocks import Blocks, load_blocks

FORMAT = "imuse-va-model"
FORMAT_VERSION = 1


@dataclass
class VAModel:
    """Image and audio arms plus everything needed to trust and reuse them."""

    image: ArmModel
    audio: ArmModel
    provenance: dict
    _image_blocks: Blocks | None = None
    _audio_blocks: Blocks | None = None
    path: Path | None = None

    kind = "va_model"

    # ---- predictions from the feature store (every OASIS image / catalog song)
    def image_blocks(self) -> Blocks:
        if self._image_blocks is None:
            self._image_blocks = load_blocks(self.image.sources, "image")
        return self._image_blocks

    def audio_blocks(self) -> Blocks:
        if self._audio_blocks is None:
            self._audio_blocks = load_blocks(self.audio.sources, "audio")
        return self._audio_blocks

    def predict_images(self, ids=None, calibrated: bool = True) -> np.ndarray:
        b = self.image_blocks()
        rows = np.arange(len(b.ids)) if ids is None else b.rows(ids)
        return self.image.predict(b.take(rows), calibrated)

    def predict_songs(self, ids=None, calibrated: bool = True) -> np.ndarray:
        b = self.audio_blocks()
        rows = np.arange(len(b.ids)) if ids is None else b.rows(ids)
        return self.audio.predict(b.take(rows), calibrated)

    def predictor(self, name: str = "va_model", image_ids=None, song_ids=None, calibrated: bool = True):
        """An :class:`~imuse_lib.baselines.ItemVAPredictor` whose rows are ``image_ids`` /
        ``song_ids`` (default: the feature store's order, i.e. ``data.load_images()`` and
        ``data.load_catalog()``), for :func:`imuse_lib.metrics.score`."""
        from ..baselines import ItemVAPredictor

        return ItemVAPredictor(name, self.predict_images(image_ids, calibrated),
                               self.predict_songs(song_ids, calibrated), self.describe())

    def describe(self) -> dict:
        return {"image": self.image.describe(), "audio": self.audio.describe(),
                **{k: v for k, v in self.provenance.items() if k != "tuning"}}

    def label(self) -> str:
        # "factorised" first: the CLI and the index read it as "each side predicts VA alone"
        return (f"factorised VA model: images {'+'.join(self.image.sources)} ({self.image.kernel}), "
                f"songs {'+'.join(self.audio.sources)} ({self.audio.kernel})")

    # ---- query time: raw inputs -> VA
    def image_pipeline_module(self):
        """torch.nn.Module: RGB [N, 3, 224, 224] in [0, 1] (the evaluation crop of
        :mod:`imuse_lib.image_view`) -> calibrated VA [N, 2]. Backbone normalisation and
        the image statistics run inside, in torch ops (ONNX-exportable)."""
        from .torch_path import ImageVAPipeline

        return ImageVAPipeline(self.image)

    def embed_song_sources(self, paths) -> list[np.ndarray]:
        """The audio arm's source blocks for audio files outside the catalog (not stored)."""
        from .. import features, media
        from ..models import descriptors

        for p in paths:
            media.check_file(p, "audio")
        out, cache = [], {}
        for s in self.audio.sources:
            if s == "audio_descriptors":
                rows = [descriptors.audio_descriptor_inputs(str(p), p)[0].numpy() for p in paths]
                out.append(np.stack(rows).astype(np.float64))
                continue
            base = s[: -len(features.TAG_SUFFIX)] if s.endswith(features.TAG_SUFFIX) else s
            if base not in cache:
                bb = features.source_backbone(base)
                cache[base] = (bb, features.embed_audio(bb, paths))
            bb, emb = cache[base]
            if s.endswith(features.TAG_SUFFIX):
                import torch

                with torch.inference_mode():
                    out.append(bb.head(torch.from_numpy(emb)).numpy().astype(np.float64))
            else:
                out.append(emb.astype(np.float64))
        return out

    def predict_audio_files(self, paths) -> np.ndarray:
        return self.audio.predict(self.embed_song_sources(paths))

    # ---- persistence
    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for prefix, arm in (("image_", self.image), ("audio_", self.audio)):
            for k, v in sorted(arm.arrays(prefix).items()):
                h.update(k.encode())
                h.update(np.ascontiguousarray(np.asarray(v, np.float64)).tobytes())
        h.update(json.dumps({"image": self.image.describe(), "audio": self.audio.describe(),
                             "sources": self.provenance.get("sources")}, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def save(self, path) -> Path:
        """One ``.npz`` (arrays + a JSON header with the full provenance), written atomically,
        plus a readable copy of the header beside it (``.json``)."""
        path = Path(path)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "image": self.image.describe(),
                  "audio": self.audio.describe(), "provenance": jsonable(self.provenance),
                  "fingerprint": self.fingerprint()}
        arrays = {**self.image.arrays("image_"), **self.audio.arrays("audio_")}
        arrays["header"] = np.array(json.dumps(header, sort_keys=True))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        write_json(path.with_suffix(".json"), header)
        self.path = path
        return path


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if k != "trials"}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def is_va_model_file(path) -> bool:
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "header" in z.files and json.loads(str(z["header"])).get("format") == FORMAT
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def load(path) -> VAModel:
    """A saved :class:`VAModel`; ModelMismatchError when the file is not one (or altered)."""
    path = Path(path)
    if not path.is_file():
        raise ImuseError(f"{path}: VA model file not found")
    try:
        with open_npz(path, "VA model file") as z:
            header = json.loads(str(z["header"]))
            if header.get("format") != FORMAT:
                raise ModelMismatchError(f"{path}: not an IMUSE VA model file")
            if header.get("format_version") != FORMAT_VERSION:
                raise ModelMismatchError(f"{path}: VA model format {header.get('format_version')}, "
                                         f"this code reads {FORMAT_VERSION}")
            image = ArmModel.from_arrays(z, "image_", header["image"])
            audio = ArmModel.from_arrays(z, "audio_", header["audio"])
    except (KeyError, ValueError, OSError) as exc:
        raise ModelMismatchError(f"{path}: unreadable VA model file ({type(exc).__name__}: {exc})") from None
    model = VAModel(image, audio, header.get("provenance", {}), path=path)
    if model.fingerprint() != header.get("fingerprint"):
        raise ModelMismatchError(f"{path}: arrays do not match the recorded fingerprint (altered file)")
    return model
