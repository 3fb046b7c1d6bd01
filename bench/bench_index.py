"""Index benchmark: recall@k and QPS of exact Flat, IVF (nprobe sweep), HNSW (efSearch sweep), IVF-PQ, and
hnswlib (ef sweep) as the peer, all on the same clustered, normalised vectors in one run.

    python -m bench.bench_index --n 1000000 --dim 64            # the reported configuration
    python -m bench.bench_index --n 100000 --queries 500        # quick look

QPS = queries / wall seconds for one batch of all queries (best of --repeats), FAISS and hnswlib both
using --threads threads. FAISS rows are timed through ``ItemIndex.search`` (what the product serves,
including tie ordering); the "raw" column times the bare FAISS index on the same batch. Recall is
against exact top-k (``indexing.recall``). Ratios are against exact Flat QPS measured in the same run.
"hnswlib@=recall" is hnswlib's QPS interpolated at the row's recall on hnswlib's recall/QPS curve
(">" when the row's recall is above anything hnswlib reached in its sweep).
"""
from __future__ import annotations

import os

# FAISS's OpenMP (libgomp) threads spin while waiting by default; on a shared 2-core machine that spinning
# steals the very cores the work needs (HNSW add ran 2x slower in a contended check). Must be set before
# faiss loads libgomp. hnswlib uses plain std::threads and is unaffected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from indexing.item_index import ItemIndex  # noqa: E402
from indexing.recall import recall_from_results  # noqa: E402
from indexing.spec import IndexSpec, choose_factory, choose_nlist, default_nprobe  # noqa: E402
from indexing.synthetic import clustered_vectors  # noqa: E402


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def hnswlib_qps_at(recall: float, curve: list[tuple[float, float]]) -> float | None:
    """hnswlib QPS at ``recall`` by linear interpolation on its Pareto curve [(recall, qps)]."""
    points = sorted(curve)
    frontier = []  # keep, for increasing recall, the best QPS achievable at >= that recall
    for r, q in reversed(points):
        if not frontier or q > frontier[-1][1]:
            frontier.append((r, q))
    frontier.reverse()
    if not frontier or recall > frontier[-1][0]:
        return None
    if recall < frontier[0][0]:
        return None  # below hnswlib's lowest measured recall: no fair comparison point
    for (r0, q0), (r1, q1) in zip(frontier, frontier[1:]):
        if r0 <= recall <= r1:
            return q0 + (q1 - q0) * (recall - r0) / (r1 - r0) if r1 > r0 else min(q0, q1)
    return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.8, help="within-cluster spread (see indexing.synthetic)")
    p.add_argument("--threads", type=int, default=faiss.omp_get_max_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nprobes", type=ints, default=ints("16,32,48,64,96,128"))
    p.add_argument("--efs", type=ints, default=ints("100,128,160,200,256,384"))
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--flat-sizes", type=ints, default=ints("10000,30000,100000,300000"),
                   help="catalogue sizes (prefixes) at which exact Flat QPS is also measured")
    p.add_argument("--ivf", default="auto",
                   help="';'-separated IVF factories to sweep nprobe on ('auto' = IVF<nlist>,Flat with the auto nlist)")
    p.add_argument("--pq", default="auto", help="IVF-PQ factory to include ('auto' = IVF<nlist>,PQ<dim/2>; '' = skip)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: flat-sizes,ivf,hnsw,hnswlib,pq")
    p.add_argument("--json", default="", help="also write all rows to this JSON file")
    args = p.parse_args(argv)
    skip = set(args.skip.split(","))
    faiss.omp_set_num_threads(args.threads)
    rows: list[dict] = []

    def report(name, params, recall, seconds, raw_seconds=None, build=None, nbytes=None):
        row = {"index": name, "params": params, "recall": recall, "qps": args.queries / seconds,
               "raw_qps": args.queries / raw_seconds if raw_seconds else None, "build_s": build,
               "mbytes": nbytes / 2**20 if nbytes else None}
        rows.append(row)
        print(f"  {name:<16} {params:<14} recall@{args.k}={recall:.4f}  qps={row['qps']:9.1f}", flush=True)
        return row

    print(f"# data: {args.n} x {args.dim} clustered normalised vectors (noise={args.noise}), {args.queries} "
          f"queries, k={args.k}, threads={args.threads}, faiss {faiss.__version__}", flush=True)
    t0 = time.perf_counter()
    x, q = clustered_vectors(args.n, args.dim, args.queries, noise=args.noise, seed=args.seed)
    ids = [f"item{i}" for i in range(args.n)]
    print(f"  generated in {time.perf_counter() - t0:.1f}s", flush=True)

    # ------------------------------------------------------------- exact Flat (the reference)
    flat = ItemIndex.build(x, ids, IndexSpec(factory="Flat", gpu="never", recall_queries=1), "bench")
    flat_s, (exact_scores, exact_rows) = best_time(lambda: flat.search(q, args.k), args.repeats)
    raw_s, (reference, _) = best_time(lambda: flat.faiss_index.search(q, args.k), args.repeats)
    assert np.allclose(reference, exact_scores, atol=1e-5)
    flat_row = report("Flat (exact)", "-", 1.0, flat_s, raw_s, None, args.n * args.dim * 4)
    flat_qps = flat_row["qps"]

    def recall_of(found):
        return recall_from_results(found, x, q, exact_scores, args.k)

    def one_query_ms(index) -> float:
        """Median wall time of a single-query search (what one online request pays)."""
        times = []
        faiss.omp_set_num_threads(1)  # FAISS searches one query on one thread; avoid idle spinning peers
        for i in range(min(50, len(q))):
            start = time.perf_counter()
            index.search(q[i:i + 1], args.k)
            times.append(time.perf_counter() - start)
        faiss.omp_set_num_threads(args.threads)
        return 1000 * float(np.median(times))

    flat_sizes = []
    for size in ([s for s in args.flat_sizes if s < args.n] + [args.n]) if "flat-sizes" not in skip else []:
        sub = faiss.IndexFlatIP(args.dim)
        sub.add(x[:size])
        seconds, _ = best_time(lambda: sub.search(q, args.k), args.repeats)
        flat_sizes.append({"n": size, "qps": args.queries / seconds, "one_query_ms": one_query_ms(sub)})
        print(f"  raw Flat at n={size}: batch qps={args.queries / seconds:.1f}, one query "
              f"{flat_sizes[-1]['one_query_ms']:.2f} ms", flush=True)
        del sub

    def sweep(index: ItemIndex, name: str, key: str, values: list[int], build_s: float):
        nbytes = faiss.serialize_index(index.faiss_index).nbytes
        for value in values:
            index.set_search_params(**{key: value})
            seconds, (_, found) = best_time(lambda: index.search(q, args.k), args.repeats)
            raw_seconds, _ = best_time(lambda: index.faiss_index.search(q, args.k), args.repeats)
            report(name, f"{key}={value}", recall_of(found), seconds, raw_seconds, build_s, nbytes)

    nlist = choose_nlist(args.n)
    auto_factory = choose_factory(args.n, args.dim)
    # ------------------------------------------------------------- IVF-Flat
    ivf_factories = [f"IVF{nlist},Flat" if f == "auto" else f for f in args.ivf.split(";") if f]
    for factory in ivf_factories if "ivf" not in skip else []:
        spec = IndexSpec(factory=factory, gpu="never", seed=args.seed)
        build_s, ivf = best_time(lambda: ItemIndex.build(x, ids, spec, "bench"), 1)
        print(f"  built {factory} in {build_s:.1f}s (default nprobe {ivf.search_params}, build recall "
              f"{ivf.recall['recall']:.4f} on {ivf.recall['num_queries']} self-queries)", flush=True)
        sweep(ivf, factory, "nprobe", args.nprobes, build_s)
        del ivf
    # ------------------------------------------------------------- IVF-PQ
    pq_factory = f"IVF{nlist},PQ{args.dim // 2}" if args.pq == "auto" else args.pq
    if pq_factory and "pq" not in skip:
        spec = IndexSpec(factory=pq_factory, gpu="never", seed=args.seed)
        build_s, ivfpq = best_time(lambda: ItemIndex.build(x, ids, spec, "bench"), 1)
        print(f"  built {pq_factory} in {build_s:.1f}s", flush=True)
        sweep(ivfpq, pq_factory, "nprobe", args.nprobes, build_s)
        del ivfpq
    # ------------------------------------------------------------- FAISS HNSW
    if "hnsw" not in skip:
        spec = IndexSpec(factory=f"HNSW{args.hnsw_m},Flat", gpu="never", ef_construction=args.ef_construction,
                         seed=args.seed)
        build_s, hnsw = best_time(lambda: ItemIndex.build(x, ids, spec, "bench"), 1)
        print(f"  built HNSW{args.hnsw_m},Flat in {build_s:.1f}s", flush=True)
        sweep(hnsw, f"HNSW{args.hnsw_m},Flat", "ef_search", args.efs, build_s)
        del hnsw
    # ------------------------------------------------------------- hnswlib (peer)
    curve = []
    if "hnswlib" not in skip:
        import hnswlib
        peer = hnswlib.Index(space="ip", dim=args.dim)
        start = time.perf_counter()
        peer.init_index(max_elements=args.n, M=args.hnsw_m, ef_construction=args.ef_construction,
                        random_seed=args.seed)
        peer.add_items(x, np.arange(args.n), num_threads=args.threads)
        build_s = time.perf_counter() - start
        print(f"  built hnswlib M={args.hnsw_m} in {build_s:.1f}s", flush=True)
        for ef in args.efs:
            peer.set_ef(ef)
            seconds, (labels, _) = best_time(lambda: peer.knn_query(q, k=args.k, num_threads=args.threads),
                                             args.repeats)
            row = report(f"hnswlib M={args.hnsw_m}", f"ef={ef}", recall_of(labels.astype(np.int64)), seconds,
                         None, build_s, None)
            curve.append((row["recall"], row["qps"]))
        del peer

    # ------------------------------------------------------------- table
    print(f"\n| index | params | recall@{args.k} | QPS | x Flat QPS | raw FAISS QPS | hnswlib QPS @= recall | "
          "build s | MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        peer_qps = hnswlib_qps_at(row["recall"], curve) if curve and not row["index"].startswith("hnswlib") else None
        row["x_flat"] = row["qps"] / flat_qps
        row["hnswlib_qps_at_recall"] = peer_qps
        peer_text = "-" if not curve or row["index"].startswith("hnswlib") else (
            f"{peer_qps:.0f} ({row['qps'] / peer_qps:.2f}x)" if peer_qps else "outside hnswlib's recall range")
        print(f"| {row['index']} | {row['params']} | {row['recall']:.4f} | {row['qps']:.0f} | {row['x_flat']:.1f} | "
              f"{row['raw_qps'] or float('nan'):.0f} | {peer_text} | "
              f"{row['build_s'] if row['build_s'] is not None else float('nan'):.0f} | "
              f"{row['mbytes'] or float('nan'):.0f} |")
    print("\nexact Flat (raw FAISS) by catalogue size: " + ", ".join(
        f"n={r['n']}: {r['qps']:.0f} qps batched, {r['one_query_ms']:.2f} ms per single query" for r in flat_sizes))
    default_params = f"nprobe={default_nprobe(nlist)}" if auto_factory.startswith("IVF") else "-"
    chosen = [r for r in rows if r["index"] == auto_factory and r["params"] == default_params]
    print(f"auto for n={args.n}, dim={args.dim}: {auto_factory} {default_params}")
    for r in chosen:
        peer = r["hnswlib_qps_at_recall"]
        print(f"  recall@{args.k}={r['recall']:.4f} (target >= 0.95), {r['x_flat']:.1f}x exact QPS (target >= 10x), "
              + (f"{r['qps'] / peer:.2f}x hnswlib QPS at equal recall (target >= 1x)" if peer else
                 "hnswlib did not reach this recall in its sweep"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "flat_by_size": flat_sizes}, fh, indent=2)


if __name__ == "__main__":
    main()
