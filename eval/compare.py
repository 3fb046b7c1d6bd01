"""Paired comparison of two evaluated runs on the same test queries (``twotower compare RUN_A RUN_B``).

``compare(a, b)`` reads both runs' saved per-query metrics, pairs them by ``query_id`` and, for
every metric and slice, returns A, B, the difference A - B and a paired-bootstrap CI of that
difference (same resampled queries for both runs). ``excludes_zero`` is True when the CI lies
entirely above or below 0. For the target metrics ("exact" / "index" sources) both runs must
have been graded on exactly the same test cases -- same queries, same slices, same number of
targets per query and slice -- otherwise the comparison is refused, since the difference would
mix model change with test-set change.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eval.bootstrap import bootstrap_difference, nan_means, unit_matrix
from eval.result import EvalResult

COLUMNS = ("family", "slice", "metric", "n_queries", "n_cases", "a", "b", "diff", "lo", "hi", "excludes_zero")


def _as_result(run) -> EvalResult:
    if isinstance(run, EvalResult):
        return run
    if isinstance(run, (str, Path)):
        return EvalResult.load(run)
    raise TypeError(f"expected an EvalResult or the path of a saved evaluation, got {type(run).__name__}")


def _check_same_cases(pa: pd.DataFrame, pb: pd.DataFrame, name_a: str, name_b: str) -> None:
    keys = ["family", "slice", "query_id"]
    merged = pa[keys + ["n_targets"]].merge(pb[keys + ["n_targets"]], on=keys, how="outer",
                                            suffixes=("_a", "_b"), indicator=True)
    only_a = int((merged["_merge"] == "left_only").sum())
    only_b = int((merged["_merge"] == "right_only").sum())
    differ = merged[(merged["_merge"] == "both") & (merged["n_targets_a"] != merged["n_targets_b"])]
    if only_a or only_b or len(differ):
        bad = merged[merged["_merge"] != "both"]
        ex = (bad.iloc[0] if len(bad) else differ.iloc[0])
        raise ValueError(
            f"runs {name_a!r} and {name_b!r} were graded on different test cases: {only_a} (query, slice) "
            f"entries only in {name_a!r}, {only_b} only in {name_b!r}, {len(differ)} with a different number of "
            f"targets (e.g. query_id {ex['query_id']!r} in {ex['family']}/{ex['slice']}). Evaluate both on the "
            "same split, training counts and eval config (head_share, activity_thresholds, excluded_targets)"
        )


def compare(a, b, *, source: str = "exact", metrics: list[str] | None = None, samples: int | None = None,
            seed: int | None = None, confidence: float | None = None) -> pd.DataFrame:
    """Paired A - B table for one ranking ``source`` of two runs (EvalResult objects or saved dirs).

    Bootstrap settings default to run A's config. Returns a DataFrame with columns ``COLUMNS``:
    one row per (family, slice, metric), slices in A's order; ``n_queries`` / ``n_cases`` are A's.
    ``df.attrs`` holds {"a", "b", "source", "samples", "confidence"}.
    """
    ra, rb = _as_result(a), _as_result(b)
    for r in (ra, rb):
        if source not in r.sources:
            raise ValueError(f"run {r.name!r} has no source {source!r}; it has {r.sources}")
    cfg = ra.config
    samples = cfg.bootstrap_samples if samples is None else samples
    seed = cfg.seed if seed is None else seed
    confidence = cfg.confidence if confidence is None else confidence
    pa = ra.per_query[ra.per_query["source"] == source]
    pb = rb.per_query[rb.per_query["source"] == source]
    if source != "index_vs_exact":
        _check_same_cases(pa, pb, ra.name, rb.name)
    units_a = pd.Index(pd.unique(ra.cases["query_id"]))
    units_b = set(pd.unique(rb.cases["query_id"]))
    if len(units_a) != len(units_b) or not units_b.issuperset(units_a):
        raise ValueError(
            f"runs {ra.name!r} and {rb.name!r} have different test queries ({len(units_a)} vs {len(units_b)}, "
            f"{len(units_b.symmetric_difference(units_a))} not shared); pair runs evaluated on the same split"
        )
    have_b = set(rb.metric_columns(source))
    metrics = [m for m in (metrics or ra.metric_columns(source)) if m in have_b]
    if not metrics:
        raise ValueError(f"runs {ra.name!r} and {rb.name!r} share no metric for source {source!r}")
    sa = ra.summary[ra.summary["source"] == source]
    groups = list(zip(sa["family"], sa["slice"]))
    va = unit_matrix(pa, groups, metrics, units_a)
    vb = unit_matrix(pb, groups, metrics, units_a)
    diff, lo, hi = bootstrap_difference(va, vb, samples, seed, confidence)
    mean_a, mean_b = nan_means(va), nan_means(vb)
    rows = []
    nm = len(metrics)
    for g, (family, slc) in enumerate(groups):
        srow = sa.iloc[g]
        for j, metric in enumerate(metrics):
            c = g * nm + j
            excludes = bool((lo[c] > 0 or hi[c] < 0)) if not (np.isnan(lo[c]) or np.isnan(hi[c])) else False
            rows.append({"family": family, "slice": slc, "metric": metric, "n_queries": int(srow["n_queries"]),
                         "n_cases": int(srow["n_cases"]), "a": mean_a[c], "b": mean_b[c], "diff": diff[c],
                         "lo": lo[c], "hi": hi[c], "excludes_zero": excludes})
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    out.attrs.update({"a": ra.name, "b": rb.name, "source": source, "samples": samples, "confidence": confidence})
    return out
