"""Ranking metrics, per query (so the bootstrap can resample queries) and per list.

Conventions (``rank`` = 0-based position of a target in its query's top-max(ks) list, ``MISS`` (-1)
when absent; R = the query's relevant set = its targets, in the slice being scored):

  recall@K   = |{t in R : rank_t < K}| / |R|
  hitrate@K  = 1 if any t in R has rank_t < K else 0
  ndcg@K     = sum_{t in R, rank_t < K} 1 / log2(rank_t + 2)  /  sum_{i < min(|R|, K)} 1 / log2(i + 2)
  mrr@Kmax   = 1 / (min_t rank_t + 1), 0 if no target is in the list (truncated at Kmax = max(ks))
  mean_pop@K = mean training count of the (valid) items in the top K (NaN if the list is empty)
  coverage@K = distinct items appearing in any query's top K / catalogue size (one number per set
               of queries, not per query)

Ranks of different targets of one query are positions in the same list, so a query's other held-out
items are relevant, never excluded. Everything is vectorised with ``np.bincount`` over group ids.
"""
from __future__ import annotations

import numpy as np

MISS = -1


def metric_names(ks: tuple[int, ...]) -> list[str]:
    """Per-query target metrics, in the stable order used by every table and JSON file."""
    ks = tuple(ks)
    return ([f"recall@{k}" for k in ks] + [f"hitrate@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
            + [f"mrr@{ks[-1]}"])


def list_metric_names(ks: tuple[int, ...]) -> list[str]:
    return [f"mean_pop@{k}" for k in ks]


def target_ranks(rankings: np.ndarray, positions: np.ndarray, targets: np.ndarray,
                 block: int = 1 << 16) -> np.ndarray:
    """int64 (c,): 0-based rank of ``targets[i]`` in ``rankings[positions[i]]``, ``MISS`` if absent.

    rankings   int64 (m, K) item rows, best first, -1 padding
    positions  int64 (c,) row of ``rankings`` of each case
    targets    int64 (c,) item rows (>= 0)
    """
    out = np.empty(len(targets), dtype=np.int64)
    for s in range(0, len(targets), block):
        eq = rankings[positions[s:s + block]] == targets[s:s + block, None]
        found = eq.any(axis=1)
        out[s:s + block] = np.where(found, eq.argmax(axis=1), MISS)
    return out


def _discounts(k: int) -> np.ndarray:
    """float64 (k + 1,): cumulative ideal DCG, ``idcg[j] = sum_{i<j} 1/log2(i+2)``."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])


def grouped_metrics(group: np.ndarray, ranks: np.ndarray, ks: tuple[int, ...], num_groups: int
                    ) -> dict[str, np.ndarray]:
    """Target metrics of each group of cases (a group = one query restricted to one slice).

    group  int64 (c,) in [0, num_groups); every group must hold at least one case
    ranks  int64 (c,) from ``target_ranks``
    Returns ``{"n_targets": int64 (g,), "<metric>": float64 (g,) for metric_names(ks)}``.
    """
    ks = tuple(ks)
    n = np.bincount(group, minlength=num_groups).astype(np.int64)
    if (n == 0).any():
        raise ValueError(f"{int((n == 0).sum())} of {num_groups} groups have no cases; group ids must be dense")
    found = ranks >= 0
    safe = np.where(found, ranks, 0)
    gain = np.where(found, 1.0 / np.log2(safe + 2.0), 0.0)
    idcg = _discounts(ks[-1])
    out: dict[str, np.ndarray] = {"n_targets": n}
    recall, hitrate, ndcg = {}, {}, {}
    for k in ks:
        hit = found & (ranks < k)
        hits = np.bincount(group, weights=hit, minlength=num_groups)
        recall[k] = hits / n
        hitrate[k] = (hits > 0).astype(np.float64)
        dcg = np.bincount(group, weights=np.where(hit, gain, 0.0), minlength=num_groups)
        ndcg[k] = dcg / idcg[np.minimum(n, k)]
    for k in ks:
        out[f"recall@{k}"] = recall[k]
    for k in ks:
        out[f"hitrate@{k}"] = hitrate[k]
    for k in ks:
        out[f"ndcg@{k}"] = ndcg[k]
    rr = np.where(found & (ranks < ks[-1]), 1.0 / (safe + 1.0), 0.0)
    mrr = np.zeros(num_groups)
    np.maximum.at(mrr, group, rr)
    out[f"mrr@{ks[-1]}"] = mrr
    return out


def mean_popularity(rankings: np.ndarray, train_counts: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``{"mean_pop@K": float64 (m,)}``: mean training count of each list's valid top-K items."""
    valid = rankings >= 0
    pops = np.where(valid, train_counts[np.where(valid, rankings, 0)], 0).astype(np.float64)
    csum, ccount = np.cumsum(pops, axis=1), np.cumsum(valid, axis=1)
    out = {}
    for k in ks:
        kk = min(k, rankings.shape[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"mean_pop@{k}"] = np.where(ccount[:, kk - 1] > 0, csum[:, kk - 1] / ccount[:, kk - 1], np.nan)
    return out


def coverage(rankings: np.ndarray, num_items: int, ks: tuple[int, ...]) -> dict[str, float]:
    """``{"coverage@K": float}``: share of the catalogue appearing in at least one list's top K."""
    out = {}
    for k in ks:
        top = rankings[:, :k]
        seen = np.zeros(num_items, dtype=bool)
        seen[top[top >= 0]] = True
        out[f"coverage@{k}"] = float(seen.sum() / num_items)
    return out
