"""ScaNN side of ``bench.bench_index_peers``; runs ONLY in the benchmark-only venv (/work/scann-venv), never in
the project venv (the scann wheel pins a TensorFlow that breaks TFRS). Imports nothing from this project.

    /work/scann-venv/bin/python bench/scann_peer.py X.npy Q.npy --k 100 --threads 2

Builds a tree (--leaves) + asymmetric-hashing (2-d blocks, anisotropic threshold 0.2) + exact reorder searcher
on X (inner product), times ``search_batched`` of all of Q for every (leaves_to_search, reorder) pair (best of
--repeats), saves each result's neighbour rows next to X, and prints one JSON line: {version, build_s, rows}.
"""
import argparse
import json
import os
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
    args = p.parse_args()
    import scann

    x = np.load(args.x).astype(np.float32)
    q = np.load(args.q).astype(np.float32)
    reorders = [int(v) for v in args.reorder.split(",")]
    start = time.perf_counter()
    searcher = (scann.scann_ops_pybind.builder(x, args.k, "dot_product")
                .tree(num_leaves=args.leaves, num_leaves_to_search=64, training_sample_size=min(len(x), args.train_size))
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(max(reorders))
                .set_n_training_threads(args.threads)
                .build())
    build_s = time.perf_counter() - start
    rows = []
    out_dir = Path(args.x).parent
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
    print(json.dumps({"version": getattr(scann, "__version__", "?"), "build_s": build_s, "rows": rows,
                      "threads_env": os.environ.get("OMP_NUM_THREADS")}))


if __name__ == "__main__":
    main()
