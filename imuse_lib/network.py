"""The paper's two-arm network (section 4.3) and its factorised variant.

Joint (the paper)::

    image features [Di] -> FC 256 + ReLU ----\\
                                              concat 384 -> FC 128 + ReLU -> Dropout
    audio features [Da] -> FC 128 + ReLU ----/        |-> FC 2 + sigmoid = image VA
                                                      \\-> FC 2 + sigmoid = music VA

Factorised: the image VA head sits on the image arm alone and the music VA head on the
music arm alone (Dropout before each head). A song's VA then does not depend on the
image it is paired with, so a catalog is scored once and searched by Eq. 1.

The backbones are frozen and live elsewhere (``imuse_lib.models``); this network takes
their feature vectors. Dropout rate: the paper mentions dropout without a rate; we use
``DROPOUT = 0.3`` after the fusion FC (joint) or before each head (factorised).
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ModelMismatchError
from .pairs import similarity

IMAGE_HIDDEN = 256
MUSIC_HIDDEN = 128
FUSION_HIDDEN = 128
DROPOUT = 0.3


class IMUSENet(nn.Module):
    """``net(img_feat [B,Di], aud_feat [B,Da]) -> (image_va [B,2], music_va [B,2])`` in (0, 1)."""

    def __init__(self, image_dim: int, audio_dim: int, factorised: bool = False, dropout: float = DROPOUT):
        super().__init__()
        if image_dim <= 0 or audio_dim <= 0:
            raise ValueError(f"feature sizes must be positive, got image_dim={image_dim}, audio_dim={audio_dim}")
        self.image_dim, self.audio_dim = int(image_dim), int(audio_dim)
        self.factorised, self.dropout = bool(factorised), float(dropout)
        self.image_arm = nn.Sequential(nn.Linear(self.image_dim, IMAGE_HIDDEN), nn.ReLU())
        self.music_arm = nn.Sequential(nn.Linear(self.audio_dim, MUSIC_HIDDEN), nn.ReLU())
        if self.factorised:
            self.image_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(IMAGE_HIDDEN, 2), nn.Sigmoid())
            self.music_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(MUSIC_HIDDEN, 2), nn.Sigmoid())
        else:
            self.fusion = nn.Sequential(nn.Linear(IMAGE_HIDDEN + MUSIC_HIDDEN, FUSION_HIDDEN), nn.ReLU(),
                                        nn.Dropout(dropout))
            self.image_head = nn.Sequential(nn.Linear(FUSION_HIDDEN, 2), nn.Sigmoid())
            self.music_head = nn.Sequential(nn.Linear(FUSION_HIDDEN, 2), nn.Sigmoid())

    # -- what a checkpoint needs to rebuild the network
    def hparams(self) -> dict:
        return {"image_dim": self.image_dim, "audio_dim": self.audio_dim,
                "factorised": self.factorised, "dropout": self.dropout}

    def _check(self, x: torch.Tensor, dim: int, what: str) -> None:
        if x.ndim != 2 or x.shape[1] != dim:
            raise ModelMismatchError(
                f"{what} features of shape {tuple(x.shape)} do not fit this network (expects [B, {dim}])")

    def image_vector(self, img_feat: torch.Tensor) -> torch.Tensor:
        """[B, Di] -> [B, 256]."""
        self._check(img_feat, self.image_dim, "image")
        return self.image_arm(img_feat)

    def music_vector(self, aud_feat: torch.Tensor) -> torch.Tensor:
        """[B, Da] -> [B, 128]."""
        self._check(aud_feat, self.audio_dim, "audio")
        return self.music_arm(aud_feat)

    def fuse(self, image_vec: torch.Tensor, music_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Arm vectors -> (image VA, music VA). Factorised: each head sees its own arm only."""
        if self.factorised:
            return self.image_head(image_vec), self.music_head(music_vec)
        h = self.fusion(torch.cat([image_vec, music_vec], dim=1))
        return self.image_head(h), self.music_head(h)

    def forward(self, img_feat: torch.Tensor, aud_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if img_feat.shape[0] != aud_feat.shape[0]:
            raise ModelMismatchError(f"batch sizes differ: {img_feat.shape[0]} images vs {aud_feat.shape[0]} clips")
        return self.fuse(self.image_vector(img_feat), self.music_vector(aud_feat))

    def _need_factorised(self, what: str) -> None:
        if not self.factorised:
            raise ModelMismatchError(
                f"{what} needs a factorised model: in the joint network a prediction depends on both "
                f"the image and the song (train with factorised=True)")

    def image_va(self, img_feat: torch.Tensor) -> torch.Tensor:
        """Factorised only: [B, Di] -> image VA [B, 2] from the image arm alone."""
        self._need_factorised("image_va")
        return self.image_head(self.image_vector(img_feat))

    def music_va(self, aud_feat: torch.Tensor) -> torch.Tensor:
        """Factorised only: [B, Da] -> music VA [B, 2] from the music arm alone."""
        self._need_factorised("music_va")
        return self.music_head(self.music_vector(aud_feat))


def predicted_similarity(image_va, music_va):
    """Eq. 1 on predicted VA ([..., 2] arrays or tensors that broadcast): 1 - Euclidean distance."""
    return similarity(image_va[..., 0], image_va[..., 1], music_va[..., 0], music_va[..., 1])
