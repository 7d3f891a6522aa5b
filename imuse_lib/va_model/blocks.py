"""The feature blocks an arm is fitted on: each source's evaluation features from the store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ImuseError, ModelMismatchError


@dataclass
class Blocks:
    """The evaluation features of one arm's sources, rows aligned to ``ids``."""

    ids: list
    sources: tuple
    arrays: list
    provenance: dict

    def rows(self, ids) -> np.ndarray:
        index = {i: n for n, i in enumerate(self.ids)}
        missing = [i for i in ids if str(i) not in index]
        if missing:
            raise ImuseError(f"no features for {len(missing)} item(s), e.g. {missing[0]!r}")
        return np.array([index[str(i)] for i in ids], dtype=np.int64)

    def take(self, rows) -> list[np.ndarray]:
        return [a[rows] for a in self.arrays]


def load_blocks(sources, arm: str, frame=None, compute: bool = False, progress: bool = False) -> Blocks:
    """Load (``compute=True``: compute when missing) each source's evaluation features."""
    from .. import features

    allowed = features.IMAGE_SOURCES if arm == "image" else features.AUDIO_SOURCES
    bad = [s for s in sources if s not in allowed]
    if bad:
        raise ImuseError(f"{bad[0]!r} is not an {arm} feature source; choose from {', '.join(allowed)}")
    arrays, prov, ids = [], {}, None
    for s in sources:
        fs = features.source_features(s, progress=progress, frame=frame, compute=compute)
        if ids is None:
            ids = list(fs.ids)
        elif list(fs.ids) != ids:
            raise ModelMismatchError(f"feature source {s}: its items differ from {sources[0]}'s")
        arrays.append(np.asarray(fs.eval, np.float64))
        prov[s] = {"key": fs.meta.get("key") or fs.meta.get("derived_from"),
                   "weights": _weights_provenance(fs.meta.get("weights")), "dim": int(fs.eval.shape[1])}
    return Blocks(ids, tuple(sources), arrays, prov)


def _weights_provenance(w) -> dict | None:
    if not isinstance(w, dict):
        return None
    return {k: w.get(k) for k in ("kind", "source", "sha256") if k in w}
