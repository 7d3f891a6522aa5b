"""The deployed model: what ``imuse recommend``, the song index and the book's page run.

* :mod:`.model`: :class:`DeployedModel`, a trained IMUSE network with its backbones, its
  fingerprint and provenance helpers (:func:`store_kwargs`: which feature store it was
  trained on);
* :mod:`.va`: :class:`VADeployedModel`, the same interface over the per-item VA model
  (:mod:`imuse_lib.va_model`), the default deployed model;
* here: :func:`load_deployed` (either kind, from a file) and :func:`default_model_path`,
  the one rule for which model is deployed when none is named.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import io
from ..errors import DataError, ImuseError
from .model import DeployedModel, clean_provenance, model_fingerprint, store_kwargs
from .va import VADeployedModel, load_va

__all__ = ["DeployedModel", "VADeployedModel", "clean_provenance", "default_model_path", "load_deployed",
           "model_fingerprint", "store_kwargs"]


def default_model_path() -> Path:
    """The deployed model when none is named: the VA model (``va_model.train_default`` writes
    it) when it exists, else the network checkpoint ``imuse train`` writes."""
    from .. import training, va_model

    path = va_model.default_model_path()
    return path if path.exists() else training.default_model_path()


def load_deployed(path: str | os.PathLike | None = None) -> DeployedModel:
    """Load a trained model: a VA model file (:mod:`imuse_lib.va_model`, ``.npz``) or an IMUSE
    network checkpoint; default :func:`default_model_path`."""
    from .. import training, va_model

    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        raise DataError(f"{path}: no trained model there; run `imuse train --profile quick` "
                        f"or pass --model PATH")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a model checkpoint")
    io.require_regular_file(path, "model file")  # a FIFO would block the reader
    if va_model.is_va_model_file(path):
        return load_va(path)

    try:
        net, meta = training.load_checkpoint(path)
    except ImuseError:
        raise
    except Exception as exc:  # torch's unpickling errors vary; the user needs one line
        first = (str(exc).splitlines() or ["unreadable"])[0].split(". ")[0][:100]
        raise DataError(f"{path}: not a readable IMUSE checkpoint ({type(exc).__name__}: {first})") from None
    return DeployedModel(net=net, meta=dict(meta), path=path)
