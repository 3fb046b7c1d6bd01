"""Rebuild wall time and peak RSS of the driver and of each Dask worker, bounded-memory (sharded) vs old path.

    PYTHONPATH=. python -m bench.bench_rebuild_memory --sizes 1000000 --old-at 1000000
    PYTHONPATH=. python -m bench.bench_rebuild_memory --sizes 10000000 --shard-items 1250000
    PYTHONPATH=. python -m bench.bench_rebuild_memory --sizes 30000000 --shard-items 2000000 \\
        --memory-budget-gib 4            # the "auto" factory then picks the compressed index

Data: synthetic item vectors (``indexing.synthetic``'s clustered process: anisotropic, Zipf-sized clusters,
L2-normalised), dim 64, written ONCE for the largest size as a vectors artifact of ``--rows-per-file`` row files
(one file generated at a time, never all vectors in memory); each smaller size is the first n rows, hard-linked
into its own vectors artifact (``<data>/vectors-<n>/v1``). Queries: item vectors (no run, no query tower),
sampled as ``indexing.tuning.item_queries`` samples them; target recall@100 0.95, recall floor 0.95.

Each (size, path) runs in a fresh driver subprocess against a fresh Dask cluster (``beam_jobs.dask_cluster``:
a scheduler + ``--workers`` worker processes, 1 thread each, this checkout on PYTHONPATH) with
``beam_jobs.dask_runner.DaskRunner``; ``run_rebuild`` with ``vectors_version="v1"`` (no embedding):
  new   ``shards = ceil(n / --shard-items)`` (at least 2): beam_jobs.sharded_rebuild
  old   ``shards = 1``: today's path (driver reads every vector, merges every shard blob)
Reported per run: wall seconds (driver subprocess), seconds per rebuild step, peak RSS (VmHWM from
/proc/<pid>/status, read after the rebuild and before the processes end) of the driver, of each worker and of
the scheduler, the factory, shards, recall, and ``uptime`` before and after. Results are appended to --json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

DEFAULT_DATA = Path("/work/bench-data/rebuildmem")
MODEL_VERSION = "synthetic-v1"


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ------------------------------------------------------------------------------------------ data
def write_synthetic(directory: Path, n: int, dim: int, rows_per_file: int, seed: int = 0) -> dict:
    """A vectors artifact of ``n`` clustered synthetic vectors, one file generated and written at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from indexing.vectors import _PARQUET_OPTIONS, SCHEMA, finalize_vectors, shard_name

    if (directory / "manifest.json").is_file():
        return json.loads((directory / "manifest.json").read_text())
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clusters = max(8, int(np.sqrt(n)))
    scale = (1.0 + np.arange(dim)) ** -0.5
    centres = rng.standard_normal((clusters, dim)) * scale
    weights = (1.0 + np.arange(clusters)) ** -0.8
    weights /= weights.sum()
    rng.shuffle(centres)
    files = math.ceil(n / rows_per_file)
    for f in range(files):
        lo, hi = f * rows_per_file, min(n, (f + 1) * rows_per_file)
        frng = np.random.default_rng([seed, 11, f])
        which = frng.choice(clusters, size=hi - lo, p=weights)
        x = centres[which].astype(np.float32) + frng.standard_normal((hi - lo, dim), dtype=np.float32) * (
            0.8 * scale).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        # the layout of indexing.vectors.write_shard (same schema and writer options) without its per-row
        # input checks, which cost minutes at 30M rows; finalize_vectors checks the whole artifact at the end
        m = hi - lo
        offsets = pa.array(np.arange(m + 1, dtype=np.int32) * dim, type=pa.int32())
        table = pa.table({"item_id": pa.array([f"item{i}" for i in range(lo, hi)], type=pa.string()),
                          "vector": pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), type=pa.float32())),
                          "model_version": pa.array([MODEL_VERSION] * m, type=pa.string())}, schema=SCHEMA)
        pq.write_table(table, directory / (shard_name(f, files) + ".tmp"), **_PARQUET_OPTIONS)
        os.replace(directory / (shard_name(f, files) + ".tmp"), directory / shard_name(f, files))
        del x, which, table
        log(f"  wrote file {f + 1}/{files}")
    return finalize_vectors(directory, MODEL_VERSION, "v1")


