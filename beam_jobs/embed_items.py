"""Beam job: embed every item of the catalogue with the exported item tower -> a vectors artifact.

    items Parquet ──plan (driver: footers, duplicate ids)──► ReadUnits
      │ ReadItemRows                  (position, row, source)
      │ ValidateItemRows ──bad──────► dead letters (JSON lines, with reason) ─► <root>/dead_letter/<v>.jsonl
      │ RunInference(ItemTowerHandler, keyed by position)
      │ key by shard = position * S // rows;  CombinePerKey(CollectShard)   (rows sorted by position)
      ▼ WriteShard                    <root>/.staging-<v>-*/part-0000s-of-0000S.parquet
    driver: check counts / dim / NaN / zero vectors and the dead-letter share, write manifest.json LAST,
            promote the staging dir to <root>/<v>, flip <root>/current (optional), prune old versions.

Row order of the artifact = order of the items table (files sorted by path, then row order) minus
dead-lettered rows, whatever order the runner processes things in. Shards are contiguous row ranges.
Vectors match the SavedModel's direct output up to float32 rounding: TF CPU kernels may round
differently for different batch sizes, and Beam chooses the batches.

Nothing runner-specific happens inside the transforms; choose the runner with pipeline args:
  --runner DirectRunner [--direct_running_mode multi_processing --direct_num_workers 2]
  --runner FlinkRunner --flink_master host:8081 --environment_type LOOPBACK
  --runner SparkRunner --spark_master_url spark://host:7077
  --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp
(remote runners need the run directory on storage the workers can write, see ``run_embed``).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_jobs.beam_env import beam, pipeline_options, runner_name
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from beam_jobs.handler import ItemTowerHandler, LoadedItemTower, model_version_of
from beam_jobs.item_rows import DEAD_LETTER, DEFAULT_ID_PATTERN, RowValidator, ValidateItemRows
from beam_jobs.item_source import DEFAULT_ROWS_PER_UNIT, ItemSource, ReadItemRows, plan_item_source
from beam_jobs.versioned_root import (InjectedCrash, JobLock, check_crash_at, check_version_name,
                                      clean_staging, crash_point, new_version)
from twotower import artifacts, strict
from twotower.rundir import RunDir

log = logging.getLogger(__name__)

VECTORS_KIND = "item_vectors"
DEAD_LETTER_DIR = "dead_letter"
ROWS_PER_AUTO_SHARD = 131_072
MAX_AUTO_SHARDS = 64
# Steps after which ``crash_at`` can kill run_embed (tests): the Beam pipeline wrote the shards; the
# manifest is written in staging; the version is promoted but ``current`` not yet flipped.
EMBED_STEPS = ("pipeline", "manifest", "promote")
VECTOR_SCHEMA = pa.schema([("item_id", pa.string()), ("vector", pa.list_(pa.float32())),
                           ("model_version", pa.string())])


@dataclass(frozen=True)
class EmbedConfig:
    """The embed job. Empty paths default to the run directory's layout (``twotower.rundir``).

    run                 run directory (supplies the defaults below)
    item_tower          exported item-tower SavedModel; default <run>/model/item_tower
    items               items Parquet file, directory or glob; default <run>/data/items.parquet
    output              vectors root; default <run>/vectors
    version             name of the new version; default the UTC time (YYYYMMDDTHHMMSSZ)
    model_version       default: the model_version file next to the item tower
    num_shards          vector shards (= parallel index-add tasks later); 0 = one per 131072 rows (<= 64)
    min_batch_size, max_batch_size   RunInference batching (beam.BatchElements adapts in between)
    rows_per_read       rows per read task (a Parquet row group is split into tasks of this size)
    max_dead_letter_share  the job fails when more than this share of rows is bad
    item_id_pattern     regular expression a valid item id must fully match
    publish             flip <output>/current to the new version when it is finished
    keep_versions       finished versions kept under <output> (the current one is never deleted)
    """

    run: str = ""
    item_tower: str = ""
    items: str = ""
    output: str = ""
    version: str = ""
    model_version: str = ""
    num_shards: int = 0
    min_batch_size: int = 64
    max_batch_size: int = 2048
    rows_per_read: int = DEFAULT_ROWS_PER_UNIT
    max_dead_letter_share: float = 0.01
    item_id_pattern: str = DEFAULT_ID_PATTERN
    publish: bool = True
    keep_versions: int = 3

    def __post_init__(self):
        if not (self.run or (self.item_tower and self.items and self.output)):
            raise ValueError("EmbedConfig needs run=<run directory>, or all of item_tower, items and output")
        if not 0.0 <= self.max_dead_letter_share <= 1.0:
            raise ValueError(f"max_dead_letter_share must be in [0, 1], got {self.max_dead_letter_share}")
        for name in ("num_shards",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = automatic), got {getattr(self, name)}")
        for name in ("min_batch_size", "max_batch_size", "rows_per_read", "keep_versions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.version:
            check_version_name(self.version)

    def resolved(self) -> "EmbedConfig":
        """A copy with every defaulted path filled in from ``run``."""
        rd = RunDir(self.run) if self.run else None
        return dataclasses.replace(
            self,
            item_tower=self.item_tower or str(rd.item_tower),
            items=self.items or str(rd.data / "items.parquet"),
            output=self.output or str(rd.vectors),
        )


@dataclass(frozen=True)
class EmbedResult:
    """What run_embed produced: the finished version directory and its numbers."""

    version: str
    directory: Path
    count: int
    dim: int
    model_version: str
    source_rows: int
    dead_letter_count: int
    dead_letter_path: Path | None
    published: bool
    seconds: float


class DeadLetterShareExceeded(ValueError):
    """Too many item rows failed validation; nothing was published."""


class BadVectors(ValueError):
    """The item tower produced NaN/inf or all-zero vectors; nothing was published."""


# --------------------------------------------------------------------------------------------
# Transforms


class EmbedItems(beam.PTransform):
    """``(position, row, source)`` -> {"embedded": (position, item_id, vector float32 (D,)),
    "dead_letter": dict records}. ``duplicates``: positions of repeated ids (see item_source)."""

    def __init__(self, handler: ItemTowerHandler, validator: RowValidator, duplicates: dict[int, int] | None = None):
        super().__init__()
        self._handler = handler
        self._validator = validator
        self._duplicates = duplicates or {}

    def expand(self, rows):
        checked = rows | "ValidateRows" >> beam.ParDo(
            ValidateItemRows(self._validator, self._duplicates)).with_outputs(DEAD_LETTER, main="valid")
        embedded = (checked.valid
                    | "RunInference" >> RunInference(KeyedModelHandler(self._handler))
                    | "ToVector" >> beam.MapTuple(lambda pos, pred: (pos, pred.example["item_id"], pred.inference)))
        return {"embedded": embedded, DEAD_LETTER: checked[DEAD_LETTER]}


class CollectShard(beam.CombineFn):
    """Gathers one shard's ``(position, item_id, vector)`` into arrays sorted by position.

    Accumulator: list of chunks ``(positions int64 (m,), ids object (m,), vectors float32 (m, D))``
    plus a pending list; ``compact`` stacks pending rows so partial results cross the shuffle as
    a few NumPy arrays rather than one pickled object per item.
    """

    def create_accumulator(self):
        return ([], [])

    def add_input(self, acc, element):
        acc[1].append(element)
        return acc

    def compact(self, acc):
        chunks, pending = acc
        if pending:
            pos, ids, vecs = zip(*pending)
            chunks = chunks + [(np.asarray(pos, np.int64), np.asarray(ids, dtype=object),
                                np.stack(vecs).astype(np.float32, copy=False))]
        return (chunks, [])

    def merge_accumulators(self, accumulators):
        chunks = []
        for acc in accumulators:
            chunks.extend(self.compact(acc)[0])
        return (chunks, [])

    def extract_output(self, acc):
        chunks = self.compact(acc)[0]
        if not chunks:
            return np.zeros(0, np.int64), np.zeros(0, object), np.zeros((0, 0), np.float32)
        pos = np.concatenate([c[0] for c in chunks])
        order = np.argsort(pos, kind="stable")
        ids = np.concatenate([c[1] for c in chunks])[order]
        vecs = np.concatenate([c[2] for c in chunks])[order]
        return pos[order], ids, vecs


def shard_name(shard: int, num_shards: int) -> str:
    return f"part-{shard:05d}-of-{num_shards:05d}.parquet"


def vectors_table(item_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> pa.Table:
    """The contract's shard table: item_id string, vector list<float32> (all length D), model_version."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(item_ids)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim)
    vector_col = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32()))
    return pa.Table.from_arrays(
        [pa.array(list(item_ids), pa.string()), vector_col, pa.array([model_version] * n, pa.string())],
        schema=VECTOR_SCHEMA)


