"""The bounded-memory rebuild: train on a streamed sample, add shards on the workers, publish N shards.

``beam_jobs.rebuild_index`` takes this path when ``RebuildConfig.shards`` resolves to more than one shard
(``plan_shards``: ``auto`` = sharded above ``auto_shard_items`` items). The driver never reads every vector
and never holds the whole index:

    sample    the training rows (``indexing.faiss_index.train_sample``: the rows a single-index build trains
              on) and, without a query set, the item-vector query rows, read file by file (``gather_rows``:
              one vectors Parquet file in memory at a time); ``indexing.sharded.train_empty_with_report`` on
              that sample (quantizer restarts as in ``indexing.quantizer``)
    add       Beam: one task per index shard (a contiguous row range, ``indexing.sharded_index.shard_bounds``);
              the worker reads its rows' vectors and item ids, adds them to a copy of the trained index and
              writes ``shard-<s>/index.faiss`` + ``item_ids.parquet`` into the job's scratch space
    exact     the driver streams the vectors once, file by file: the gate's vector checks
              (``indexing.gate.VectorChecks``) and the exact top-(k + k) of every query (``indexing.topk``:
              a running top-k per query; the extra k rows are the tie band recall needs)
    tune      the merged search (each shard searched for k, merged by (score desc, row asc), as
              ``ShardedItemIndex.search``) evaluated shard by shard: the smallest nprobe / ef_search on
              ``indexing.tuning.ladder`` whose recall lower bound reaches the target on the tuning queries;
              refine (compressed) indices tune (nprobe, k_factor) by the cost model of ``indexing.tuning``
    validate  recall of the merged search on the disjoint check queries + the gate's checks
    stage     shard files copied from scratch into ``index/<v>/shard-<s>/`` with their own manifests (sha256
              of each file), then the top manifest (``kind: sharded_item_index``, every shard with the sha256
              of its manifest, every file with its sha256), last; ``core.lifecycle`` flips ``current``

Memory: the driver holds the query set, 2k exact candidates per query, one vectors file at a time, the training
sample, and one index shard at a time (or all of them when they fit ``SHARD_CACHE_BYTES``). The result opens with
``indexing.sharded_index.load_any`` (serving, eval) and answers like ``ShardedItemIndex``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_jobs.beam_env import beam, pipeline_options
from core import artifacts
from core.storage import join_url, open_storage
from indexing import faiss_index as fi
from indexing import tuning as tn
from indexing.sharded import train_empty_with_report
from indexing.sharded_index import KIND as SHARDED_KIND
from indexing.sharded_index import SHARD_DIR, shard_bounds
from indexing.spec import IndexSpec
from indexing.store import IDS_FILE, INDEX_FILE
from indexing.store import KIND as SINGLE_KIND
from indexing.topk import band_recall, empty_top_k, merge_top_k
from core.strict import to_dict

log = logging.getLogger(__name__)

# auto: one index up to this many items (today's byte-identical single-index rebuild), shards above.
DEFAULT_AUTO_SHARD_ITEMS = 2_000_000
# Index shards the driver keeps loaded between tuning rounds when all of them together are at most this big;
# larger indices are loaded one shard at a time per round.
SHARD_CACHE_BYTES = 768 << 20
# Queries per exact-search block (block x rows scores in memory) and rows per exact-search block.
EXACT_ROWS = 1 << 18


# --------------------------------------------------------------------------------------------
# Reading the vectors artifact piece by piece


@dataclass(frozen=True)
class VectorFile:
    """One vectors Parquet file (``path``, a local path or URL) holding catalogue rows [first_row, first_row +
    count)."""

    path: str
    first_row: int
    count: int


def _read_file(path: str, columns: Sequence[str]) -> pa.Table:
    parent, name = str(path).rsplit("/", 1)
    with open_storage(parent).open_read(name) as stream:
        return pq.read_table(stream, columns=list(columns))


def _vectors_of(table: pa.Table, dim: int, where: str) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if vectors.size != len(column) * dim:
        raise ValueError(f"{where}: {len(column)} vectors / {vectors.size} floats, expected {len(column)} x {dim}; "
                         "the vectors artifact changed while the job ran")
    return vectors.reshape(len(column), dim)


def read_range(files: Sequence[VectorFile], start: int, stop: int, dim: int, *,
               with_ids: bool = False) -> tuple[pa.Array | None, np.ndarray]:
    """(item ids as an Arrow string array or None, vectors float32 (stop - start, dim)) of catalogue rows
    [start, stop), read from the files that hold them (one file in memory at a time besides the result)."""
    ids, vectors = [], np.empty((stop - start, dim), dtype=np.float32)
    for f in files:
        lo, hi = max(start, f.first_row), min(stop, f.first_row + f.count)
        if lo >= hi:
            continue
        table = _read_file(f.path, ["item_id", "vector"] if with_ids else ["vector"])
        if table.num_rows != f.count:
            raise ValueError(f"{f.path}: {table.num_rows} rows, expected {f.count}; the vectors artifact changed "
                             "while the job ran")
        part = table.slice(lo - f.first_row, hi - lo)
        vectors[lo - start:hi - start] = _vectors_of(part, dim, f.path)
        if with_ids:
            ids.append(part.column("item_id").combine_chunks())
        del table, part
    return (pa.concat_arrays(ids) if with_ids else None), vectors


def iter_blocks(files: Sequence[VectorFile], dim: int) -> Iterator[tuple[int, pa.Array, np.ndarray]]:
    """(first catalogue row, item ids, vectors float32) of each vectors file in catalogue order."""
    for f in files:
        table = _read_file(f.path, ["item_id", "vector"])
        if table.num_rows != f.count:
            raise ValueError(f"{f.path}: {table.num_rows} rows, expected {f.count}; the vectors artifact changed "
                             "while the job ran")
        yield f.first_row, table.column("item_id").combine_chunks(), _vectors_of(table, dim, f.path)


def gather_rows(files: Sequence[VectorFile], rows: np.ndarray, dim: int) -> np.ndarray:
    """vectors float32 (len(rows), dim) of the given catalogue rows (any order, repeats allowed), read file by
    file: only the rows asked for are kept."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), dim), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    for f in files:
        lo = np.searchsorted(sorted_rows, f.first_row, side="left")
        hi = np.searchsorted(sorted_rows, f.first_row + f.count, side="left")
        if lo == hi:
            continue
        vectors = _vectors_of(_read_file(f.path, ["vector"]), dim, f.path)
        out[order[lo:hi]] = vectors[sorted_rows[lo:hi] - f.first_row]
        del vectors
    if len(rows) and (sorted_rows[0] < 0 or sorted_rows[-1] >= sum(f.count for f in files)):
        raise ValueError(f"rows must be in 0..{sum(f.count for f in files) - 1}, got {int(sorted_rows[0])}.."
                         f"{int(sorted_rows[-1])}")
    return out


