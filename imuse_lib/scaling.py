"""The scaling chapter's numbers (notebook 07): the Ray benchmark's result file
(``benchmarks/bench_ray.py``), read from this machine's run when there is one and from the
measured reference otherwise, its steady rates, and their projection onto a cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import config
from .errors import ImuseError

# The benchmark's embedding runs, in the order the chapter shows them.
KINDS = ("local", "ray_1_worker", "ray_2_worker", "cluster_2_nodes")


def benchmark_path(bench_json: str | Path | None = None) -> tuple[Path, bool]:
    """(the benchmark file to read, whether it was measured on this machine): ``bench_json``
    when given, else ``results/benchmarks/ray.json`` when this machine ran the benchmark, else
    the reference measured with the code (``benchmarks/reference/ray.json``)."""
    fresh = config.results_dir() / "benchmarks" / "ray.json"
    if bench_json:
        path = Path(bench_json)
        return path, path == fresh
    if fresh.exists():
        return fresh, True
    return config.PROJECT_ROOT / "benchmarks" / "reference" / "ray.json", False


def load_benchmark(path: str | Path) -> dict:
    """The benchmark's JSON; one clear error for a missing or unreadable file."""
    path = Path(path)
    try:
        bench = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImuseError(f"{path}: no benchmark file; run `python benchmarks/bench_ray.py`") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImuseError(f"{path}: not a benchmark JSON file ({exc})") from None
    missing = [k for k in ("embedding", "index", "machine") if k not in bench] if isinstance(bench, dict) else ["all"]
    if missing:
        raise ImuseError(f"{path}: not a Ray benchmark result (no {', '.join(missing)})")
    return bench


def steady_rates(bench: dict) -> dict[str, float]:
    """Items per second of each embedding run once its actors are running (start excluded)."""
    return {k: bench["embedding"][k]["steady_items_per_s"] for k in KINDS}


def two_node_efficiency(bench: dict) -> float:
    """The simulated two-node cluster's steady rate against twice one actor's."""
    steady = steady_rates(bench)
    return steady["cluster_2_nodes"] / (2 * steady["ray_1_worker"])


def project(bench: dict, machines, workers_per_machine: int = 1, songs: int = 1_000_000) -> pd.DataFrame:
    """Projected throughput of ``machines`` machines with ``workers_per_machine`` actors each, and
    the time to embed ``songs`` songs (Ray's start included). One machine runs at the measured
    steady rate of one actor times its actors; from two machines on, the cluster loses what the
    simulated two-node cluster lost against twice one actor (the two-node efficiency, capped at
    1), so two machines project to the two-node measurement and one machine never below what was
    measured on one. Columns: machines, songs_per_s, seconds."""
    per_machine = steady_rates(bench)["ray_1_worker"] * workers_per_machine
    efficiency = min(1.0, two_node_efficiency(bench))
    start = bench["embedding"]["ray_start_s"]
    rows = []
    for n in machines:
        throughput = per_machine * (n * efficiency if n > 1 else 1.0)
        rows.append({"machines": n, "songs_per_s": throughput, "seconds": songs / throughput + start})
    return pd.DataFrame(rows)


def file_commit(path: str | Path) -> str | None:
    """The short commit that last changed ``path`` in the project's git history (None outside git
    or for a file git does not track)."""
    import subprocess

    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h", "--", str(path)], cwd=config.PROJECT_ROOT,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def source_label(bench: dict, path: str | Path, measured_here: bool) -> str:
    """Where the chapter's numbers come from, in one sentence a reader cannot miss: this machine's
    run, or the stored reference with its date, machine and commit."""
    machine = bench["machine"]
    when = str(machine.get("when", "?")).replace("T", " ").removesuffix("Z")[:16]
    cpus = machine.get("cpus", "?")
    if measured_here:
        return (f"Measured on this build's machine ({cpus} CPU cores) on {when} UTC by "
                f"`benchmarks/bench_ray.py`.")
    path = Path(path)
    shown = path.relative_to(config.PROJECT_ROOT).as_posix() if path.is_relative_to(config.PROJECT_ROOT) else path.name
    commit = file_commit(path)
    at = f", stored at commit {commit}" if commit else ""
    return (f"Not measured by this build: a stored reference, `{shown}`, measured on {when} UTC on a "
            f"{cpus}-core machine{at}. Run `python benchmarks/bench_ray.py` to measure this machine; the "
            f"chapter then reads that run instead.")
