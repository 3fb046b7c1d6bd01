"""Reference systems graded by the same suite: most-popular, uniform random, implicit ALS, BPR and EASE.

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
  ease        EASE (Steck 2019): the closed-form item-item model B = I - P diag(1/diag(P)),
              P = (X^T X + lambda I)^-1 over the binary matrix X, so diag(B) = 0; a query's scores are
              its row of X times B, ranked exactly (``eval.exact.exact_top_k``) with the same exclusions.
              lambda is tuned on the validation cases (fit on the training matrix, graded on the
              validation targets with the training items excluded) over ``EvalConfig.ease_lambdas``,
              best ``ndcg@max(ks)`` (Steck's choice), ties to the smaller lambda; then refit on
              ``user_items`` with that lambda. The grid, every lambda's validation score and the choice
              are in the result's metadata (``metrics.json``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from eval.cases import Exclusions, as_exclusions
from eval.config import BASELINES, EvalConfig
from eval.evaluate import evaluate_rankings, evaluate_vectors
from eval.exact import exact_top_k
from eval.result import EvalResult
from eval.slices import validate_counts

# Largest candidate matrix (queries x candidates) the popularity ranker builds at once.
_MAX_CANDIDATE_CELLS = 1 << 24
# EASE inverts a dense (n, n) float64 Gram matrix: 20,000 items = 3.2 GB per copy and minutes of LAPACK.
EASE_MAX_ITEMS = 20_000


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


def ease_weights(user_items, l2: float) -> np.ndarray:
    """EASE's item-item matrix B, float32 (n, n), zero diagonal (Steck 2019, closed form).

    user_items  sparse (m, n) training interactions (use 1 for binary); l2 = lambda > 0.
    G = X^T X + lambda I;  P = G^-1;  B = I - P diag(1/diag(P)), i.e. B[i, j] = -P[i, j] / P[j, j] off
    the diagonal and 0 on it. Column j is the ridge regression of item j on every other item.
    """
    if not sp.issparse(user_items):
        raise TypeError(f"user_items must be a scipy sparse (queries x items) matrix, got {type(user_items).__name__}")
    if isinstance(l2, bool) or not isinstance(l2, (int, float, np.floating, np.integer)) \
            or not np.isfinite(l2) or l2 <= 0:
        raise ValueError(f"EASE's lambda (l2) must be a finite number > 0, got {l2!r}")
    matrix = sp.csr_matrix(user_items, dtype=np.float64)
    n = matrix.shape[1]
    if n > EASE_MAX_ITEMS:
        raise ValueError(
            f"EASE inverts an items x items matrix: {n} items would need {8 * n * n / 1e9:.1f} GB per copy "
            f"(limit {EASE_MAX_ITEMS} items); drop 'ease' from eval.baselines for this catalogue, e.g. "
            "--set eval.baselines=[popularity,als]")
    if matrix.nnz == 0:
        raise ValueError("user_items has no interactions; EASE needs training data")
    gram = (matrix.T @ matrix).toarray()
    gram[np.diag_indices(n)] += float(l2)
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def ease_rankings(weights, user_items, k: int, exclusions=None, query_block: int = 4096) -> np.ndarray:
    """int64 (m, k): per query, the top-k items by EASE score (its row of ``user_items`` times B),
    exclusions skipped, -1 padded; ranked by ``eval.exact.exact_top_k`` (the models' exact search)."""
    matrix = sp.csr_matrix(user_items, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    m, n = matrix.shape
    if weights.shape != (n, n):
        raise ValueError(f"EASE weights must be ({n}, {n}) for {n} items, got {weights.shape}")
    excl = _exclusions(exclusions, m, n)
    items = np.ascontiguousarray(weights.T)  # item j's "vector" is column j of B
    out = np.full((m, k), -1, dtype=np.int64)
    for q0 in range(0, m, query_block):
        q1 = min(m, q0 + query_block)
        rows = np.arange(q0, q1, dtype=np.int64)
        _, top = exact_top_k(matrix[q0:q1].toarray(), items, k, excl.take(rows))
        out[q0:q1] = top
    return out


def tune_ease(user_items, valid_cases, valid_exclusions, train_counts, config: EvalConfig,
              lambdas=None) -> tuple[float, dict[float, float]]:
    """Pick EASE's lambda on validation: fit on ``user_items`` (the training matrix) for each lambda of the
    grid, grade its rankings of the validation cases (``valid_exclusions`` = the training items) with the
    same suite, keep the best overall ``ndcg@max(ks)``; ties go to the smaller lambda.

    Returns (chosen lambda, {lambda: validation ndcg@max(ks)}) with the grid in ascending order.
    """
    grid = tuple(sorted(float(x) for x in (config.ease_lambdas if lambdas is None else lambdas)))
    if not grid:
        raise ValueError("the EASE lambda grid is empty; give at least one value, e.g. eval.ease_lambdas=[100, 300]")
    counts = validate_counts(train_counts, len(np.asarray(train_counts)))
    tune_cfg = EvalConfig(ks=(config.max_k,), head_share=config.head_share, torso_share=config.torso_share,
                          deciles=False, activity_thresholds=config.activity_thresholds, bootstrap_samples=0,
                          excluded_targets=config.excluded_targets, baselines=())
    excl = _exclusions(valid_exclusions, user_items.shape[0], user_items.shape[1])
    metric = tune_metric(config)
    scores = {}
    for l2 in grid:
        ranks = ease_rankings(ease_weights(user_items, l2), user_items, config.max_k, excl)
        graded = evaluate_rankings(ranks, valid_cases, counts, tune_cfg, exclusions=excl, name="ease-validation")
        scores[l2] = float(graded.value(metric))
    best = max(grid, key=lambda l2: (scores[l2], -l2))
    return best, scores


def tune_metric(config: EvalConfig) -> str:
    """The validation metric EASE's lambda is chosen by: overall ndcg at the deepest cut-off."""
    return f"ndcg@{config.max_k}"


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
                     bpr_factors: int = 32, seed: int = 0, include: tuple[str, ...] | None = None,
                     valid_cases=None, valid_user_items=None) -> list[EvalResult]:
    """Grade the baselines in ``include`` (default ``config.baselines``) with the same cases,
    exclusions and config as a model.

    ``user_items`` (sparse (m, n)) trains ALS, BPR and EASE; default: the binary matrix of the exclusions.
    ``valid_cases`` (same forms as ``test_cases``, same query rows) and ``valid_user_items`` (sparse (m, n),
    the training interactions without the validation ones; also the validation exclusions) tune EASE's
    lambda over ``config.ease_lambdas`` (``tune_ease``); they may be omitted when the grid has one value.
    Results are named "popularity", "random", f"als-{als_factors}", f"bpr-{bpr_factors}", "ease", in that order.
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
    if "ease" in include:
        out.append(_ease_result(matrix, test_cases, excl, counts, config, common, valid_cases, valid_user_items))
    return out


def _ease_result(matrix, test_cases, excl: Exclusions, counts, config: EvalConfig, common: dict, valid_cases,
                 valid_user_items) -> EvalResult:
    import time

    t0 = time.perf_counter()
    grid = tuple(sorted(float(x) for x in config.ease_lambdas))
    metadata = {"baseline": "ease", "lambda_grid": list(grid)}
    if valid_cases is not None and valid_user_items is not None:
        if not sp.issparse(valid_user_items) or valid_user_items.shape != (excl.num_queries, excl.num_items):
            raise ValueError(
                f"valid_user_items must be a scipy sparse ({excl.num_queries}, {excl.num_items}) matrix (queries x "
                f"items, the training interactions), got {type(valid_user_items).__name__} "
                f"{getattr(valid_user_items, 'shape', '')}")
        train = sp.csr_matrix(valid_user_items, dtype=np.float32)
        l2, scores = tune_ease(train, valid_cases, train, counts, config, grid)
        metadata.update(l2=l2, tuned_on=f"validation {tune_metric(config)} (overall)",
                        validation=[[k, round(v, 6)] for k, v in scores.items()])  # [lambda, score], grid order
        if len(grid) > 1 and l2 in (grid[0], grid[-1]):
            metadata["warning"] = (f"the chosen lambda {l2:g} is at the edge of the grid {list(grid)}; "
                                   "widen eval.ease_lambdas")
    elif len(grid) == 1:
        l2 = grid[0]
        metadata.update(l2=l2, tuned_on="not tuned (eval.ease_lambdas has one value)")
    elif valid_cases is None and valid_user_items is None:
        raise ValueError(
            f"EASE tunes lambda on validation over eval.ease_lambdas={list(grid)} but no validation data was "
            "given; pass valid_cases and valid_user_items, or set eval.ease_lambdas to one value (e.g. [300])")
    else:
        raise ValueError("EASE's validation needs both valid_cases and valid_user_items; got only "
                         + ("valid_cases" if valid_cases is not None else "valid_user_items"))
    ranks = ease_rankings(ease_weights(matrix, l2), matrix, config.max_k, excl)
    metadata["seconds"] = round(time.perf_counter() - t0, 2)
    return evaluate_rankings(ranks, test_cases, counts, config, name="ease", metadata=metadata, **common)
