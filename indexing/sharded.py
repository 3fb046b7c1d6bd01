"""Sharded index build for the nightly Beam rebuild: train once, add shards in parallel, merge once.

    trained = train_empty(sample_vectors, spec, n_items=n)            # one worker, bytes out
    blobs   = [add_shard(trained, vectors_s, rows_s) for each shard]   # many workers, bytes in/out
    index   = merge_shards(trained, blobs)                             # one worker -> faiss.Index
    item_index = ItemIndex.from_faiss(index, item_ids, spec, model_version,
                                      factory=spec.resolve_factory(n, dim))
    item_index.measure_recall(vectors)

Everything crossing workers is plain ``bytes`` (``faiss.serialize_index``), so Beam can pickle it.

IVF family (IVF-Flat, IVF-PQ, IVF-SQ, with or without a pre-transform): ``add_shard`` assigns and encodes
its vectors (the costly part) with ``add_with_ids(rows)``; ``merge_shards`` moves the inverted lists
together with ``IndexIVF.merge_from`` (ids kept). Shards are merged in order of their smallest row, so
the result does not depend on the order Beam delivers them in, and when shards are contiguous row ranges
the lists are identical to a single-process build (same results, including tie order).

IVF with an exact re-ranking layer (``IndexRefine``, factory "...,RFlat" / "...,Refine(Flat)", e.g.
"IVF4096,PQ32x4fs,RFlat"): ``add_shard`` adds to the IVF base with ids = rows as above and packs the shard's
raw vectors with their rows (``IndexIDMap2`` over ``IndexFlatIP``) as the refine part; ``merge_shards``
merges the IVF bases in first-row order and appends the raw vectors in row order to the refine index, which
addresses vectors by position = row. With contiguous shards this too equals a single-process build byte for byte.

Flat and HNSW cannot be merged this way: an HNSW graph has no merge operation, and a Flat index addresses
items by position. For them ``add_shard`` only packs the shard's raw vectors with their rows (an
``IndexIDMap2`` over ``IndexFlatIP``) and ``merge_shards`` adds all vectors in row order to the trained
index in one process. That is exact and deterministic for Flat; for HNSW it means the whole graph is
built by the merging worker (no parallel speed-up; FAISS's multi-threaded HNSW add is not bit-for-bit
reproducible). Use an IVF factory (the ``auto`` choice above FLAT_MAX_ITEMS) to get a parallel rebuild.

``merge_shards`` checks that every shard came from the same trained index and that the ids are exactly
the rows 0..n-1 once each, so a shard that Beam retried and delivered twice, or one that went missing,
is refused instead of silently corrupting the index.
"""
from __future__ import annotations

from typing import Iterable

import faiss
import numpy as np

from indexing import faiss_index as fi
from indexing.arrays import as_float32_matrix
from indexing.quantizer import train_best
from indexing.spec import IndexSpec
from indexing.tuning import tuning_queries


def _as_vectors(x, name: str, dim: int | None = None) -> np.ndarray:
    return as_float32_matrix(x, name, dim)


def train_empty(sample_vectors, spec: IndexSpec, n_items: int | None = None, *, queries=None,
                query_source: str = "queries") -> bytes:
    """Serialised trained, empty index for the catalogue (see ``train_empty_with_report``)."""
    return train_empty_with_report(sample_vectors, spec, n_items, queries=queries, query_source=query_source)[0]


def train_empty_with_report(sample_vectors, spec: IndexSpec, n_items: int | None = None, *, queries=None,
                            query_source: str = "queries") -> tuple[bytes, dict | None]:
    """(serialised trained, empty index, how its quantizer was chosen or None) for the catalogue.

    sample_vectors float32 (s, d): vectors to train on (subsampled to spec.train_size with spec.seed).
    n_items: catalogue size; required when spec.factory == "auto" (the choice depends on it).
    queries float32 (m, d): the query set (as for ``ItemIndex.build``); its tuning part chooses among
    ``spec.quantizer_restarts`` quantizers (``indexing.quantizer``); None = held-out sample vectors. Given the
    same vectors and queries this trains exactly what ``ItemIndex.build`` trains.
    """
    vectors = _as_vectors(sample_vectors, "sample_vectors")
    if spec.factory == "auto" and n_items is None:
        raise ValueError("IndexSpec.factory='auto' depends on the catalogue size: pass n_items=<number of items>")
    factory = spec.resolve_factory(int(n_items or len(vectors)), vectors.shape[1])
    if queries is not None:
        queries = _as_vectors(queries, "queries", vectors.shape[1])
    tune_q, tune_source = tuning_queries(vectors, spec, queries, query_source)
    index, report = train_best(factory, vectors, spec, tune_q, tune_source)
    return fi.serialize(index), report


def _is_ivf(index: faiss.Index) -> bool:
    return faiss.try_extract_index_ivf(index) is not None


def _refine(index: faiss.Index):
    """The downcast IndexRefine when ``index`` is one (IVF base + refine layer), else None."""
    down = faiss.downcast_index(index)
    return down if isinstance(down, faiss.IndexRefine) else None


def _id_packed(vectors: np.ndarray, rows: np.ndarray, dim: int) -> faiss.Index:
    raw = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if len(rows):
        raw.add_with_ids(vectors, rows)
    return raw


