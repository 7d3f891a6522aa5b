"""What a training run is told: the formats of saved files, :class:`TrainConfig` (the paper's
settings), the device, and where the default network lives."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import config
from ..errors import ModelMismatchError
from ..network import DROPOUT

MODEL_FORMAT = "imuse-model/1"
CHECKPOINT_FORMAT = "imuse-checkpoint/1"
VAL_CHUNK = 8192  # pairs per forward pass when validating / predicting


@dataclass
class TrainConfig:
    """The paper's training settings (section 4.4) plus our choices (dropout rate, Huber delta)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-4
    huber_delta: float = 1.0
    dropout: float = DROPOUT
    factorised: bool = False
    seed: int = 0
    device: str = "auto"
    augment: bool = True  # random stored view / crop per pair per epoch; False: eval view always
    weighting: str = "pair"  # "pair" (the paper) or "item": every image and song counts once
    select: str = "last"  # "last" epoch (the paper) or "best_val": lowest validation loss
    threads: int | None = None  # CPU threads while training; None: 1 (the head is too small to gain
    # from more, and a second thread spin-waits badly on a busy 2-core machine)

    def fingerprint_fields(self) -> dict:
        """What must match for a checkpoint to be resumed (not epochs: nothing depends on the
        total, so a 5-epoch run can be extended to 50; not the device)."""
        d = asdict(self)
        d.pop("epochs"), d.pop("device"), d.pop("threads")
        return d


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. An explicit ``cuda`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelMismatchError(f"device {str(device)!r} is not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):  # meta, mps...: no data on meta, and the rest is untested here
        raise ModelMismatchError(f"device {str(device)!r}: IMUSE runs on cpu or cuda, not {dev.type}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelMismatchError(f"device {device!r} asked for, but no CUDA GPU is available here (use --device cpu)")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def default_model_path() -> Path:
    """The model `imuse recommend` uses unless told otherwise (written by `imuse train`)."""
    return config.results_dir() / "models" / "default.pt"


def _plain(obj):
    """JSON-safe copy (numpy scalars, Paths -> str): checkpoints load with weights_only=True."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
