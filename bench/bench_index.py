"""Index benchmark: the ``auto`` index (tuned at build time) side by side with exact Flat, IVF families (nprobe
sweeps) and hnswlib (efSearch sweep) as the peer, on the same vectors and queries, in one run.

    python -m bench.bench_index --n 1000000 --dim 64 --queries 500        # synthetic: the reported configuration
    python -m bench.bench_index --vectors-dir RUN/vectors/VERSION --queries 500   # real item-tower vectors
    python -m bench.bench_index --n 100000 --queries 500                  # quick look

Vectors: ``indexing.synthetic.clustered_vectors`` (queries drawn by the same process with fresh noise: not item
vectors), or a vectors artifact (``--vectors-dir``; queries = a seeded sample of the item vectors, which is
what the Beam rebuild's validation gate uses).

QPS = queries / wall seconds for one batch of all queries, FAISS and hnswlib both on --threads threads; every
config is timed once per round, rounds interleaved (--repeats), best round kept. "ItemIndex" rows time ``ItemIndex.search`` (what the product serves: validation, tie
order, exclusions); the "raw" column times the bare FAISS index on the same batch, so raw / ItemIndex is the
wrapper's cost. Recall@k is against exact top-k. "x exact" divides by exact Flat's ItemIndex QPS measured in
the same run. "hnswlib @= recall" is hnswlib's QPS interpolated at the row's recall on hnswlib's measured
recall/QPS frontier over every M in --hnsw-ms (linear between neighbouring points).

Built indices are cached (``--cache``, default /tmp/index): ItemIndex artifacts via ``indexing.store`` (with
their build seconds and tuning) and the hnswlib graph via ``save_index``; delete the directory to rebuild.
"""
from __future__ import annotations

import os

# FAISS's OpenMP (libgomp) threads spin while waiting by default; on a shared 2-core machine that spinning
# steals the very cores the work needs. Must be set before faiss loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from indexing.item_index import ItemIndex  # noqa: E402
from indexing.recall import exact_top_k, recall_from_results  # noqa: E402
from indexing.spec import IndexSpec  # noqa: E402
from indexing.store import load_index, save_index  # noqa: E402
from indexing.tuning import Z as TUNING_MARGIN_SE  # noqa: E402
from indexing.synthetic import clustered_vectors  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


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
    return frontier[0][1] if recall == frontier[0][0] else None


