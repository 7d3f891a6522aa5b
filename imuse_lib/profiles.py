"""One home for what a run depends on: the quick and full profiles, the settings a user may
override (command line, ``--config`` file, notebook parameters) and how they are checked, and
the profile's summary as a reader sees it (CLI, notebook 03, the book's provenance line).

A profile fixes every choice of the paper's experiments (configurations, splits, seeds, epochs,
variants, bootstrap replicates, parallelism) and of the chapters that depend on it (the
acquisition chapter's checks). :func:`get_profile` applies overrides, each checked by
:func:`check_setting`, the same rule the ``imuse train`` flags and a ``--config`` file go
through (:func:`read_settings`), so a value refused on the command line is refused everywhere.

The deployed VA model's recorded hyperparameters (chosen once on validation, see
``imuse train --tune-va``) live beside this module in :data:`VA_MODEL_PARAMS_FILE`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ImuseError

VARIANTS = ("joint", "factorised", "joint_item")
# What each variant trains: (factorised, loss weighting).
VARIANT_SETTINGS = {"joint": (False, "pair"), "factorised": (True, "pair"), "joint_item": (False, "item")}
SPLITS = ("paper", "cold")
IMAGE_BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "resnet18", "efficientnet_b4", "efficientnet_lite0")
AUDIO_BACKBONES = ("samplecnn", "musicnn", "fcn")
SEED_RANGE = (0, 2**32 - 1)  # numpy and torch accept seeds in this range
VA_MODEL_PARAMS_FILE = Path(__file__).with_name("va_model_params.json")


@dataclass
class Profile:
    name: str
    image_backbones: list | None  # None: every available one
    audio_backbones: list | None
    splits: list
    seeds: list
    epochs: int
    factorised_seeds: list | None = None  # None: the same seeds as the joint network
    e2e_batches: int = 2  # training batches timed end to end (then extrapolated per epoch)
    e2e_val_batches: int = 1  # validation batches timed end to end
    n_boot: int = 1000  # two-way bootstrap replicates
    select: str = "best_val"  # which epoch's weights a run keeps (training.TrainConfig.select)
    deploy_va_model: bool = True  # also fit the deployed VA model (imuse_lib.va_model): seconds
    jobs: int = 2  # parallel training processes (one thread each)
    device: str = "auto"
    checkpoint_every: int = 5
    variants: list = field(default_factory=lambda: list(VARIANTS))

    def seeds_for(self, variant: str) -> list:
        if variant == "factorised" and self.factorised_seeds is not None:
            return [s for s in self.factorised_seeds if s in self.seeds] or self.seeds[:1]
        return list(self.seeds)


PROFILES = {
    # One configuration, both splits, 3 seeds of the joint and factorised networks, 20 epochs
    # (the validation loss has flattened by then): the book's default (minutes on a CPU).
    # End to end it times one training batch and no validation batch (a musicnn validation batch
    # decodes 32 clips and runs 5 evaluation crops of each: the full profile times it).
    "quick": Profile("quick", ["mobilenet_v2"], ["musicnn"], list(SPLITS), [0, 1, 2], 20, e2e_batches=1,
                     e2e_val_batches=0, n_boot=200, jobs=2, variants=["joint", "factorised"]),
    # Every available configuration, both splits, 3 seeds of every variant, the paper's 50 epochs.
    "full": Profile("full", None, None, list(SPLITS), [0, 1, 2], 50, e2e_batches=2, n_boot=1000),
}

# What the acquisition chapter (notebook 06) checks per profile: constructed songs for the
# chorus detector, collages of real clips, real 4Q clips whose chorus is looked for.
ACQUISITION_CHECKS = {"quick": {"seeds": 8, "collages": 6, "clips": 3},
                      "full": {"seeds": 40, "collages": 20, "clips": 12}}


# --------------------------------------------------------------------------- settings and their checks

# Integer settings: (lowest, highest).
INT_RANGES = {"epochs": (1, 10_000), "jobs": (1, 64), "n_boot": (1, 1_000_000)}
# List-of-names settings: the names allowed.
NAME_CHOICES = {"image_backbones": IMAGE_BACKBONES, "audio_backbones": AUDIO_BACKBONES, "splits": SPLITS,
                "variants": VARIANTS}
# What a user may set (flags, a --config file, notebook parameters); the profile itself is chosen
# with --profile, never inside a settings file.
SETTINGS = ("image_backbones", "audio_backbones", "splits", "variants", "seeds", "epochs", "device", "jobs",
            "n_boot")
MAX_LIST = 1000  # longest list a setting takes (more seeds than that is a typo, not a plan)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # true is not 1 epoch


def check_setting(key: str, value):
    """``value`` if it is a valid ``key`` setting, else ValueError saying what is wrong (the
    caller names where it came from). The one rule for flags, --config files and notebooks."""
    if key in INT_RANGES:
        lo, hi = INT_RANGES[key]
        if not _is_int(value) or not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}, got {_show(value)}")
        return value
    if key == "seeds" or key == "factorised_seeds":
        lo, hi = SEED_RANGE
        if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_LIST \
                or not all(_is_int(s) and lo <= s <= hi for s in value):
            raise ValueError(f"expected a non-empty list of integers from {lo} to {hi}, got {_show(value)}")
        return list(value)
    if key in NAME_CHOICES:
        choices = NAME_CHOICES[key]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a non-empty list of names from {', '.join(choices)}, got {_show(value)}")
        bad = [v for v in value if v not in choices]
        if bad:
            raise ValueError(f"unknown {key[:-1].replace('_', ' ')} {bad[0]!r}; choose from {', '.join(choices)}")
        return list(value)
    if key == "device":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a device name (auto, cpu, cuda, cuda:N), got {_show(value)}")
        return value
    raise ValueError(f"unknown setting; allowed: {', '.join(SETTINGS)}")


def _show(value) -> str:
    text = json.dumps(value, allow_nan=True) if isinstance(value, (list, dict, str, int, float, bool)) \
        or value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_settings(path: str | Path) -> dict:
    """The settings of a JSON ``--config`` file, each checked as the command line checks it; a
    bad file, key or value is an ImuseError naming the file, the key and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImuseError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ImuseError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ImuseError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ImuseError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImuseError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ImuseError(f"{path}: nested too deeply to be a settings file") from None
    if not isinstance(settings, dict):
        raise ImuseError(f"{path}: expected a JSON object of settings")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        where = "; choose the profile with --profile" if "profile" in unknown else ""
        raise ImuseError(f"{path}: unknown setting(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(SETTINGS))}){where}")
    out = {}
    for key, value in settings.items():
        try:
            out[key] = check_setting(key, value)
        except ValueError as exc:
            raise ImuseError(f"{path}: {key}: {exc}") from None
    return out


