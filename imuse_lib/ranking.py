"""Ranking by Eq. 1 in VA space: the factorised recommender's search, and top-k selection.

Pure numpy (no model): the song index prepares its VA columns with :func:`va_columns`
when loaded, and a query ranks them with :func:`rank_va`. Ties are broken by position,
and rows are stored sorted by id, so ties go to the smaller id and repeated queries give
identical results.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import pairs

PARTITION_MIN = 4096  # below this many rows a full sort is as fast as argpartition


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first; equal scores keep position order.

    Rows are stored sorted by id, so position order is the id tie-break. For large arrays
    ``argpartition`` finds the candidates; every row tied with the k-th score is kept
    before the final stable sort, so the answer equals a full stable sort's.
    """
    scores = np.asarray(scores)
    n = len(scores)
    k = max(0, min(int(k), n))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if n >= PARTITION_MIN and k < n // 4:
        neg = -scores
        kth = np.partition(neg, k - 1)[k - 1]
        cand = np.flatnonzero(neg <= kth)  # ascending positions, ties at the boundary included
        return cand[np.argsort(neg[cand], kind="stable")[:k]]
    return np.argsort(-scores, kind="stable")[:k]


def va_columns(va: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float64 valence and arousal columns of ``va`` [N, 2] (prepared once per index)."""
    va = np.asarray(va)
    return np.ascontiguousarray(va[:, 0], dtype=np.float64), np.ascontiguousarray(va[:, 1], dtype=np.float64)


def va_similarity(query_va: Sequence[float], va) -> np.ndarray:
    """Eq. 1 between one point and every row of ``va``: an [N, 2] array or its :func:`va_columns`."""
    v, a = va if isinstance(va, tuple) else va_columns(va)
    return pairs.similarity(float(query_va[0]), float(query_va[1]), v, a)


def rank_va(query_va: Sequence[float], va, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbours of ``query_va`` in VA space: (positions, Eq. 1 similarity), best first.
    ``va``: stored VA [N, 2] or its :func:`va_columns`."""
    sim = va_similarity(query_va, va)
    idx = top_k(sim, k)
    return idx, sim[idx]