def item_query_rows(n: int, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray, str]:
    """(tuning rows, check rows, tuning source) of ``indexing.tuning.item_queries`` without materialising
    0..n-1: the same rows it samples."""
    check_rows = tn.sample_rows(n, spec.recall_queries, spec.seed)
    held = n - len(check_rows)
    if held < 2:
        return np.arange(n, dtype=np.int64), check_rows, tn.ITEM_ALL
    picks = tn.sample_rows(held, spec.tune_queries, [spec.seed, 1])  # positions among the held-out rows
    # the i-th row not in check_rows = i + (number of check rows <= that row)
    shifted = check_rows - np.arange(len(check_rows))
    tune_rows = picks + np.searchsorted(shifted, picks, side="right")
    return tune_rows.astype(np.int64), check_rows, tn.ITEM_HELD_OUT


# --------------------------------------------------------------------------------------------
# Planning


def plan_shards(n_items: int, shards, auto_shard_items: int) -> tuple[int, str]:
    """(number of index shards, why) for ``RebuildConfig.shards`` = "auto" or a positive int."""
    if shards == "auto":
        if n_items <= auto_shard_items:
            return 1, f"auto: {n_items} items <= auto_shard_items={auto_shard_items}, one index"
        count = max(2, math.ceil(n_items / auto_shard_items))
        return count, (f"auto: {n_items} items > auto_shard_items={auto_shard_items}, {count} shards of at most "
                       f"{auto_shard_items} items (the driver never holds every vector or the whole index)")
    if shards > n_items:
        raise ValueError(f"shards={shards} but the catalogue has only {n_items} items; every shard needs at least "
                         f"one item: use shards <= {n_items} or shards: auto")
    return shards, f"shards={shards} (configured)"


# --------------------------------------------------------------------------------------------
# Step: add the shards on the workers


