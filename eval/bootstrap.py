"""Percentile-bootstrap confidence intervals over test queries, for every metric and slice at once.

The resampling unit is the test query (one per test user): a replicate draws as many queries as
there are, with replacement, and every slice mean is recomputed from the same draw, so intervals
of different slices and metrics are mutually consistent and a paired difference of two runs uses
identical draws for both. A slice's value in a replicate is the weighted mean of its per-query
values, ``sum_q w_q v_q / sum_q w_q [q in slice]``; per-query values that are undefined (NaN, e.g.
the mean popularity of an empty list) are left out of numerator and denominator alike.

Replicate weights come in chunks from ``np.random.default_rng(seed)``, so the same seed, number of
queries and sample count always give the same draws. The work is two dense float32 GEMMs per chunk
(weights x values, weights x membership), a few seconds for 100k queries x 1000 replicates.

Per-query tables (``per_query``) are long DataFrames with columns
  source, family, slice  str   which ranking and which slice the row belongs to
  query                  int64 query row;  query_id str  stable id used to pair runs
  n_targets              int64 test cases of this query in this slice
  <metric> ...           float64 per-query metric values (NaN = undefined)
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd

KEY_COLUMNS = ("source", "family", "slice", "query", "query_id", "n_targets")


def replicate_weights(num_units: int, samples: int, seed: int, chunk: int = 64) -> Iterator[np.ndarray]:
    """Yield float32 (<= chunk, num_units) arrays of resampling counts, ``samples`` rows in total."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < samples:
        b = min(chunk, samples - done)
        draws = rng.integers(0, num_units, size=(b, num_units))
        draws += np.arange(b, dtype=draws.dtype)[:, None] * num_units
        yield np.bincount(draws.ravel(), minlength=b * num_units).reshape(b, num_units).astype(np.float32)
        done += b


class _Means:
    """Replicate means of NaN-skipping columns: ``sum w v / sum w [v defined]`` for a weight chunk."""

    def __init__(self, values: np.ndarray):
        defined = ~np.isnan(values)
        self.filled = np.where(defined, values, 0.0).astype(np.float32)
        masks, inverse = np.unique(defined.T, axis=0, return_inverse=True)
        self.masks = masks.T.astype(np.float32)  # (units, distinct membership patterns)
        self.mask_of_col = inverse.ravel()

    def __call__(self, w: np.ndarray) -> np.ndarray:
        num = (w @ self.filled).astype(np.float64)
        den = (w @ self.masks).astype(np.float64)[:, self.mask_of_col]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)


def _percentiles(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(reps.shape[1], np.nan)
    hi = np.full(reps.shape[1], np.nan)
    alpha = (1.0 - confidence) / 2.0
    has = ~np.isnan(reps).all(axis=0)
    if has.any():
        q = np.nanquantile(reps[:, has], [alpha, 1.0 - alpha], axis=0)
        lo[has], hi[has] = q[0], q[1]
    return lo, hi


def nan_means(values: np.ndarray) -> np.ndarray:
    """float64 (C,): column means over defined (non-NaN) entries; NaN for an all-NaN column."""
    defined = ~np.isnan(values)
    n = defined.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(defined, values, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def bootstrap_columns(values: np.ndarray, samples: int, seed: int, confidence: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the NaN-skipping column means of ``values`` float (units, C).

    Returns (lo, hi), float64 (C,); NaN where a column has no defined value (or ``samples`` == 0).
    """
    units, cols = values.shape
    if samples == 0 or units == 0 or cols == 0:
        return np.full(cols, np.nan), np.full(cols, np.nan)
    means = _Means(values)
    reps = np.concatenate([means(w) for w in replicate_weights(units, samples, seed)])
    return _percentiles(reps, confidence)


def bootstrap_difference(values_a: np.ndarray, values_b: np.ndarray, samples: int, seed: int,
                         confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired bootstrap of ``mean(a) - mean(b)`` per column; a and b are float (units, C), same units.

    Each replicate applies the same query weights to both runs, so the interval accounts for the
    correlation between them. Column means skip NaN independently in a and b (slices whose
    membership differs between runs, e.g. index-vs-exact neighbours, are still well defined).
    Returns (diff, lo, hi), float64 (C,).
    """
    if values_a.shape != values_b.shape:
        raise ValueError(f"paired values must have the same shape, got {values_a.shape} and {values_b.shape}")
    diff = nan_means(values_a) - nan_means(values_b)
    units, cols = values_a.shape
    if samples == 0 or units == 0 or cols == 0:
        return diff, np.full(cols, np.nan), np.full(cols, np.nan)
    ma, mb = _Means(values_a), _Means(values_b)
    reps = np.concatenate([ma(w) - mb(w) for w in replicate_weights(units, samples, seed)])
    lo, hi = _percentiles(reps, confidence)
    return diff, lo, hi


def unit_matrix(per_query: pd.DataFrame, groups: Sequence[tuple[str, str]], metrics: Sequence[str],
                units: pd.Index, unit_column: str = "query_id") -> np.ndarray:
    """float64 (len(units), len(groups) * len(metrics)): value of (group, metric) for each unit, NaN if absent.

    ``groups`` are (family, slice) pairs of one source; column ``g * len(metrics) + j`` holds metric j
    of group g.
    """
    out = np.full((len(units), len(groups) * len(metrics)), np.nan)
    if per_query.empty:
        return out
    pos = {g: i for i, g in enumerate(groups)}
    gidx = np.array([pos.get(g, -1) for g in zip(per_query["family"], per_query["slice"])], dtype=np.int64)
    keep = gidx >= 0
    rows = units.get_indexer(per_query[unit_column])[keep]
    if (rows < 0).any():
        raise ValueError("per-query table names queries outside the unit index")
    vals = per_query.loc[keep, list(metrics)].to_numpy(dtype=np.float64)
    for j in range(len(metrics)):
        out[rows, gidx[keep] * len(metrics) + j] = vals[:, j]
    return out


def summarize(per_query: pd.DataFrame, groups: Sequence[tuple[str, str]], metrics: Sequence[str],
              samples: int, seed: int, confidence: float, units: pd.Index | None = None) -> pd.DataFrame:
    """One row per (family, slice) in ``groups`` order, for a single source's per-query table.

    Columns: family, slice, n_queries, n_cases, then ``<metric>``, ``<metric>_lo``, ``<metric>_hi`` for
    every metric (value = mean over the slice's queries; NaN when the slice is empty).
    ``units`` = the resampled queries (default: every query_id in the table).
    """
    if units is None:
        units = pd.Index(pd.unique(per_query["query_id"]))
    matrix = unit_matrix(per_query, groups, metrics, units)
    value = nan_means(matrix)
    lo, hi = bootstrap_columns(matrix, samples, seed, confidence)
    counts = (per_query.groupby(["family", "slice"], sort=False)
              .agg(n_queries=("query_id", "size"), n_cases=("n_targets", "sum")))
    rows = []
    nm = len(metrics)
    for g, (family, slc) in enumerate(groups):
        rec = {"family": family, "slice": slc,
               "n_queries": int(counts["n_queries"].get((family, slc), 0)),
               "n_cases": int(counts["n_cases"].get((family, slc), 0))}
        for j, metric in enumerate(metrics):
            c = g * nm + j
            rec[metric], rec[f"{metric}_lo"], rec[f"{metric}_hi"] = value[c], lo[c], hi[c]
        rows.append(rec)
    return pd.DataFrame(rows)
