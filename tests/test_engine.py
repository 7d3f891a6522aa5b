"""The engine choice without Ray (issue 11): the default path never imports Ray, and
`--engine ray` where Ray is missing is a one-line error naming the fix. Fast; no cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imuse_lib import parallel
from imuse_lib.errors import ImuseError


def test_default_path_does_not_import_ray(tmp_path):
    code = ("import sys\n"
            "from imuse_lib import cli, engine, experiments, features, parallel, recommend\n"
            "from imuse_lib.index import building, reading\n"
            "cli.build_parser().parse_args(['train', '--engine', 'local'])\n"
            "cli.build_parser().parse_args(['features', '--audio-backbone', 'musicnn'])\n"
            "print('ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_engine_ray_without_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ImuseError, match=r"pip install '\.\[scale\]'"):
        with parallel.session():
            pass


def test_ray_options_need_the_ray_engine(capsys):
    from imuse_lib.cli import main

    assert main(["index", "add", "x.wav", "--workers", "4"]) == 2
    assert "--ray-address and --workers go with --engine ray" in capsys.readouterr().err
    assert main(["features", "--audio-backbone", "musicnn", "--ray-address", "ray://h:1"]) == 2
    assert main(["train", "--engine", "spark"]) == 2
