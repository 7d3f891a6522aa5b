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
    per_machine = 2 * steady["ray_1_worker"]
    assert list(out.machines) == [1, 2, 4]
    # one machine runs at the measured rate (never below it); the two-node loss applies from two on
    assert list(out.songs_per_s) == pytest.approx([per_machine, 2 * per_machine * min(1.0, eff),
                                                   4 * per_machine * min(1.0, eff)])
    one = scaling.project(bench, [1, 2], songs=1000)
    assert one.songs_per_s[0] == pytest.approx(steady["ray_1_worker"])
    assert one.songs_per_s[1] == pytest.approx(min(steady["cluster_2_nodes"], 2 * steady["ray_1_worker"]))
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


def test_source_label_says_whether_this_build_measured_it(tmp_path):
    reference = config.PROJECT_ROOT / "benchmarks" / "reference" / "ray.json"
    bench = scaling.load_benchmark(reference)
    label = scaling.source_label(bench, reference, measured_here=False)
    assert label.startswith("Not measured by this build: a stored reference, `benchmarks/reference/ray.json`")
    assert bench["machine"]["when"][:10] in label and "UTC" in label
    commit = scaling.file_commit(reference)
    assert commit is None or f"commit {commit}" in label
    assert scaling.source_label(bench, tmp_path / "ray.json", measured_here=True).startswith("Measured on this build")
