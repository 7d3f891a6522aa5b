"""A trained network as a predictor: VA and similarity of pairs, of whole image x song
matrices, and :class:`NetworkPredictor` for the metrics (optionally averaging its stored views)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..joint import FUSION_BATCH
from ..network import IMUSENet, predicted_similarity
from .feature_data import FeatureData
from .settings import VAL_CHUNK


@torch.no_grad()
def predict_pairs(model: IMUSENet, image_feats: torch.Tensor, audio_feats: torch.Tensor, img_rows, song_rows,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(image VA [n,2], music VA [n,2]) for pairs given by feature rows (eval features)."""
    model.eval()
    device = next(model.parameters()).device
    out_i, out_m = [], []
    for start in range(0, len(img_rows), VAL_CHUNK):
        ir = torch.as_tensor(np.asarray(img_rows[start:start + VAL_CHUNK]))
        sr = torch.as_tensor(np.asarray(song_rows[start:start + VAL_CHUNK]))
        iva, mva = model(image_feats[ir].to(device), audio_feats[sr].to(device))
        out_i.append(iva.cpu().numpy()), out_m.append(mva.cpu().numpy())
    if not out_i:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    return np.concatenate(out_i), np.concatenate(out_m)


@torch.no_grad()
def predict_matrix(model: IMUSENet, image_feats: torch.Tensor, audio_feats: torch.Tensor,
                   with_va: bool = False):
    """Predicted S for every (image, song) combination: [n_images, n_songs].

    Factorised: each arm scored once, then Eq. 1 by broadcasting. Joint: the arm vectors
    are computed once and only the fusion layers run per combination (in chunks).
    ``with_va``: also each image's predicted VA [n_images, 2] and each song's [n_songs, 2]
    (joint: averaged over the combinations, since the joint heads see both items)."""
    model.eval()
    device = next(model.parameters()).device
    img, aud = image_feats.to(device), audio_feats.to(device)
    if model.factorised:
        iva, mva = model.image_va(img), model.music_va(aud)
        s = predicted_similarity(iva[:, None, :], mva[None, :, :]).cpu().numpy()
        return (s, iva.cpu().numpy(), mva.cpu().numpy()) if with_va else s
    ivec, mvec = model.image_vector(img), model.music_vector(aud)
    # The fusion FC is linear in the concatenation: W [ivec; mvec] + b = (Wi ivec + b) + Wm mvec,
    # so each arm's share is computed once and only the sum, ReLU and heads run per combination.
    fc = model.fusion[0]
    a = nn.functional.linear(ivec, fc.weight[:, :ivec.shape[1]], fc.bias)
    b = nn.functional.linear(mvec, fc.weight[:, ivec.shape[1]:])
    ns = len(b)
    rows_per_chunk = max(1, FUSION_BATCH // max(ns, 1))
    out, img_va = [], []
    mus_va = torch.zeros(ns, 2, device=device)
    for start in range(0, len(a), rows_per_chunk):
        h = torch.relu(a[start:start + rows_per_chunk, None, :] + b[None, :, :])
        ih, mh = model.image_head(h), model.music_head(h)
        out.append(predicted_similarity(ih, mh).cpu().numpy())
        if with_va:
            img_va.append(ih.mean(1).cpu().numpy())
            mus_va += mh.sum(0)
    s = np.concatenate(out) if out else np.zeros((0, ns), np.float32)
    if not with_va:
        return s
    return s, np.concatenate(img_va) if img_va else np.zeros((0, 2), np.float32), \
        (mus_va / max(len(a), 1)).cpu().numpy()


class NetworkPredictor:
    """A trained network as a predictor for :func:`imuse_lib.metrics.score`.

    Scored on the evaluation features (the centre view, the mean of the evaluation crops),
    or with ``tta=True`` on the stored training views and crops, the predictions averaged:
    view k is paired with crop k mod M, so each stored view and crop is used (the network
    trained on single random views/crops, and this removes that shift)."""

    def __init__(self, model: IMUSENet, data: FeatureData, name: str | None = None, tta: bool = False):
        self.model, self.data, self.tta = model.eval(), data, tta
        self.name = name or ("factorised" if model.factorised else "joint") + ("_tta" if tta else "")
        self.info = {"tta": tta}

    def _views(self):
        d = self.data
        if not self.tta:
            return [(d.image_eval, d.audio_eval)]
        k, m = d.image_train.shape[1], d.audio_train.shape[1]
        return [(d.image_train[:, v], d.audio_train[:, v % m]) for v in range(max(k, m))]

    def pairs(self, img_rows, song_rows):
        outs = [predict_pairs(self.model, i, a, img_rows, song_rows) for i, a in self._views()]
        iva = np.mean([o[0] for o in outs], axis=0).astype(float)
        mva = np.mean([o[1] for o in outs], axis=0).astype(float)
        s = np.mean([predicted_similarity(o[0].astype(float), o[1].astype(float)) for o in outs], axis=0)
        return s, iva, mva

    def _matrix(self, img_rows, song_rows, with_va):
        ir, sr = torch.as_tensor(np.asarray(img_rows)), torch.as_tensor(np.asarray(song_rows))
        outs = [predict_matrix(self.model, i[ir], a[sr], with_va=with_va) for i, a in self._views()]
        if not with_va:
            return np.mean(outs, axis=0)
        return tuple(np.mean([o[j] for o in outs], axis=0) for j in range(3))

    def matrix(self, img_rows, song_rows):
        return self._matrix(img_rows, song_rows, False)

    def item_va(self, img_rows, song_rows):
        _, iva, mva = self._matrix(img_rows, song_rows, True)
        return iva, mva


# A sigmoid output whose pre-activation is beyond this is pinned: its derivative is below 3e-7
# (in float32 it rounds to exactly 0 or 1 from about 17), so the loss no longer moves it.
SATURATED_PRE_ACTIVATION = 15.0


@torch.no_grad()
def collapse_diagnosis(model: IMUSENet, data: FeatureData, img_rows, song_rows) -> dict:
    """How a network's units and outputs behave on pairs (feature rows, evaluation views): the
    share of dead ReLU units (zero for every pair) in the image arm, the music arm and, in the
    joint network, the fusion layer; the share of image and music VA outputs whose sigmoid is
    saturated (|pre-activation| > :data:`SATURATED_PRE_ACTIVATION`); and the spread (sd) of the
    predicted image and music VA. What tells a collapsed run from a weak one."""
    model.eval()
    ir = torch.as_tensor(np.asarray(img_rows))
    sr = torch.as_tensor(np.asarray(song_rows))
    hi, hm = model.image_vector(data.image_eval[ir]), model.music_vector(data.audio_eval[sr])

    def dead(h):
        return float((h.max(0).values <= 0).float().mean())

    out = {"dead_image_arm": dead(hi), "dead_music_arm": dead(hm), "dead_fusion": float("nan")}
    if model.factorised:
        zi, zm = model.image_head[1](model.image_head[0](hi)), model.music_head[1](model.music_head[0](hm))
    else:
        h = model.fusion(torch.cat([hi, hm], dim=1))
        out["dead_fusion"] = dead(h)
        zi, zm = model.image_head[0](h), model.music_head[0](h)
    for who, z in (("image", zi), ("music", zm)):
        out[f"saturated_{who}_outputs"] = float((z.abs() > SATURATED_PRE_ACTIVATION).float().mean())
        out[f"{who}_va_sd"] = float(torch.sigmoid(z).std(0).mean())
    return out
