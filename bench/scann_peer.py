"""ScaNN side of ``bench.bench_index_peers``; runs ONLY in the benchmark-only venv (/work/scann-venv), never in
the project venv (the scann wheel pins a TensorFlow that breaks TFRS). Imports nothing from this project.

    /work/scann-venv/bin/python bench/scann_peer.py X.npy Q.npy --k 100 --threads 2

Builds a tree (--leaves) + asymmetric-hashing (2-d blocks, anisotropic threshold 0.2) + exact reorder searcher
on X (inner product), times ``search_batched_parallel`` of all of Q for every (leaves_to_search, reorder) pair
(best of --repeats), saves each result's neighbour rows under --out (default: next to X), and prints one JSON
line: {version, build_s, loaded, rows}. With --artifacts DIR the searcher is serialized to DIR after the build
and loaded from it when DIR already holds one (X is then not read); --build-only stops after the build.
X is memory-mapped (at 10M it is 2.5 GB; the builder copies what it keeps).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("x")
    p.add_argument("q")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--leaves", type=int, default=2048)
    p.add_argument("--search", default="32,64,128")
    p.add_argument("--reorder", default="200,400")
    p.add_argument("--train-size", type=int, default=250_000)
    p.add_argument("--artifacts", default="", help="directory the built searcher is serialized to / loaded from")
    p.add_argument("--build-only", action="store_true", help="build (and serialize) the searcher, time nothing")
    p.add_argument("--out", default="", help="directory for the found-rows files (default: X's directory)")
    args = p.parse_args()
    import scann

    q = np.ascontiguousarray(np.load(args.q), dtype=np.float32)
    reorders = [int(v) for v in args.reorder.split(",")]
    artifacts = Path(args.artifacts) if args.artifacts else None
    meta = artifacts / "bench_build.json" if artifacts else None
    loaded = bool(meta and meta.is_file())
    start = time.perf_counter()
    if loaded:
        searcher = scann.scann_ops_pybind.load_searcher(str(artifacts))
        build_s = json.loads(meta.read_text())["build_s"]
        print(f"scann: loaded {artifacts} in {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    else:
        x = np.load(args.x, mmap_mode="r")
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        searcher = (scann.scann_ops_pybind.builder(x, args.k, "dot_product")
                    .tree(num_leaves=args.leaves, num_leaves_to_search=64,
                          training_sample_size=min(len(x), args.train_size))
                    .score_ah(2, anisotropic_quantization_threshold=0.2)
                    .reorder(max(reorders))
                    .set_n_training_threads(args.threads)
                    .build())
        build_s = time.perf_counter() - start
        del x
        print(f"scann: built in {build_s:.0f}s", file=sys.stderr, flush=True)
        if artifacts:
            artifacts.mkdir(parents=True, exist_ok=True)
            searcher.serialize(str(artifacts))
            meta.write_text(json.dumps({"build_s": build_s, "leaves": args.leaves, "train_size": args.train_size,
                                        "max_reorder": max(reorders)}))  # written last: marks a complete save
    rows = []
    out_dir = Path(args.out) if args.out else Path(args.x).parent
    if args.build_only:
        reorders = []
    for reorder in reorders:
        for leaves in [int(v) for v in args.search.split(",")]:
            best = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                found, _ = searcher.search_batched_parallel(q, final_num_neighbors=args.k, pre_reorder_num_neighbors=reorder,
                                                            leaves_to_search=leaves, batch_size=256)
                best = min(best, time.perf_counter() - t)
            path = out_dir / f"scann-found-l{leaves}-r{reorder}.npy"
            np.save(path, np.asarray(found, dtype=np.int64))
            rows.append({"params": f"leaves={leaves},reorder={reorder}", "qps": len(q) / best, "build_s": build_s,
                         "found": str(path)})
    try:
        from importlib.metadata import version
        scann_version = version("scann")
    except Exception:  # noqa: BLE001 -- the version is a label only
        scann_version = getattr(scann, "__version__", "?")
    print(json.dumps({"version": scann_version, "build_s": build_s, "loaded": loaded, "rows": rows,
                      "threads_env": os.environ.get("OMP_NUM_THREADS")}))


if __name__ == "__main__":
    main()