def write_shard_file(path: str | Path, item_ids, vectors: np.ndarray, model_version: str) -> None:
    """Write one vectors shard atomically (temp file + fsync + os.replace)."""
    buf = io.BytesIO()
    pq.write_table(vectors_table(item_ids, vectors, model_version), buf)
    artifacts.atomic_write_bytes(path, buf.getvalue())


class WriteShard(beam.DoFn):
    """``(shard, (positions, ids, vectors))`` -> the shard's Parquet file in ``directory``."""

    def __init__(self, directory: str, num_shards: int, model_version: str):
        self._directory = directory
        self._num_shards = num_shards
        self._model_version = model_version

    def process(self, element):
        shard, (_, ids, vectors) = element
        write_shard_file(os.path.join(self._directory, shard_name(shard, self._num_shards)), ids, vectors,
                         self._model_version)
        yield shard


def shard_of(position: int, num_rows: int, num_shards: int) -> int:
    """Contiguous row ranges: shard = position * num_shards // num_rows."""
    return position * num_shards // num_rows


def auto_num_shards(num_rows: int) -> int:
    return max(1, min(MAX_AUTO_SHARDS, -(-num_rows // ROWS_PER_AUTO_SHARD)))


def build_embed_pipeline(pipeline: beam.Pipeline, source: ItemSource, handler: ItemTowerHandler,
                         validator: RowValidator, staging: str, num_shards: int, model_version: str) -> None:
    """Add the embed transforms to ``pipeline`` (outputs go to ``staging``)."""
    columns = tuple(s.name for s in validator.inputs)
    rows = (pipeline
            | "PlanReads" >> beam.Create(list(source.units))
            | "SpreadReads" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(ReadItemRows(columns)))
    out = rows | "Embed" >> EmbedItems(handler, validator, source.duplicates)
    n = source.num_rows
    (out["embedded"]
     | "KeyByShard" >> beam.Map(lambda e: (shard_of(e[0], n, num_shards), e))
     | "CollectShards" >> beam.CombinePerKey(CollectShard())
     | "WriteShards" >> beam.ParDo(WriteShard(staging, num_shards, model_version)))
    (out[DEAD_LETTER]
     | "DeadLetterJson" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True))
     | "WriteDeadLetter" >> beam.io.WriteToText(os.path.join(staging, DEAD_LETTER), file_name_suffix=".jsonl",
                                                num_shards=1, shard_name_template=""))


# --------------------------------------------------------------------------------------------
# Driver


def run_embed(config: EmbedConfig, pipeline_args: Sequence[str] | None = None, *,
              crash_at: str | None = None) -> EmbedResult:
    """Run the embed job; returns the finished version (published unless ``config.publish`` is False).

    pipeline_args: Beam options, e.g. ``["--runner", "DirectRunner"]`` (the default runner). With a
    remote runner, ``run``/``output`` must be on storage both this process and the workers can write
    (e.g. a shared mount), since shards are written by workers and the manifest by this process.
    Raises ``DeadLetterShareExceeded`` / ``BadVectors`` (both ``ValueError``) and publishes nothing
    when the rows or the vectors are not good enough; the dead letters are kept for inspection.
    """
    check_crash_at(crash_at, EMBED_STEPS)
    t0 = time.perf_counter()
    cfg = config.resolved()
    root = Path(cfg.output)
    with JobLock(root, "the embed job"):
        clean_staging(root)
        version = cfg.version or new_version(root)
        if (root / version).exists():
            raise FileExistsError(f"{root / version} already exists; versions are immutable, choose a new name")
        return _embed_locked(cfg, version, pipeline_args, crash_at, t0)


def _embed_locked(cfg: EmbedConfig, version: str, pipeline_args, crash_at, t0: float) -> EmbedResult:
    root = Path(cfg.output)
    model_version = cfg.model_version or model_version_of(cfg.item_tower)
    signature = LoadedItemTower(cfg.item_tower, model_version).signature
    validator = RowValidator(signature.inputs, cfg.item_id_pattern)
    source = plan_item_source(cfg.items, cfg.rows_per_read)
    _check_columns(source, signature.feature_names, cfg.items)
    num_shards = cfg.num_shards or auto_num_shards(source.num_rows)
    handler = ItemTowerHandler(cfg.item_tower, model_version, min_batch_size=cfg.min_batch_size,
                               max_batch_size=cfg.max_batch_size)
    staging = artifacts.staging_dir(root, version)
    options = pipeline_options(pipeline_args)
    log.info("embedding %d item rows from %s with %s (model %s) into %s shards on %s", source.num_rows,
             cfg.items, cfg.item_tower, model_version, num_shards, runner_name(options))
    with beam.Pipeline(options=options) as pipeline:
        build_embed_pipeline(pipeline, source, handler, validator, str(staging), num_shards, model_version)
    crash_point("pipeline", crash_at)

    dead_path, dead_count, reasons = _collect_dead_letters(staging, root, version)
    share = dead_count / source.num_rows
    if share > cfg.max_dead_letter_share:
        shutil.rmtree(staging, ignore_errors=True)
        top = "; ".join(f"{r} ({c})" for r, c in reasons.most_common(5))
        raise DeadLetterShareExceeded(
            f"{dead_count} of {source.num_rows} item rows ({share:.2%}) failed validation, above "
            f"max_dead_letter_share={cfg.max_dead_letter_share:g}; reasons: {top}. The rows and reasons are "
            f"in {dead_path}. Fix those rows in {cfg.items} (or raise max_dead_letter_share); nothing was "
            "published")
    stats = _check_shards(staging, num_shards, model_version)
    if stats["count"] == 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"no item could be embedded: all {source.num_rows} rows of {cfg.items} were "
                         f"dead-lettered (see {dead_path}); nothing was published")
    manifest_fields = {
        "kind": VECTORS_KIND, "version": version, "model_version": model_version,
        "count": stats["count"], "dim": stats["dim"], "shards": stats["shards"],
        "shard_counts": stats["shard_counts"], "source": list(source.paths), "source_rows": source.num_rows,
        "item_tower": str(cfg.item_tower),
        "dead_letter": {"count": dead_count, "path": str(dead_path) if dead_path else None,
                        "reasons": dict(reasons.most_common())},
    }
    artifacts.write_manifest(staging, manifest_fields)
    crash_point("manifest", crash_at)
    final = artifacts.promote(staging, root, version)
    crash_point("promote", crash_at)
    if cfg.publish:
        artifacts.publish(root, version)
        prune_versions(root, cfg.keep_versions)
    return EmbedResult(version, final, stats["count"], stats["dim"], model_version, source.num_rows, dead_count,
                       dead_path, cfg.publish, time.perf_counter() - t0)


