"""Running top-k over blocks and recall against an exact top-k "band", for indices searched piece by piece.

The bounded-memory rebuild (``beam_jobs.sharded_rebuild``) never holds every vector nor the whole index: the
exact top-k of the query set is accumulated over vector blocks, and a sharded index's answers over its shards,
with ``merge_top_k`` (order: score descending, then row ascending, as ``ItemIndex`` / ``ShardedItemIndex``).

Recall without the vectors: ``indexing.recall.per_query_recall`` counts a returned row as found when its exact
score is >= the k-th exact score minus ``TIE_TOLERANCE``. Every such row is either in the exact top k or tied
with the k-th within the tolerance, so an exact top-(k + extra) kept per query (the *band*) holds all of them
unless more than ``extra`` rows tie with the k-th: ``band_recall`` then counts the rows outside the band as
misses (a lower bound) and reports how many queries that happened to (``overflow``).
"""
from __future__ import annotations

import numpy as np

from indexing.recall import TIE_TOLERANCE

_NO_ROW = np.iinfo(np.int64).max


def merge_top_k(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray, rows_b: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k of the union of two candidate lists per query (m, ka) + (m, kb), ordered by (score desc,
    row asc); rows -1 (none) sort last with score -inf. Returns (scores float32 (m, k), rows int64 (m, k))."""
    scores = np.concatenate([scores_a, scores_b], axis=1).astype(np.float32, copy=False)
    rows = np.concatenate([rows_a, rows_b], axis=1).astype(np.int64, copy=False)
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((np.where(rows < 0, _NO_ROW, rows), -scores.astype(np.float64)), axis=-1)
    m, width = rows.shape
    out_scores = np.full((m, k), -np.inf, dtype=np.float32)
    out_rows = np.full((m, k), -1, dtype=np.int64)
    keep = order[:, :k]
    out_scores[:, :keep.shape[1]] = np.take_along_axis(scores, keep, axis=1)
    out_rows[:, :keep.shape[1]] = np.take_along_axis(rows, keep, axis=1)
    return out_scores, out_rows


def empty_top_k(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A running top-k holding nothing: scores -inf, rows -1."""
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


def band_recall(found_rows: np.ndarray, band_scores: np.ndarray, band_rows: np.ndarray, k: int,
                n_items: int) -> tuple[np.ndarray, int]:
    """(per-query recall@k float64 (m,), number of queries whose band may be incomplete).

    found_rows int64 (m, >=k) an index's answers; band_scores / band_rows (m, k + extra) the exact top-(k +
    extra) in (score desc, row asc) order. Equals ``indexing.recall.per_query_recall`` whenever the band holds
    every row tied with the k-th exact score (module docstring)."""
    kk = min(k, n_items)
    if kk == 0 or len(found_rows) == 0:
        raise ValueError(f"recall needs at least one query and one item, got {len(found_rows)} and {n_items}")
    if band_rows.shape[1] < kk:
        raise ValueError(f"the exact band holds {band_rows.shape[1]} rows per query, fewer than k={kk}")
    m = len(found_rows)
    kth = band_scores[:, kk - 1:kk]
    in_band = (band_rows >= 0) & (band_scores >= kth - TIE_TOLERANCE)
    overflow = int((in_band[:, -1] & (band_rows.shape[1] > kk)).sum()) if band_rows.shape[1] > kk else 0
    qid = np.repeat(np.arange(m, dtype=np.int64), band_rows.shape[1])
    stride = np.int64(max(n_items, 1))
    band_keys = np.sort((qid * stride + np.maximum(band_rows, 0).ravel())[in_band.ravel()])
    rows = np.asarray(found_rows)[:, :kk].astype(np.int64)
    valid = rows >= 0
    keys = np.repeat(np.arange(m, dtype=np.int64), kk) * stride + np.maximum(rows, 0).ravel()
    pos = np.minimum(np.searchsorted(band_keys, keys), max(len(band_keys) - 1, 0))
    hit = (band_keys[pos] == keys).reshape(m, kk) & valid if len(band_keys) else np.zeros_like(valid)
    return np.minimum(hit.sum(axis=1), kk) / kk, overflow