def prefix_artifact(source: Path, target: Path, n: int) -> None:
    """The first ``n`` rows of ``source`` (whole files only) as their own artifact, files hard-linked."""
    from indexing.vectors import finalize_vectors, shard_name
    import pyarrow.parquet as pq

    if (target / "manifest.json").is_file():
        return
    manifest = json.loads((source / "manifest.json").read_text())
    names, count = [], 0
    for name in manifest["shards"]:
        if count >= n:
            break
        count += pq.ParquetFile(source / name).metadata.num_rows
        names.append(name)
    if count != n:
        raise ValueError(f"{n} is not a whole number of {source}'s files (got {count}); use a multiple of "
                         "--rows-per-file")
    target.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        dst = target / shard_name(i, len(names))
        if not dst.exists():
            os.link(source / name, dst)
    finalize_vectors(target, MODEL_VERSION, "v1")


# ------------------------------------------------------------------------------------------ one run
def child(args) -> int:
    """In the driver subprocess: one run_rebuild; prints one JSON line."""
    import logging
    import resource

    from beam_jobs.embed_items import EmbedConfig
    from beam_jobs.rebuild_index import RebuildConfig, run_rebuild
    from indexing.spec import IndexSpec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    spec = IndexSpec(gpu="never", memory_budget_bytes=int(args.memory_budget_gib * 2**30),
                     factory=args.factory or "auto", quantizer_restarts=args.restarts,
                     tune_queries=args.queries, recall_queries=args.queries, k_factor=args.k_factor)
    cfg = RebuildConfig(index_root=str(args.index_root), vectors_version="v1", index=spec, shards=args.shards,
                        embed=EmbedConfig(output=str(args.vectors_root)), version="v1", keep_versions=1)
    t0 = time.perf_counter()
    out = {"ok": True}
    try:
        result = run_rebuild(cfg, json.loads(args.beam_args))
        out.update(count=result.count, factory=result.factory, num_shards=result.num_shards,
                   recall=result.recall, seconds=result.seconds)
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    out["driver_seconds"] = round(time.perf_counter() - t0, 1)
    out["driver_ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["driver_vmhwm_bytes"] = peak_rss_bytes(os.getpid())
    print("RESULT " + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


def run_one(n: int, path: str, vectors_root: Path, work: Path, args) -> dict:
    from beam_jobs.dask_cluster import DaskCluster

    shards = 1 if path == "old" else max(2, math.ceil(n / args.shard_items))
    index_root = work / f"index-{n}-{path}"
    shutil.rmtree(index_root, ignore_errors=True)
    record = {"n": n, "dim": args.dim, "path": path, "shards": shards, "workers": args.workers,
              "quantizer_restarts": args.restarts, "queries": args.queries, "factory_requested": args.factory or "auto",
              "memory_budget_gib": args.memory_budget_gib, "k_factor_requested": args.k_factor,
              "uptime_before": uptime()}
    log(f"{n:,} items, {path} path, shards={shards}: {record['uptime_before']}")
    with DaskCluster(workers=args.workers, memory_limit="0", directory=work / f"dask-{n}-{path}") as cluster:
        cmd = [sys.executable, "-m", "bench.bench_rebuild_memory", "child", "--index-root", str(index_root),
               "--vectors-root", str(vectors_root), "--shards", str(shards), "--memory-budget-gib",
               str(args.memory_budget_gib), "--beam-args", json.dumps(cluster.pipeline_args()),
               "--restarts", str(args.restarts), "--queries", str(args.queries)]
        if args.factory:
            cmd += ["--factory", args.factory]
        if args.k_factor:
            cmd += ["--k-factor", str(args.k_factor)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(work / f"driver-{n}-{path}.log", "w"),
                                text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        stdout, _ = proc.communicate()
        record["wall_seconds"] = round(time.perf_counter() - t0, 1)
        record["worker_peak_rss_bytes"] = [peak_rss_bytes(pid) for pid in cluster.worker_pids()]
        record["scheduler_peak_rss_bytes"] = peak_rss_bytes(cluster.processes[0].pid)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    record.update(json.loads(lines[-1][7:]) if lines else {"ok": False, "error": f"driver exited {proc.returncode}"
                                                                                  f" without a result"})
    record["uptime_after"] = uptime()
    if record.get("ok") and not args.keep_index:
        shutil.rmtree(index_root, ignore_errors=True)
    gib = lambda b: None if b is None else round(b / 2**30, 2)  # noqa: E731
    log(f"  -> wall {record['wall_seconds']} s, driver peak {gib(record.get('driver_vmhwm_bytes'))} GiB, workers "
        f"{[gib(b) for b in record['worker_peak_rss_bytes']]} GiB, scheduler "
        f"{gib(record['scheduler_peak_rss_bytes'])} GiB, factory {record.get('factory')}, recall "
        f"{(record.get('recall') or {}).get('recall')}, steps {record.get('seconds')}, {record.get('error', '')}")
    log(f"  {record['uptime_after']}")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_rebuild_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    c = sub.add_parser("child")
    c.add_argument("--index-root", type=Path, required=True)
    c.add_argument("--vectors-root", type=Path, required=True)
    c.add_argument("--shards", type=int, required=True)
    c.add_argument("--memory-budget-gib", type=float, default=8.0)
    c.add_argument("--factory", default="")
    c.add_argument("--beam-args", required=True)
    c.add_argument("--restarts", type=int, default=1)
    c.add_argument("--queries", type=int, default=1000)
    c.add_argument("--k-factor", type=int, default=None)
    parser.add_argument("--sizes", default="1000000", help="comma-separated item counts")
    parser.add_argument("--old-at", default="", help="sizes also run on the old path (shards=1)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rows-per-file", type=int, default=500_000)
    parser.add_argument("--shard-items", type=int, default=1_250_000, help="items per index shard (new path)")
    parser.add_argument("--memory-budget-gib", type=float, default=8.0, help="IndexSpec.memory_budget_bytes (auto "
                        "factory: IVF-Flat while it fits, else the compressed index)")
    parser.add_argument("--factory", default="", help="override the auto factory")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=1000, help="IndexSpec.tune_queries and recall_queries")
    parser.add_argument("--k-factor", type=int, default=None, help="IndexSpec.k_factor for refine factories "
                        "(default: tuned with nprobe over indexing.tuning.K_FACTORS)")
    parser.add_argument("--restarts", type=int, default=1, help="IndexSpec.quantizer_restarts (the default 3 "
                        "triples the driver's k-means time; both paths train the same way)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--generate", type=int, default=0, help="rows of the synthetic source (default: the "
                        "largest size)")
    parser.add_argument("--data-only", action="store_true", help="write the vectors artifacts and stop")
    parser.add_argument("--keep-index", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("bench/out/rebuild_memory.jsonl"))
    args = parser.parse_args(argv)
    if args.cmd == "child":
        return child(args)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    old_at = {int(s) for s in args.old_at.split(",") if s}
    source_n = max(args.generate or 0, *sizes)
    source = args.data / f"source-{source_n}-d{args.dim}" / "v1"
    log(f"vectors: {source} ({source_n:,} x {args.dim})")
    write_synthetic(source, source_n, args.dim, args.rows_per_file)
    roots = {}
    for n in sizes:
        root = args.data / f"vectors-{n}-d{args.dim}"
        prefix_artifact(source, root / "v1", n)
        roots[n] = root
    if args.data_only:
        return 0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    work = args.data / "work"
    work.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        for path in (["old"] if n in old_at else []) + ["new"]:
            record = run_one(n, path, roots[n], work, args)
            with open(args.json, "a") as fh:
                fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