def _check_columns(source: ItemSource, feature_names: Iterable[str], items: str) -> None:
    missing = [f for f in feature_names if f not in source.columns]
    if missing:
        raise ValueError(
            f"{items}: no file has the column(s) {missing} that the item tower takes (the table has "
            f"{list(source.columns)}); add them to the items table, or embed with the item tower exported "
            "for this table")


def _collect_dead_letters(staging: Path, root: Path, version: str) -> tuple[Path | None, int, Counter]:
    """Move the dead-letter file out of staging to root/dead_letter/<version>.jsonl; count reasons."""
    src = staging / f"{DEAD_LETTER}.jsonl"
    reasons: Counter = Counter()
    count = 0
    if src.is_file():
        with open(src, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    count += 1
                    reasons[json.loads(line)["reason"].split(":")[0]] += 1
    for leftover in staging.glob("beam-temp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if count == 0:
        if src.exists():
            src.unlink()
        return None, 0, reasons
    dest = root / DEAD_LETTER_DIR / f"{version}.jsonl"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    return dest, count, reasons


def _check_shards(staging: Path, num_shards: int, model_version: str) -> dict:
    """Counts/dim of the written shards (empty shards are created here); refuse NaN/inf/zero vectors."""
    names, counts, dim = [], [], None
    nonfinite, zero, examples = 0, 0, []
    for s in range(num_shards):
        path = staging / shard_name(s, num_shards)
        if not path.exists():
            write_shard_file(path, [], np.zeros((0, 0), np.float32), model_version)
        names.append(path.name)
        pf = pq.ParquetFile(path)
        counts.append(pf.metadata.num_rows)
        for batch in pf.iter_batches(batch_size=65_536, columns=["item_id", "vector"]):
            lists = batch.column("vector")
            lengths = np.diff(lists.offsets.to_numpy())
            if len(lengths) == 0:
                continue
            if dim is None:
                dim = int(lengths[0])
            if (lengths != dim).any():
                raise BadVectors(f"{path}: vectors of different lengths ({sorted(set(lengths.tolist()))[:5]}); "
                                 "the item tower must output one fixed dimension")
            vecs = lists.values.to_numpy().reshape(-1, dim)
            bad_nan = ~np.isfinite(vecs).all(axis=1)
            bad_zero = ~bad_nan & ~(np.abs(vecs) > 0).any(axis=1)
            nonfinite += int(bad_nan.sum())
            zero += int(bad_zero.sum())
            if len(examples) < 5 and (bad_nan.any() or bad_zero.any()):
                ids = batch.column("item_id").to_pylist()
                examples += [ids[i] for i in np.flatnonzero(bad_nan | bad_zero)[: 5 - len(examples)]]
    if nonfinite or zero:
        raise BadVectors(
            f"the item tower produced {nonfinite} vectors with NaN/inf and {zero} all-zero vectors "
            f"(e.g. items {examples}); the index cannot serve them. Check the exported item tower (and the "
            "features of those items); nothing was published")
    return {"shards": names, "shard_counts": counts, "count": int(sum(counts)), "dim": int(dim or 0)}


def prune_versions(root: str | Path, keep: int) -> list[str]:
    """``artifacts.prune`` plus the dead-letter files of versions older than every kept one."""
    root = Path(root)
    removed = artifacts.prune(root, keep)
    kept = artifacts.list_versions(root)
    folder = root / DEAD_LETTER_DIR
    if kept and folder.is_dir():
        for f in folder.glob("*.jsonl"):
            if f.name[: -len(".jsonl")] < kept[0]:
                f.unlink()
    return removed


# --------------------------------------------------------------------------------------------
# CLI


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags for every EmbedConfig field (``--items``, ``--max-dead-letter-share``...)."""
    for f in dataclasses.fields(EmbedConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None)


def config_from_args(cls, args: argparse.Namespace, fields: Iterable[str], base: dict | None = None):
    data = dict(base or {})
    data.update({k: getattr(args, k) for k in fields if getattr(args, k, None) is not None})
    return strict.from_dict(cls, data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.embed_items",
        description="Embed the item catalogue with the exported item tower (Beam). Unknown flags are "
                    "passed to Beam, e.g. --runner DirectRunner --direct_running_mode multi_processing.")
    add_embed_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    cfg = config_from_args(EmbedConfig, args, [f.name for f in dataclasses.fields(EmbedConfig)])
    try:
        result = run_embed(cfg, beam_args)
    except (ValueError, FileNotFoundError, InjectedCrash, RuntimeError) as exc:
        print(f"embed failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(_result_dict(result), indent=2))
    return 0


def _result_dict(result: Any) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
