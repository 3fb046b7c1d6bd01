"""Compressed indices with re-ranking: bytes per item and the recall@100 the build's tuning reaches.

    nice -n 5 python -m bench.bench_compressed --n 200000 --dim 64 \
        "IVF1024,PQ16x4fs,Refine(PQ32)" "IVF1024,PQ32x4fs,Refine(SQ8)"

Each factory is built with ``ItemIndex.build`` exactly as ``twotower index`` builds it (target recall 0.95 at
k = 100, nprobe and k_factor tuned together, one quantizer training to bound the time), on clustered synthetic
vectors (``indexing.synthetic``) with synthetic queries as the query set. Prints one JSON line per factory:
bytes per item by part, the tuned search params, the held-out recall, whether the target was reached and the
tuning grid (k_factor, nprobe needed or null, recall, modelled cost).
"""
from __future__ import annotations

import argparse
import json
import time

import faiss

from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec
from indexing.synthetic import clustered_vectors


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_compressed")
    parser.add_argument("factories", nargs="+")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=100_000)
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    x, q = clustered_vectors(args.n, args.dim, args.queries, seed=3)
    ids = [str(i) for i in range(args.n)]
    for factory in args.factories:
        started = time.perf_counter()
        spec = IndexSpec(factory=factory, gpu="never", quantizer_restarts=1, train_size=args.train_size)
        index = ItemIndex.build(x, ids, spec, "bench", queries=q, query_source="synthetic_queries")
        print(json.dumps({"factory": factory, "n": args.n, "dim": args.dim,
                          "build_seconds": round(time.perf_counter() - started, 1),
                          "bytes_per_item": index.bytes_per_item, "search_params": index.search_params,
                          "recall@100": round(index.recall["recall"], 4), "reached": index.tuning["reached"],
                          "grid": index.tuning["grid"]}), flush=True)


if __name__ == "__main__":
    main()
