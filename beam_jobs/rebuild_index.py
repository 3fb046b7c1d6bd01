"""The nightly job: embed the catalogue, build the FAISS index in shards, validate, publish atomically.

    1 embed     run_embed -> vectors/<v>/ (finished, not yet current)         [or reuse a vectors version]
    2 train     indexing.train_empty_with_report on seeded samples -> trained empty index (quantizer chosen
                among spec.quantizer_restarts on the query set: query-tower vectors of validation users)
    3 add       Beam: one task per vectors shard; each worker reads its shard and calls
                indexing.add_shard(trained, vectors, rows) on a copy of the trained index (the trained
                index arrives as a side input); the blobs land in the index root's scratch space
    4 merge     indexing.merge_shards in row order -> one index (== a single-process build)
    5 validate  the publish gate (indexing.gate.check_publishable): count == catalogue, no NaN/inf/zero,
                unnormalised or all-identical vectors, dim and model version agree, recall@K vs exact
                search on seeded sample queries >= recall_floor
    6 stage     indexing.store.stage_index: index/<v>/ written, manifest last (finished, not current)
    7 publish   flip vectors/current, then index/current (conditional writes), prune both roots

Everything goes through the one publish lifecycle (core.lifecycle.VersionedRoot). A failure at any step
raises (the CLI exits non-zero with the message) and publishes nothing: ``current`` keeps serving the
previous version. A job killed at any point leaves only unfinished versions (no manifest), which
``versions()`` ignores and the next job removes once it holds the lease. The job holds the leases of
both roots (vectors/ and index/) for its whole run. Readers take the vectors through the published
index's manifest (``vectors_version``), so a kill between the two flips cannot put them out of step.
``crash_at=<step>`` raises ``InjectedCrash`` right after that step, for tests (like FAISS
``contrib/big_batch_search.py``).

Determinism: the training sample and k-means are seeded, shards are contiguous row ranges merged in
row order, so the same vectors give a byte-identical index. Re-embedding reproduces the vectors up
to float32 rounding (TF may round differently for different batch compositions).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow.parquet as pq

from beam_jobs.beam_env import beam, pipeline_options, runner_name
from beam_jobs.embed_items import EmbedConfig, EmbedResult, prune_versions, run_embed
from indexing.gate import (DEFAULT_RECALL_FLOOR, IndexValidationError, VectorChecks, check_publishable,
                           metadata_problems, raise_problems, recall_problem)
from indexing import faiss_index as fi
from indexing import tuning as tn
from indexing.sharded_index import shard_bounds
from indexing.topk import band_recall
from indexing.tuning import ITEM_SAMPLE, split_queries
from core import artifacts
import faiss
from indexing.item_index import ItemIndex
from beam_jobs.query_set import QUERY_SOURCE, validation_query_vectors
from beam_jobs import sharded_rebuild as sr
from beam_jobs.sharded_rebuild import DEFAULT_AUTO_SHARD_ITEMS
from indexing.sharded import add_shard, merge_shards, train_empty_with_report
from indexing.spec import IndexSpec
from indexing.store import rollback_index, stage_index
from indexing.vectors import read_vectors
from core import strict
from core.lifecycle import (InjectedCrash, VersionedRoot, check_crash_at, check_version_name, crash_point,
                            new_version)
from core.rundir import RunDir
from core.storage import join_url, open_storage

log = logging.getLogger(__name__)

REBUILD_STEPS = ("embed", "train", "add", "merge", "validate", "stage", "publish-vectors")


@dataclass(frozen=True)
class RebuildConfig:
    """The nightly rebuild. Empty paths default to the run directory's layout.

    run              run directory (model/, data/items.parquet, vectors/, index/)
    index_root       where index versions live; default <run>/index
    version          name of the new vectors + index version; default the UTC time
    vectors_version  "" = embed the catalogue now; a version name (or "current") = index those vectors
    embed            the embed step (EmbedConfig; its run/output default to this run)
    index            what index to build (indexing.spec.IndexSpec); recall is measured at
                     index.recall_k over index.recall_queries seeded item-vector queries
    recall_floor     publish only when recall@recall_k vs exact search >= this
    keep_versions    index and vectors versions kept (the current one is never deleted)
    shards           "auto", or the number of index shards (1 = one index, the in-memory path). "auto" = one
                     index up to auto_shard_items items, else ceil(n / auto_shard_items) shards (at least 2)
                     built by the bounded-memory path (beam_jobs.sharded_rebuild: the driver never holds
                     every vector or the whole index). The choice and why are in the manifest ("sharding").
    auto_shard_items the item count above which "auto" shards, and the most items per shard it makes
    """

    run: str = ""
    index_root: str = ""
    version: str = ""
    vectors_version: str = ""
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexSpec = field(default_factory=IndexSpec)
    recall_floor: float = DEFAULT_RECALL_FLOOR
    keep_versions: int = 3
    shards: str | int = "auto"
    auto_shard_items: int = DEFAULT_AUTO_SHARD_ITEMS

    def __post_init__(self):
        if isinstance(self.shards, bool) or not (self.shards == "auto" or (isinstance(self.shards, int)
                                                                             and self.shards >= 1)):
            raise ValueError(f"shards must be 'auto' or a positive number of index shards (1 = one index), got "
                             f"{self.shards!r}; e.g. --set shards=auto or --set shards=8")
        if isinstance(self.auto_shard_items, bool) or not isinstance(self.auto_shard_items, int) \
                or self.auto_shard_items < 1:
            raise ValueError(f"auto_shard_items must be a positive int (items per shard above which shards: auto "
                             f"shards), got {self.auto_shard_items!r}")
        if not self.run and not (self.index_root and (self.vectors_version or self.embed.output)):
            raise ValueError("RebuildConfig needs run=<run directory> (--run), or index_root plus the embed paths")
        if not 0.0 <= self.recall_floor <= 1.0:
            raise ValueError(f"recall_floor must be in [0, 1], got {self.recall_floor}")
        if self.keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {self.keep_versions}")
        if self.version:
            check_version_name(self.version)

    def resolved(self) -> "RebuildConfig":
        rd = RunDir(self.run) if self.run else None
        embed = dataclasses.replace(self.embed, run=self.embed.run or self.run, keep_versions=self.keep_versions)
        # indexing existing vectors without a run needs only their root (embed.output); nothing is embedded
        embed = embed if (self.vectors_version and not self.run) else embed.resolved()
        return dataclasses.replace(self, index_root=self.index_root or str(rd.index), embed=embed)


@dataclass(frozen=True)
class RebuildResult:
    """What was published: versions, directories, and the numbers the validation measured."""

    version: str
    index_dir: Path | str      # local directory, or the version's URL on object storage
    vectors_dir: Path
    count: int
    dim: int
    factory: str
    model_version: str
    recall: dict
    num_shards: int
    seconds: dict          # step -> wall seconds
    embed: EmbedResult | None


# --------------------------------------------------------------------------------------------
# Step 3: add shards on the workers


@dataclass(frozen=True)
class ShardTask:
    """Add vectors shard ``path`` (``count`` rows starting at catalogue row ``first_row``)."""

    index: int
    path: str
    first_row: int
    count: int


def read_shard_vectors(path: str, dim: int, expected_rows: int) -> np.ndarray:
    """float32 (rows, dim) of one vectors shard (the ``vector`` column only); ``path`` may be a URL."""
    parent, name = str(path).rsplit("/", 1)
    with open_storage(parent).open_read(name) as stream:  # object storage: ranged reads of the column's pages
        table = pq.read_table(stream, columns=["vector"])
    column = table.column("vector").combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if len(column) != expected_rows or vectors.size != expected_rows * dim:
        raise ValueError(f"{path}: {len(column)} vectors / {vectors.size} floats, expected {expected_rows} x {dim}; "
                         "the vectors artifact changed while the job ran")
    return vectors.reshape(expected_rows, dim)


class AddShard(beam.DoFn):
    """``ShardTask`` + trained index bytes (side input) -> ``<work_dir>/shard-<i>.faiss``; yields its index."""

    def __init__(self, work_dir: str, dim: int):
        self._work_dir = work_dir
        self._dim = dim

    def process(self, task: ShardTask, trained: bytes):
        vectors = read_shard_vectors(task.path, self._dim, task.count)
        rows = np.arange(task.first_row, task.first_row + task.count, dtype=np.int64)
        blob = add_shard(trained, vectors, rows)
        open_storage(self._work_dir).write_bytes(shard_blob_name(task.index), blob)  # appears whole or not at all
        yield task.index


def shard_blob_name(index: int) -> str:
    return f"shard-{index:05d}.faiss"


def shard_tasks(vectors_dir: Path | str, manifest: dict) -> list[ShardTask]:
    """One task per vectors shard (a local directory or a URL); row counts from the Parquet footers."""
    storage = open_storage(str(vectors_dir))
    tasks, first = [], 0
    for i, name in enumerate(manifest["shards"]):
        with storage.open_read(name) as stream:
            count = pq.ParquetFile(stream).metadata.num_rows
        tasks.append(ShardTask(i, join_url(str(vectors_dir), name), first, count))
        first += count
    return tasks


def add_shards_with_beam(tasks: Sequence[ShardTask], trained: bytes, dim: int, work_dir: Path | str,
                         pipeline_args: Sequence[str] | None) -> list[bytes]:
    """Run the add step as a Beam pipeline; returns the shard blobs in shard order."""
    options = pipeline_options(pipeline_args)
    with beam.Pipeline(options=options) as p:
        trained_pc = p | "TrainedIndex" >> beam.Create([trained])
        (p
         | "ShardTasks" >> beam.Create(list(tasks))
         | "SpreadShards" >> beam.Reshuffle()
         | "AddShard" >> beam.ParDo(AddShard(str(work_dir), dim), trained=beam.pvalue.AsSingleton(trained_pc)))
    storage = open_storage(str(work_dir))
    blobs = []
    for task in tasks:
        name = shard_blob_name(task.index)
        try:
            blobs.append(storage.read_bytes(name))
        except FileNotFoundError:
            raise RuntimeError(f"the add step finished without writing {join_url(str(work_dir), name)} (shard "
                               f"{task.index} of {len(tasks)}); rerun the rebuild") from None
    return blobs


# --------------------------------------------------------------------------------------------
# Step 5: validation is the publish gate every publishing path runs (indexing.gate)


def validate_index(index: ItemIndex, vectors: np.ndarray, item_ids: np.ndarray, vectors_manifest: dict,
                   expected_model_version: str | None, recall_floor: float,
                   catalogue_rows: int | None = None, *, queries: np.ndarray | None = None,
                   query_source: str = "queries") -> dict:
    """``indexing.gate.check_publishable`` (kept under this name for the rebuild's callers); ``queries`` float32
    (m, d) is the query set recall is checked on (``beam_jobs.query_set``: query-tower vectors of validation
    users; None = item vectors as queries)."""
    return check_publishable(index, vectors, item_ids, vectors_manifest, expected_model_version, recall_floor,
                             catalogue_rows, queries=queries, query_source=query_source)


# --------------------------------------------------------------------------------------------
# Driver


def run_rebuild(config: RebuildConfig, pipeline_args: Sequence[str] | None = None, *,
                crash_at: str | None = None) -> RebuildResult:
    """Run the nightly rebuild (see the module docstring); returns what was published.

    pipeline_args: Beam options for both Beam steps (embed, add), e.g. ``["--runner", "DirectRunner",
    "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]``.
    Raises ``IndexValidationError``, ``DeadLetterShareExceeded``, ``BadVectors`` (all ``ValueError``),
    ``LockHeld`` (another job holds a lease) or the underlying error, having published nothing.
    """
    check_crash_at(crash_at, REBUILD_STEPS)
    cfg = config.resolved()
    index_root = VersionedRoot(cfg.index_root)
    vectors_root = VersionedRoot(cfg.embed.output)
    with vectors_root.lock("the index rebuild") as vectors_lease, index_root.lock("the index rebuild") as index_lease:
        version = cfg.version or new_version(index_root, vectors_root)
        if index_root.storage.list(version):
            raise FileExistsError(f"{index_root.url}/{version} already exists; versions are immutable, choose a "
                                  "new name")
        scratch = index_root.scratch(version)
        # the add step's blobs: a local directory, or a prefix on object storage the workers write to
        work = scratch.local_path() if scratch.local_path() is not None else scratch.url
        try:
            result = _rebuild_locked(cfg, version, work, pipeline_args, crash_at, index_lease, vectors_lease)
        except InjectedCrash:
            raise  # like a killed job: the scratch space stays behind; the next job's lease removes it
        except BaseException:
            index_root.drop_scratch(version)
            raise
        index_root.drop_scratch(version)
        return result


def _rebuild_locked(cfg: RebuildConfig, version: str, work: Path | str, pipeline_args, crash_at, index_lease,
                    vectors_lease) -> RebuildResult:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    index_root, vectors_root = index_lease.root, vectors_lease.root

    def step_done(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = round(now - clock, 3)
        clock = now
        log.info("rebuild %s: %s done in %.1f s", version, step, seconds[step])
        index_lease.renew()
        vectors_lease.renew()
        if step in REBUILD_STEPS:
            crash_point(step, crash_at)

    embedded: EmbedResult | None = None
    if cfg.vectors_version:
        vv = vectors_root.current() if cfg.vectors_version == "current" else cfg.vectors_version
        if vv is None:
            raise FileNotFoundError(f"{vectors_root.url}/current does not exist; embed first or pass a "
                                    "vectors version")
        local = vectors_root.local_dir(vv)
        vectors_dir = local if local is not None else join_url(vectors_root.url, vv)
    else:
        embedded = run_embed(dataclasses.replace(cfg.embed, version=version, publish=False), pipeline_args,
                             lease=vectors_lease)
        vectors_dir = embedded.directory
    step_done("embed")

    num_index_shards, why = sr.plan_shards(_vectors_count(vectors_dir), cfg.shards, cfg.auto_shard_items)
    if num_index_shards > 1:
        vmanifest = _vectors_manifest(vectors_dir)
        return _rebuild_sharded(cfg, version, work, pipeline_args, vectors_dir, vmanifest, embedded,
                                num_index_shards, why, step_done, seconds, index_root, vectors_root)
    try:
        item_ids, vectors, vmanifest = read_vectors(vectors_dir)
    except ValueError as exc:
        raise IndexValidationError(f"the vectors artifact {vectors_dir} cannot be indexed, nothing was "
                                   f"published: {exc}") from None
    n, dim = vectors.shape
    spec = cfg.index
    # the queries the index will serve: query-tower vectors of the run's validation users (None without a run)
    queries = validation_query_vectors(RunDir(cfg.run), spec) if cfg.run else None
    trained, quantizer = train_empty_with_report(vectors, spec, n_items=n, queries=queries,
                                                 query_source=QUERY_SOURCE)
    step_done("train")

    tasks = shard_tasks(vectors_dir, vmanifest)
    blobs = add_shards_with_beam(tasks, trained, dim, work, pipeline_args)
    step_done("add")

    merged = merge_shards(trained, blobs, n_items=n)  # a lost or doubled shard is refused here
    del blobs
    factory = spec.resolve_factory(n, dim)
    index = ItemIndex.from_faiss(merged, item_ids, spec, vmanifest["model_version"], factory=factory,
                                 quantizer=quantizer)
    step_done("merge")

    run_model = RunDir(cfg.run).model_version_file if cfg.run else None
    expected_mv = run_model.read_text().strip() if run_model is not None and run_model.is_file() else None
    catalogue = embedded.source_rows - embedded.dead_letter_count if embedded else None
    recall = check_publishable(index, vectors, item_ids, vmanifest, expected_mv, cfg.recall_floor, catalogue,
                               queries=queries, query_source=QUERY_SOURCE)
    step_done("validate")

    extra = {"vectors_version": vmanifest["version"], "vectors_dir": str(vectors_dir),
             "recall_floor": cfg.recall_floor, "num_shards": len(tasks), "seconds": dict(seconds),
             "runner": runner_name(pipeline_options(pipeline_args)),
             "sharding": {"requested": cfg.shards, "index_shards": 1, "reason": why}}
    if embedded is not None:
        extra.update(source_rows=embedded.source_rows, dead_letter_count=embedded.dead_letter_count)
    stage = stage_index(index_root, index, version, extra)
    step_done("stage")
    _publish(cfg, version, index_root, vectors_root, embedded, step_done)
    index_dir = stage.path if stage.path is not None else stage.storage.url
    return RebuildResult(version, index_dir, vectors_dir, n, dim, factory, vmanifest["model_version"], recall,
                         len(tasks), seconds, embedded)


def _vectors_count(vectors_dir) -> int:
    """The item count the vectors manifest states (read, not verified: the path chosen verifies everything)."""
    from indexing.vectors import _remote, _remote_manifest

    storage = _remote(vectors_dir)
    try:
        manifest = (artifacts.read_manifest(vectors_dir) if storage is None
                    else _remote_manifest(storage, str(vectors_dir).rstrip("/")))  # shards are verified later
        return int(manifest["count"])
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexValidationError(f"the vectors artifact {vectors_dir} cannot be indexed, nothing was "
                                   f"published: its manifest is unreadable ({exc}); rebuild it") from None


def _vectors_manifest(vectors_dir) -> dict:
    """The vectors artifact's manifest, every object it lists checked (size + sha256), one at a time."""
    from indexing.vectors import _remote, _remote_manifest, _verified_object

    storage = _remote(vectors_dir)
    try:
        if storage is None:
            return artifacts.verify_manifest(vectors_dir)
        directory = str(vectors_dir).rstrip("/")
        manifest = _remote_manifest(storage, directory)
        for name in manifest["shards"]:
            _verified_object(storage, directory, name, manifest["files"].get(name))
        return manifest
    except ValueError as exc:
        raise IndexValidationError(f"the vectors artifact {vectors_dir} cannot be indexed, nothing was "
                                   f"published: {exc}") from None


def _rebuild_sharded(cfg: RebuildConfig, version: str, work, pipeline_args, vectors_dir, vmanifest: dict,
                     embedded: EmbedResult | None, num_shards: int, why: str, step_done, seconds: dict,
                     index_root: VersionedRoot, vectors_root: VersionedRoot) -> RebuildResult:
    """Steps 2-7 for a sharded index without holding every vector or the index (``beam_jobs.sharded_rebuild``)."""
    n, dim = int(vmanifest["count"]), int(vmanifest["dim"])
    spec = cfg.index
    factory = spec.resolve_factory(n, dim)
    files = [sr.VectorFile(t.path, t.first_row, t.count) for t in shard_tasks(vectors_dir, vmanifest)]
    if sum(f.count for f in files) != n:
        raise IndexValidationError(f"the vectors artifact {vectors_dir} cannot be indexed, nothing was published: "
                                   f"its files hold {sum(f.count for f in files)} rows, the manifest says {n}")
    bounds = shard_bounds(n, num_shards)
    queries = validation_query_vectors(RunDir(cfg.run), spec) if cfg.run else None
    # step 2: train on the rows a single-index build trains on, read file by file
    train_rows = fi.train_sample(n, spec)
    if queries is None:  # item vectors as queries: the rows indexing.tuning.item_queries samples
        tune_rows, check_rows, tune_source = sr.item_query_rows(n, spec)
        picked = sr.gather_rows(files, np.concatenate([train_rows, tune_rows, check_rows]), dim)
        sample = picked[:len(train_rows)]
        tune_q, check_q = picked[len(train_rows):len(train_rows) + len(tune_rows)], picked[-len(check_rows):]
        check_source = ITEM_SAMPLE
        train_queries, train_source = tune_q, tune_source
    else:
        sample = sr.gather_rows(files, train_rows, dim)
        tune_q, check_q = split_queries(queries, spec)
        tune_source = check_source = QUERY_SOURCE
        train_queries, train_source = queries, QUERY_SOURCE
    tunes = (spec.target_recall is not None and spec.nprobe is None and spec.ef_search is None)
    trained, quantizer = _train_on_sample(sample, spec, factory, n, train_queries, train_source, queries is None)
    del sample
    step_done("train")

    tasks = sr.tasks_for(files, bounds)
    sr.add_index_shards_with_beam(tasks, trained, dim, str(work), pipeline_args)
    step_done("add")

    k = min(spec.recall_k, n)
    shards = sr.ShardSet(str(work), bounds)
    first = shards.first()
    knob = tn.knob(first, k)
    tunes = tunes and knob is not None
    if not tunes:  # no tuning: recall is measured on the whole query set (as ItemIndex.measure_recall does)
        check_q = queries if queries is not None else check_q
    checks = VectorChecks(unit_norm=True)
    started = time.perf_counter()
    tune_band, check_band = sr.stream_exact_and_check(files, dim, [tune_q if tunes else check_q[:0], check_q],
                                                      2 * k, checks)
    seconds["exact_pass"] = round(time.perf_counter() - started, 3)
    params = sr.initial_params(first, spec)
    tuning = None
    if tunes:
        tuning = sr.tune_merged(shards, tune_q, tune_band, k, n, spec.target_recall, tune_source, spec)
        params = {**params, tuning["param"]: tuning["value"]}
        if tuning.get("k_factor") is not None:
            params["k_factor"] = tuning["k_factor"]
        params = fi.apply_search_params(first, params.get("nprobe"), params.get("ef_search"), params.get("k_factor"))
    index_dim = int(first.d)
    del first
    step_done("merge")

    (_, found), = shards.search(check_q, k, [params])
    per_query, overflow = band_recall(found, check_band.scores, check_band.rows, k, n)
    recall = {"recall": float(per_query.mean()), "k": k, "num_queries": len(check_q), "query_source": check_source,
              "search_params": dict(params), "band_overflow_queries": overflow}
    run_model = RunDir(cfg.run).model_version_file if cfg.run else None
    expected_mv = run_model.read_text().strip() if run_model is not None and run_model.is_file() else None
    catalogue = embedded.source_rows - embedded.dead_letter_count if embedded else None
    problems = checks.problems() + metadata_problems(n, index_dim, vmanifest["model_version"],
                                                     vmanifest, checks, expected_mv, catalogue)
    if not problems:
        low = recall_problem(recall, cfg.recall_floor, factory)
        problems += [low] if low else []
    raise_problems(problems)
    step_done("validate")

    fields = {"factory": factory, "metric": spec.metric, "dim": dim, "count": n,
              "model_version": vmanifest["model_version"], "spec": strict.to_dict(spec), "search_params": params,
              "tuning": tuning, "quantizer": quantizer, "recall": recall, "faiss_version": faiss.__version__,
              "vectors_version": vmanifest["version"], "vectors_dir": str(vectors_dir),
              "recall_floor": cfg.recall_floor, "seconds": dict(seconds),
              "runner": runner_name(pipeline_options(pipeline_args)),
              "sharding": {"requested": cfg.shards, "index_shards": num_shards, "reason": why,
                           "index_bytes": shards.index_bytes}}
    if embedded is not None:
        fields.update(source_rows=embedded.source_rows, dead_letter_count=embedded.dead_letter_count)
    shard_fields = sr.shard_manifest_fields(spec, factory, dim, vmanifest["model_version"], params, quantizer)
    stage = index_root.stage(version)
    try:
        sr.write_sharded_version(stage, str(work), bounds, fields, shard_fields)
        index_root.finish(stage)
    except InjectedCrash:
        raise
    except BaseException:
        stage.abandon()
        raise
    step_done("stage")
    _publish(cfg, version, index_root, vectors_root, embedded, step_done)
    index_dir = stage.path if stage.path is not None else stage.storage.url
    return RebuildResult(version, index_dir, vectors_dir, n, dim, factory, vmanifest["model_version"], recall,
                         num_shards, seconds, embedded)


def _train_on_sample(sample: np.ndarray, spec: IndexSpec, factory: str, n: int, queries, query_source: str,
                     item_queries: bool) -> tuple[bytes, dict | None]:
    """``train_empty_with_report`` on the streamed sample. With a query set its tuning part chooses the
    quantizer (as in a single-index build); without one, the held-out item-vector queries (already the tuning
    part) do."""
    spec_f = dataclasses.replace(spec, factory=factory)
    if item_queries:
        from indexing.quantizer import train_best

        index, report = train_best(factory, sample, spec_f, queries, query_source)
        return fi.serialize(index), report
    return train_empty_with_report(sample, spec_f, n_items=n, queries=queries, query_source=query_source)


def _publish(cfg: RebuildConfig, version: str, index_root: VersionedRoot, vectors_root: VersionedRoot,
             embedded: EmbedResult | None, step_done) -> None:
    """Flip a staged rebuild live (single and sharded paths alike), then prune.

    Vectors flip first, then the index. Readers take the vectors through the index's manifest
    (``vectors_version``, see core.rundir.RunDir.published_vectors), so a kill between the two flips leaves
    the published index with the vectors it was built from (still kept: prune protects them).
    """
    if embedded is not None:
        vectors_root.publish(embedded.version)
    step_done("publish-vectors")
    index_root.publish(version)
    index_root.prune(cfg.keep_versions)
    if embedded is not None:
        prune_versions(vectors_root, cfg.keep_versions, protect=vectors_in_use(index_root))
    step_done("publish")


def vectors_in_use(index_root: VersionedRoot) -> set[str]:
    """Vectors versions named by the kept index versions (rollback keeps index and vectors in step)."""
    used = set()
    for v in index_root.versions():
        vv = index_root.manifest(v).get("vectors_version")
        if vv:
            used.add(vv)
    return used


def rollback(index_root: str | Path, to_version: str | None = None, vectors_root: str | Path | None = None,
             model_version: str | None = None) -> str:
    """``indexing.store.rollback_index`` (no Beam needed; kept here for the rebuild's callers)."""
    return rollback_index(index_root, to_version, vectors_root=vectors_root, model_version=model_version)


# --------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    from core.cli import ArgumentParser

    parser = ArgumentParser(
        prog="python -m beam_jobs.rebuild_index",
        description="Nightly rebuild: embed items, build the FAISS index in shards with Beam, validate, publish. "
                    "Unknown flags go to Beam, e.g. --runner DirectRunner --direct_running_mode multi_processing "
                    "--direct_num_workers 2 (or --runner FlinkRunner --flink_master host:8081 ...).")
    parser.add_argument("--run", default="", help="run directory")
    parser.add_argument("--index-root", default="", help="default <run>/index")
    parser.add_argument("--version", default="", help="new version name (default: UTC time)")
    parser.add_argument("--vectors-version", default="", help="index these vectors instead of embedding "
                        "(a version name or 'current')")
    parser.add_argument("--recall-floor", type=float, default=None)
    parser.add_argument("--keep-versions", type=int, default=None)
    parser.add_argument("--config", default=None, help="YAML/JSON file with RebuildConfig fields "
                        "(embed: {...}, index: {...}); flags override it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any field, e.g. --set index.factory=IVF1024,Flat --set embed.num_shards=8")
    return parser


def config_from_args(args: argparse.Namespace) -> RebuildConfig:
    data: dict = {}
    if args.config:
        data = strict.read_yaml_mapping(args.config, "rebuild config", "the RebuildConfig fields in beam_jobs/rebuild_index.py")
    for key in ("run", "index_root", "version", "vectors_version", "recall_floor", "keep_versions"):
        value = getattr(args, key)
        if value not in (None, ""):
            data[key] = value
    # every --set applied first, then validated once (core.strict.with_overrides)
    return strict.with_overrides(RebuildConfig, data, strict.parse_overrides(args.set))


def main(argv: Sequence[str] | None = None) -> int:
    from core.cli import run_main

    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    return run_main(parser.prog, _rebuild_command, args, beam_args)


def _rebuild_command(args: argparse.Namespace, beam_args: list[str]) -> int:
    result = run_rebuild(config_from_args(args), beam_args)
    print(json.dumps(result_summary(result), indent=2))
    return 0


def result_summary(result: RebuildResult) -> dict:
    return {"version": result.version, "index_dir": str(result.index_dir), "vectors_dir": str(result.vectors_dir),
            "count": result.count, "dim": result.dim, "factory": result.factory,
            "model_version": result.model_version, "recall": result.recall, "num_shards": result.num_shards,
            "seconds": result.seconds,
            "dead_letter_count": result.embed.dead_letter_count if result.embed else None}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
