"""imuse_lib.scaling: the Ray benchmark's file (this machine's run, else the measured reference)
and its projection onto a cluster (notebook 07)."""

from __future__ import annotations

import json

import pytest

from imuse_lib import config, scaling
from imuse_lib.errors import ImuseError


def test_reference_is_read_when_this_machine_has_no_run(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path))
    path, here = scaling.benchmark_path()
    assert path == config.PROJECT_ROOT / "benchmarks" / "reference" / "ray.json" and not here
    fresh = tmp_path / "benchmarks" / "ray.json"
    fresh.parent.mkdir()
    fresh.write_text(path.read_text())
    assert scaling.benchmark_path() == (fresh, True)
    assert scaling.benchmark_path(str(path)) == (path, False)


def test_projection_of_the_reference_benchmark():
    bench = scaling.load_benchmark(scaling.benchmark_path(config.PROJECT_ROOT / "benchmarks" / "reference"
                                                          / "ray.json")[0])
    steady = scaling.steady_rates(bench)
    assert set(steady) == set(scaling.KINDS) and all(v > 0 for v in steady.values())
    eff = scaling.two_node_efficiency(bench)
    assert eff == pytest.approx(steady["cluster_2_nodes"] / (2 * steady["ray_1_worker"]))
    out = scaling.project(bench, [1, 2, 4], workers_per_machine=2, songs=1000)
    per_worker = steady["ray_1_worker"] * min(1.0, eff)
    assert list(out.machines) == [1, 2, 4]
    assert list(out.songs_per_s) == pytest.approx([2 * per_worker, 4 * per_worker, 8 * per_worker])
    start = bench["embedding"]["ray_start_s"]
    assert list(out.seconds) == pytest.approx([1000 / s + start for s in out.songs_per_s])


def test_a_bad_benchmark_file_is_one_clear_error(tmp_path):
    with pytest.raises(ImuseError, match="no benchmark file"):
        scaling.load_benchmark(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ImuseError, match="bad.json: not a benchmark JSON file"):
        scaling.load_benchmark(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"embedding": {}}))
    with pytest.raises(ImuseError, match="no index, machine"):
        scaling.load_benchmark(tmp_path / "other.json")
