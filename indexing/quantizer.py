"""Robust IVF training: several fixed-seed coarse quantizers, the one chosen by measured recall on the queries.

The recall an IVF index reaches at a given nprobe depends heavily on its coarse quantizer: in issue 15 one
fixed-seed training sample gave recall@100 0.705 at nprobe 8 on query-tower queries where three other samples
gave 0.954-0.957 for the same catalogue. So ``train_best`` trains ``spec.quantizer_restarts`` candidates
(restart r: k-means seed ``kmeans_seed(spec, r)`` and training sample seed (spec.seed, 3, r); restart 0 is exactly the
single training of earlier versions) and keeps the one that scans the fewest items to reach the recall target
on the tuning queries: at each candidate's smallest nprobe meeting the target, the expected fraction of the
catalogue in the probed lists (list sizes estimated on a seeded sample of SIZE_SAMPLE rows). Comparing
nprobe alone would favour unbalanced quantizers, whose few huge lists reach the target at a small nprobe
by scanning much of the catalogue. Ties: the higher recall, then the lower restart.

Candidates are compared without adding the catalogue to each: for IVF-Flat, a true top-k item is found at
nprobe p exactly when the list it is assigned to is among the p lists nearest the query, so

    coarse recall@k(p) = mean over queries and true top-k items of [rank of the item's list < p]

computed from the exact top-k (``indexing.recall.exact_top_k``), the candidate's centroids and the query's
list ranking. That *is* IVF-Flat's recall (up to ties at the k-th score; tested) and an upper bound of
IVF-PQ's, so it ranks quantizers by what the build will tune, with the same lower-bound rule (mean - Z
standard errors >= target) as ``indexing.tuning``. Cost per extra candidate: one training plus the assignment
of m*k neighbour vectors and SIZE_SAMPLE rows; the catalogue is added once, to the chosen candidate.

With an explicit ``spec.nprobe`` the candidate with the highest coarse recall at that nprobe wins (ties: fewer
items scanned). Indices without an IVF layer (Flat, HNSW, PQ) and IVF indices under a pre-transform (OPQ,
PCA) train once. Everything is deterministic (fixed seeds, exact search as the reference, no timing).
"""
from __future__ import annotations

import math

import faiss
import numpy as np

from indexing import faiss_index as fi
from indexing import projection
from indexing.recall import exact_top_k
from indexing.spec import IndexSpec
from indexing.tuning import Z, ladder

# Target used to rank candidates when the spec tunes nothing (target_recall None) and sets no nprobe.
FALLBACK_TARGET = 0.95
# Queries per block when ranking lists (block x nlist floats in memory).
RANK_BLOCK = 256
# Rows (seeded sample) assigned to lists to estimate the list sizes.
SIZE_SAMPLE = 100_000


def restart_rows(n: int, spec: IndexSpec, restart: int) -> np.ndarray:
    """Sorted training rows of restart ``restart``: restart 0 = ``fi.train_sample``; others a sample seeded
    (spec.seed, 3, restart) (all rows, and only the k-means seed differs, when n <= train_size)."""
    if restart == 0 or n <= spec.train_size:
        return fi.train_sample(n, spec)
    rng = np.random.default_rng([spec.seed, 3, restart])
    return np.sort(rng.choice(n, size=spec.train_size, replace=False)).astype(np.int64)


def kmeans_seed(spec: IndexSpec, restart: int) -> int:
    """k-means seed of restart ``restart``: spec.seed for restart 0, else drawn from (spec.seed, 5, restart) (so
    specs with neighbouring seeds do not share restarts)."""
    if restart == 0:
        return spec.seed
    return int(np.random.default_rng([spec.seed, 5, restart]).integers(2**31 - 1))


def _ivf_without_transform(index: faiss.Index):
    """The IVF layer of ``index`` when restarts can compare its quantizers: no pre-transform, or only a QProj
    projection (fitted before the restarts, shared by all of them, applied to the vectors compared)."""
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform) and projection.projection_of(index) is None:
        return None
    return faiss.try_extract_index_ivf(index)


