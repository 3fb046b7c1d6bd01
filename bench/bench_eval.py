"""Exact evaluation vs a bare FAISS exact search of the same queries, in the same run.

    .venv/bin/python -m bench.bench_eval                       # 100k queries x 1M items x 64-d
    .venv/bin/python -m bench.bench_eval --users 10000 --items 200000   # a quicker look

Data: ``eval.synthetic.planted_problem`` (1000 topics, Zipf popularity) with 20..100 history draws
per user (about 17..94 distinct items, all excluded from that user's ranking) and 2..4 test draws. Timed, one after the other on the same machine:

  bare   faiss.IndexFlatIP.search(test queries, k=max(ks)) -- no exclusions, no metrics; timed
         before and after the suite, the ratio uses the mean (other jobs share the machine)
  suite  eval.evaluate_vectors(...) -- exact top-K with exclusions, ranks, every metric on every slice,
         bootstrap CIs (``--bootstrap`` resamples)

and prints both times, the suite's breakdown and suite / bare (target: <= 1.5).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import faiss
import numpy as np

from eval import EvalConfig, evaluate_vectors
from eval.synthetic import planted_problem


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--zipf", type=float, default=0.7, help="popularity exponent inside a topic")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--query-block", type=int, default=EvalConfig.query_block)
    ap.add_argument("--item-block", type=int, default=EvalConfig.item_block)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    print(f"# bench_eval  python {platform.python_version()}  faiss {faiss.__version__}  numpy {np.__version__}  "
          f"cores {os.cpu_count()}  faiss threads {faiss.omp_get_max_threads()}  load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    p = planted_problem(args.users, args.items, args.dim, args.clusters, history=(20, 101), test_per_user=(2, 5),
                        zipf=args.zipf, seed=args.seed)
    queries = np.unique(p.test_cases[0])
    print(f"data: {args.users} users ({len(queries)} with test cases), {args.items} items x {args.dim}-d, "
          f"{len(p.test_cases[0])} test cases, exclusions per user {np.diff(p.user_items.indptr).min()}.."
          f"{np.diff(p.user_items.indptr).max()} (mean {np.diff(p.user_items.indptr).mean():.1f}); "
          f"built in {time.perf_counter() - t0:.1f} s")
    cfg = EvalConfig(bootstrap_samples=args.bootstrap, query_block=args.query_block, item_block=args.item_block,
                     seed=args.seed)

    index = faiss.IndexFlatIP(args.dim)
    index.add(p.item_vectors)
    q = np.ascontiguousarray(p.query_vectors[queries])

    def bare_search() -> float:
        t = time.perf_counter()
        index.search(q, cfg.max_k)
        return time.perf_counter() - t

    bare_before = bare_search()
    print(f"bare   faiss IndexFlatIP.search  {len(q)} queries, k={cfg.max_k}: {bare_before:8.1f} s  "
          f"({len(q) / bare_before:,.0f} queries/s)", flush=True)

    t0 = time.perf_counter()
    result = evaluate_vectors(p.query_vectors, p.item_vectors, p.test_cases, p.user_items, p.train_counts, cfg,
                              name="bench")
    suite = time.perf_counter() - t0
    timings = result.info["timings"]
    search, boot = timings["exact_search_seconds"], timings["bootstrap_seconds"]
    print(f"suite  evaluate_vectors (exclusions, {len(result.summary)} slices x {len(result.metric_columns('exact'))} "
          f"metrics, {args.bootstrap} bootstrap resamples): {suite:8.1f} s")
    print(f"         exact top-K with exclusions {search:8.1f} s | bootstrap {boot:6.1f} s | "
          f"rest (validation, ranks, slices, tables) {suite - search - boot:6.1f} s", flush=True)
    bare_after = bare_search()
    bare = (bare_before + bare_after) / 2
    print(f"bare   again after the suite (the machine is shared): {bare_after:8.1f} s; mean {bare:.1f} s; "
          f"load average now {os.getloadavg()[0]:.1f}")
    print(f"ratio  suite / bare = {suite / bare:.2f}   (exact search alone / bare = {search / bare:.2f}; "
          f"target suite <= 1.5)")
    print(f"check  recall@100 overall {result.value('recall@100'):.4f}, tail "
          f"{result.value('recall@100', 'popularity/tail'):.4f}")


if __name__ == "__main__":
    main()
