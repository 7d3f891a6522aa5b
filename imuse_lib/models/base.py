"""What every frozen backbone carries: its module, feature size, preprocessing and the
provenance of its weights (so that results can always say which weights they used)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

WEIGHT_KINDS = ("pretrained", "random")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def freeze(module):
    """Frozen feature extractor: no gradients, eval mode (BatchNorm statistics and
    dropout fixed)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def flush_denormals(module) -> int:
    """Set subnormal float weights (|w| < 1.2e-38) to 0; returns how many there were.

    Musicnn's MTAT checkpoint holds ~190k of them; x86 CPUs handle subnormals in microcode,
    which made its timbral convolutions ~40x slower (5 s per 3 s crop). Their contribution
    is below float32 resolution: the features are bit-identical on the 4Q clips checked."""
    import torch

    count = 0
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.dtype.is_floating_point:
                tiny = (tensor != 0) & (tensor.abs() < torch.finfo(tensor.dtype).tiny)
                count += int(tiny.sum())
                tensor[tiny] = 0
    return count


def random_init(builder: Callable[[], Any], seed: int):
    """Build a module with a seeded random initialisation, leaving the global RNG as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder()


@dataclass
class Backbone:
    """A frozen, headless backbone.

    ``module`` maps a preprocessed batch to ``[B, dim]`` features: images ``[B, 3, 224, 224]``
    (after ``eval_transform`` / ``train_transform``), audio ``[B, input_length]`` waveforms at
    ``sample_rate``. ``head`` is the removed classifier (features -> ImageNet logits or tag
    probabilities) kept only for sanity checks; ``labels`` names its outputs.
    ``weights`` is ``{"kind": "pretrained", "source", "file", "sha256", ...}`` or
    ``{"kind": "random", "init_seed"}``. ``preprocessing`` lists every parameter that shapes
    the features (it is part of the feature-store key).
    """

    name: str
    kind: str  # "image" | "audio"
    dim: int
    weights: dict
    module: Any
    preprocessing: dict
    head: Any = None
    labels: list | None = None
    train_transform: Callable | None = None
    eval_transform: Callable | None = None
    sample_rate: int | None = None
    input_length: int | None = None
    eval_crops: int | None = None  # audio: fixed evaluation crops averaged per clip
    extra: dict = field(default_factory=dict)

    @property
    def pretrained(self) -> bool:
        return self.weights.get("kind") == "pretrained"

    def describe(self) -> str:
        w = self.weights
        if w.get("kind") == "random":
            what = f"RANDOM weights (seed {w.get('init_seed')})"
        elif w.get("kind") == "handmade":
            what = f"hand-made descriptors ({w.get('source')}, {w.get('sha256')})"
        else:
            what = f"pretrained: {w.get('source')}, sha256 {str(w.get('sha256'))[:12]}..."
        return f"{self.name} [{self.dim}-d] {what}"

    def to(self, device):
        self.module.to(device)
        if self.head is not None:
            self.head.to(device)
        return self