def coarse_recall_curve(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, exact_rows: np.ndarray,
                        values: list[int], size_rows: np.ndarray,
                        transform: np.ndarray | None = None) -> list[tuple[int, float, float, float]]:
    """[(nprobe, mean coarse recall, its lower bound mean - Z*se, mean fraction of items scanned)] of a trained
    IVF ``index`` for each value (see the module docstring).

    exact_rows int64 (m, k): the exact top-k rows of ``queries`` among ``vectors``; size_rows: the rows whose
    list assignment estimates the list sizes (the fraction of the catalogue a probe of those lists scans).
    transform (k, d) or None: a QProj projection matrix applied to vectors and queries before they meet the
    centroids (which live in the projected space).
    """
    def space(v: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(v if transform is None else v @ transform.T, dtype=np.float32)

    ivf = faiss.extract_index_ivf(index)
    nlist = int(ivf.nlist)
    centroids = faiss.IndexFlatIP(int(ivf.d))
    centroids.add(ivf.quantizer.reconstruct_n(0, nlist))
    m, k = exact_rows.shape
    valid = exact_rows >= 0
    neighbours = vectors[np.where(valid, exact_rows, 0).ravel()]
    _, assigned = centroids.search(space(neighbours), 1)
    assigned = assigned.reshape(m, k)
    _, owner = centroids.search(space(vectors[size_rows]), 1)
    share = np.bincount(owner.ravel(), minlength=nlist) / max(1, len(size_rows))
    top = max(values)
    ranks = np.empty((m, k), dtype=np.int64)
    scanned = np.empty((m, top), dtype=np.float64)
    for start in range(0, m, RANK_BLOCK):
        stop = min(m, start + RANK_BLOCK)
        _, order = centroids.search(space(queries[start:stop]), nlist)
        rank_of_list = np.empty_like(order)
        np.put_along_axis(rank_of_list, order, np.arange(nlist)[None, :], axis=1)
        ranks[start:stop] = np.take_along_axis(rank_of_list, assigned[start:stop], axis=1)
        scanned[start:stop] = np.cumsum(share[order[:, :top]], axis=1)
    ranks = np.where(valid, ranks, nlist)
    denominator = np.maximum(valid.sum(axis=1), 1)
    out = []
    for value in values:
        per_query = (ranks < value).sum(axis=1) / denominator
        se = float(per_query.std(ddof=1) / math.sqrt(m)) if m > 1 else 0.0
        mean = float(per_query.mean())
        out.append((int(value), mean, mean - Z * se, float(scanned[:, value - 1].mean())))
    return out


def train_best(factory: str, vectors: np.ndarray, spec: IndexSpec, queries: np.ndarray | None,
               query_source: str) -> tuple[faiss.Index, dict | None]:
    """A trained, empty index for ``factory`` and the record of how its quantizer was chosen (None when only
    one training was done). vectors float32 (n, d): what the index will hold (or a sample of it, in which case
    the exact neighbours are taken within the sample); queries float32 (m, d): the tuning queries.
    """
    dim = vectors.shape[1]
    index = fi.new_index(factory, dim, spec)
    restarts = spec.quantizer_restarts
    projected = projection.fit(index, vectors[restart_rows(len(vectors), spec, 0)], queries, query_source)
    if restarts == 1 or _ivf_without_transform(index) is None or queries is None or len(queries) == 0:
        fi.train_rows(index, vectors, restart_rows(len(vectors), spec, 0))
        return index, ({"restarts": 1, "projection": projected} if projected is not None else None)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(spec.recall_k, len(vectors))
    _, exact_rows = exact_top_k(vectors, queries, k)
    nlist = int(faiss.extract_index_ivf(index).nlist)
    fixed = spec.nprobe
    target = spec.target_recall if spec.target_recall is not None else FALLBACK_TARGET
    values = [min(fixed, nlist)] if fixed is not None else ladder(1, nlist)
    size_rows = np.sort(np.random.default_rng([spec.seed, 4]).choice(
        len(vectors), size=min(len(vectors), SIZE_SAMPLE), replace=False))
    transform = projection.matrix(index) if projected is not None else None
    best, best_key, chosen, candidates = None, None, 0, []
    for restart in range(restarts):
        candidate = index if restart == 0 else fi.new_index(factory, dim, spec)
        if restart:
            faiss.extract_index_ivf(candidate).cp.seed = kmeans_seed(spec, restart)
            if transform is not None:
                projection.set_matrix(candidate, transform)
        fi.train_rows(candidate, vectors, restart_rows(len(vectors), spec, restart))
        projected_space = {"transform": transform} if transform is not None else {}
        curve = coarse_recall_curve(candidate, vectors, queries, exact_rows, values, size_rows, **projected_space)
        if fixed is not None:
            at, needed = curve[0], fixed
            key = (-at[1], at[3], restart)
        else:
            reached = [p for p in curve if p[2] >= target]
            at = reached[0] if reached else curve[-1]
            needed = at[0] if reached else None
            key = (needed is None, at[3], -at[1], restart)
        shown = [[v, round(r, 6), round(f, 6)] for v, r, _, f in curve if v <= at[0]]
        candidates.append({"restart": restart, "kmeans_seed": kmeans_seed(spec, restart), "nprobe_needed": needed,
                           "scanned_fraction": round(at[3], 6), "curve": shown[-8:]})
        if best_key is None or key < best_key:
            best, best_key, chosen = candidate, key, restart
    report = {"restarts": restarts, "chosen": chosen, "query_source": query_source, "num_queries": len(queries),
              "k": k, "rule": (f"highest coarse recall at nprobe {fixed}" if fixed is not None else
                               f"fewest items scanned at the smallest nprobe whose coarse recall lower bound >= "
                               f"{target}"), "curve_columns": ["nprobe", "coarse_recall", "scanned_fraction"],
              "candidates": candidates}
    if projected is not None:
        report["projection"] = projected
    return best, report