@dataclass(frozen=True)
class IndexShardTask:
    """Build index shard ``index`` over catalogue rows [start, stop) from ``files``."""

    index: int
    start: int
    stop: int
    files: tuple


def shard_dir(index: int) -> str:
    return SHARD_DIR.format(index)


class AddIndexShard(beam.DoFn):
    """``IndexShardTask`` + trained index bytes (side input) -> ``<work_dir>/shard-<s>/index.faiss`` and
    ``item_ids.parquet`` (the shard's rows as local rows 0..count-1); yields the shard number."""

    def __init__(self, work_dir: str, dim: int):
        self._work_dir = work_dir
        self._dim = dim

    def process(self, task: IndexShardTask, trained: bytes):
        ids, vectors = read_range(task.files, task.start, task.stop, self._dim, with_ids=True)
        index = fi.deserialize(trained, "trained index")
        index.add(vectors)
        fi.zero_block_padding(index)
        del vectors
        storage = open_storage(self._work_dir)
        buffer = io.BytesIO()
        pq.write_table(pa.table({"item_id": ids.cast(pa.string())}), buffer)
        storage.write_bytes(f"{shard_dir(task.index)}/{IDS_FILE}", buffer.getvalue())
        del buffer, ids
        blob = fi.serialize(index)
        del index
        storage.write_bytes(f"{shard_dir(task.index)}/{INDEX_FILE}", blob)  # last: the shard is complete
        yield task.index


def add_index_shards_with_beam(tasks: Sequence[IndexShardTask], trained: bytes, dim: int, work_dir: str,
                               pipeline_args: Sequence[str] | None) -> None:
    options = pipeline_options(pipeline_args)
    with beam.Pipeline(options=options) as p:
        trained_pc = p | "TrainedIndex" >> beam.Create([trained])
        (p
         | "IndexShardTasks" >> beam.Create(list(tasks))
         | "SpreadShards" >> beam.Reshuffle()
         | "AddIndexShard" >> beam.ParDo(AddIndexShard(work_dir, dim), trained=beam.pvalue.AsSingleton(trained_pc)))
    storage = open_storage(work_dir)
    for task in tasks:
        for name in (INDEX_FILE, IDS_FILE):
            if not storage.exists(f"{shard_dir(task.index)}/{name}"):
                raise RuntimeError(f"the add step finished without writing "
                                   f"{join_url(work_dir, shard_dir(task.index) + '/' + name)} (shard {task.index} "
                                   f"of {len(tasks)}); rerun the rebuild")


# --------------------------------------------------------------------------------------------
# The merged search over shards loaded one at a time