def get_profile(name: str = "quick", **overrides) -> Profile:
    """A profile with ``overrides`` (None values ignored): image_backbones, audio_backbones,
    splits, seeds, epochs, device, jobs, variants, n_boot, factorised_seeds, each checked by
    :func:`check_setting`."""
    if name not in PROFILES:
        raise ImuseError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    prof = replace(PROFILES[name])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key, value in overrides.items():
        if key in SETTINGS or key == "factorised_seeds":
            try:
                overrides[key] = check_setting(key, value)
            except ValueError as exc:
                raise ImuseError(f"{key}: {exc}") from None
    return replace(prof, **overrides)


# --------------------------------------------------------------------------- the summary a reader sees


def profile_settings(profile: str | Profile, configs: list[tuple[str, str]] | None = None,
                     device: str | None = None) -> dict[str, str]:
    """What a reader needs to weigh a profile's numbers, setting -> value, in reading order:
    configurations (``configs`` when given, e.g. those whose weights are here; else the
    profile's backbones), splits, variants, seeds, epochs, the epoch a run keeps and, when
    given, the device. Notebook 03 shows it as a table, ``imuse train`` as one line."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    if configs is not None:
        names = ", ".join(f"{i}+{a}" for i, a in configs)
    elif prof.image_backbones and prof.audio_backbones:
        names = ", ".join(f"{i}+{a}" for i in prof.image_backbones for a in prof.audio_backbones)
    else:
        names = "every backbone pair with weights"
    out = {"configurations": names, "splits": ", ".join(prof.splits), "variants": ", ".join(prof.variants),
           "seeds": ", ".join(map(str, prof.seeds)), "epochs": str(prof.epochs),
           "epoch kept": "lowest validation loss" if prof.select == "best_val" else "last"}
    if device is not None:
        out["device"] = device
    return out


def profile_summary(profile: str | Profile) -> str:
    """The profile in one phrase, ``"20 epochs, 3 seeds, mobilenet_v2 + musicnn"``: the line under
    each chapter's title."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    seeds = len(prof.seeds)
    configs = profile_settings(prof)["configurations"].replace("+", " + ")
    return f"{prof.epochs} epochs, {seeds} seed{'s' if seeds != 1 else ''}, {configs}"


def profile_line(profile: str | Profile, configs: list[tuple[str, str]] | None = None,
                 device: str | None = None) -> str:
    """:func:`profile_settings` as one line: ``profile quick: configurations ...; splits ...``."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    return f"profile {prof.name}: " + "; ".join(f"{k} {v}" for k, v in profile_settings(prof, configs, device).items())
