"""Speed of the deployed recommender (issue 5, section 4.2 of the paper). Not a test: it
measures and reports.

    .venv/bin/python benchmarks/bench_recommend.py [--model PATH] [--queries 40]
        [--sizes 1000,10000,100000,1000000] [--out results/benchmarks/recommend.json]

Measures, on this machine's CPU:

1. index build time for the 500-song catalog (from the warm feature store: model arms,
   joint VA averages, SQLite write and atomic rename);
2. cold start: process start to first answer, ``python -m imuse_lib recommend IMG --json``
   in a fresh subprocess (imports, model and backbone load, index load, one query);
3. warm per-query latency on the 500-song index, image arm included (decode, backbone,
   arm, ranking), over distinct OASIS images; with the split into image arm and ranking;
4. query time against synthetic catalogs of 1k..1M songs for the factorised path
   (Eq. 1 nearest neighbours over stored VA, numpy) and the joint path, both as the stored
   music vectors scored through ``net.fuse`` in batches and as the deployed
   ``joint.JointScorer`` (music half of the first fusion layer precomputed once per
   index), plus loading such an index from SQLite.

Targets (issue 5): warm query under 100 ms; 1M-song VA search under 50 ms.
The machine may be shared: the load average is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from imuse_lib import config, data, io, recommend, training
from imuse_lib.network import IMUSENet
from imuse_lib import deployed
from imuse_lib.index import building as index_building
from imuse_lib.index import files as index_files
from imuse_lib.index import reading as index_reading
from imuse_lib import joint
from imuse_lib import ranking


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _timeit(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _summary(times: list[float]) -> dict:
    ts = sorted(times)
    return {"median_ms": _ms(statistics.median(ts)), "p95_ms": _ms(ts[min(len(ts) - 1, int(0.95 * len(ts)))]),
            "min_ms": _ms(ts[0]), "n": len(ts)}


def bench_build(model: deployed.DeployedModel, path: Path, repeats: int) -> dict:
    t = time.perf_counter()
    catalog, song_feats, images, image_feats = index_building.catalog_features(model)
    store_s = time.perf_counter() - t
    times = _timeit(lambda: index_building.build_index(model, path, catalog, song_feats, images, image_feats,
                                                  progress=False), repeats)
    # the full `imuse index build` path once (store load + catalog load + build)
    full = _timeit(lambda: index_building.build_index(model, path, progress=False), 1)[0]
    return {"songs": len(catalog), "images": len(images), "build": _summary(times),
            "full_build_incl_store_load_ms": _ms(full), "feature_store_load_ms": _ms(store_s),
            "index_bytes": path.stat().st_size}


def bench_cold(model_path: Path, index_path: Path, image: Path, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "imuse_lib", "recommend", str(image), "--json", "--top", "10",
           "--model", str(model_path), "--index", str(index_path)]
    times, answers = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"cold-start run failed: {proc.stderr.strip()}")
        answers.append(proc.stdout)
    base = _timeit(lambda: subprocess.run([sys.executable, "-c", "import torch, imuse_lib.recommend"],
                                          check=True), repeats)
    return {"cold_start": _summary(times), "python_torch_import_only": _summary(base),
            "identical_answers": len(set(answers)) == 1, "command": " ".join(cmd[:3] + ["recommend", "IMG", "--json"])}


def bench_warm(rec: recommend.Recommender, images: list[Path], warmup: int = 3) -> dict:
    for p in images[:warmup]:
        rec.recommend(p, top=10)
    total, arm, rank = [], [], []
    for p in images:
        t0 = time.perf_counter()
        vec, va = rec.image_point(p)
        t1 = time.perf_counter()
        rec.recommend(p, top=10)
        t2 = time.perf_counter()
        arm.append(t1 - t0)
        total.append(t2 - t1)
    # ranking alone (stored arrays, the image point known)
    if rec.model.factorised:
        rank = _timeit(lambda: ranking.rank_va(va, rec.index.song_va_columns, 10), 50)
    else:
        scorer = rec.joint_scorer()
        rank = _timeit(lambda: ranking.top_k((scorer.score(vec) if scorer else joint.score_joint(
            rec.model.net, vec, rec.index.song_vectors))[0], 10), 50)
    return {"songs": len(rec.index), "model": rec.model.label(), "query_incl_image_arm": _summary(total),
            "image_arm_only": _summary(arm), "ranking_only": _summary(rank)}


def bench_scaling(sizes: list[int], net_joint: IMUSENet, seed: int, sqlite_max: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    query_va = (0.31, 0.72)
    image_vec = np.maximum(rng.standard_normal(256), 0).astype(np.float32)
    for n in sizes:
        va = rng.random((n, 2), dtype=np.float32)
        vecs = np.maximum(rng.standard_normal((n, 128), dtype=np.float32), 0)
        cols = ranking.va_columns(va)  # prepared once when an index is loaded
        ranking.rank_va(query_va, cols, 10)  # warm-up
        t_va = _timeit(lambda: ranking.rank_va(query_va, cols, 10), 15 if n <= 100_000 else 7)
        reps = 5 if n <= 100_000 else 3
        joint.score_joint(net_joint, image_vec, vecs[: min(n, 1000)])
        t_joint = _timeit(lambda: ranking.top_k(joint.score_joint(net_joint, image_vec, vecs)[0], 10), reps)
        t0 = time.perf_counter()
        scorer = joint.JointScorer(net_joint, vecs)  # once per loaded index
        t_pre = time.perf_counter() - t0
        scorer.score(image_vec)
        t_fast = _timeit(lambda: ranking.top_k(scorer.score(image_vec)[0], 10), 15 if n <= 100_000 else 7)
        row = {"songs": n, "va_nn_median_ms": _ms(statistics.median(t_va)), "va_nn_min_ms": _ms(min(t_va)),
               "joint_fuse_median_ms": _ms(statistics.median(t_joint)), "joint_fuse_min_ms": _ms(min(t_joint)),
               "joint_precomputed_median_ms": _ms(statistics.median(t_fast)),
               "joint_precomputed_min_ms": _ms(min(t_fast)), "joint_precompute_once_ms": _ms(t_pre)}
        if n <= sqlite_max:
            row.update(_sqlite_load(n, va, vecs))
        rows.append(row)
        print(f"  {n:>9,} songs: VA NN {row['va_nn_median_ms']:9.2f} ms   joint (net.fuse) "
              f"{row['joint_fuse_median_ms']:10.2f} ms   joint (precomputed) {row['joint_precomputed_median_ms']:9.2f} ms"
              + (f"   SQLite load {row['sqlite_load_ms']:9.1f} ms" if "sqlite_load_ms" in row else ""), flush=True)
    return rows


def _sqlite_load(n: int, va: np.ndarray, vecs: np.ndarray) -> dict:
    """Write a synthetic index of n songs and time loading it into memory."""
    import sqlite3

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.sqlite"
        with sqlite3.connect(path) as conn:
            for stmt in index_files.SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            meta = {"schema_version": str(index_files.SCHEMA_VERSION), "fingerprint": "synthetic",
                    "music_dim": "128", "image_dim_vec": "0"}
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.executemany("INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, '', 'predicted')",
                             ((f"SYN{i:08d}", "artist", f"title {i}", None, vecs[i].tobytes(),
                               float(va[i, 0]), float(va[i, 1])) for i in range(n)))
        t = time.perf_counter()
        idx = index_reading.open_index(path)
        load = time.perf_counter() - t
        assert len(idx) == n
        return {"sqlite_load_ms": _ms(load), "sqlite_mb": round(path.stat().st_size / 1e6, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="trained model (default: the default model)")
    ap.add_argument("--also", type=Path, action="append", default=[],
                    help="another model whose index build and warm latency to measure (e.g. a joint run)")
    ap.add_argument("--queries", type=int, default=40, help="distinct OASIS images for the warm latency")
    ap.add_argument("--threads", default=f"{torch.get_num_threads()},1",
                    help="torch thread counts to measure warm queries with (default: torch's default, then 1)")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--build-runs", type=int, default=3)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--sqlite-max", type=int, default=1_000_000, help="largest synthetic index loaded from SQLite")
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default results/benchmarks/recommend.json)")
    args = ap.parse_args(argv)

    threads = list(dict.fromkeys(int(t) for t in args.threads.split(",") if t)) or [torch.get_num_threads()]
    model_path = args.model or deployed.default_model_path()  # what `imuse recommend` uses by default
    model = deployed.load_deployed(model_path)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
              "model": {"path": str(model_path), "label": model.label(), "fingerprint": model.fingerprint[:16]}}
    print(f"model: {model.label()}\nmachine: {result['machine']}", flush=True)

    images = data.load_images()
    paths = [Path(p) for p in images.path.iloc[:: max(1, len(images) // args.queries)][: args.queries]]
    with tempfile.TemporaryDirectory() as tmp:
        index_path = Path(tmp) / "bench_index.sqlite"
        print("index build (500 songs) ...", flush=True)
        result["index_build"] = bench_build(model, index_path, args.build_runs)
        print(f"  {result['index_build']}", flush=True)

        print("cold start ...", flush=True)
        result["cold_start"] = bench_cold(model_path, index_path, paths[0], args.cold_runs)
        result["cold_start"]["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
        print(f"  {result['cold_start']}", flush=True)

        rec = recommend.Recommender.load(model, index_path)
        default_threads = torch.get_num_threads()
        result["warm_by_threads"] = {}
        for k in threads:
            torch.set_num_threads(k)
            print(f"warm queries, {k} torch thread(s) ...", flush=True)
            result["warm_by_threads"][k] = bench_warm(rec, paths)
            result["warm_by_threads"][k]["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
            print(f"  {result['warm_by_threads'][k]}", flush=True)
        torch.set_num_threads(default_threads)
        result["warm"] = result["warm_by_threads"][threads[0]]

        result["other_models"] = []
        for k, extra in enumerate(args.also):
            other = deployed.load_deployed(extra)
            path = Path(tmp) / f"other{k}.sqlite"
            print(f"other model {other.label()} ...", flush=True)
            t0 = time.perf_counter()
            index_building.build_index(other, path, progress=False)
            entry = {"path": str(extra), "label": other.label(), "build_ms": _ms(time.perf_counter() - t0)}
            other_rec = recommend.Recommender.load(other, path)
            for k in threads:
                torch.set_num_threads(k)
                entry[f"warm_{k}_threads"] = bench_warm(other_rec, paths)
            torch.set_num_threads(default_threads)
            result["other_models"].append(entry)
            print(f"  {entry}", flush=True)

    sizes = [int(s) for s in args.sizes.split(",") if s]
    print("scaling (synthetic catalogs) ...", flush=True)
    torch.manual_seed(0)
    joint = IMUSENet(model.meta.get("image_dim", 1280), model.meta.get("audio_dim", 753), factorised=False).eval()
    if not model.factorised:
        joint = model.net  # the real fusion layers when the model is joint
    result["scaling_by_threads"] = {}
    for i, k in enumerate(threads):
        torch.set_num_threads(k)
        print(f" {k} torch thread(s):", flush=True)
        result["scaling_by_threads"][k] = bench_scaling(sizes, joint, config.SEED, args.sqlite_max if i == 0 else 0)
    torch.set_num_threads(default_threads)
    result["scaling"] = result["scaling_by_threads"][threads[0]]
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = {
        "warm_query_under_100ms": {k: w["query_incl_image_arm"]["median_ms"] < 100
                                   for k, w in result["warm_by_threads"].items()},
        "va_search_1M_under_50ms": {k: next((r["va_nn_median_ms"] < 50 for r in rows if r["songs"] == 1_000_000), None)
                                    for k, rows in result["scaling_by_threads"].items()},
    }
    out = args.out or config.results_dir() / "benchmarks" / "recommend.json"
    io.write_json(out, result)
    print(json.dumps(result["targets"]), f"\nreport: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
