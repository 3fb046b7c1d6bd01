"""Beam jobs benchmark: embedding throughput of the pipeline vs a plain in-process loop, and the
end-to-end nightly rebuild (time, peak memory, recall) at 100k and 1M items.

    python -m bench.bench_beam                                   # the reported configuration
    python -m bench.bench_beam --sizes 100000 --throughput-items 50000    # quick look
    python -m bench.bench_beam --tower hash                      # beam_jobs.testing's hashing tower

Data: ``recdata.synthetic`` items (9 categorical features, tags, price) for the largest size; smaller
sizes use its first rows. Tower (``--tower real``, default): the project's real item tower
(``towers.item_tower.ItemTower``, vocabularies from the synthetic interactions, default
``TowerConfig``: output 64, id embedding 64, MLP 128) built untrained and exported with
``towers.export.export_towers`` -- untrained weights cost exactly what trained ones do.

Throughput, same process, same items, same SavedModel, best of ``--repeats`` interleaved rounds
(``--baselines`` picks which of the first four run next to the pipeline):
  model-rows     tower already loaded, items already read: pyarrow batches -> ``to_pylist`` dicts ->
                 ``batch_features`` -> tower (row-at-a-time input building, last session's baseline)
  model-cols     same, but the inputs are built column-wise from the Arrow batch
                 (``item_blocks.BlockValidator.split``, what the pipeline does) -> tower
  plain-job      the same job in one process, no Beam: load + verify the tower, read the Parquet, embed
                 (as model-cols), write the vectors artifact with ``indexing.vectors.write_vectors``
  plain-job-rows the same with row-at-a-time inputs (as model-rows; last session's plain job)
  pipeline       ``run_embed`` on DirectRunner (in-memory), wall clock of the whole job: load + verify the
                 model, plan reads, validate rows, embed, write Parquet shards, check, manifest, publish
Wall time is the target's measure; CPU seconds of the process (all threads; DirectRunner in-memory runs
the workers in-process) are reported next to it because on a shared machine they depend far less on
what else runs. Reported ratios: pipeline / plain-job (like for like, the target >= 0.6), pipeline / plain-job-rows
(last session's ratio) and pipeline / the fastest model-only loop (a ceiling no job reaches: it reads,
validates and writes nothing).

Rebuild: one fresh subprocess per size runs ``run_rebuild`` (DirectRunner; IndexSpec "auto" unless
--factory / --nprobe say otherwise; recall floor 0.95 at K=100 over 1000 seeded item-vector queries);
reported: wall seconds per step and in total, peak RSS (ru_maxrss of the process; DirectRunner
in-memory runs workers in-process), and the recall, or the validation message when it refused.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # FAISS threads: do not spin on the shared cores

DEFAULT_OUT = Path("bench/out/beam")
BASELINES = ("model_rows", "model_cols", "plain_job_rows", "plain_job")


def log(msg: str) -> None:
    print(msg, flush=True)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


# ------------------------------------------------------------------------------------------ setup
def prepare(out: Path, max_items: int, tower: str, seed: int) -> tuple[Path, Path]:
    """items.parquet with ``max_items`` synthetic items and an exported item tower; cached in ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tag = f"{tower}-{max_items}-s{seed}"
    items_path = out / f"items-{max_items}-s{seed}.parquet"
    model_dir = out / f"model-{tag}"
    if items_path.is_file() and (model_dir / "item_tower").is_dir():
        return items_path, model_dir
    from recdata.synthetic import SyntheticConfig, generate

    t0 = time.perf_counter()
    users = max(1000, min(50_000, max_items // 10))
    ds = generate(SyntheticConfig(num_items=max_items, num_users=users, num_interactions=users * 10, seed=seed))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(ds.items, preserve_index=False), items_path, row_group_size=65_536)
    log(f"  generated {max_items} synthetic items in {time.perf_counter() - t0:.1f} s -> {items_path}")
    t0 = time.perf_counter()
    if model_dir.exists():
        shutil.rmtree(model_dir)
    if tower == "hash":
        from beam_jobs.testing import export_hashing_item_tower
        export_hashing_item_tower(model_dir, features=ds.item_features, dim=64, hidden=128)
    else:
        from towers.config import TowerConfig
        from towers.export import export_towers
        from towers.item_tower import ItemTower, make_item_id_embedding
        from towers.query_tower import QueryTower
        from towers.vocab import build_vocabularies

        cfg = TowerConfig()
        vocab = build_vocabularies(ds, ds.interactions, cfg)
        item_ids = make_item_id_embedding(vocab, cfg)
        export_towers(QueryTower(item_ids, vocab, cfg), ItemTower(item_ids, vocab, cfg), vocab, model_dir,
                      model_version=f"bench-{tag}")
    log(f"  exported the {tower} item tower in {time.perf_counter() - t0:.1f} s -> {model_dir}")
    return items_path, model_dir


def items_file(out: Path, source: Path, n: int) -> Path:
    """The first ``n`` rows of ``source`` as their own Parquet file (cached)."""
    import pyarrow.parquet as pq

    path = out / f"{source.stem}-first{n}.parquet"
    if not path.is_file():
        table = pq.read_table(source)
        if n > table.num_rows:
            raise ValueError(f"{source} has {table.num_rows} rows, fewer than {n}")
        pq.write_table(table.slice(0, n), path, row_group_size=65_536)
    return path


# ------------------------------------------------------------------------------------------ throughput
def plain_rows(tower, path: Path, batch: int) -> int:
    import pyarrow.parquet as pq

    from beam_jobs.handler import batch_features

    table = pq.read_table(path)
    n = 0
    for rb in table.to_batches(max_chunksize=batch):
        n += len(tower(batch_features(rb.to_pylist(), tower.features)))
    return n


def column_batches(tower, table, batch: int):
    """The tower's inputs for ``batch``-row slices of ``table``, built column-wise (as the pipeline)."""
    from beam_jobs.item_blocks import BlockValidator
    from beam_jobs.item_rows import RowValidator

    blocks = BlockValidator(RowValidator(tower.features))
    for start in range(0, table.num_rows, batch):
        items, bad = blocks.split(table.slice(start, batch), start)
        if bad:
            raise ValueError(f"benchmark items have bad rows: {bad[:3]}")
        yield items.features


def plain_cols(tower, path: Path, batch: int) -> int:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return sum(len(tower(f, batch_size=batch)) for f in column_batches(tower, table, batch))


def plain_job(model_dir: Path, path: Path, out_dir: Path, batch: int, columns: bool = True) -> int:
    """The embed job in one process without Beam: load, read, embed, write the vectors artifact."""
    import numpy as np
    import pyarrow.parquet as pq

    from beam_jobs.embed_items import auto_num_shards
    from beam_jobs.handler import batch_features, open_item_tower
    from indexing.vectors import write_vectors

    tower = open_item_tower(model_dir / "item_tower")
    table = pq.read_table(path)
    if columns:
        vectors = np.concatenate([tower(f, batch_size=batch) for f in column_batches(tower, table, batch)])
    else:
        vectors = np.concatenate([tower(batch_features(rb.to_pylist(), tower.features))
                                  for rb in table.to_batches(max_chunksize=batch)])
    ids = table.column("item_id").to_numpy(zero_copy_only=False)
    shutil.rmtree(out_dir, ignore_errors=True)
    return write_vectors(out_dir, ids, vectors, tower.model_version, auto_num_shards(len(ids)))["count"]


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def throughput(out: Path, items: Path, model_dir: Path, repeats: int, batch: int,
               baselines: Sequence[str] = BASELINES) -> dict:
    import pyarrow.parquet as pq

    from beam_jobs.embed_items import EmbedConfig, run_embed
    from beam_jobs.handler import open_item_tower

    n = pq.ParquetFile(items).metadata.num_rows
    tower = open_item_tower(model_dir / "item_tower")
    result = {"items": n, "batch": batch}

    def pipeline(path: Path = items, rows: int = n):
        shutil.rmtree(out / "pipeline-vectors", ignore_errors=True)
        cfg = EmbedConfig(item_tower=str(model_dir / "item_tower"), items=str(path),
                          output=str(out / "pipeline-vectors"), batch_size=batch)
        assert run_embed(cfg, ["--runner", "DirectRunner"]).count == rows

    # Warm-up on the first batch: one-time imports (Beam's runner modules, pyarrow/FAISS bits) and the
    # first trace of the serving signature are paid here, by every configuration alike.
    warm = out / f"warmup-{batch}.parquet"
    pq.write_table(pq.read_table(items).slice(0, batch), warm)
    tower(next(column_batches(tower, pq.read_table(warm), batch)), batch_size=batch)
    plain_job(model_dir, warm, out / "plain-vectors", batch)
    pipeline(warm, min(batch, n))

    runs = {"model_rows": lambda: plain_rows(tower, items, batch),
            "model_cols": lambda: plain_cols(tower, items, batch),
            "plain_job_rows": lambda: plain_job(model_dir, items, out / "plain-vectors", batch, columns=False),
            "plain_job": lambda: plain_job(model_dir, items, out / "plain-vectors", batch),
            "pipeline": pipeline}
    runs = {name: fn for name, fn in runs.items() if name in baselines or name == "pipeline"}
    seconds = {name: float("inf") for name in runs}
    cpu = {name: float("inf") for name in runs}
    for round_ in range(repeats):  # interleaved rounds: a load spike hits every configuration alike
        for name, fn in runs.items():
            wall, used = timed(fn)
            seconds[name], cpu[name] = min(seconds[name], wall), min(cpu[name], used)
            log(f"  round {round_ + 1}: {name:<14} {n / wall:>10,.0f} items/s ({wall:.1f} s wall, {used:.1f} CPU-s; "
                f"1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for name in runs:
        result[f"{name}_items_per_s"] = n / seconds[name]
        result[f"{name}_items_per_cpu_s"] = n / cpu[name]
    line = []
    for name in ("plain_job", "plain_job_rows", "model_cols", "model_rows"):
        if name in runs:
            result[f"ratio_vs_{name}"] = result["pipeline_items_per_s"] / result[f"{name}_items_per_s"]
            result[f"cpu_ratio_vs_{name}"] = result["pipeline_items_per_cpu_s"] / result[f"{name}_items_per_cpu_s"]
            line.append(f"pipeline / {name} = {result[f'ratio_vs_{name}']:.2f} wall, "
                        f"{result[f'cpu_ratio_vs_{name}']:.2f} per CPU-second")
    log("  " + "; ".join(line) + " (target: pipeline / plain_job >= 0.6)")
    return result


# ------------------------------------------------------------------------------------------ rebuild
class _StepTimes(logging.Handler):
    """Collects run_rebuild's "<step> done in <s> s" log records (they exist even when it fails)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.steps: dict[str, float] = {}

    def emit(self, record):
        if record.msg.startswith("rebuild %s: %s done in"):
            self.steps[record.args[1]] = round(record.args[2], 1)


def rebuild_one(run: Path, factory: str, nprobe: int | None, beam_args: list[str]) -> dict:
    """Runs in a fresh subprocess: one run_rebuild; prints a JSON line (also when validation refuses)."""
    from beam_jobs.rebuild_index import IndexValidationError, RebuildConfig, run_rebuild
    from indexing.spec import IndexSpec

    steps = _StepTimes()
    job_log = logging.getLogger("beam_jobs.rebuild_index")
    job_log.setLevel(logging.INFO)
    job_log.addHandler(steps)
    t0 = time.perf_counter()
    out: dict = {}
    try:
        result = run_rebuild(RebuildConfig(run=str(run), index=IndexSpec(factory=factory, nprobe=nprobe)),
                             beam_args)
        out.update(count=result.count, dim=result.dim, factory=result.factory, recall=result.recall,
                   num_shards=result.num_shards)
    except IndexValidationError as exc:
        out["refused"] = str(exc)
    out["seconds"] = time.perf_counter() - t0
    out["steps"] = steps.steps
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + \
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mib"] = peak_kib / 1024
    return out


def rebuild(out: Path, items: Path, model_dir: Path, n: int, factory: str, nprobe: int | None,
            beam_args: list[str]) -> dict:
    run = out / f"run-{n}"
    shutil.rmtree(run, ignore_errors=True)
    (run / "data").mkdir(parents=True)
    shutil.copyfile(items, run / "data" / "items.parquet")
    (run / "model").symlink_to(model_dir.resolve(), target_is_directory=True)
    cmd = [sys.executable, "-m", "bench.bench_beam", "--rebuild-one", str(run), "--factory", factory,
           *(["--nprobe", str(nprobe)] if nprobe else []), *beam_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"rebuild of {n} items failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    result["loadavg_after"] = os.getloadavg()[0]
    steps = ", ".join(f"{k} {v:.1f}" for k, v in result["steps"].items())
    head = (f"  {n:>9,} items: {result['seconds']:.1f} s in run_rebuild ({wall:.1f} s with Python/TF start-up); "
            f"steps: {steps}; peak RSS {result['peak_rss_mib']:,.0f} MiB; load average {result['loadavg_after']:.1f}; ")
    if "refused" in result:
        log(head + "REFUSED TO PUBLISH: " + result["refused"].replace("\n", " "))
    else:
        log(head + f"{result['factory']}, {result['num_shards']} shards, "
                   f"recall@{result['recall']['k']} {result['recall']['recall']:.4f}")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=ints, default=[100_000, 1_000_000], help="rebuild sizes (items)")
    parser.add_argument("--throughput-items", type=int, default=200_000)
    parser.add_argument("--source-items", type=int, default=1_000_000,
                        help="synthetic items generated (and the tower's vocabularies built) once; every size "
                             "takes the first rows of these (so all sizes share one cached dataset and tower)")
    parser.add_argument("--tower", choices=["real", "hash"], default="real")
    parser.add_argument("--factory", default="auto", help="IndexSpec.factory for the rebuilds")
    parser.add_argument("--nprobe", type=int, default=None, help="IndexSpec.nprobe (default: the spec's rule)")
    parser.add_argument("--batch", type=int, default=None,
                        help="rows per model call (plain loops and pipeline); default EmbedConfig.batch_size")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is reported")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help=f"comma-separated subset of {','.join(BASELINES)} run next to the pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rebuild-one", type=Path, default=None, help=argparse.SUPPRESS)
    args, beam_args = parser.parse_known_args(argv)
    beam_args = beam_args or ["--runner", "DirectRunner"]
    if args.rebuild_one is not None:
        print(json.dumps(rebuild_one(args.rebuild_one, args.factory, args.nprobe, beam_args)))
        return 0

    report = {"argv": sys.argv[1:], "tower": args.tower, "cpus": os.cpu_count(), "beam_args": beam_args}
    biggest = max([args.source_items, args.throughput_items, *args.sizes])
    log(f"bench_beam: {args.tower} item tower, sizes {args.sizes}, throughput on {args.throughput_items} items")
    source, model_dir = prepare(args.out, biggest, args.tower, args.seed)
    if args.batch is None:
        from beam_jobs.embed_items import EmbedConfig
        args.batch = EmbedConfig().batch_size
    if not args.skip_throughput:
        log("throughput (same process, same items and SavedModel):")
        report["throughput"] = throughput(args.out, items_file(args.out, source, args.throughput_items), model_dir,
                                          args.repeats, args.batch, args.baselines.split(","))
    report["rebuild"] = {}
    log(f"rebuild end to end (fresh process each, IndexSpec factory={args.factory!r}, nprobe={args.nprobe}):")
    for n in args.sizes:
        report["rebuild"][n] = rebuild(args.out, items_file(args.out, source, n), model_dir, n, args.factory,
                                       args.nprobe, beam_args)
    path = args.out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
