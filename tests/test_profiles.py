"""imuse_lib.profiles: the one home of what a run depends on, the one rule for the settings
that override it (flags, --config files, notebook parameters), and the profile's summary."""

from __future__ import annotations

import json

import pytest

from imuse_lib import profiles
from imuse_lib.errors import ImuseError


@pytest.mark.parametrize("key, value", [
    ("seeds", "012"), ("seeds", [-1]), ("seeds", [float("nan")]), ("seeds", [float("inf")]), ("seeds", []),
    ("seeds", [True]), ("seeds", [2**32]), ("seeds", list(range(profiles.MAX_LIST + 1))), ("epochs", True),
    ("epochs", 0), ("epochs", 10_001), ("epochs", 2.0), ("jobs", "2"), ("n_boot", None),
    ("splits", "paper"), ("splits", ["bogus"]), ("splits", []), ("variants", [1]), ("device", ""),
    ("image_backbones", ["vgg"]), ("profile", "full"),
])
def test_check_setting_refuses(key, value):
    with pytest.raises(ValueError):
        profiles.check_setting(key, value)


@pytest.mark.parametrize("key, value", [
    ("seeds", [0, 1, 2**32 - 1]), ("epochs", 1), ("epochs", 10_000), ("jobs", 64), ("n_boot", 1),
    ("splits", ["cold"]), ("variants", ["joint_item"]), ("device", "cuda:1"), ("audio_backbones", ["fcn"]),
])
def test_check_setting_accepts(key, value):
    assert profiles.check_setting(key, value) == value


def test_read_settings_names_file_key_and_problem(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 3, "seeds": [4, 5], "splits": ["paper"]}))
    assert profiles.read_settings(path) == {"epochs": 3, "seeds": [4, 5], "splits": ["paper"]}
    for text, phrase in [('{"seeds": [NaN]}', "run.json: seeds: expected a non-empty list"),
                         ('{"epochs": true}', "run.json: epochs: expected an integer from 1 to 10000, got true"),
                         ('{"profile": "full"}', "unknown setting(s) profile"),
                         ("[" * 50_000 + "]" * 50_000, "run.json: nested too deeply"),
                         ("{", "run.json: not valid JSON")]:
        path.write_text(text)
        with pytest.raises(ImuseError, match=None) as err:
            profiles.read_settings(path)
        assert phrase in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ImuseError, match="not a UTF-8 text file"):
        profiles.read_settings(path)
    with pytest.raises(ImuseError, match="no such config file"):
        profiles.read_settings(tmp_path / "missing.json")


def test_get_profile_applies_checked_overrides():
    prof = profiles.get_profile("quick", epochs=3, seeds=[7], image_backbones=None)
    assert (prof.epochs, prof.seeds, prof.image_backbones) == (3, [7], ["mobilenet_v2"])
    assert profiles.PROFILES["quick"].epochs == 20  # the profile itself is not changed
    for bad in ({"epochs": True}, {"seeds": [-1]}, {"splits": ["bogus"]}, {"n_boot": 0}):
        with pytest.raises(ImuseError, match=next(iter(bad))):
            profiles.get_profile("quick", **bad)
    with pytest.raises(ImuseError, match="unknown profile"):
        profiles.get_profile("medium")


def test_backbone_names_are_the_models_own():
    from imuse_lib import models

    assert set(profiles.IMAGE_BACKBONES) == set(models.IMAGE_BACKBONES)
    assert set(profiles.AUDIO_BACKBONES) == set(models.AUDIO_BACKBONES)


def test_profile_summary_in_its_three_forms():
    quick = profiles.get_profile("quick")
    settings = profiles.profile_settings(quick, device="cpu")
    assert settings == {"configurations": "mobilenet_v2+musicnn", "splits": "paper, cold",
                        "variants": "joint, factorised", "seeds": "0, 1, 2", "epochs": "20",
                        "epoch kept": "lowest validation loss", "device": "cpu"}
    assert profiles.profile_summary("quick") == "20 epochs, 3 seeds, mobilenet_v2 + musicnn"
    assert profiles.profile_summary(profiles.get_profile("full", seeds=[0])) == \
        "50 epochs, 1 seed, every backbone pair with weights"
    line = profiles.profile_line(quick, [("resnet18", "fcn")], "cuda (H200)")
    assert line.startswith("profile quick: configurations resnet18+fcn; splits paper, cold;")
    assert line.endswith("; device cuda (H200)")


def test_the_va_model_reads_the_recorded_params_from_the_profiles_home():
    from imuse_lib import va_model

    assert profiles.VA_MODEL_PARAMS_FILE.exists()
    assert va_model.PARAMS_FILE == profiles.VA_MODEL_PARAMS_FILE
