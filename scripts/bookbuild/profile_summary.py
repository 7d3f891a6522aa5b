"""The one-line summary of a profile shown on every chapter and in the build box."""

from __future__ import annotations


def profile_summary(profile: str) -> str:
    """'quick: 5 epochs, 1 seed, mobilenet_v2 + musicnn' - what a reader needs to weigh the numbers."""
    from imuse_lib import experiments

    prof = experiments.get_profile(profile)
    seeds = len(prof.seeds)
    if prof.image_backbones and prof.audio_backbones:
        pairs = ", ".join(f"{i} + {a}" for i in prof.image_backbones for a in prof.audio_backbones)
    else:
        pairs = "every backbone pair with weights"
    return f"{prof.epochs} epochs, {seeds} seed{'s' if seeds != 1 else ''}, {pairs}"
