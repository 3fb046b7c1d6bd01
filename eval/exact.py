"""Top-K rankings for evaluation: exact brute force, or any index with the ``ItemIndex.search`` contract.

``exact_top_k`` scores query blocks against item tiles with one float32 GEMM per tile, writes -inf
over the tile's excluded (query, item) pairs, and folds the tile into per-query top-K heaps with
FAISS's C++ heap kernel (``faiss.ResultHeap``, OpenMP over queries) -- the same GEMM + heap scheme
``faiss.IndexFlatIP.search`` runs internally, plus exclusions. Peak memory is one
``query_block x item_block`` float32 tile plus the (m, K) results; the full score matrix is never
formed. Excluded items can never enter a heap (-inf never beats the heap's initial value), so an
excluded row is never returned; lists with fewer than K eligible items are padded with row -1 /
score -inf, as in the index contract. Within a list, equal scores are ordered by ascending row.
Which of several items tied *at the K-th score* make the list is decided by FAISS's heap: it is
deterministic (independent of the block sizes) but not "lowest row"; ``index_correct`` therefore
treats an index item tied with the K-th exact score as found.

``index_top_k`` asks an index for the same rankings with the same ``Exclusions`` (turned into the
per-query lists ``search(queries, k, exclude=...)`` takes) and checks the answer honours the contract.
``index_correct`` and ``count_by_slice`` measure the index's own loss against the exact lists;
``index_credit_by_slice`` does so per item slice, where a tie at the K-th score may straddle two slices.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import faiss
import numpy as np

from eval.cases import Exclusions, as_exclusions


class SearchableIndex(Protocol):
    """What ``index_top_k`` needs; ``indexing.item_index.ItemIndex`` satisfies it."""

    def search(self, queries: np.ndarray, k: int, exclude: Exclusions | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...


def as_vectors(x, what: str, dim: int | None = None) -> np.ndarray:
    """C-contiguous float32 (rows, d) copy/view of ``x``; rejects wrong rank, width, NaN/inf."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (rows, dim) float array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{what} must be float vectors, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{what} have dim {arr.shape[1]} but the item vectors have dim {dim}; query and item towers "
            "must come from the same model"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{what} contain NaN/inf in {len(bad)} row(s), e.g. rows {bad[:5].tolist()}")
    return arr


