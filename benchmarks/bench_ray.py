"""Ray as the engine (issue 11): embedding throughput and overhead, and the song index at a
million songs. Not a test: it measures and reports.

    .venv/bin/python benchmarks/bench_ray.py [--clips 24] [--small 20] [--songs 1000000]
        [--queries 20] [--out results/benchmarks/ray.json] [--reference]

Measures, on this machine's CPU (the machine may be shared: the load average is recorded):

1. embedding throughput (items/s) of real 4Q clips through the frozen Musicnn backbone
   (its 5 evaluation crops, as `imuse index add` embeds a new song): the local path (this
   process, one thread), Ray with 1 and 2 actors on a local Ray, and a simulated two-node
   cluster (``ray.cluster_utils.Cluster``, one CPU per node). The Ray times are the job
   alone (Ray started before; the actors' start included), the start of Ray is given apart;
   the steady rate counts from the first batch back to the last (the actors running);
2. the overhead of Ray on a 20-file job: the whole `--engine ray` job (start Ray, embed,
   stop) against the local path on the same files;
3. the song index at ``--songs`` synthetic songs: load time from SQLite (before: what every
   index did) and from the memory-mapped arrays (after), and the query latency with the VA
   model (Eq. 1 nearest neighbours + the metadata of the top 10) both ways;
4. the joint model at ``--songs`` songs (the trained quick-profile network where `imuse train`
   has run): the exact scoring with the precomputed music half of the fusion layer
   (``joint_model.JointScorer``, what a query runs) against an approximate index of the same
   score (k-means clusters of the precomputed halves, exact rescoring of the best clusters'
   songs), with its recall of the exact top 10.

Writes the JSON atomically (imuse_lib.io). ``--reference`` also writes it to
benchmarks/reference/ray.json, the measured copy the book's scaling chapter reads when a
build machine has not run the benchmark itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from imuse_lib import config, data, deployed, engine, io, parallel, ranking
from imuse_lib import joint as joint_model
from imuse_lib.index import arrays as index_arrays
from imuse_lib.index import files as index_files
from imuse_lib.index import reading as index_reading
from imuse_lib.models import build_audio_backbone

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "reference" / "ray.json"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _summary(times: list[float]) -> dict:
    ts = sorted(times)
    return {"median_ms": _ms(statistics.median(ts)), "p95_ms": _ms(ts[min(len(ts) - 1, int(0.95 * len(ts)))]),
            "min_ms": _ms(ts[0]), "n": len(ts)}


# --------------------------------------------------------------------------- embedding


def _local(bb, paths: list[str], n_eval: int) -> float:
    from imuse_lib import features

    t = time.perf_counter()
    features.embed_audio(bb, paths, eval_crops=n_eval)
    return time.perf_counter() - t


def _ray_job(bb, paths: list[str], n_eval: int, workers: int, batch_items: int = 4) -> dict:
    """One Ray Data job: its whole time (actors' start included) and the steady rate, items
    per second between the first and the last batch to arrive (the actors running)."""
    spec = engine.EmbedSpec("audio", 0, 0, n_eval, 8)
    t = time.perf_counter()
    arrivals = []
    for b in engine.embed(bb, spec, [(p, p) for p in paths], workers=workers, batch_items=batch_items):
        arrivals.append((time.perf_counter(), len(b["id"])))
    total = time.perf_counter() - t
    got = sum(n for _, n in arrivals)
    assert got == len(paths), f"{got} of {len(paths)} items came back"
    span = arrivals[-1][0] - arrivals[0][0]
    steady = (got - arrivals[0][1]) / span if span > 0 else float("nan")
    return {"seconds": round(total, 2), "items_per_s": round(got / total, 3), "steady_items_per_s": round(steady, 3)}


def bench_embedding(clips: list[str], small: list[str], n_eval: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster
    from ray.data import DataContext

    torch.set_num_threads(1)
    bb = build_audio_backbone("musicnn")
    _local(bb, clips[:1], n_eval)  # warm: weights, decoder
    local_s = _local(bb, clips, n_eval)
    out = {"backbone": "musicnn", "eval_crops": n_eval, "items": len(clips),
           "local": {"seconds": round(local_s, 2), "items_per_s": round(len(clips) / local_s, 3),
                     "steady_items_per_s": round(len(clips) / local_s, 3)}}
    print(f"local            : {len(clips) / local_s:6.2f} items/s ({local_s:.1f} s)", flush=True)

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    out["ray_start_s"] = round(time.perf_counter() - t, 2)
    try:
        for workers in (1, 2):
            _ray_job(bb, clips[:2], n_eval, workers)  # the workers' first start (imports, caches) apart
            out[f"ray_{workers}_worker"] = r = _ray_job(bb, clips, n_eval, workers)
            print(f"ray {workers} worker(s)   : {r['items_per_s']:6.2f} items/s ({r['seconds']:.1f} s), steady "
                  f"{r['steady_items_per_s']:.2f}", flush=True)
    finally:
        ray.shutdown()

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    try:
        _ray_job(bb, clips[:2], n_eval, 2)
        out["cluster_2_nodes"] = r = {**_ray_job(bb, clips, n_eval, 2), "nodes": 2, "cpus_per_node": 1}
        print(f"2-node cluster   : {r['items_per_s']:6.2f} items/s ({r['seconds']:.1f} s), steady "
              f"{r['steady_items_per_s']:.2f}", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()

    # a whole 20-file `--engine ray` job, Ray started and stopped with it, against the local path
    local_small = _local(bb, small, n_eval)
    t = time.perf_counter()
    with parallel.session(num_cpus=2):
        DataContext.get_current().enable_progress_bars = False
        _ray_job(bb, small, n_eval, 2)
    whole = time.perf_counter() - t
    out["overhead_20_files"] = {"files": len(small), "local_s": round(local_small, 2),
                                "ray_whole_job_s": round(whole, 2), "overhead_s": round(whole - local_small, 2)}
    print(f"20-file job      : local {local_small:.1f} s, ray (start+job+stop) {whole:.1f} s", flush=True)
    return out


# --------------------------------------------------------------------------- the index at scale


def _synthetic_index(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    va = rng.random((n, 2), dtype=np.float32)
    vecs = np.maximum(rng.standard_normal((n, 128), dtype=np.float32), 0)
    with sqlite3.connect(path) as conn:
        for stmt in index_files.SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        meta = {"schema_version": str(index_files.SCHEMA_VERSION), "fingerprint": "synthetic",
                "music_dim": "128", "image_dim_vec": "0", "generation": "bench"}
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        conn.executemany("INSERT INTO songs VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, '', 'predicted')",
                         ((f"SYN{i:08d}", f"artist {i % 977}", f"title {i}", None, vecs[i].tobytes(),
                           float(va[i, 0]), float(va[i, 1])) for i in range(n)))


def _queries(idx, n_queries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    points = rng.random((n_queries + 2, 2))
    cols = idx.song_va_columns
    times, answers = [], []
    for k, q in enumerate(points):
        t = time.perf_counter()
        pos, sim = ranking.rank_va(q, cols, 10)
        rows = idx.song_rows(pos)
        took = time.perf_counter() - t
        if k >= 2:  # two warm-up queries
            times.append(took)
            answers.append(list(rows.song_id))
    return {**_summary(times), "answers": answers}


def bench_index(n: int, n_queries: int, seed: int) -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.sqlite"
        t = time.perf_counter()
        _synthetic_index(path, n, seed)
        write_s = time.perf_counter() - t
        write_arrays = index_arrays.write_arrays
        index_arrays.write_arrays = lambda *a, **k: None  # the load alone, as every index loaded before
        try:
            t = time.perf_counter()
            before = index_reading.open_index(path)  # no arrays yet: SQLite
            before_s = time.perf_counter() - t
        finally:
            index_arrays.write_arrays = write_arrays
        assert not isinstance(before.song_va, np.memmap)
        t = time.perf_counter()
        index_arrays.publish_generation(path, "bench")  # what a write does after its commit
        arrays_write_s = time.perf_counter() - t
        q_before = _queries(before, n_queries, seed)
        loads = []
        for _ in range(3):
            t = time.perf_counter()
            after = index_reading.open_index(path)
            loads.append(time.perf_counter() - t)
        assert isinstance(after.song_va, np.memmap)
        q_after = _queries(after, n_queries, seed)
        same = q_before.pop("answers") == q_after.pop("answers")
        from imuse_lib.network import IMUSENet

        torch.manual_seed(seed)
        net = IMUSENet(256, 200).eval()  # the paper's joint network; only its fusion layers are used
        t = time.perf_counter()
        scorer = joint_model.JointScorer(net, after.song_vectors)
        pre_s = time.perf_counter() - t
        image_vec = np.maximum(np.random.default_rng(seed).standard_normal(256), 0).astype(np.float32)
        joint = []
        for k in range(7):
            t = time.perf_counter()
            ranking.top_k(scorer.score(image_vec)[0], 10)
            if k >= 2:
                joint.append(time.perf_counter() - t)
        size_mb = sum(f.stat().st_size for f in index_arrays.arrays_dir(path).rglob("*.npy")) / 1e6
    print(f"index {n:,} songs: load SQLite {before_s:.2f} s -> arrays {min(loads) * 1000:.0f} ms; "
          f"VA query {q_before['median_ms']:.1f} -> {q_after['median_ms']:.1f} ms; joint query "
          f"{_summary(joint)['median_ms']:.0f} ms (+{pre_s:.1f} s once per load)", flush=True)
    return {"songs": n, "sqlite_write_s": round(write_s, 1), "arrays_mb": round(size_mb, 1),
            "arrays_write_s": round(arrays_write_s, 2),
            "load_before_s": round(before_s, 3), "load_after": _summary(loads),
            "va_query_before": q_before, "va_query_after": q_after, "same_answers": same,
            "joint_precompute_s": round(pre_s, 3), "joint_query": _summary(joint)}


def _joint_world(n: int, seed: int, model_path: Path | None):
    """(network, music vectors [n, 128], query image vectors, label): the trained joint network
    of `imuse train` (quick profile, cold split, seed 0) with song vectors from mixtures of the
    500 real clips' stored Musicnn features (a catalog the network has seen the like of), and
    real OASIS images as queries; without that run, a seeded random network and vectors."""
    from imuse_lib import features

    rng = np.random.default_rng(seed)
    path = model_path or config.results_dir() / "quick" / "runs" / "mobilenet_v2+musicnn" / "cold" / "joint" / \
        "seed0" / "model.pt"
    if path.exists():
        model = deployed.load_deployed(path)
        afs = features.audio_features(**deployed.store_kwargs(model.meta, "audio"), progress=False)
        ifs = features.image_features(**deployed.store_kwargs(model.meta, "image"), progress=False)
        a, b = rng.integers(0, len(afs.eval), (2, n))
        lam = rng.random((n, 1), dtype=np.float32)
        feats = lam * afs.eval[a] + (1 - lam) * afs.eval[b]
        music = np.concatenate([model.music_side(feats[i:i + 65536])[0] for i in range(0, n, 65536)])
        queries = model.image_side(ifs.eval[rng.choice(len(ifs.eval), 20, replace=False)])[0]
        return model.net, music, queries, f"trained joint network ({path.relative_to(config.results_dir())})"
    from imuse_lib.network import IMUSENet

    torch.manual_seed(seed)
    net = IMUSENet(1280, 200).eval()
    music = np.maximum(rng.standard_normal((n, 128), dtype=np.float32), 0)
    queries = np.maximum(rng.standard_normal((20, 256), dtype=np.float32), 0)
    return net, music, queries, "seeded random joint network (no trained run here)"


def _scorer_on(scorer, pre: torch.Tensor):
    """``scorer``'s exact fusion over other precomputed music halves (centroids, or a subset
    of the songs): JointScorer.score reads only its weights, ``pre`` and a work buffer."""
    other = joint_model.JointScorer.__new__(joint_model.JointScorer)
    other.__dict__.update(scorer.__dict__)
    other.pre = pre
    other._work = torch.empty((min(scorer.batch, max(len(pre), 1)), pre.shape[1]))
    return other


def bench_joint(n: int, seed: int, model_path: Path | None, clusters: int = 1024,
                probes: tuple = (16, 64, 256)) -> dict:
    """The joint model at ``n`` songs: exact scoring with the precomputed music half
    (``joint_model.JointScorer``, what a query runs) against an approximate index of the same
    scores - k-means clusters of the precomputed halves; a query scores the centroids
    exactly, then rescores exactly the songs of its ``nprobe`` best clusters - with its
    recall of the exact top 10."""
    from sklearn.cluster import MiniBatchKMeans

    torch.set_num_threads(1)
    net, music, queries, label = _joint_world(n, seed, model_path)
    t = time.perf_counter()
    scorer = joint_model.JointScorer(net, music)
    pre_s = time.perf_counter() - t
    exact, times = [], []
    for k, q in enumerate(queries):
        t = time.perf_counter()
        exact.append(ranking.top_k(scorer.score(q)[0], 10))
        times.append(time.perf_counter() - t)
    out = {"songs": n, "network": label, "exact": {**_summary(times[2:]), "precompute_s": round(pre_s, 3)}}
    print(f"joint {n:,} songs ({label}): exact {out['exact']['median_ms']:.0f} ms a query", flush=True)

    t = time.perf_counter()
    km = MiniBatchKMeans(clusters, batch_size=8192, n_init=1, max_iter=20, random_state=seed)
    assign = km.fit_predict(scorer.pre.numpy())
    build_s = time.perf_counter() - t
    members = [np.flatnonzero(assign == c) for c in range(clusters)]
    centre_scorer = _scorer_on(scorer, torch.from_numpy(km.cluster_centers_.astype(np.float32)))
    out["approximate"] = {"method": "k-means clusters of the precomputed music halves, exact rescoring",
                          "clusters": clusters, "build_s": round(build_s, 1), "by_nprobe": []}
    for nprobe in probes:
        times, recall = [], []
        for k, q in enumerate(queries):
            t = time.perf_counter()
            best = ranking.top_k(centre_scorer.score(q)[0], nprobe)
            cand = np.sort(np.concatenate([members[c] for c in best]))
            sub = _scorer_on(scorer, scorer.pre[torch.from_numpy(cand)])
            got = cand[ranking.top_k(sub.score(q)[0], 10)]
            times.append(time.perf_counter() - t)
            recall.append(len(set(got) & set(exact[k])) / 10)
        row = {"nprobe": nprobe, **_summary(times[2:]), "recall_at_10": round(float(np.mean(recall)), 3)}
        out["approximate"]["by_nprobe"].append(row)
        print(f"  approximate nprobe {nprobe:4d}: {row['median_ms']:.1f} ms, recall@10 {row['recall_at_10']:.3f}",
              flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=40, help="clips embedded per throughput measure")
    ap.add_argument("--small", type=int, default=20, help="files of the overhead job")
    ap.add_argument("--eval-crops", type=int, default=5, help="Musicnn evaluation crops per clip (its own: 5)")
    ap.add_argument("--songs", type=int, default=1_000_000, help="songs of the synthetic index")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--joint-model", type=Path, default=None,
                    help="joint network for the joint-model comparison (default: the quick profile's cold seed 0)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/benchmarks/ray.json")
    ap.add_argument("--reference", action="store_true", help=f"also write {REFERENCE.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    out_path = args.out or config.results_dir() / "benchmarks" / "ray.json"
    import ray

    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "ray": ray.__version__, "platform": platform.platform(),
                          "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                          "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
              "command": "python benchmarks/bench_ray.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if not args.skip_embedding:
        catalog = data.load_catalog()
        paths = [str(p) for p in catalog.path]
        result["embedding"] = bench_embedding(paths[:args.clips], paths[args.clips:args.clips + args.small],
                                              args.eval_crops)
    result["index"] = bench_index(args.songs, args.queries, config.SEED)
    result["joint"] = bench_joint(args.songs, config.SEED, args.joint_model)
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    io.write_json(out_path, result)
    print(f"written: {out_path}")
    if args.reference:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        io.write_json(REFERENCE, result)
        print(f"written: {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
