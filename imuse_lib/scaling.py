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
    """Projected throughput of ``machines`` machines with ``workers_per_machine`` actors each:
    one actor's steady rate times the actors, times the two-node efficiency (capped at 1), and
    the time to embed ``songs`` songs (Ray's start included). Columns: machines, songs_per_s,
    seconds."""
    per_worker = steady_rates(bench)["ray_1_worker"]
    efficiency = min(1.0, two_node_efficiency(bench))
    start = bench["embedding"]["ray_start_s"]
    rows = []
    for n in machines:
        throughput = n * workers_per_machine * per_worker * efficiency
        rows.append({"machines": n, "songs_per_s": throughput, "seconds": songs / throughput + start})
    return pd.DataFrame(rows)