def exact_top_k(queries, items, k: int, exclude=None, *, query_block: int = 4096,
                item_block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product top-``k`` with per-query exclusions.

    queries  float (m, d);  items float (n, d)
    exclude  None, ``Exclusions``, a sparse (m, n) matrix, or m int arrays of item rows
    Returns (scores float32 (m, k), rows int64 (m, k)), best first, padded with -inf / -1.
    """
    items = as_vectors(items, "item vectors")
    queries = as_vectors(queries, "query vectors", items.shape[1])
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    m, n = len(queries), len(items)
    excl = as_exclusions(exclude, m, n)
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    rows = np.full((m, k), -1, dtype=np.int64)
    item_block = min(item_block, max(n, 1))
    tile = np.empty((min(query_block, m), item_block), dtype=np.float32)
    for q0 in range(0, m, query_block):
        q1 = min(q0 + query_block, m)
        block = queries[q0:q1]
        b = q1 - q0
        pos, bad = excl.pairs(np.arange(q0, q1, dtype=np.int64))
        by_item = np.argsort(bad, kind="stable")
        pos, bad = pos[by_item], bad[by_item]
        heap = faiss.ResultHeap(b, k, keep_max=True)
        subset = np.arange(b, dtype=np.int64)
        for i0 in range(0, n, item_block):
            i1 = min(i0 + item_block, n)
            out = tile[:b, : i1 - i0] if i1 - i0 == item_block else np.empty((b, i1 - i0), np.float32)
            np.matmul(block, items[i0:i1].T, out=out)
            lo, hi = np.searchsorted(bad, (i0, i1))
            out[pos[lo:hi], bad[lo:hi] - i0] = -np.inf
            heap.add_result_subset(subset, out, np.arange(i0, i1, dtype=np.int64))
        heap.finalize()
        heap.D[heap.I < 0] = -np.inf
        order = np.lexsort((np.where(heap.I < 0, n, heap.I), -heap.D), axis=-1)  # ties: lower row first
        scores[q0:q1] = np.take_along_axis(heap.D, order, axis=1)
        rows[q0:q1] = np.take_along_axis(heap.I, order, axis=1)
    return scores, rows


def index_top_k(index: SearchableIndex, queries, k: int, exclude: Exclusions, *,
                query_block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` from ``index.search`` in query blocks, with the same exclusions as the exact path.

    Checks the index's answer: shapes (m, k), rows in [-1, n), no excluded row, no repeated row.
    Returns (scores float32 (m, k), rows int64 (m, k)).
    """
    queries = as_vectors(queries, "query vectors")
    m = len(queries)
    if exclude.num_queries != m:
        raise ValueError(f"exclusions cover {exclude.num_queries} queries, got {m} query vectors")
    name = type(index).__name__
    scores = np.empty((m, k), dtype=np.float32)
    rows = np.empty((m, k), dtype=np.int64)
    for q0 in range(0, m, query_block):
        q1 = min(q0 + query_block, m)
        qidx = np.arange(q0, q1, dtype=np.int64)
        d, i = index.search(queries[q0:q1], k, exclude=exclude.take(qidx))
        d, i = np.asarray(d), np.asarray(i)
        if d.shape != (q1 - q0, k) or i.shape != (q1 - q0, k):
            raise ValueError(
                f"{name}.search returned scores {d.shape} / rows {i.shape} for {q1 - q0} queries and k={k}; "
                f"the index contract is (queries, k) for both"
            )
        i = i.astype(np.int64, copy=False)
        if i.size and (i.min() < -1 or i.max() >= exclude.num_items):
            raise ValueError(
                f"{name}.search returned rows outside [-1, {exclude.num_items}): min {i.min()}, max {i.max()}; "
                "the index does not match the item vectors' catalogue"
            )
        leaked = exclude.contains(qidx[:, None], i)
        if leaked.any():
            qq, jj = np.nonzero(leaked)
            raise ValueError(
                f"{name}.search returned {int(leaked.sum())} excluded row(s), e.g. row {int(i[qq[0], jj[0]])} for "
                f"query {q0 + int(qq[0])}; it must honour exclude=... (over-fetch and filter)"
            )
        srt = np.sort(i, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if dup.any():
            q = int(np.nonzero(dup.any(axis=1))[0][0])
            raise ValueError(f"{name}.search returned a row twice in one list (query {q0 + q}); lists must be unique")
        scores[q0:q1], rows[q0:q1] = d, i
    return scores, rows


def exact_scores_of(queries: np.ndarray, items: np.ndarray, rows: np.ndarray, block: int = 4096) -> np.ndarray:
    """float32 (m, K): exact inner product of query i with item ``rows[i, j]`` (-inf where row is -1)."""
    out = np.full(rows.shape, -np.inf, dtype=np.float32)
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        valid = r >= 0
        vecs = items[np.where(valid, r, 0)]
        sc = np.einsum("bkd,bd->bk", vecs, queries[s:s + block])
        out[s:s + block] = np.where(valid, sc, -np.inf)
    return out


def index_correct(queries: np.ndarray, items: np.ndarray, exact_scores: np.ndarray, index_rows: np.ndarray,
                  ks: Sequence[int], rel_tol: float = 1e-5) -> dict[int, np.ndarray]:
    """``{K: bool (m, K)}``: which of the index's top-K items are correct at cut-off K.

    An index item is correct at K when its exact score reaches the query's K-th exact score within
    ``rel_tol * |q| * max|x|``, so a different choice among items tied at the K-th score, or float
    rounding, is not counted as index loss. Padding (-1) is never correct.
    exact_scores float32 (m, >= max(ks)) from ``exact_top_k`` (-inf padding); index_rows int64 (m, >= max(ks)).
    """
    kmax = max(ks)
    if exact_scores.shape[1] < kmax or index_rows.shape[1] < kmax:
        raise ValueError(f"need rankings of depth >= {kmax}, got exact {exact_scores.shape[1]}, "
                         f"index {index_rows.shape[1]}")
    scale = np.linalg.norm(queries, axis=1) * float(np.linalg.norm(items, axis=1).max(initial=0.0))
    found = index_rows[:, :kmax]
    found_scores = exact_scores_of(queries, items, found)
    out = {}
    for k in ks:
        kth = exact_scores[:, k - 1].astype(np.float64)  # -inf when the exact list is padded
        out[k] = (found[:, :k] >= 0) & (found_scores[:, :k] >= (kth - rel_tol * scale)[:, None])
    return out


def index_credit_by_slice(queries: np.ndarray, items: np.ndarray, exact_scores: np.ndarray, exact_rows: np.ndarray,
                          index_rows: np.ndarray, k: int, item_codes: np.ndarray | None, num_codes: int,
                          rel_tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """(n_exact int64 (m, C), credit float64 (m, C)): per query and item slice, the exact top-``k`` items and
    how many of them the index found, with tie choices not counted as losses.

    The exact top-k splits into *sure* items (exact score above the k-th score by more than the tolerance
    ``rel_tol * |q| * max|x|`` of ``index_correct``) and *tied* items (within it). A sure item is credited to
    its slice when the index returns it. Which of the items tied at the k-th score fill the last places is an
    arbitrary choice that the exact path and the index may make differently, possibly from different slices;
    so the tied places are credited to the slices of the *exact* tied items, in the share the index filled
    them: ``min(index items in the tie band, exact tied items) / exact tied items``. Without ties (or with a
    single slice) this is ``index_correct`` counted by slice; summed over the slices it is the overall count.
    """
    m = len(index_rows)
    scale = rel_tol * np.linalg.norm(queries, axis=1) * float(np.linalg.norm(items, axis=1).max(initial=0.0))
    kth = exact_scores[:, k - 1].astype(np.float64)  # -inf when the exact list is padded: no tie band
    ex = exact_rows[:, :k]
    ex_valid = ex >= 0
    # the exact items' scores computed the same way as the index items' below, so one row is classified alike
    ex_scores = exact_scores_of(queries, items, ex).astype(np.float64)
    ex_tied = ex_valid & (ex_scores <= (kth + scale)[:, None])
    found = index_rows[:, :k]
    f_scores = exact_scores_of(queries, items, found).astype(np.float64)
    f_valid = found >= 0
    f_sure = f_valid & (f_scores > (kth + scale)[:, None])
    f_tied = f_valid & ~f_sure & (f_scores >= (kth - scale)[:, None])
    n_exact = count_by_slice(ex, ex_valid, item_codes, num_codes)
    tied_places = ex_tied.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        filled = np.where(tied_places > 0, np.minimum(f_tied.sum(axis=1), tied_places) / tied_places, 0.0)
    credit = (count_by_slice(found, f_sure, item_codes, num_codes)
              + count_by_slice(ex, ex_tied, item_codes, num_codes) * filled.reshape(m, 1))
    return n_exact, np.minimum(credit, n_exact)


def count_by_slice(rows: np.ndarray, mask: np.ndarray, item_codes: np.ndarray | None, num_codes: int) -> np.ndarray:
    """int64 (m, num_codes): per query, how many ``rows[q, j]`` with ``mask[q, j]`` fall in each item slice.

    ``item_codes`` int (n,) labels catalogue rows (None = a single slice).
    """
    m = rows.shape[0]
    qid = np.broadcast_to(np.arange(m, dtype=np.int64)[:, None], rows.shape)[mask]
    code = np.zeros(len(qid), np.int64) if item_codes is None else np.asarray(item_codes, np.int64)[rows[mask]]
    return np.bincount(qid * num_codes + code, minlength=m * num_codes).reshape(m, num_codes).astype(np.int64)
