"""Recall of an (approximate) index against exact brute-force top-k.

recall@k = mean over queries of (found / min(k, n)), where a returned row is *found* when its exact
inner product with the query is >= the k-th best exact score minus ``TIE_TOLERANCE``. Without ties
this is the usual |ANN top-k ∩ exact top-k| / k; with ties (duplicate items) it does not punish an
index for returning a different member of a tie than brute force happened to.
"""
from __future__ import annotations

from typing import Protocol

import faiss
import numpy as np

TIE_TOLERANCE = 1e-5


class Searchable(Protocol):
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k: (scores float32 (m, k'), rows int64 (m, k')), k' = min(k, n)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vectors)))


def per_query_recall(found_rows: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
                     exact_scores: np.ndarray, k: int) -> np.ndarray:
    """recall@k of each query, float64 (m,): found_rows int64 (m, >=k; -1 = none), exact top-k scores
    (m, min(k, n)) from ``exact_top_k``."""
    kk = min(k, len(vectors))
    if kk == 0 or len(queries) == 0:
        raise ValueError(f"recall needs at least one query and one item, got {len(queries)} and {len(vectors)}")
    rows = np.asarray(found_rows)[:, :kk]
    valid = rows >= 0
    true_scores = np.einsum("md,mkd->mk", queries.astype(np.float32),
                            vectors[np.where(valid, rows, 0)].astype(np.float32))
    kth = exact_scores[:, kk - 1:kk]
    hits = valid & (true_scores >= kth - TIE_TOLERANCE)
    return np.minimum(hits.sum(axis=1), kk) / kk


def recall_from_results(found_rows: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
                        exact_scores: np.ndarray, k: int) -> float:
    """recall@k of ``found_rows`` int64 (m, >=k; -1 = none) given exact top-k scores (m, min(k, n))."""
    return float(per_query_recall(found_rows, vectors, queries, exact_scores, k).mean())


def recall_against_exact(index: Searchable, vectors: np.ndarray, queries: np.ndarray, k: int) -> float:
    """recall@k of ``index.search`` (an ItemIndex or any FAISS index) against exact top-k over ``vectors``.

    vectors float32 (n, d): exactly the vectors the index holds, in row order; queries float32 (m, d).
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact_scores, _ = exact_top_k(vectors, queries, k)
    _, rows = index.search(queries, min(k, len(vectors)))
    return recall_from_results(rows, vectors, queries, exact_scores, k)
