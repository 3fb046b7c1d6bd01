"""Equal-recall comparison of the default index against the best CPU peers (issue 15), in one run:

    python -m bench.bench_index_peers --n 1000000 --dim 64 --queries 1000 --threads 2      # the reported run
    python -m bench.bench_index_peers --n 100000 --queries 500 --skip scann                 # quick look

Families, all on the same vectors and queries, all timed as the bare library search of one batch of every
query on --threads threads (best of --repeats interleaved rounds, ``bench.bench_index.Rounds``):
  default       what ``twotower index`` builds: ``ItemIndex.build`` with IndexSpec(factory=--default-factory,
                default "auto"), quantizer restarts and nprobe tuning on --tune-vectors (query-tower vectors
                of validation users) when given; timed over the nprobe ladder (its tuned nprobe is marked)
  tuned         each of --tuned-factories (';'-separated FAISS factories, e.g. "IVF4096,PQ32x4fs,RFlat": a
                fast-scan PQ scan re-ranked from the full vectors) built like ``default``; refine indices are
                timed over the nprobe ladder at the tuned k_factor and at half / twice it
  ivf-flat      the ``auto`` choice at n (IVF{nlist},Flat, flat coarse quantizer) over a fine nprobe ladder
  ivf-hnsw      the same lists with an HNSW32 coarse quantizer ("IVF{nlist}_HNSW32,Flat"), the quantizer's
                efSearch = max(--quantizer-ef-min, 2 * nprobe)
  ivf-flat-2x   IVF with twice the lists (a finer partition), same ladder
  faiss-hnsw    FAISS's own HNSW graph ("HNSW{M},Flat", M = the first of --hnsw-ms, efConstruction
                --ef-construction) over the efSearch ladder --efs: the graph index ``ItemIndex`` can already
                build, save, tune (ef_search) and serve, built once over all vectors
  hnswlib       hnswlib M in --hnsw-ms, efConstruction --ef-construction, ef ladder --efs
  scann         ScaNN (tree --scann-leaves, AH 2-d, reorder) over leaves_to_search, run by
                bench/scann_peer.py in the benchmark-only venv --scann-python (its wheel breaks TFRS, so it
                is never installed in the project venv); skipped with a note when that venv is absent
For each family the recall/QPS points form a frontier (best QPS at >= recall); the table reports every
family's QPS interpolated at recall@k 0.95 and 0.98 and its ratio to hnswlib's.

Vectors: ``indexing.synthetic.clustered_vectors`` (queries: fresh draws of the same process, not item
vectors), or --vectors / --query-vectors .npy files (e.g. a run's item vectors and its query tower's vectors
of validation users), with --tune-vectors the query set the default index is tuned on (a disjoint set of
users: ``bench.tower_vectors`` writes all three). Built indices are cached under --cache.
--only FAMILY[,..] builds/caches just those families (e.g. one library per run at 10M, each under the
shared lock); a final run without --only times every cached family together.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench.bench_index

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.bench_index import Rounds, hnswlib_qps_at, ints, load_average  # noqa: E402
from indexing import faiss_index as fi  # noqa: E402
from indexing.item_index import ItemIndex  # noqa: E402
from indexing.store import load_index, save_index  # noqa: E402
from indexing.recall import exact_top_k, recall_from_results  # noqa: E402
from indexing.spec import IndexSpec, choose_nlist  # noqa: E402
from indexing.synthetic import clustered_vectors  # noqa: E402

TARGETS = (0.95, 0.98)
SCANN_PEER = Path(__file__).with_name("scann_peer.py")


def cached_faiss(cache: Path, factory: str, x: np.ndarray, seed: int, spec: IndexSpec | None = None
                 ) -> tuple[faiss.Index, float]:
    """A trained, filled CPU index for ``factory`` (project seeds, ``indexing.faiss_index``), cached."""
    efc = f"-efc{spec.ef_construction}" if spec is not None and "HNSW" in factory else ""
    path = cache / (factory.replace(",", "_") + f"{efc}-s{seed}.faiss")
    if path.is_file():
        return faiss.read_index(str(path)), json.loads(path.with_suffix(".json").read_text())["build_seconds"]
    spec = spec or IndexSpec(factory=factory, gpu="never", seed=seed)
    start = time.perf_counter()
    index = fi.new_index(factory, x.shape[1], spec)
    fi.train(index, x, spec)
    index.add(x)
    seconds = time.perf_counter() - start
    faiss.write_index(index, str(path))
    path.with_suffix(".json").write_text(json.dumps({"build_seconds": seconds}))
    return index, seconds


def cached_default(cache: Path, factory: str, x: np.ndarray, tune_q: np.ndarray | None, seed: int
                   ) -> tuple[ItemIndex, float]:
    """``ItemIndex.build`` exactly as ``twotower index`` runs it (restarts, tuning on ``tune_q``), cached."""
    directory = cache / ("default-" + factory.replace(",", "_").replace("(", "_").replace(")", "") + f"-s{seed}")
    if (directory / "manifest.json").is_file():
        return load_index(directory, {"gpu": "never"}), json.loads((directory / "manifest.json").read_text())[
            "build_seconds"]
    spec = IndexSpec(factory=factory, gpu="never", seed=seed)
    start = time.perf_counter()
    index = ItemIndex.build(x, [str(i) for i in range(len(x))], spec, "bench", queries=tune_q,
                            query_source="query_tower_valid_users")
    seconds = time.perf_counter() - start
    save_index(index, directory, {"build_seconds": seconds})
    return index, seconds


def cached_hnswlib_chunked(cache: Path, x: np.ndarray, m: int, ef_construction: int, seed: int, threads: int,
                           chunk: int, checkpoint_s: float) -> tuple["object", float]:
    """``bench.bench_index.cached_hnswlib`` (same file name and format, same parameters) added in chunks of ``chunk`` rows, printing
    the insert rate and an ETA after each, and saving a resumable partial graph (``*.partial.bin``) every
    ``checkpoint_s`` seconds: a 10M build takes hours on the shared machine and must survive being stopped.
    Build seconds = the sum over the (resumed) runs, saving excluded."""
    import hnswlib

    if chunk < 1:
        raise ValueError(f"--hnsw-chunk must be >= 1, got {chunk}")
    path = cache / f"hnswlib-M{m}-efc{ef_construction}-s{seed}.bin"
    peer = hnswlib.Index(space="ip", dim=x.shape[1])
    if path.is_file():
        peer.load_index(str(path), max_elements=len(x))
        return peer, json.loads(path.with_suffix(".json").read_text())["build_seconds"]
    partial, partial_meta = path.with_suffix(".partial.bin"), path.with_suffix(".partial.json")
    if partial.is_file() and partial_meta.is_file():
        meta = json.loads(partial_meta.read_text())
        peer.load_index(str(partial), max_elements=len(x))
        done, spent = meta["rows"], meta["build_seconds"]
        if peer.get_current_count() != done:
            raise ValueError(f"{partial} holds {peer.get_current_count()} items but {partial_meta} says {done}; "
                             "delete both to rebuild from scratch")
        print(f"  hnswlib M={m} efC={ef_construction}: resuming at {done}/{len(x)} ({spent:.0f}s spent)", flush=True)
    else:
        peer.init_index(max_elements=len(x), M=m, ef_construction=ef_construction, random_seed=seed)
        done, spent = 0, 0.0
    last_save = time.perf_counter()
    while done < len(x):
        end = min(done + chunk, len(x))
        start = time.perf_counter()
        peer.add_items(np.ascontiguousarray(x[done:end], dtype=np.float32), np.arange(done, end), num_threads=threads)
        spent += time.perf_counter() - start
        done = end
        print(f"  hnswlib M={m} efC={ef_construction}: {done}/{len(x)} rows, {spent:.0f}s, "
              f"{done / spent:.0f} rows/s overall, ETA {(len(x) - done) * spent / done / 60:.0f} min "
              f"(load {load_average()})", flush=True)
        if done < len(x) and time.perf_counter() - last_save > checkpoint_s:
            peer.save_index(str(partial))
            partial_meta.write_text(json.dumps({"rows": done, "build_seconds": spent}))
            last_save = time.perf_counter()
    peer.save_index(str(path))
    path.with_suffix(".json").write_text(json.dumps({"build_seconds": spent, "chunk": chunk}))
    partial.unlink(missing_ok=True)
    partial_meta.unlink(missing_ok=True)
    return peer, spent


def cached_exact(cache: Path, x: np.ndarray, q: np.ndarray, k: int, key: str) -> tuple[np.ndarray, float]:
    """Exact top-k scores of ``q`` over ``x`` (``indexing.recall.exact_top_k``), cached under ``key`` (the query
    source and count): at 10M the brute force costs a minute and a second copy of the vectors."""
    path = cache / f"exact-{key}-k{k}.npy"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        return np.load(path), json.loads(meta.read_text())["seconds"]
    start = time.perf_counter()
    scores, _ = exact_top_k(x, q, k)
    seconds = time.perf_counter() - start
    np.save(path, scores)
    meta.write_text(json.dumps({"seconds": seconds}))
    return scores, seconds


def frontier_qps(recall: float, points: list[tuple[float, float]]) -> float | None:
    """QPS at ``recall`` on the frontier of [(recall, qps)]: interpolated between the measured points around it
    (``bench.bench_index.hnswlib_qps_at``), or -- when every point is above it (hnswlib searches with
    max(ef, k), so its recall cannot go below that of ef = k) -- the best QPS measured at >= ``recall``.
    None when no point reaches it."""
    if not points:
        return None
    inside = hnswlib_qps_at(recall, points)
    if inside is not None:
        return inside
    above = [q for r, q in points if r >= recall]
    return max(above) if above else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--vectors", default="", help=".npy item vectors (n, d) instead of synthetic ones")
    p.add_argument("--query-vectors", default="", help=".npy query vectors (m, d) to go with --vectors")
    p.add_argument("--tune-vectors", default="", help=".npy query vectors the default index is tuned on")
    p.add_argument("--default-factory", default="auto")
    p.add_argument("--tuned-factories", default="", help="';'-separated factories built and tuned like default")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nprobes", type=ints, default=ints("6,8,10,12,14,16,20,24,28,32,40,48,64"))
    p.add_argument("--quantizer-ef-min", type=int, default=32)
    p.add_argument("--efs", type=ints, default=ints("100,128,160,200,256,320,400"))
    p.add_argument("--hnsw-ms", type=ints, default=ints("32"))
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--hnsw-chunk", type=int, default=250_000,
                   help="hnswlib rows added per call (progress line and ETA after each)")
    p.add_argument("--hnsw-checkpoint-s", type=float, default=900.0,
                   help="save a resumable partial hnswlib graph at most this often (seconds)")
    p.add_argument("--hnsw-partial", action="store_true",
                   help="when an hnswlib build is unfinished, time its last checkpoint (a graph over the first N "
                        "rows) as family hnswlib-firstN against the exact top-k over those rows")
    p.add_argument("--ivf-nlists", type=ints, default=[],
                   help="extra IVF{nlist},Flat families (one quantizer training of --ivf-train-size vectors)")
    p.add_argument("--ivf-train-size", type=int, default=IndexSpec.train_size)
    p.add_argument("--per-family", action="store_true",
                   help="time each family right after loading it and free it before the next (bounds the peak "
                        "memory to one index at 10M; rounds interleave within a family only)")
    p.add_argument("--scann-python", default="/work/scann-venv/bin/python")
    p.add_argument("--scann-leaves", type=int, default=2048)
    p.add_argument("--scann-search", type=ints, default=ints("32,64,96,128,192,256"))
    p.add_argument("--scann-reorder", type=ints, default=ints("200,400"))
    p.add_argument("--scann-train-size", type=int, default=250_000)
    p.add_argument("--cache", default="/tmp/index-peers")
    p.add_argument("--skip", default="",
                   help="comma list of families to skip (default,tuned,ivf-flat,ivf-hnsw,ivf-flat-2x,ivf-n,faiss-hnsw,"
                        "hnswlib,scann; ivf-n = the --ivf-nlists families)")
    p.add_argument("--only", default="", help="comma list: build (and cache) only these families, time nothing")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    skip = set(args.skip.split(","))
    every = ("default", "tuned", "ivf-flat", "ivf-hnsw", "ivf-flat-2x", "ivf-n", "faiss-hnsw", "hnswlib", "scann")
    only = set(filter(None, args.only.split(",")))
    if only - set(every):
        raise ValueError(f"--only: unknown families {sorted(only - set(every))}; choose from {list(every)}")
    if only:
        skip |= set(every) - only
    faiss.omp_set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.vectors:
        # memory-mapped: the page cache holds the vectors once, shared with the ScaNN subprocess
        x = np.load(args.vectors, mmap_mode="r")
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        q = np.ascontiguousarray(np.load(args.query_vectors), dtype=np.float32)[:args.queries]
        tag, what = f"npy-{Path(args.vectors).stem}-{len(x)}", f"{x.shape} from {args.vectors}, {len(q)} queries from {args.query_vectors}"
    else:
        x, q = clustered_vectors(args.n, args.dim, args.queries, seed=args.seed)
        tag, what = f"synthetic-n{args.n}-d{args.dim}-s{args.seed}", (
            f"{args.n} x {args.dim} clustered synthetic vectors, {len(q)} fresh synthetic queries (not item vectors)")
    tune_q = np.ascontiguousarray(np.load(args.tune_vectors), dtype=np.float32) if args.tune_vectors else None
    if tune_q is not None:
        what += f", default index tuned on {len(tune_q)} queries from {args.tune_vectors}"
    cache = Path(args.cache) / tag
    cache.mkdir(parents=True, exist_ok=True)
    print(f"# data: {what}; k={args.k}, threads={args.threads}, faiss {faiss.__version__}, load {load_average()} "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)

    query_key = (f"{Path(args.query_vectors).stem}-{len(q)}" if args.vectors
                 else f"synthetic-q{len(q)}")
    exact_scores, exact_s = cached_exact(cache, x, q, args.k, query_key)
    rows: list[dict] = []
    rounds = Rounds(len(q))
    timing = {"loads": [], "start": None}
    time_each = args.per_family and not only

    def add(family, params, found, fn, build_s, items=None, exact=None):
        """Register a config; recall against ``exact`` over ``items`` (default: the whole catalogue)."""
        recall = recall_from_results(found, x if items is None else items, q,
                                     exact_scores if exact is None else exact, args.k)
        rows.append({"family": family, "params": params, "recall": recall, "build_s": build_s})
        print(f"  {family:<26} {params:<22} recall@{args.k}={recall:.4f}", flush=True)
        rounds.add(rows[-1], fn)

    def time_partial_hnswlib(partial: Path, m: int) -> None:
        """--hnsw-partial: the resumable checkpoint of an unfinished hnswlib build is a graph over the first N
        rows; time it as family "hnswlib-firstN", recall against the exact top-k over those N rows (a smaller,
        easier catalogue: an optimistic stand-in for the full graph, labelled as such)."""
        import hnswlib

        meta = json.loads(partial.with_suffix(".json").read_text())
        n_rows = meta["rows"]
        peer = hnswlib.Index(space="ip", dim=x.shape[1])
        peer.load_index(str(partial), max_elements=n_rows)
        items = x[:n_rows]
        exact, _ = cached_exact(cache, items, q, args.k, f"{query_key}-first{n_rows}")
        family = f"hnswlib-first{n_rows}"
        print(f"  {family} M={m} efC={args.ef_construction}: partial graph ({meta['build_seconds']:.0f}s of build), "
              f"load {load_average()}", flush=True)
        for ef in args.efs:
            def search(peer=peer, ef=ef):
                peer.set_ef(ef)
                return peer.knn_query(q, k=args.k, num_threads=args.threads)
            add(family, f"M={m},ef={ef}", search()[0].astype(np.int64), search, meta["build_seconds"], items, exact)
        time_family(family)

    def time_family(name):
        """--per-family: time the configs registered so far now (best of --repeats interleaved rounds), so the
        caller can free the index before loading the next family."""
        if not time_each or not rounds.entries:
            return
        before = load_average()
        timing["start"] = timing["start"] or before
        rounds.run(args.repeats)
        after = load_average()
        timing["loads"].append((name, before, after))
        for e in rounds.entries:
            print(f"  timed {e['row']['family']:<20} {e['row']['params']:<30} {e['row']['qps']:.0f} q/s", flush=True)
        print(f"  timed {name}: {len(rounds.entries)} configs, load {before} -> {after}", flush=True)
        rounds.entries.clear()

    if "default" not in skip:
        index, build_s = cached_default(cache, args.default_factory, x, tune_q, args.seed)
        tuned = index.search_params
        print(f"  default = {index.factory}: built in {build_s:.0f}s, tuned {tuned} (tuning recall "
              f"{index.tuning and index.tuning['recall']}, check recall {index.recall['recall']:.4f} on "
              f"{index.recall.get('query_source')}; load {load_average()})", flush=True)
        raw = index.faiss_index
        ivf = faiss.try_extract_index_ivf(raw)
        ladder = sorted(set(args.nprobes) | ({tuned["nprobe"]} if "nprobe" in tuned else set())) if ivf else [None]
        for nprobe in ladder:
            def search(raw=raw, ivf=ivf, nprobe=nprobe):
                if ivf is not None:
                    ivf.nprobe = nprobe
                return raw.search(q, args.k)
            mark = " (tuned)" if nprobe is not None and nprobe == tuned.get("nprobe") else ""
            label = f"{index.factory} nprobe={nprobe}{mark}" if nprobe is not None else index.factory
            add("default", label, search()[1], search, build_s)
        if ivf is not None:
            ivf.nprobe = tuned.get("nprobe", ivf.nprobe)
        time_family("default")
        del index, raw, ivf, search

    for factory in ([] if "tuned" in skip else [f for f in args.tuned_factories.split(";") if f]):
        index, build_s = cached_default(cache, factory, x, tune_q, args.seed)
        tuned = index.search_params
        print(f"  tuned {factory}: built in {build_s:.0f}s, tuned {tuned}, bytes/item {index.bytes_per_item} "
              f"(load {load_average()})", flush=True)
        raw = index.faiss_index
        ivf = faiss.extract_index_ivf(raw)
        kfs = sorted({max(1, tuned["k_factor"] // 2), tuned["k_factor"], 2 * tuned["k_factor"]}) \
            if "k_factor" in tuned else [None]
        for kf in kfs:
            for nprobe in sorted(set(args.nprobes) | {tuned["nprobe"]}):
                def search(raw=raw, nprobe=nprobe, kf=kf):
                    fi.apply_search_params(raw, nprobe=nprobe, k_factor=kf)
                    return raw.search(q, args.k)
                mark = " (tuned)" if nprobe == tuned["nprobe"] and kf == tuned.get("k_factor") else ""
                add(f"tuned {factory}", f"nprobe={nprobe},k_factor={kf}{mark}", search()[1], search, build_s)
        time_family(f"tuned {factory}")
        del index, raw, ivf, search

    nlist = choose_nlist(len(x))
    factories = {} if "ivf-flat" in skip else {"ivf-flat": f"IVF{nlist},Flat"}
    if "ivf-hnsw" not in skip:
        factories["ivf-hnsw"] = f"IVF{nlist}_HNSW32,Flat"
    if "ivf-flat-2x" not in skip:
        factories["ivf-flat-2x"] = f"IVF{2 * nlist},Flat"
    if "ivf-n" not in skip:
        factories.update({f"ivf{n}": f"IVF{n},Flat" for n in args.ivf_nlists})
    for family, factory in factories.items():
        spec = None
        if family.startswith("ivf") and family[3:].isdigit() and args.ivf_train_size != IndexSpec.train_size:
            spec = IndexSpec(factory=factory, gpu="never", seed=args.seed, train_size=args.ivf_train_size)
        start = time.perf_counter()
        index, build_s = cached_faiss(cache, factory, x, args.seed, spec)
        print(f"  {family} = {factory}: ready in {time.perf_counter() - start:.0f}s", flush=True)
        ivf = faiss.extract_index_ivf(index)
        print(f"  {family} = {factory}: built in {build_s:.0f}s (load {load_average()})", flush=True)
        for nprobe in args.nprobes:
            def search(index=index, ivf=ivf, nprobe=nprobe, hnsw="HNSW" in factory):
                ivf.nprobe = nprobe
                if hnsw:
                    faiss.downcast_index(ivf.quantizer).hnsw.efSearch = max(args.quantizer_ef_min, 2 * nprobe)
                return index.search(q, args.k)
            add(family, f"nprobe={nprobe}", search()[1], search, build_s)
        time_family(family)
        del index, ivf, search

    if "faiss-hnsw" not in skip:
        factory = f"HNSW{args.hnsw_ms[0]},Flat"
        spec = IndexSpec(factory=factory, gpu="never", seed=args.seed, ef_construction=args.ef_construction)
        index, build_s = cached_faiss(cache, factory, x, args.seed, spec)
        print(f"  faiss-hnsw = {factory} efC={args.ef_construction}: built in {build_s:.0f}s (load {load_average()})",
              flush=True)
        for ef in args.efs:
            def search(index=index, ef=ef):
                index.hnsw.efSearch = ef
                return index.search(q, args.k)
            add("faiss-hnsw", f"M={args.hnsw_ms[0]},ef={ef}", search()[1], search, build_s)
        time_family("faiss-hnsw")
        del index, search

    if "hnswlib" not in skip:
        for m in args.hnsw_ms:
            partial = cache / f"hnswlib-M{m}-efc{args.ef_construction}-s{args.seed}.partial.bin"
            if args.hnsw_partial and not only and partial.is_file() and not partial.with_name(
                    partial.name.replace(".partial", "")).is_file():
                time_partial_hnswlib(partial, m)
                continue
            peer, build_s = cached_hnswlib_chunked(cache, x, m, args.ef_construction, args.seed, args.threads,
                                                   args.hnsw_chunk, args.hnsw_checkpoint_s)
            print(f"  hnswlib M={m} efC={args.ef_construction}: built in {build_s:.0f}s (load {load_average()})",
                  flush=True)
            for ef in args.efs:
                def search(peer=peer, ef=ef):
                    peer.set_ef(ef)
                    return peer.knn_query(q, k=args.k, num_threads=args.threads)
                add("hnswlib", f"M={m},ef={ef}", search()[0].astype(np.int64), search, build_s)
            time_family(f"hnswlib M={m}")
            del peer, search

    if only:
        print(f"built and cached {sorted(only)} under {cache}; a run without --only times them", flush=True)
        if "scann" not in only:
            return
        rounds.entries.clear()
    print(f"timing {len(rounds.entries)} configs in {args.repeats} interleaved rounds (load {load_average()})",
          flush=True)
    load_before = timing["start"] or load_average()
    rounds.run(args.repeats)
    load_after = load_average()

    scann_note = ""
    if "scann" not in skip:
        if not Path(args.scann_python).is_file():
            scann_note = f"ScaNN skipped: no benchmark venv at {args.scann_python}"
        else:
            x_path = Path(args.vectors) if args.vectors else cache / "x.npy"
            if not args.vectors:
                np.save(x_path, x)
            np.save(cache / "q.npy", q)
            # the built searcher is serialized here and loaded by later runs (a 10M tree build takes many minutes)
            artifacts = cache / f"scann-l{args.scann_leaves}-t{args.scann_train_size}-s{args.seed}"
            cmd = [args.scann_python, str(SCANN_PEER), str(x_path), str(cache / "q.npy"),
                   "--k", str(args.k), "--threads", str(args.threads), "--repeats", str(args.repeats),
                   "--leaves", str(args.scann_leaves), "--search", ",".join(map(str, args.scann_search)),
                   "--reorder", ",".join(map(str, args.scann_reorder)), "--train-size", str(args.scann_train_size),
                   "--artifacts", str(artifacts), "--out", str(cache)] + (["--build-only"] if only else [])
            print("running " + " ".join(cmd), flush=True)
            before = load_average()
            done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # its stderr (progress) goes to ours
            if time_each:
                timing["loads"].append(("scann", before, load_average()))
            if done.returncode:
                scann_note = f"ScaNN failed (rc {done.returncode}); see its stderr above"
            else:
                peer = json.loads(done.stdout.strip().splitlines()[-1])
                for r in peer["rows"]:
                    found = np.load(r.pop("found"))
                    r["recall"] = recall_from_results(found, x, q, exact_scores, args.k)
                    rows.append({"family": "scann", **r})
                    print(f"  timed scann {r['params']:<30} recall@{args.k}={r['recall']:.4f} {r['qps']:.0f} q/s",
                          flush=True)
                scann_note = (f"ScaNN {peer['version']} (tree build {peer['build_s']:.0f}s"
                              f"{', loaded from ' + str(artifacts) if peer.get('loaded') else ''})")
        if scann_note:
            print(scann_note, flush=True)

    families = list(dict.fromkeys(r["family"] for r in rows))
    curves = {f: [(r["recall"], r["qps"]) for r in rows if r["family"] == f] for f in families}
    print(f"\nload average (1/5/15 min) before timing {load_before}, after {load_after}; exact top-{args.k} "
          f"(FAISS Flat) {len(q) / exact_s:.0f} q/s")
    for name, before, after in timing["loads"]:
        print(f"  load while timing {name}: {before} -> {after}")
    print(f"| family | params | recall@{args.k} | QPS | build s |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['family']} | {r['params']} | {r['recall']:.4f} | {r['qps']:.0f} | {r.get('build_s') or 0:.0f} |")
    print(f"\n| family | " + " | ".join(f"QPS @ recall {t}" for t in TARGETS) + " | "
          + " | ".join(f"vs hnswlib @ {t}" for t in TARGETS) + " |")
    print("|---|" + "---:|" * (2 * len(TARGETS)))
    summary = {}
    for f in families:
        at = [frontier_qps(t, curves[f]) for t in TARGETS]
        peer = [frontier_qps(t, curves.get("hnswlib", [])) for t in TARGETS]
        summary[f] = {str(t): a for t, a in zip(TARGETS, at)}
        cells = [f"{a:.0f}" if a else "not reached" for a in at]
        ratios = [f"{a / b:.2f}x" if a and b else "-" for a, b in zip(at, peer)]
        print(f"| {f} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "what": what, "rows": rows, "summary": summary,
                                               "load_before": load_before, "load_after": load_after,
                                               "family_loads": timing["loads"],
                                               "scann": scann_note}, indent=2, default=str))


if __name__ == "__main__":
    main()
