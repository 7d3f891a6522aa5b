"""The paper's joint model at serving time: Eq. 1 through the fusion layers, in fixed batches.

With the joint network a pair's VA depends on both items, so a query runs the fusion
layers (``net.fuse``) once per stored item, in batches of :data:`FUSION_BATCH` rows
(fixed, so that results do not depend on the number of items):

* :func:`score_joint` / :func:`score_joint_reverse`: one image against N songs, or N
  images against one song;
* :class:`JointScorer`: the same made cheap, exactly (the fusion's first layer is linear:
  the songs' half is computed once per index);
* :func:`joint_means`: every (image, song) combination, averaged per image and per song
  (the VA a joint-model index stores).
"""

from __future__ import annotations

import numpy as np

from . import pairs

FUSION_BATCH = 65536  # rows per fusion batch: fixed, so that results do not depend on N
SCORER_BATCH = 16384  # stored rows per step of JointScorer.score (its work buffer's size)


def pair_similarity(image_va: np.ndarray, music_va: np.ndarray) -> np.ndarray:
    """Eq. 1 between the two predicted VA points of each pair (float64 from the heads' float32)."""
    return pairs.similarity(image_va[:, 0].astype(np.float64), image_va[:, 1].astype(np.float64),
                            music_va[:, 0].astype(np.float64), music_va[:, 1].astype(np.float64))


def _torch():
    import torch

    return torch


def fuse_pairs(net, image_vecs: np.ndarray, music_vecs: np.ndarray,
                batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 1 through ``net.fuse`` for N pairs, in batches; a side given as one row is paired
    with every row of the other side. Returns (similarity [N], image_va [N, 2], music_va [N, 2])."""
    torch = _torch()
    iv = np.ascontiguousarray(np.atleast_2d(image_vecs), dtype=np.float32)
    mv = np.ascontiguousarray(np.atleast_2d(music_vecs), dtype=np.float32)
    n = max(len(iv), len(mv))
    ivas, mvas = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch):
            k = min(batch, n - start)
            img = torch.from_numpy(iv if len(iv) == 1 else iv[start:start + k]).expand(k, -1)
            mus = torch.from_numpy(mv if len(mv) == 1 else mv[start:start + k]).expand(k, -1)
            iva, mva = net.fuse(img, mus)
            ivas[start:start + k] = iva.numpy()
            mvas[start:start + k] = mva.numpy()
    return pair_similarity(ivas, mvas), ivas, mvas


def score_joint(net, image_vec: np.ndarray, music_vecs: np.ndarray,
                batch: int = FUSION_BATCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score one image vector [D] against N music vectors [N, 128] through ``net.fuse``.

    Returns (similarity [N], image_va [N, 2], music_va [N, 2]); similarity is Eq. 1 on the
    pair's two predicted VA points.
    """
    return fuse_pairs(net, np.reshape(image_vec, (1, -1)), music_vecs, batch)


def score_joint_reverse(net, image_vecs: np.ndarray, music_vec: np.ndarray,
                        batch: int = FUSION_BATCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`score_joint` with the roles swapped: N image vectors, one music vector."""
    return fuse_pairs(net, image_vecs, np.reshape(music_vec, (1, -1)), batch)


class JointScorer:
    """The joint path made cheap, exactly: the fusion's first layer is linear over
    ``concat(image_vec, music_vec)``, so its music half ``W_m @ music_vec`` is computed once
    per stored song; a query then adds ``W_i @ image_vec + b``, applies the remaining
    element-wise fusion layers and the two heads - the network's own modules. Equal to
    :func:`score_joint` up to float rounding (tests check it). Built only when the network
    has that structure (:meth:`supports`); otherwise :func:`score_joint` is used.
    """

    def __init__(self, net, music_vecs: np.ndarray, batch: int = SCORER_BATCH):
        torch = _torch()
        lin = net.fusion[0]
        self.net, self.batch = net, batch
        self.music_dim = int(music_vecs.shape[1])
        self.image_dim = int(lin.in_features) - self.music_dim
        self.relu = any(isinstance(m, torch.nn.ReLU) for m in list(net.fusion)[1:])  # Dropout: identity in eval
        w = lin.weight.detach()
        self.w_image, self.bias = w[:, :self.image_dim], lin.bias.detach()
        w_music = w[:, self.image_dim:].T.contiguous()
        vecs = torch.from_numpy(np.ascontiguousarray(music_vecs, dtype=np.float32))
        self.pre = torch.empty((len(vecs), w.shape[0]))
        with torch.inference_mode():
            for i in range(0, len(vecs), batch):
                torch.matmul(vecs[i:i + batch], w_music, out=self.pre[i:i + batch])
        self._work = torch.empty((min(batch, max(len(vecs), 1)), w.shape[0]))  # reused: no page faults per query

    @staticmethod
    def supports(net) -> bool:
        torch = _torch()
        nn = torch.nn
        fusion = getattr(net, "fusion", None)
        return (not getattr(net, "factorised", False) and isinstance(fusion, nn.Sequential) and len(fusion) > 0
                and isinstance(fusion[0], nn.Linear) and fusion[0].bias is not None
                and all(type(m) in (nn.ReLU, nn.Dropout, nn.Identity) for m in list(fusion)[1:])
                and hasattr(net, "image_head") and hasattr(net, "music_head") and not net.training)

    def score(self, image_vec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(similarity [N], image_va [N, 2], music_va [N, 2]) like :func:`score_joint`."""
        torch = _torch()
        n = len(self.pre)
        img = torch.as_tensor(np.asarray(image_vec, dtype=np.float32).reshape(-1))
        ivas, mvas = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
        with torch.inference_mode():
            q = self.w_image @ img + self.bias
            for start in range(0, n, self.batch):
                chunk = self.pre[start:start + self.batch]
                h = torch.add(chunk, q, out=self._work[:len(chunk)])
                if self.relu:
                    h.relu_()
                ivas[start:start + len(chunk)] = self.net.image_head(h).numpy()
                mvas[start:start + len(chunk)] = self.net.music_head(h).numpy()
        return pair_similarity(ivas, mvas), ivas, mvas


def joint_means(net, image_vecs: np.ndarray, music_vecs: np.ndarray,
                batch: int = FUSION_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Joint model over every (image, song) combination: (mean image VA per image [Ni, 2],
    mean music VA per song [Ns, 2]). Runs the fusion layers in fixed-size chunks of images."""
    torch = _torch()

    ni, ns = len(image_vecs), len(music_vecs)
    img_sum, mus_sum = np.zeros((ni, 2), np.float64), np.zeros((ns, 2), np.float64)
    iv_all = torch.from_numpy(np.ascontiguousarray(image_vecs, dtype=np.float32))
    mv = torch.from_numpy(np.ascontiguousarray(music_vecs, dtype=np.float32))
    rows = max(1, batch // max(ns, 1))
    with torch.inference_mode():
        for start in range(0, ni, rows):
            iv = iv_all[start:start + rows]
            k = len(iv)
            iva, mva = net.fuse(iv.repeat_interleave(ns, 0), mv.repeat(k, 1))
            img_sum[start:start + k] = iva.reshape(k, ns, 2).double().sum(1).numpy()
            mus_sum += mva.reshape(k, ns, 2).double().sum(0).numpy()
    return (img_sum / max(ns, 1)).astype(np.float32), (mus_sum / max(ni, 1)).astype(np.float32)
