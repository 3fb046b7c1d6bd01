"""Reference systems graded by the same suite: most-popular, uniform random, implicit ALS and BPR.

Each respects the same per-query exclusions as the model. ``baseline_results`` grades the ones
named in ``EvalConfig.baselines`` (or ``include``) and returns one ``EvalResult`` per baseline, to
sit as reference rows next to the model's.

  popularity  items by training count, descending; ties by catalogue row, ascending
  random      a uniform random sample (without replacement) of the non-excluded items, in random
              order; seeded, one generator for the whole call, queries in row order
  als         implicit's AlternatingLeastSquares (CPU) on the binary query x item training matrix,
              ranked exactly by inner product of user and item factors (``evaluate_vectors``)
  bpr         implicit's BayesianPersonalizedRanking (CPU, one thread: seeded runs repeat exactly)
              on the same binary matrix; score = user factors · item factors + item bias, ranked
              exactly like ALS
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from eval.cases import Exclusions, as_exclusions
from eval.config import BASELINES, EvalConfig
from eval.evaluate import evaluate_rankings, evaluate_vectors
from eval.result import EvalResult
from eval.slices import validate_counts

# Largest candidate matrix (queries x candidates) the popularity ranker builds at once.
_MAX_CANDIDATE_CELLS = 1 << 24


def popularity_rankings(train_counts, k: int, exclusions=None, num_queries: int | None = None) -> np.ndarray:
    """int64 (m, k): the k most popular non-excluded items per query, -1 padded.

    train_counts int (n,); exclusions as ``eval.cases.as_exclusions`` (m from it, or ``num_queries``).
    """
    counts = validate_counts(train_counts, len(np.asarray(train_counts)))
    n = len(counts)
    excl = _exclusions(exclusions, num_queries, n)
    m = excl.num_queries
    order = np.argsort(-counts, kind="stable")  # ties: lower row first
    out = np.full((m, k), -1, dtype=np.int64)
    q0 = 0
    ex_counts = excl.counts
    while q0 < m:
        width = min(n, k + int(ex_counts[q0:q0 + 4096].max(initial=0)))
        q1 = min(m, q0 + max(1, min(4096, _MAX_CANDIDATE_CELLS // max(width, 1))))
        width = min(n, k + int(ex_counts[q0:q1].max(initial=0)))
        cand = order[:width]
        queries = np.arange(q0, q1, dtype=np.int64)
        ok = ~excl.contains(queries[:, None], cand[None, :])
        pick = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # first k eligible, popularity order kept
        rows = cand[pick]
        rows[~np.take_along_axis(ok, pick, axis=1)] = -1
        out[q0:q1, : rows.shape[1]] = rows
        q0 = q1
    return out


def random_rankings(num_items: int, k: int, exclusions=None, num_queries: int | None = None, seed: int = 0
                    ) -> np.ndarray:
    """int64 (m, k): per query, k distinct uniformly random non-excluded items, -1 padded; seeded."""
    excl = _exclusions(exclusions, num_queries, num_items)
    rng = np.random.default_rng(seed)
    out = np.full((excl.num_queries, k), -1, dtype=np.int64)
    for q in range(excl.num_queries):
        banned = excl.rows(q)
        draw = rng.choice(num_items, size=min(num_items, k + len(banned)), replace=False)
        if len(banned):
            pos = np.minimum(np.searchsorted(banned, draw), len(banned) - 1)
            draw = draw[banned[pos] != draw]
        draw = draw[:k]
        out[q, : len(draw)] = draw
    return out


def als_vectors(user_items, factors: int = 32, regularization: float = 0.01, alpha: float = 1.0,
                iterations: int = 15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit implicit ALS; returns (query factors float32 (m, factors), item factors float32 (n, factors)).

    user_items  sparse (m, n) training interactions (values = confidence weights; use 1 for binary).
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    if not sp.issparse(user_items):
        raise TypeError(f"user_items must be a scipy sparse (queries x items) matrix, got {type(user_items).__name__}")
    matrix = sp.csr_matrix(user_items, dtype=np.float32)
    if matrix.nnz == 0:
        raise ValueError("user_items has no interactions; ALS needs training data")
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                        iterations=iterations, random_state=seed)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def bpr_vectors(user_items, factors: int = 32, learning_rate: float = 0.01, regularization: float = 0.01,
                iterations: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit implicit BPR; returns (query vectors float32 (m, factors + 1), item vectors float32 (n, factors + 1)).

    user_items  sparse (m, n) training interactions; BPR reads only which entries are non-zero.
    The last column holds 1 for every query and the item's bias for every item, so the inner
    product is BPR's score u·v + b_i. One thread: implicit's multi-threaded SGD (Hogwild) does not
    repeat from a seed.
    """
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    if not sp.issparse(user_items):
        raise TypeError(f"user_items must be a scipy sparse (queries x items) matrix, got {type(user_items).__name__}")
    matrix = sp.csr_matrix(user_items, dtype=np.float32)
    if matrix.nnz == 0:
        raise ValueError("user_items has no interactions; BPR needs training data")
    if matrix.shape[1] < 2:
        raise ValueError(f"BPR samples a negative item per positive: it needs at least 2 items, got {matrix.shape[1]}")
    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate,
                                            regularization=regularization, iterations=iterations,
                                            num_threads=1, random_state=seed)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def _exclusions(exclusions, num_queries: int | None, num_items: int) -> Exclusions:
    if isinstance(exclusions, Exclusions):
        return exclusions
    if num_queries is None:
        if exclusions is None:
            raise ValueError("give num_queries when there are no exclusions to take the query count from")
        num_queries = exclusions.shape[0] if sp.issparse(exclusions) else len(exclusions)
    return as_exclusions(exclusions, num_queries, num_items)