class ShardSet:
    """The built shards in the job's scratch space, searched as ``ShardedItemIndex.search`` searches (each shard
    for k, local rows -> global rows, merged by (score desc, row asc)) while holding one shard at a time (all of
    them when they fit ``cache_bytes``)."""

    def __init__(self, work_dir: str, bounds: Sequence[tuple[int, int]], cache_bytes: int = SHARD_CACHE_BYTES):
        self._storage = open_storage(work_dir)
        self.bounds = list(bounds)
        self._cache: dict[int, faiss.Index] | None = None
        self.index_bytes = sum(self._storage.size(f"{shard_dir(s)}/{INDEX_FILE}") for s in range(len(self.bounds)))
        self._cacheable = self.index_bytes <= cache_bytes

    def _load(self, s: int) -> faiss.Index:
        if self._cache is not None and s in self._cache:
            return self._cache[s]
        index = fi.deserialize(self._storage.read_bytes(f"{shard_dir(s)}/{INDEX_FILE}"), f"index shard {s}")
        if self._cacheable:
            self._cache = self._cache or {}
            self._cache[s] = index
        return index

    def first(self) -> faiss.Index:
        return self._load(0)

    def search(self, queries: np.ndarray, k: int, settings: Sequence[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(scores (m, k), global rows (m, k))] of the merged search at each of ``settings`` (keyword dicts for
        ``indexing.faiss_index.apply_search_params``); each shard is loaded once for all of them."""
        m = len(queries)
        merged = [empty_top_k(m, k) for _ in settings]
        for s, (start, stop) in enumerate(self.bounds):
            index = self._load(s)
            kk = min(k, stop - start)
            for i, params in enumerate(settings):
                fi.apply_search_params(index, **params)
                scores, rows = index.search(queries, kk)
                rows = np.where(rows >= 0, rows + start, -1)
                merged[i] = merge_top_k(*merged[i], scores, rows, k)
            del index
        return merged


# --------------------------------------------------------------------------------------------
# Tuning and recall of the merged search against the streamed exact top-k


@dataclass
class ExactBand:
    """Exact top-(k + extra) per query, (score desc, row asc)."""

    scores: np.ndarray
    rows: np.ndarray


def stream_exact_and_check(files: Sequence[VectorFile], dim: int, query_sets: Sequence[np.ndarray], width: int,
                           checks) -> list[ExactBand]:
    """One pass over the vectors, file by file: ``checks.add`` on every block and the running exact top-``width``
    of each query set (``indexing.topk.merge_top_k``)."""
    bands = [empty_top_k(len(q), width) for q in query_sets]
    for first, ids, vectors in iter_blocks(files, dim):
        checks.add(vectors, ids)  # ids (Arrow) are converted only for the examples of a failed check
        finite = np.isfinite(vectors).all()
        for start in range(0, len(vectors), EXACT_ROWS):
            block = np.ascontiguousarray(vectors[start:start + EXACT_ROWS])
            if not finite:
                block = np.where(np.isfinite(block), block, 0).astype(np.float32)
            flat = faiss.IndexFlatIP(dim)
            flat.add(block)
            kk = min(width, len(block))
            for i, q in enumerate(query_sets):
                if len(q) == 0:
                    continue
                scores, rows = flat.search(q, kk)
                rows = np.where(rows >= 0, rows + first + start, -1)
                bands[i] = merge_top_k(*bands[i], scores, rows, width)
            del flat, block
        del vectors, ids
    return [ExactBand(*b) for b in bands]


def _recall_stats(per_query: np.ndarray) -> tuple[float, float]:
    mean = float(per_query.mean())
    se = float(per_query.std(ddof=1) / math.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
    return mean, mean - tn.Z * se


def tune_merged(shards: ShardSet, queries: np.ndarray, band: ExactBand, k: int, n: int, target: float,
                query_source: str, spec: IndexSpec) -> dict | None:
    """``indexing.tuning.tune`` for the merged search (same ladder, same lower-bound rule, the same (nprobe,
    k_factor) cost model for refine indices); returns the TuningResult dict with ``k_factor``, None when the
    index has no knob. Each evaluation loads every shard once for all the settings it needs."""
    first = shards.first()
    found = tn.knob(first, k)
    if found is None:
        return None
    param, values = found
    refine = fi.refine_of(first)
    overflow = [0]

    def evaluate(settings: list[dict]) -> list[tuple[float, float]]:
        out = []
        for _, rows in shards.search(queries, k, settings):
            per_query, over = band_recall(rows, band.scores, band.rows, k, n)
            overflow[0] = max(overflow[0], over)
            out.append(_recall_stats(per_query))
        return out

    if refine is not None and param == "nprobe":
        result = _tune_refine_merged(evaluate, first, n, values, k, target, query_source, len(queries),
                                     (spec.k_factor,) if spec.k_factor is not None else tn.K_FACTORS)
    else:
        curve, chosen = [], None
        for value in values:
            mean, bound = evaluate([{param: value}])[0]
            curve.append((value, round(mean, 6)))
            chosen = (value, mean, bound)
            if bound >= target:
                break
        value, mean, bound = chosen
        result = tn.TuningResult(param=param, value=value, target_recall=target, reached=bound >= target,
                                 recall=mean, recall_lower_bound=bound, margin_se=tn.Z, k=k,
                                 num_queries=len(queries), query_source=query_source, curve=tuple(curve))
    out = result.to_dict()
    out["merged_over_shards"] = len(shards.bounds)
    out["band_overflow_queries"] = overflow[0]
    return out


def _tune_refine_merged(evaluate, first, n, values, k, target, query_source, m, k_factors) -> tn.TuningResult:
    """``indexing.tuning.tune_refine_grid`` (the in-memory build's (nprobe, k_factor) rule: cost model, plateau
    stop) on the merged search. Evaluations are memoised per (k_factor, nprobe); a missing nprobe is evaluated
    for every k_factor still to be tried in one pass over the shards."""
    ivf = faiss.extract_index_ivf(first)
    per_probe = n / int(ivf.nlist) * int(ivf.code_size)
    memo: dict[tuple[int, int], tuple[float, float]] = {}
    active = tn.refine_k_factors(k_factors, k, n)

    def recall_at(kf: int, value: int) -> tuple[float, float]:
        if (kf, value) not in memo:
            todo = [f for f in active if f >= kf and (f, value) not in memo]
            for f, res in zip(todo, evaluate([{"nprobe": value, "k_factor": f} for f in todo])):
                memo[(f, value)] = res
        return memo[(kf, value)]

    return tn.tune_refine_grid(recall_at, values, active, k, target, per_probe, fi.bytes_per_item(first)["refine"],
                               query_source, m)


def initial_params(first: faiss.Index, spec: IndexSpec) -> dict:
    """The search params an ``ItemIndex`` built with ``spec`` starts with (explicit spec values, else defaults)."""
    return fi.apply_search_params(first, spec.nprobe, spec.ef_search, spec.k_factor)


# --------------------------------------------------------------------------------------------
# Stage: copy the shard files into the version, manifests last


def _copy_hashed(src, src_key: str, dst, dst_key: str) -> dict:
    h, size = hashlib.sha256(), 0
    with src.open_read(src_key) as fh, dst.open_write(dst_key) as out:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
            out.write(block)
    return {"sha256": h.hexdigest(), "bytes": size}


def _json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=artifacts._json_default) + "\n").encode()


def write_sharded_version(stage, work_dir: str, bounds: Sequence[tuple[int, int]], fields: dict,
                          shard_fields: dict) -> dict:
    """Write ``stage`` (a ``core.lifecycle.Stage``) as a sharded index: each ``shard-<s>/`` = the worker's
    index.faiss and item_ids.parquet + a single-index manifest (``indexing.store`` format: ``shard_fields`` plus
    count, shard, start and the files' sha256), then the top manifest (``fields`` + shards + files) last.
    The layout and manifests are those ``indexing.sharded_index.load_sharded`` reads and verifies."""
    work = open_storage(work_dir)
    listed, files = [], {}
    for s, (start, stop) in enumerate(bounds):
        d = shard_dir(s)
        shard_files = {}
        for name in (INDEX_FILE, IDS_FILE):
            shard_files[name] = _copy_hashed(work, f"{d}/{name}", stage.storage, f"{d}/{name}")
        manifest = {**shard_fields, "kind": SINGLE_KIND, "count": stop - start, "shard": s, "start": start,
                    "version": stage.version, "files": shard_files}
        data = _json_bytes(manifest)
        stage.storage.write_bytes(f"{d}/{artifacts.MANIFEST}", data)
        digest = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        listed.append({"path": d, "start": start, "count": stop - start, "manifest_sha256": digest["sha256"],
                       "index_sha256": shard_files[INDEX_FILE]["sha256"],
                       "index_bytes": shard_files[INDEX_FILE]["bytes"]})
        files.update({f"{d}/{name}": meta for name, meta in shard_files.items()})
        files[f"{d}/{artifacts.MANIFEST}"] = digest
    top = {**fields, "kind": SHARDED_KIND, "num_shards": len(bounds), "shards": listed,
           "files": dict(sorted(files.items())), "file_count": len(files), "version": stage.version}
    stage.storage.write_bytes(artifacts.MANIFEST, _json_bytes(top))  # last: the version is finished
    return top


def shard_manifest_fields(spec: IndexSpec, factory: str, dim: int, model_version: str, search_params: dict,
                          quantizer: dict | None) -> dict:
    """The fields every shard's manifest shares (``indexing.store.save_index``'s fields; recall and tuning are
    those of the merged search, recorded in the top manifest)."""
    return {"factory": factory, "metric": spec.metric, "dim": dim, "model_version": model_version,
            "spec": to_dict(spec), "search_params": search_params, "tuning": None, "quantizer": quantizer,
            "recall": None, "faiss_version": faiss.__version__}


def tasks_for(files: Sequence[VectorFile], bounds: Sequence[tuple[int, int]]) -> list[IndexShardTask]:
    out = []
    for s, (start, stop) in enumerate(bounds):
        mine = tuple(f for f in files if f.first_row < stop and f.first_row + f.count > start)
        out.append(IndexShardTask(s, start, stop, mine))
    return out


def spec_with_factory(spec: IndexSpec, factory: str) -> IndexSpec:
    return dataclasses.replace(spec, factory=factory)