def add_shard(trained: bytes, vectors, rows) -> bytes:
    """Add one shard. vectors float32 (s, d); rows int64 (s,) = their catalogue rows. Returns bytes."""
    index = fi.deserialize(trained, "trained index")
    vectors = _as_vectors(vectors, "vectors", index.d)
    rows = np.asarray(rows)
    if rows.ndim != 1 or len(rows) != len(vectors) or (len(rows) and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"rows must be 1-D ints, one per vector ({len(vectors)}), got dtype {rows.dtype} "
                         f"shape {rows.shape}")
    rows = rows.astype(np.int64)
    if len(rows) and rows.min() < 0:
        raise ValueError(f"rows must be catalogue rows >= 0, got {int(rows.min())}")
    if index.ntotal:
        raise ValueError(f"trained index already holds {index.ntotal} vectors; pass the output of train_empty")
    refine = _refine(index)
    if refine is not None and _is_ivf(refine.base_index):
        base = faiss.downcast_index(refine.base_index)
        if len(rows):
            base.add_with_ids(vectors, rows)
        raw = _id_packed(vectors, rows, index.d)
        return fi.serialize(faiss.IndexRefine(base, raw))  # base and raw stay referenced until serialised
    if _is_ivf(index):
        if len(rows):
            index.add_with_ids(vectors, rows)
        return fi.serialize(index)
    return fi.serialize(_id_packed(vectors, rows, index.d))


def _ivf_fingerprint(index: faiss.Index) -> tuple:
    """What must match between shards of one trained IVF index: type, nlist, centroids (and PQ codebooks)."""
    ivf = faiss.extract_index_ivf(index)
    down = faiss.downcast_index(ivf)
    parts = [type(down).__name__, ivf.nlist, ivf.code_size,
             ivf.quantizer.reconstruct_n(0, ivf.nlist).tobytes()]
    if hasattr(down, "pq"):
        parts.append(faiss.vector_to_array(down.pq.centroids).tobytes())
    return tuple(parts)


def merge_shards(trained: bytes, shard_blobs: Iterable[bytes], n_items: int | None = None) -> faiss.Index:
    """One CPU FAISS index holding every shard, ids = rows 0..n-1 (see the module docstring).

    Pass ``n_items`` (the catalogue size) so that missing trailing shards are caught here too.
    """
    merged = fi.deserialize(trained, "trained index")
    shards = [fi.deserialize(blob, f"shard {i}") for i, blob in enumerate(shard_blobs)]
    if not shards:
        raise ValueError("merge_shards got no shards")
    total = sum(int(s.ntotal) for s in shards)
    if n_items is not None and total != n_items:
        raise ValueError(f"shards hold {total} vectors but the catalogue has {n_items} items; a shard is "
                         "missing or was delivered twice")
    refine = _refine(merged)
    if refine is not None and _is_ivf(refine.base_index):
        _merge_refine(refine, shards)
        return merged  # the object that owns the C++ index (``refine`` is a borrowed downcast view of it)
    if _is_ivf(merged):
        return _merge_ivf(merged, shards)
    return _merge_raw(merged, shards)


def _merge_refine(merged, shards: list) -> None:
    """IVF bases merged like ``_merge_ivf``; the shards' raw vectors appended to the refine index in row order."""
    bases, raws = [], []
    for i, shard in enumerate(shards):
        refine = _refine(shard)
        if refine is None:
            raise ValueError(f"shard {i} is not an IVF + refine shard from add_shard; rebuild every shard from the "
                             "same train_empty output")
        bases.append(refine.base_index)
        raws.append(refine.refine_index)
    base = _merge_ivf(merged.base_index, bases)
    rows, vectors = _raw_rows_and_vectors(raws, merged.d)
    merged.refine_index.add(vectors[np.argsort(rows)])
    merged.ntotal = base.ntotal


def _merge_ivf(merged: faiss.Index, shards: list) -> faiss.Index:
    expected = _ivf_fingerprint(merged)
    ids = []
    for i, shard in enumerate(shards):
        if not _is_ivf(shard) or _ivf_fingerprint(shard) != expected:
            raise ValueError(f"shard {i} was not built from this trained index (different type, lists or "
                             "centroids); rebuild every shard from the same train_empty output")
        ids.append(fi.ivf_ids(shard))
    fi.check_rows_are_permutation(np.concatenate(ids), "merged shards")
    first_row = [int(x.min()) if len(x) else np.iinfo(np.int64).max for x in ids]
    target = faiss.extract_index_ivf(merged)
    for i in np.argsort(first_row, kind="stable"):
        target.merge_from(faiss.extract_index_ivf(shards[i]), 0)
    merged.ntotal = target.ntotal  # keeps wrappers (e.g. a pre-transform) in step with the lists
    fi.zero_block_padding(merged)
    return merged


def _raw_rows_and_vectors(shards: list, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows int64 (n,) and vectors float32 (n, d) of add_shard's raw-vector shards, checked to be 0..n-1 once."""
    rows, vectors = [], []
    for i, shard in enumerate(shards):
        shard = faiss.downcast_index(shard)
        if not isinstance(shard, faiss.IndexIDMap2) or shard.d != dim:
            raise ValueError(f"shard {i} is not a raw-vector shard of dimension {dim} from add_shard; "
                             "rebuild every shard from the same train_empty output")
        if shard.ntotal:
            rows.append(faiss.vector_to_array(shard.id_map).astype(np.int64))
            vectors.append(faiss.downcast_index(shard.index).reconstruct_n(0, shard.ntotal))
    if not rows:
        raise ValueError("merge_shards: every shard is empty; there is nothing to index")
    rows = np.concatenate(rows)
    fi.check_rows_are_permutation(rows, "merged shards")
    return rows, np.concatenate(vectors)


def _merge_raw(merged: faiss.Index, shards: list) -> faiss.Index:
    rows, vectors = _raw_rows_and_vectors(shards, merged.d)
    merged.add(vectors[np.argsort(rows)])
    return merged