def binary_user_items(exclusions: Exclusions) -> sp.csr_matrix:
    """The (m, n) binary training matrix implied by the exclusions (each excluded item = 1 interaction)."""
    data = np.ones(len(exclusions.indices), dtype=np.float32)
    return sp.csr_matrix((data, exclusions.indices, exclusions.indptr),
                         shape=(exclusions.num_queries, exclusions.num_items))


def baseline_results(test_cases, exclusions, train_counts, config: EvalConfig | None = None, *,
                     user_items=None, history_lengths=None, query_ids=None, als_factors: int = 32,
                     bpr_factors: int = 32, seed: int = 0, include: tuple[str, ...] | None = None
                     ) -> list[EvalResult]:
    """Grade the baselines in ``include`` (default ``config.baselines``) with the same cases,
    exclusions and config as a model.

    ``user_items`` (sparse (m, n)) trains ALS and BPR; default: the binary matrix of the exclusions.
    Results are named "popularity", "random", f"als-{als_factors}", f"bpr-{bpr_factors}", in that order.
    """
    config = config or EvalConfig()
    include = config.baselines if include is None else tuple(include)
    counts = validate_counts(train_counts, len(np.asarray(train_counts)))
    if exclusions is None:
        raise ValueError("baselines need the exclusions (the users' training items) to know the query count")
    num_queries = exclusions.shape[0] if sp.issparse(exclusions) else (
        exclusions.num_queries if isinstance(exclusions, Exclusions) else len(exclusions))
    excl = as_exclusions(exclusions, num_queries, len(counts))
    common = dict(exclusions=excl, history_lengths=history_lengths, query_ids=query_ids)
    unknown = set(include) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    out = []
    if "popularity" in include:
        ranks = popularity_rankings(counts, config.max_k, excl)
        out.append(evaluate_rankings(ranks, test_cases, counts, config, name="popularity",
                                     metadata={"baseline": "popularity"}, **common))
    if "random" in include:
        ranks = random_rankings(len(counts), config.max_k, excl, seed=seed)
        out.append(evaluate_rankings(ranks, test_cases, counts, config, name="random",
                                     metadata={"baseline": "random", "seed": seed}, **common))
    matrix = binary_user_items(excl) if user_items is None else user_items
    if "als" in include:
        users, items = als_vectors(matrix, factors=als_factors, seed=seed)
        out.append(evaluate_vectors(users, items, test_cases, excl, counts, config, name=f"als-{als_factors}",
                                    metadata={"baseline": "als", "factors": als_factors, "seed": seed},
                                    history_lengths=history_lengths, query_ids=query_ids))
    if "bpr" in include:
        users, items = bpr_vectors(matrix, factors=bpr_factors, seed=seed)
        out.append(evaluate_vectors(users, items, test_cases, excl, counts, config, name=f"bpr-{bpr_factors}",
                                    metadata={"baseline": "bpr", "factors": bpr_factors, "seed": seed},
                                    history_lengths=history_lengths, query_ids=query_ids))
    return out