def load_data(args) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(items float32 (n, d), queries float32 (m, d), cache tag, description)."""
    if args.vectors_dir:
        from indexing.vectors import read_vectors
        _, x, manifest = read_vectors(args.vectors_dir)
        rng = np.random.default_rng([args.seed, 7])
        q = x[np.sort(rng.choice(len(x), size=min(args.queries, len(x)), replace=False))]
        digest = hashlib.sha256(json.dumps(manifest.get("files", {}), sort_keys=True).encode()).hexdigest()[:12]
        return x, q, f"vectors-{digest}", (f"{len(x)} x {x.shape[1]} vectors from {args.vectors_dir} (model "
                                           f"{manifest['model_version']}), {len(q)} item-vector queries")
    x, q = clustered_vectors(args.n, args.dim, args.queries, noise=args.noise, seed=args.seed)
    return x, q, f"synthetic-n{args.n}-d{args.dim}-noise{args.noise}-s{args.seed}", (
        f"{args.n} x {args.dim} clustered normalised vectors (noise={args.noise}), {args.queries} fresh queries")


def cached_item_index(cache: Path, factory: str, x: np.ndarray, seed: int) -> tuple[ItemIndex, float]:
    """ItemIndex.build(factory) with the default spec (tuning on), cached as an index artifact."""
    directory = cache / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{factory}-s{seed}")
    if (directory / "manifest.json").is_file():
        manifest = json.loads((directory / "manifest.json").read_text())
        index = load_index(directory, {"gpu": "never"})
        if index.tuning is None or index.tuning.get("margin_se") == TUNING_MARGIN_SE:
            return index, manifest["build_seconds"]
        # cached with an older tuning rule: re-tune (cheaper than a rebuild) and re-cache
        start = time.perf_counter()
        index.tune(x)
        index.measure_recall(x)
        seconds = manifest["build_seconds"] + time.perf_counter() - start
        shutil.rmtree(directory)
        save_index(index, directory, {"build_seconds": seconds})
        return index, seconds
    ids = [f"item{i}" for i in range(len(x))]
    start = time.perf_counter()
    index = ItemIndex.build(x, ids, IndexSpec(factory=factory, gpu="never", seed=seed), "bench")
    seconds = time.perf_counter() - start
    save_index(index, directory, {"build_seconds": seconds})
    return index, seconds


class Rounds:
    """Timed searches registered first, then run in interleaved rounds (every config once per round, best of
    ``rounds``), so that a load spike from other jobs on the shared machine hits all configs alike."""

    def __init__(self, num_queries: int):
        self.num_queries = num_queries
        self.entries: list[dict] = []

    def add(self, row: dict, fn, raw_fn=None) -> None:
        self.entries.append({"row": row, "fn": fn, "raw_fn": raw_fn, "best": float("inf"), "raw_best": float("inf")})

    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            for e in self.entries:
                for key, fn in (("best", e["fn"]), ("raw_best", e["raw_fn"])):
                    if fn is not None:
                        start = time.perf_counter()
                        fn()
                        e[key] = min(e[key], time.perf_counter() - start)
        for e in self.entries:
            e["row"]["qps"] = self.num_queries / e["best"]
            e["row"]["raw_qps"] = self.num_queries / e["raw_best"] if e["raw_fn"] is not None else None


def cached_hnswlib(cache: Path, x: np.ndarray, m: int, ef_construction: int, seed: int, threads: int):
    """An hnswlib inner-product graph over ``x`` (loaded from ``cache`` when built before) and its build seconds."""
    import hnswlib

    peer = hnswlib.Index(space="ip", dim=x.shape[1])
    path = cache / f"hnswlib-M{m}-efc{ef_construction}-s{seed}.bin"
    if path.is_file():
        peer.load_index(str(path), max_elements=len(x))
        return peer, json.loads(path.with_suffix(".json").read_text())["build_seconds"]
    start = time.perf_counter()
    peer.init_index(max_elements=len(x), M=m, ef_construction=ef_construction, random_seed=seed)
    peer.add_items(x, np.arange(len(x)), num_threads=threads)
    build_s = time.perf_counter() - start
    peer.save_index(str(path))
    path.with_suffix(".json").write_text(json.dumps({"build_seconds": build_s}))
    return peer, build_s


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--vectors-dir", default="", help="a vectors artifact to index instead of synthetic vectors")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.8, help="within-cluster spread (see indexing.synthetic)")
    p.add_argument("--threads", type=int, default=faiss.omp_get_max_threads())
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (best of)")
    p.add_argument("--sweep", default="auto",
                   help="';'-separated FAISS factories to build and sweep ('auto' = the auto choice); '' = none")
    p.add_argument("--nprobes", type=ints, default=ints("8,12,16,20,24,32,48"))
    p.add_argument("--efs", type=ints, default=ints("100,128,160,200,256"))
    p.add_argument("--hnsw-ms", type=ints, default=ints("16,32"), help="hnswlib M values (the peer frontier "
                                                                       "is the best over all of them)")
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--exclude", type=int, default=50, help="rows excluded per query in the exclusion row")
    p.add_argument("--cache", default="/tmp/index", help="where built indices are cached")
    p.add_argument("--skip", default="", help="comma list of sections to skip: hnswlib")
    p.add_argument("--json", default="", help="also write all rows to this JSON file")
    args = p.parse_args(argv)
    skip = set(args.skip.split(","))
    faiss.omp_set_num_threads(args.threads)

    t0 = time.perf_counter()
    x, q, tag, what = load_data(args)
    args.queries = len(q)
    cache = Path(args.cache) / tag
    cache.mkdir(parents=True, exist_ok=True)
    print(f"# data: {what}; k={args.k}, threads={args.threads}, faiss {faiss.__version__}, load {load_average()} "
          f"(loaded in {time.perf_counter() - t0:.1f}s)", flush=True)
    rows: list[dict] = []
    rounds = Rounds(len(q))

    def row(name, params, recall, build=None, note=""):
        rows.append({"index": name, "params": params, "recall": recall, "build_s": build, "note": note})
        print(f"  {name:<28} {params:<16} recall@{args.k}={recall:.4f}", flush=True)
        return rows[-1]

    # ------------------------------------------------------------- exact Flat (the reference)
    flat = ItemIndex.build(x, [f"item{i}" for i in range(len(x))],
                           IndexSpec(factory="Flat", gpu="never", recall_queries=1), "bench")
    exact_scores, _ = flat.search(q, args.k)
    raw_scores, _ = flat.faiss_index.search(q, args.k)
    if not np.allclose(raw_scores, exact_scores, atol=1e-5):
        raise RuntimeError("ItemIndex Flat scores differ from bare FAISS Flat")
    flat_row = row("Flat (exact)", "-", 1.0)
    rounds.add(flat_row, lambda: flat.search(q, args.k), lambda: flat.faiss_index.search(q, args.k))

    def recall_of(found):
        return recall_from_results(found, x, q, exact_scores, args.k)

    # ------------------------------------------------------------- auto (tuned) + factory sweeps
    auto_factory = IndexSpec().resolve_factory(len(x), x.shape[1])
    built = {auto_factory: cached_item_index(cache, auto_factory, x, args.seed)}
    auto_index, auto_build = built[auto_factory]
    tuned = dict(auto_index.search_params)
    tuning = auto_tuning = auto_index.tuning or {}
    held_out = auto_held_out = auto_index.recall

    def searcher(index, params, k=args.k, exclude=None):
        def run(raw=False):
            if params:
                index.set_search_params(**params)
            return index.faiss_index.search(q, k) if raw else index.search(q, k, exclude=exclude)
        return run

    auto_search = searcher(auto_index, tuned)
    auto_row = row(f"auto: {auto_factory}", ",".join(f"{k}={v}" for k, v in tuned.items()) or "-",
                   recall_of(auto_search()[1]), auto_build, "auto")
    auto_row["tuning"] = {key: auto_tuning.get(key) for key in ("param", "value", "recall", "recall_lower_bound",
                                                               "reached", "num_queries", "curve")}
    auto_row["held_out_recall"] = auto_held_out
    rounds.add(auto_row, auto_search, lambda: auto_search(raw=True))
    rng = np.random.default_rng(args.seed)
    exclude = [rng.choice(len(x), size=args.exclude, replace=False) for _ in range(len(q))]
    excl_search = searcher(auto_index, tuned, exclude=exclude)
    excl_raw = searcher(auto_index, tuned, k=args.k + args.exclude)
    rounds.add(row(f"auto, {args.exclude} excluded/query", auto_row["params"], float("nan"), None,
                   f"raw = bare FAISS top-{args.k + args.exclude}"), excl_search, lambda: excl_raw(raw=True))

    for factory in dict.fromkeys(auto_factory if f == "auto" else f for f in args.sweep.split(";") if f):
        if factory not in built:
            built[factory] = cached_item_index(cache, factory, x, args.seed)
        index, build_s = built[factory]
        if index is not auto_index:  # (the auto index's own tuning was captured before any sweep touched it)
            tuning, held_out = index.tuning or {}, index.recall
        print(f"  {factory}: built in {build_s:.0f}s, tuned {index.search_params} (tuning recall "
              f"{tuning.get('recall')}, reached {tuning.get('reached')}), held-out recall "
              f"{held_out and round(held_out['recall'], 4)}", flush=True)
        if not index.search_params:
            continue  # nothing to sweep (Flat, plain PQ)
        key = "ef_search" if "ef_search" in index.search_params else "nprobe"
        for value in (args.efs if key == "ef_search" else args.nprobes):
            search = searcher(index, {key: value})
            rounds.add(row(factory, f"{key}={value}", recall_of(search()[1]), build_s), search,
                       lambda search=search: search(raw=True))

    # ------------------------------------------------------------- hnswlib (peer)
    peers = []
    if "hnswlib" not in skip:
        for m in args.hnsw_ms:
            peer, build_s = cached_hnswlib(cache, x, m, args.ef_construction, args.seed, args.threads)
            print(f"  hnswlib M={m} efC={args.ef_construction}: built in {build_s:.0f}s (load {load_average()})",
                  flush=True)
            peers.append(peer)
            for ef in args.efs:
                def search(peer=peer, ef=ef):
                    peer.set_ef(ef)
                    return peer.knn_query(q, k=args.k, num_threads=args.threads)
                rounds.add(row(f"hnswlib M={m}", f"ef={ef}", recall_of(search()[0].astype(np.int64)), build_s),
                           search)

    print(f"timing {len(rounds.entries)} configs in {args.repeats} interleaved rounds (load {load_average()})",
          flush=True)
    load_before = load_average()
    rounds.run(args.repeats)
    load_after = load_average()
    curve = [(r["recall"], r["qps"]) for r in rows if r["index"].startswith("hnswlib")]

    # ------------------------------------------------------------- table
    print(f"\nload average (1/5/15 min) before timing {load_before}, after {load_after}")
    print(f"| index | params | recall@{args.k} | ItemIndex QPS | raw FAISS QPS | x exact | hnswlib QPS @= recall "
          "| build s |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    flat_qps = flat_row["qps"]
    for r in rows:
        is_peer = r["index"].startswith("hnswlib")
        has_recall = r["recall"] == r["recall"]
        peer_qps = hnswlib_qps_at(r["recall"], curve) if curve and not is_peer and has_recall else None
        r["x_exact"] = r["qps"] / flat_qps
        r["hnswlib_qps_at_recall"] = peer_qps
        peer_text = "-" if not curve or is_peer or not has_recall else (
            f"{peer_qps:.0f} (**{r['qps'] / peer_qps:.2f}x**)" if peer_qps else "outside hnswlib's range")
        print(f"| {r['index']} | {r['params']} | {r['recall']:.4f} | {r['qps']:.0f} | "
              f"{r['raw_qps']:.0f} | " if r["raw_qps"] else
              f"| {r['index']} | {r['params']} | {r['recall']:.4f} | {r['qps']:.0f} | - | ", end="")
        print(f"{r['x_exact']:.1f} | {peer_text} | {'-' if r['build_s'] is None else round(r['build_s'])} |")
    t = auto_row.get("tuning") or {}
    held = auto_row["held_out_recall"] or {}
    print(f"\nauto for n={len(x)}, dim={x.shape[1]}: {auto_factory}, tuned {auto_row['params']} (tuning recall@"
          f"{args.k} {t.get('recall') or float('nan'):.4f} on {t.get('num_queries')} held-out item vectors; manifest "
          f"recall {held.get('recall', float('nan')):.4f} on {held.get('num_queries')} other item vectors)")
    peer = auto_row["hnswlib_qps_at_recall"]
    print(f"  on the benchmark queries: recall@{args.k}={auto_row['recall']:.4f} (target >= 0.95), "
          f"{auto_row['x_exact']:.1f}x exact QPS (target >= 10x), "
          + (f"{auto_row['qps'] / peer:.2f}x hnswlib QPS at equal recall (target >= 1x)" if peer else
             "hnswlib's sweep does not cover this recall"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "load_before": load_before, "load_after": load_after},
                      fh, indent=2, default=str)


if __name__ == "__main__":
    main()
