"""The feature store as training reads it: every image's and song's stored features aligned
with their true VA (:class:`FeatureData`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import DataError, ModelMismatchError
from .settings import _plain


class FeatureData:
    """Stored features of every image and song, aligned with their true VA.

    ``image_fs`` / ``audio_fs``: objects like ``features.image_features(...)`` returns
    (``.ids``, ``.train [N,K,D]``, ``.eval [N,D]``, ``.meta``); ``images`` / ``songs``: frames
    with ``image_id`` / ``song_id``, ``valence``, ``arousal`` (and ``path`` for end-to-end).
    """

    def __init__(self, image_fs, audio_fs, images: pd.DataFrame, songs: pd.DataFrame):
        self.image_ids = [str(i) for i in image_fs.ids]
        self.song_ids = [str(s) for s in audio_fs.ids]
        for what, fs, ids in (("image", image_fs, self.image_ids), ("audio", audio_fs, self.song_ids)):
            tr, ev = np.asarray(fs.train), np.asarray(fs.eval)
            if tr.ndim != 3 or ev.ndim != 2 or tr.shape[0] != len(ids) or ev.shape[0] != len(ids) \
                    or tr.shape[2] != ev.shape[1]:
                raise ModelMismatchError(
                    f"{what} feature set ({(fs.meta or {}).get('backbone', '?')}) has inconsistent shapes: "
                    f"{len(ids)} ids, train {tr.shape}, eval {ev.shape}")
        self.image_train = torch.as_tensor(np.asarray(image_fs.train, dtype=np.float32))
        self.image_eval = torch.as_tensor(np.asarray(image_fs.eval, dtype=np.float32))
        self.audio_train = torch.as_tensor(np.asarray(audio_fs.train, dtype=np.float32))
        self.audio_eval = torch.as_tensor(np.asarray(audio_fs.eval, dtype=np.float32))
        self.image_meta, self.audio_meta = _plain(dict(image_fs.meta or {})), _plain(dict(audio_fs.meta or {}))
        self.image_row = {i: r for r, i in enumerate(self.image_ids)}
        self.song_row = {s: r for r, s in enumerate(self.song_ids)}
        self.image_va = self._va_table(images, "image_id", self.image_ids, "image")
        self.song_va = self._va_table(songs, "song_id", self.song_ids, "song")
        self.images, self.songs = images, songs

    @staticmethod
    def _va_table(frame: pd.DataFrame, key: str, ids: list[str], what: str) -> np.ndarray:
        table = frame.set_index(frame[key].astype(str))[["valence", "arousal"]]
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise DataError(f"{what} feature store holds id(s) with no VA label: {missing[:3]}")
        return table.loc[ids].to_numpy(dtype=np.float32)

    @property
    def image_dim(self) -> int:
        return int(self.image_eval.shape[1])

    @property
    def audio_dim(self) -> int:
        return int(self.audio_eval.shape[1])

    def rows(self, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of each pair's image and song; a pair whose item has no features is an error."""
        try:
            img = np.fromiter((self.image_row[str(i)] for i in pairs.image_id), dtype=np.int64, count=len(pairs))
            song = np.fromiter((self.song_row[str(s)] for s in pairs.song_id), dtype=np.int64, count=len(pairs))
        except KeyError as exc:
            raise ModelMismatchError(f"pair item {exc.args[0]!r} is not in the feature store "
                                     f"({self.image_meta.get('backbone')}/{self.audio_meta.get('backbone')})") from None
        return img, song

    def meta(self) -> dict:
        return {"image_backbone": self.image_meta.get("backbone"), "audio_backbone": self.audio_meta.get("backbone"),
                "image_weights": self.image_meta.get("weights"), "audio_weights": self.audio_meta.get("weights"),
                "image_features": self.image_meta, "audio_features": self.audio_meta,
                "image_dim": self.image_dim, "audio_dim": self.audio_dim}
