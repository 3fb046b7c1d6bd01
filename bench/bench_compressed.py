"""Compressed indices with re-ranking: bytes per item, the recall@100 the build's tuning reaches, and its QPS.

    nice -n 5 python -m bench.bench_compressed --n 200000 --dim 64 \
        "IVF1024,PQ16x4fs,Refine(PQ32)" "IVF1024,PQ32x4fs,Refine(SQ8)"
    nice -n 5 python -m bench.bench_compressed --vectors D/items.npy --query-vectors D/queries.npy \
        --tune-vectors D/tune_queries.npy "IVF4096,PQ16x4fs,Refine(SQ4)"          # trained-tower vectors
    ... "QProj53,IVF4096,SQ6"   # the 48 B/item index: query-weighted uncentred projection (indexing.projection)

Each factory is built with ``ItemIndex.build`` exactly as ``twotower index`` builds it (target recall 0.95 at
k = 100, nprobe and k_factor tuned together; --restarts quantizer trainings, 1 by default to bound the time).
Vectors: clustered synthetic ones (``indexing.synthetic``, synthetic queries as the query set), or .npy item
vectors with the query-tower vectors of validation users to tune on (--tune-vectors) and of test users to
measure on (--query-vectors; recall and QPS are measured on these, which tuning never saw).

Prints one JSON line per factory:
  bytes_per_item    by part, from the built index's own sizes (``indexing.faiss_index.bytes_per_item``): codes
                    (IVF code_size: fast-scan PQm x4 = m/2 B), ids (8: the int64 row FAISS stores next to every
                    code), refine (the re-ranking code: SQ8 = d, SQ4 = d/2, PQm = m, Flat = 4d); ``total`` is their
                    sum; ``fixed_bytes`` (centroids, codebooks) is per index and listed apart
  serialized_bytes_per_item  the saved index file's size / n (everything, fixed parts and padding included)
  search_params, recall@100 (test users' queries), qps (one batch of all queries, --threads, best of --repeats)
  rss               peak RSS (MiB) before the build (the vectors loaded) and after build + search
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench.bench_index

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from indexing import faiss_index as fi  # noqa: E402
from indexing.item_index import ItemIndex  # noqa: E402
from indexing.recall import exact_top_k, recall_from_results  # noqa: E402
from indexing.spec import IndexSpec  # noqa: E402
from indexing.synthetic import clustered_vectors  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_compressed")
    parser.add_argument("factories", nargs="+")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--vectors", default="", help=".npy item vectors instead of synthetic ones")
    parser.add_argument("--query-vectors", default="", help=".npy queries recall and QPS are measured on")
    parser.add_argument("--tune-vectors", default="", help=".npy queries the build tunes on")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    if args.vectors:
        x = np.ascontiguousarray(np.load(args.vectors), dtype=np.float32)
        q = np.ascontiguousarray(np.load(args.query_vectors), dtype=np.float32)[:args.queries]
        tune = np.ascontiguousarray(np.load(args.tune_vectors), dtype=np.float32) if args.tune_vectors else q
        source = "query_tower_valid_users" if args.tune_vectors else "query_tower_test_users"
    else:
        x, q = clustered_vectors(args.n, args.dim, args.queries, seed=3)
        tune, source = q, "synthetic_queries"
    n = len(x)
    ids = [str(i) for i in range(n)]
    exact_scores, _ = exact_top_k(x, q, args.k)
    rss_before = peak_rss_mib()
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    for factory in args.factories:
        started = time.perf_counter()
        spec = IndexSpec(factory=factory, gpu="never", quantizer_restarts=args.restarts, train_size=args.train_size)
        index = ItemIndex.build(x, ids, spec, "bench", queries=tune, query_source=source)
        build_s = time.perf_counter() - started
        raw = index.faiss_index
        found = raw.search(q, args.k)[1]
        recall = recall_from_results(found, x, q, exact_scores, args.k)
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            raw.search(q, args.k)
            best = min(best, time.perf_counter() - t)
        print(json.dumps({"factory": factory, "n": n, "dim": x.shape[1], "build_seconds": round(build_s, 1),
                          "bytes_per_item": index.bytes_per_item,
                          "serialized_bytes_per_item": round(len(fi.serialize(raw)) / n, 2),
                          "search_params": index.search_params, "recall@100": round(recall, 4),
                          "recall_check_on_tune_split": round(index.recall["recall"], 4),
                          "reached": index.tuning["reached"] if index.tuning else None,
                          "qps": round(len(q) / best), "queries": len(q), "threads": args.threads,
                          "rss_mib": {"before_build": round(rss_before), "peak": round(peak_rss_mib())},
                          "load_before_run": load_before,
                          "load_after": " ".join(f"{v:.1f}" for v in os.getloadavg()),
                          "grid": index.tuning["grid"] if index.tuning else None}), flush=True)
        del index, raw


if __name__ == "__main__":
    main()
