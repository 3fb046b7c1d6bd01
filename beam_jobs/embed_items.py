"""Beam job: embed every item of the catalogue with the exported item tower -> a vectors artifact.

    items Parquet ──plan (driver: footers, duplicate ids)──► ReadUnits
      │ ReadItemBlocks                ItemBlock: batch_size consecutive rows as an Arrow table
      │ ValidateItemBlocks ──bad────► dead letters (JSON lines, with reason) ─► <root>/dead_letter/<v>.jsonl
      │   (column-wise, item_blocks)  ItemBatch: the block's good rows as the tower's input arrays
      │ RunInference(ItemBatchHandler: one ItemBatch = one model call -> float32 (m, D))
      │ SplitByShard: NumPy pieces keyed by shard = position * S // rows;  GroupByKey
      ▼ WriteShard (rows sorted by position; NaN/zero vectors -> dead letters)
                                      <root>/<v>/part-0000s-of-0000S.parquet  (staged: no manifest yet)
    driver: dead-letter share and bad vectors checked, indexing.vectors.finalize_vectors writes
            manifest.json LAST (with the dead-letter counts): the version is finished; then
            <root>/current flipped (optional) and old versions pruned (core.lifecycle.VersionedRoot).

Row order of the artifact = order of the items table (files sorted by path, then row order) minus
dead-lettered rows, whatever order the runner processes things in. Shards are contiguous row ranges.

Batches are formed by the reader, not by ``beam.BatchElements``: a batch is ``batch_size``
consecutive rows of one read unit (minus its bad rows). Two reasons: TF CPU kernels round
differently for different batch shapes, so timing-dependent batches would make re-runs differ in
the last bits (fixed batches make the vectors, and so the index, reproducible); and nothing is done
per item in Python: rows are validated and stacked into the tower's inputs column by column with
Arrow/NumPy, and Beam sees one element per block at every step.

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
import json
import logging
import pickle
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Tuple

import numpy as np
import pyarrow as pa

from beam_jobs.beam_env import beam, pipeline_options, runner_name
from apache_beam.ml.inference.base import RunInference

from beam_jobs.handler import ItemBatchHandler, read_item_tower_info
from beam_jobs.item_blocks import ValidateItemBlocks
from beam_jobs.item_rows import DEAD_LETTER, DEFAULT_ID_PATTERN, RowValidator
from beam_jobs.item_source import DEFAULT_ROWS_PER_UNIT, ItemSource, ReadItemBlocks, plan_item_source
from indexing.vectors import finalize_vectors, shard_name, write_shard
from core import strict
from core.guard import require_same_model
from core.lifecycle import (InjectedCrash, Lease, VersionedRoot, check_crash_at, check_version_name, crash_point,
                            new_version, version_sort_key)
from core.rundir import RunDir
from core.storage import Storage, join_url, open_storage

log = logging.getLogger(__name__)

DEAD_LETTER_DIR = "dead_letter"
ROWS_PER_AUTO_SHARD = 131_072
MAX_AUTO_SHARDS = 64
# Steps after which ``crash_at`` can kill run_embed (tests): the Beam pipeline wrote the shards; the
# manifest is written (the version is finished) but ``current`` not yet flipped.
EMBED_STEPS = ("pipeline", "manifest")
BAD_VECTOR = "bad vector"


@dataclass(frozen=True)
class EmbedConfig:
    """The embed job. Empty paths default to the run directory's layout (``core.rundir``).

    run                 run directory (supplies the defaults below)
    item_tower          exported item-tower SavedModel; default <run>/model/item_tower
    items               items Parquet file, directory or glob; default <run>/data/items.parquet
    output              vectors root; default <run>/vectors
    version             name of the new version; default the UTC time (YYYYMMDDTHHMMSSZ)
    model_version       if set, the item tower must carry exactly this version (else: whatever it carries)
    num_shards          vector shards (= parallel index-add tasks later); 0 = one per 131072 rows (<= 64)
    batch_size          rows per model call (consecutive rows of one read unit); 4096 measured ~1.45x the
                        tower throughput of 1024 on this CPU (the size changes vectors in the last bits)
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
    batch_size: int = 4096
    rows_per_read: int = DEFAULT_ROWS_PER_UNIT
    max_dead_letter_share: float = 0.01
    item_id_pattern: str = DEFAULT_ID_PATTERN
    publish: bool = True
    keep_versions: int = 3

    def __post_init__(self):
        if not 0.0 <= self.max_dead_letter_share <= 1.0:
            raise ValueError(f"max_dead_letter_share must be in [0, 1], got {self.max_dead_letter_share}")
        for name in ("num_shards",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = automatic), got {getattr(self, name)}")
        for name in ("batch_size", "rows_per_read", "keep_versions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.version:
            check_version_name(self.version)

    def resolved(self) -> "EmbedConfig":
        """A copy with every defaulted path filled in from ``run``."""
        if not (self.run or (self.item_tower and self.items and self.output)):
            raise ValueError("the embed job needs run=<run directory> (--run), or all of item_tower, items and "
                             "output (--item-tower, --items, --output)")
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
    directory: Path | str       # local directory, or the version's URL on object storage
    count: int
    dim: int
    model_version: str
    source_rows: int
    dead_letter_count: int
    dead_letter_path: Path | str | None
    published: bool
    seconds: float


class DeadLetterShareExceeded(ValueError):
    """Too many item rows failed validation; nothing was published."""


class BadVectors(ValueError):
    """The item tower produced NaN/inf or all-zero vectors; nothing was published."""


# --------------------------------------------------------------------------------------------
# Transforms


class EmbedItems(beam.PTransform):
    """``ItemBlock``s -> {"embedded": ``PredictionResult`` with ``example`` an ``ItemBatch`` (the block's good
    rows) and ``inference`` float32 (m, D), "dead_letter": dict records}. One block = one model call.
    ``duplicates``: positions of repeated ids (see item_source)."""

    def __init__(self, handler: ItemBatchHandler, validator: RowValidator, duplicates: dict[int, int] | None = None):
        super().__init__()
        self._handler = handler
        self._validator = validator
        self._duplicates = duplicates or {}

    def expand(self, blocks):
        checked = blocks | "ValidateBlocks" >> beam.ParDo(
            ValidateItemBlocks(self._validator, self._duplicates)).with_outputs(DEAD_LETTER, main="valid")
        embedded = checked.valid | "RunInference" >> RunInference(self._handler.with_no_batching())
        return {"embedded": embedded, DEAD_LETTER: checked[DEAD_LETTER]}


class GroupIntoShards(beam.PTransform):
    """``PredictionResult(ItemBatch, vectors)`` -> ``(shard, VectorPiece)`` with the shard's items sorted by
    position; shard = position * num_shards // num_rows.

    Each model batch is cut into its (usually one) shard pieces of arrays, so the shuffle moves a few
    buffers per batch, not one object per item (``VectorPieceCoder``).
    """

    def __init__(self, num_rows: int, num_shards: int):
        super().__init__()
        self._num_rows = num_rows
        self._num_shards = num_shards

    def expand(self, embedded):
        return (embedded
                | "SplitByShard" >> beam.FlatMap(split_by_shard, self._num_rows, self._num_shards
                                                 ).with_output_types(Tuple[int, VectorPiece])
                | "GroupShards" >> beam.GroupByKey()
                | "ConcatShard" >> beam.MapTuple(lambda shard, pieces: (shard, VectorPiece.concat_sorted(pieces))))


@dataclass(frozen=True, eq=False)
class VectorPiece:
    """Embedded items of one shard: positions int64 (m,), item_ids Arrow string array (m,), vectors float32 (m, D)."""

    positions: np.ndarray
    item_ids: pa.Array
    vectors: np.ndarray

    @staticmethod
    def concat_sorted(pieces: Iterable["VectorPiece"]) -> "VectorPiece":
        """Pieces of one shard -> one piece sorted by position."""
        pieces = list(pieces)
        positions = np.concatenate([p.positions for p in pieces])
        order = np.argsort(positions, kind="stable")
        ids = pa.concat_arrays([p.item_ids for p in pieces]).take(pa.array(order))
        return VectorPiece(positions[order], ids, np.concatenate([p.vectors for p in pieces])[order])


class VectorPieceCoder(beam.coders.Coder):
    """Beam coder for ``VectorPiece``: pickle of the three arrays (Arrow and NumPy pickle their buffers
    whole, no per-item work); ``estimate_size`` adds up byte counts instead of encoding."""

    def encode(self, piece: VectorPiece) -> bytes:
        return pickle.dumps((piece.positions, piece.item_ids, piece.vectors), pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> VectorPiece:
        return VectorPiece(*pickle.loads(encoded))

    def estimate_size(self, piece: VectorPiece) -> int:
        return piece.positions.nbytes + piece.item_ids.nbytes + piece.vectors.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return VectorPiece


beam.coders.registry.register_coder(VectorPiece, VectorPieceCoder)


def split_by_shard(result, num_rows: int, num_shards: int) -> Iterator[tuple[int, VectorPiece]]:
    """``PredictionResult(ItemBatch, vectors)`` -> ``(shard, VectorPiece)`` per shard the batch touches."""
    batch = result.example
    positions = batch.positions
    vectors = np.asarray(result.inference, dtype=np.float32)
    ids = pa.array(batch.item_ids, type=pa.string())
    shards = positions * num_shards // num_rows
    if shards[0] == shards[-1]:  # a batch is consecutive rows: one shard unless it straddles a boundary
        yield int(shards[0]), VectorPiece(positions, ids, vectors)
        return
    for shard in np.unique(shards).tolist():
        mask = shards == shard
        yield shard, VectorPiece(positions[mask], ids.filter(pa.array(mask)), vectors[mask])


class WriteShard(beam.DoFn):
    """``(shard, VectorPiece)`` -> the shard's Parquet file in ``directory``.

    Vectors with NaN/inf or all zeros are not written: they go to the ``DEAD_LETTER`` output with
    reason "bad vector: ..." (the driver then fails the job, see ``run_embed``).
    """

    def __init__(self, directory: str, num_shards: int, model_version: str):
        self._directory = directory
        self._num_shards = num_shards
        self._model_version = model_version

    def process(self, element):
        shard, piece = element
        vectors, ids = piece.vectors, piece.item_ids
        finite = np.isfinite(vectors).all(axis=1)
        good = finite & (vectors != 0).any(axis=1)
        for i in np.flatnonzero(~good):
            what = "NaN/inf" if not finite[i] else "an all-zero vector"
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, {
                "row": int(piece.positions[i]), "item_id": ids[int(i)].as_py(), "source": "item tower output",
                "values": "", "reason": f"{BAD_VECTOR}: the item tower output {what} for this item"})
        if not good.all():
            ids, vectors = ids.filter(pa.array(good)), vectors[good]
        write_shard(self._directory, shard, self._num_shards, ids, vectors, self._model_version)
        yield shard


class WriteDeadLetters(beam.DoFn):
    """Dead-letter records -> ``<directory>/dead_letter-<uuid>.jsonl``, one file per bundle that has any
    (written atomically in finish_bundle; a retried bundle writes a new file and its failed attempt's
    file never appears). The driver merges them sorted by row (``_collect_dead_letters``). Dead letters
    are usually few, so this stays a plain DoFn: ``WriteToText`` would add a dozen transforms (about
    half a second) to every run."""

    def __init__(self, directory: str):
        self._directory = directory
        self._lines: list[str] = []

    def start_bundle(self):
        self._lines = []

    def process(self, record: dict):
        self._lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
        return ()

    def finish_bundle(self):
        if self._lines:
            name = f"{DEAD_LETTER}-{uuid.uuid4().hex}.jsonl"
            data = ("\n".join(self._lines) + "\n").encode("utf-8")
            open_storage(self._directory).write_bytes(name, data)  # whole objects (or files) appear atomically
            self._lines = []


def auto_num_shards(num_rows: int) -> int:
    return max(1, min(MAX_AUTO_SHARDS, -(-num_rows // ROWS_PER_AUTO_SHARD)))


def build_embed_pipeline(pipeline: beam.Pipeline, source: ItemSource, handler: ItemBatchHandler,
                         validator: RowValidator, staging: str, num_shards: int, model_version: str,
                         batch_size: int) -> None:
    """Add the embed transforms to ``pipeline`` (outputs go to ``staging``)."""
    rows = (pipeline
            | "PlanReads" >> beam.Create(list(source.units))
            | "SpreadReads" >> beam.Reshuffle()
            | "ReadBlocks" >> beam.ParDo(ReadItemBlocks(validator.features, batch_size)))
    out = rows | "Embed" >> EmbedItems(handler, validator, source.duplicates)
    written = (out["embedded"]
               | "GroupIntoShards" >> GroupIntoShards(source.num_rows, num_shards)
               | "WriteShards" >> beam.ParDo(WriteShard(staging, num_shards, model_version)).with_outputs(
                   DEAD_LETTER, main="shards"))
    ((out[DEAD_LETTER], written[DEAD_LETTER])
     | "AllDeadLetters" >> beam.Flatten()
     | "WriteDeadLetters" >> beam.ParDo(WriteDeadLetters(staging)))


# --------------------------------------------------------------------------------------------
# Driver


def run_embed(config: EmbedConfig, pipeline_args: Sequence[str] | None = None, *,
              crash_at: str | None = None, lease: Lease | None = None) -> EmbedResult:
    """Run the embed job; returns the finished version (published unless ``config.publish`` is False).

    pipeline_args: Beam options, e.g. ``["--runner", "DirectRunner"]`` (the default runner). With a
    remote runner, ``run``/``output`` must be on storage both this process and the workers can write
    (e.g. a shared mount), since shards are written by workers and the manifest by this process.
    lease: the output root's job lease when the caller holds it (the rebuild); else it is taken here.
    Raises ``DeadLetterShareExceeded`` / ``BadVectors`` (both ``ValueError``) and publishes nothing
    when the rows or the vectors are not good enough; the dead letters are kept for inspection.
    """
    check_crash_at(crash_at, EMBED_STEPS)
    t0 = time.perf_counter()
    cfg = config.resolved()
    if lease is not None:
        return _embed_locked(cfg, lease.root, pipeline_args, crash_at, t0)
    root = VersionedRoot(cfg.output)
    with root.lock("the embed job"):
        return _embed_locked(cfg, root, pipeline_args, crash_at, t0)


def _embed_locked(cfg: EmbedConfig, root: VersionedRoot, pipeline_args, crash_at, t0: float) -> EmbedResult:
    version = cfg.version or new_version(root)
    tower = read_item_tower_info(cfg.item_tower)  # verifies the export's manifest; no TensorFlow here
    model_version = tower.model_version
    if cfg.model_version:
        require_same_model(cfg.model_version, model_version, expected_from="the requested model_version",
                           found_from=f"the item tower {cfg.item_tower}",
                           fix="export that model, or drop model_version")
    validator = RowValidator(tower.features, cfg.item_id_pattern)
    source = plan_item_source(cfg.items, cfg.rows_per_read)
    _check_columns(source, [f.name for f in validator.features], cfg.items)
    num_shards = cfg.num_shards or auto_num_shards(source.num_rows)
    handler = ItemBatchHandler(cfg.item_tower, model_version)
    options = pipeline_options(pipeline_args)
    log.info("embedding %d item rows from %s with %s (model %s) into %s shards on %s", source.num_rows,
             cfg.items, cfg.item_tower, model_version, num_shards, runner_name(options))
    stage = root.stage(version)
    # where workers write: the local directory, or the version's URL on object storage (no shared disk needed)
    staging = stage.path if stage.path is not None else stage.storage.url
    try:
        with beam.Pipeline(options=options) as pipeline:
            build_embed_pipeline(pipeline, source, handler, validator, str(staging), num_shards, model_version,
                                 cfg.batch_size)
        crash_point("pipeline", crash_at)
        dead_key, dead_count, reasons = _collect_dead_letters(stage.storage, root.storage, version)
        dead_path = _location(root.storage, dead_key)
        _check_dead_letters(dead_count, reasons, source.num_rows, cfg, dead_path)
        _fill_empty_shards(stage.storage, str(staging), num_shards, model_version)
        manifest = finalize_vectors(staging, model_version, version, expected_count=source.num_rows - dead_count,
                                    extra_manifest=_embed_manifest_fields(cfg, source.num_rows, dead_count, reasons,
                                                                          dead_key))
        root.finish(stage)
    except InjectedCrash:
        raise  # like a killed job: the unfinished version stays behind; the next job's lease removes it
    except BaseException:
        stage.abandon()
        raise
    crash_point("manifest", crash_at)
    if cfg.publish:
        root.publish(version)
        prune_versions(root, cfg.keep_versions)
    return EmbedResult(version, staging, manifest["count"], manifest["dim"], model_version, source.num_rows,
                       dead_count, dead_path, cfg.publish, time.perf_counter() - t0)


def _embed_manifest_fields(cfg: EmbedConfig, source_rows: int, dead_count: int, reasons: Counter,
                           dead_key: str | None) -> dict:
    """What the vectors manifest records about this run besides the vectors: the row accounting
    (count = source_rows - dead_letter_count) and the batch size (vectors depend on it in the last bits)."""
    return {"source_rows": source_rows, "dead_letter_count": dead_count,
            "dead_letter_reasons": dict(sorted(reasons.items())),
            "dead_letter_file": dead_key,
            "batch_size": cfg.batch_size}


def _check_columns(source: ItemSource, feature_names: Iterable[str], items: str) -> None:
    missing = [f for f in feature_names if f not in source.columns]
    if missing:
        raise ValueError(
            f"{items}: no file has the column(s) {missing} that the item tower takes (the table has "
            f"{list(source.columns)}); add them to the items table, or embed with the item tower exported "
            "for this table")


def _collect_dead_letters(staging: Storage, root: Storage, version: str) -> tuple[str | None, int, Counter]:
    """Merge the workers' dead-letter objects of the version being written (sorted by row) into
    ``dead_letter/<version>.jsonl`` of the root and remove them from the version; count the reasons.
    Returns (that key or None, count, reasons). Works on a local directory and on object storage alike."""
    records = []
    parts = [k for k in staging.list() if "/" not in k and k.startswith(f"{DEAD_LETTER}-") and k.endswith(".jsonl")]
    for part in parts:
        text = staging.read_bytes(part).decode("utf-8")
        records.extend(json.loads(line) for line in text.splitlines() if line.strip())
        staging.delete(part)
    if not records:
        return None, 0, Counter()
    # A bundle retried after writing its file would repeat its records: keep one of each.
    records = list({(r["row"], r["reason"]): r for r in records}.values())
    records.sort(key=lambda r: (r["row"], r["reason"]))
    reasons = Counter(r["reason"].split(":")[0] for r in records)
    key = f"{DEAD_LETTER_DIR}/{version}.jsonl"
    root.write_bytes(key, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                  for r in records).encode("utf-8"))
    return key, len(records), reasons


def _location(storage: Storage, key: str | None) -> Path | str | None:
    """The local path of ``key`` (local storage) or its URL (object storage), for results and messages."""
    if key is None:
        return None
    local = storage.local_path(key)
    return local if local is not None else join_url(storage.url, key)


def _check_dead_letters(count: int, reasons: Counter, num_rows: int, cfg: EmbedConfig, path) -> None:
    bad_vectors = reasons.get(BAD_VECTOR, 0)
    if bad_vectors:
        raise BadVectors(
            f"the item tower produced NaN/inf or all-zero vectors for {bad_vectors} item(s) (listed with reason "
            f"{BAD_VECTOR!r} in {path}); the index cannot serve them. Check the exported item tower "
            f"{cfg.item_tower} and those items' features; nothing was published")
    share = count / num_rows
    if share > cfg.max_dead_letter_share:
        top = "; ".join(f"{r} ({c})" for r, c in reasons.most_common(5))
        raise DeadLetterShareExceeded(
            f"{count} of {num_rows} item rows ({share:.2%}) failed validation, above "
            f"max_dead_letter_share={cfg.max_dead_letter_share:g}; reasons: {top}. The rows and reasons are "
            f"in {path}. Fix those rows in {cfg.items} (or raise max_dead_letter_share); nothing was published")
    if count == num_rows:
        raise ValueError(f"no item could be embedded: all {num_rows} rows of {cfg.items} were dead-lettered "
                         f"(see {path}); nothing was published")


def _fill_empty_shards(staging: Storage, target: str, num_shards: int, model_version: str) -> None:
    """Shards that received no rows still get a (0-row) file, so the set part-i-of-N is complete."""
    for s in range(num_shards):
        if not staging.exists(shard_name(s, num_shards)):
            write_shard(target, s, num_shards, [], np.zeros((0, 0), np.float32), model_version)


def prune_versions(root: VersionedRoot | str | Path, keep: int, protect=()) -> list[str]:
    """``VersionedRoot.prune`` plus the dead-letter files of versions older than every kept one (in version
    order, ``core.lifecycle.version_sort_key``: ``v9`` is older than ``v10``)."""
    root = root if isinstance(root, VersionedRoot) else VersionedRoot(root)
    removed = root.prune(keep, protect)
    kept = root.versions()
    if kept:
        oldest = version_sort_key(kept[0])
        for key in root.storage.list(DEAD_LETTER_DIR):  # a local directory or object storage alike
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".jsonl") and version_sort_key(name[: -len(".jsonl")]) < oldest:
                root.storage.delete(key)
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


def config_from_args(args: argparse.Namespace) -> EmbedConfig:
    """The EmbedConfig of the flags given (typed and unknown-key checked by ``core.strict``)."""
    names = [f.name for f in dataclasses.fields(EmbedConfig)]
    return strict.from_dict(EmbedConfig, {k: getattr(args, k) for k in names if getattr(args, k) is not None})


def main(argv: Sequence[str] | None = None) -> int:
    from core.cli import ArgumentParser, run_main

    parser = ArgumentParser(
        prog="python -m beam_jobs.embed_items",
        description="Embed the item catalogue with the exported item tower (Beam). Unknown flags are "
                    "passed to Beam, e.g. --runner DirectRunner --direct_running_mode multi_processing.")
    add_embed_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    return run_main(parser.prog, _embed_command, args, beam_args)


def _embed_command(args: argparse.Namespace, beam_args: list[str]) -> int:
    result = run_embed(config_from_args(args), beam_args)
    print(json.dumps(_result_dict(result), indent=2))
    return 0


def _result_dict(result: Any) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
