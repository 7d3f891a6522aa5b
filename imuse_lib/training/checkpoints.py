"""Saving a trained network (with everything needed to use it) and loading a saved network
or a training checkpoint, refusing any file that is not one."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import io
from ..errors import DataError, ModelMismatchError
from ..network import DROPOUT, IMUSENet
from .settings import CHECKPOINT_FORMAT, MODEL_FORMAT, _plain, default_model_path, resolve_device


def save_model(path: str | Path, model: IMUSENet, meta: dict) -> Path:
    """The trained network alone (no optimiser), with everything needed to use it: backbones,
    weights provenance, feature preprocessing, split, seed, configuration name."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return io.save_torch(path, {"format": MODEL_FORMAT, "model": state, "hparams": model.hparams(),
                                "meta": _plain({**meta, **model.hparams()})})


def _read(path: Path, *formats: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such model file (train one with `imuse train`)") from None
    except Exception as exc:  # pickle / zip errors: not a checkpoint of ours
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""  # not torch's advice
        raise ModelMismatchError(f"{path}: not a readable IMUSE checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") not in formats:
        raise ModelMismatchError(f"{path}: not an IMUSE model or checkpoint (format "
                                 f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    return state


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[IMUSENet, dict]:
    """``(model, meta)`` from a saved model or a training checkpoint (default: the default
    model). The model is in eval mode on ``device``. ``meta`` has image_backbone,
    audio_backbone, image_weights, audio_weights, factorised, image_dim, audio_dim, seed,
    split, config... Raises ModelMismatchError for a file that is not one or does not fit."""
    path = Path(path) if path else default_model_path()
    if os.path.lexists(path):  # a FIFO there would block torch.load forever
        io.require_regular_file(path, "model checkpoint")
    state = _read(path, MODEL_FORMAT, CHECKPOINT_FORMAT)
    hp = state.get("hparams") or {}
    try:
        model = IMUSENet(hp["image_dim"], hp["audio_dim"], factorised=hp["factorised"],
                         dropout=hp.get("dropout", DROPOUT))
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelMismatchError(f"{path}: weights do not fit the IMUSE network ({str(exc).splitlines()[0]})") from None
    meta = dict(state.get("meta") or {})
    meta.update(hp)
    return model.to(resolve_device(device)).eval(), meta
