"""Where a profile's results live (``results_dir()/<profile>/``): the run folders, the
training histories and the result files (layout in :mod:`imuse_lib.experiments`)."""

from __future__ import annotations

from pathlib import Path

from .. import config
from ..profiles import Profile


def profile_dir(profile: str | Profile) -> Path:
    name = profile.name if isinstance(profile, Profile) else profile
    return config.results_dir() / name


def run_dir(profile, cfg: str, split: str, variant: str, seed: int) -> Path:
    return profile_dir(profile) / "runs" / cfg / split / variant / f"seed{seed}"


def run_id(cfg: str, split: str, variant: str, seed: int) -> str:
    return f"{cfg}__{split}__{variant}__seed{seed}"


def history_path(profile, cfg: str, split: str, variant: str, seed: int) -> Path:
    return profile_dir(profile) / "history" / f"{run_id(cfg, split, variant, seed)}.json"
