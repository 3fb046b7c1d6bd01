"""The two inputs every evaluation shares: held-out test cases and per-query exclusions.

A test case is one (query row, target item row) pair: query rows index the query vectors (one per
test user), item rows index the catalogue (the vectors artifact order). A user with several
held-out items (temporal split) has several cases with the same query row; the relevant set of a
query is the set of its targets. Exclusions are, per query row, the item rows that may never be
retrieved (the user's training items); they are held here as a CSR structure with sorted, unique
rows per query (``core.exclusions.Exclusions``, the one exclusions type of every room: ``index.search``
takes it as it is).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.exclusions import Exclusions, as_exclusions, take_exclusions


def _int_array(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of int rows, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{what} must hold integer rows, got dtype {arr.dtype}; map ids to catalogue rows first"
        )
    return arr.astype(np.int64, copy=False)


def _check_range(arr: np.ndarray, upper: int, what: str, fix: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        bad = arr[(arr < 0) | (arr >= upper)][:5].tolist()
        raise ValueError(f"{what} must be rows in [0, {upper}), got e.g. {bad}; {fix}")


@dataclass(frozen=True)
class EvalCases:
    """Held-out (query row, target item row) pairs, deduplicated, in first-seen order.

    queries  int64 (c,)  query rows
    targets  int64 (c,)  item rows
    """

    __test__ = False  # not a pytest class
    queries: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.queries)

    def unique_queries(self) -> np.ndarray:
        """Sorted unique query rows (int64) that have at least one case."""
        return np.unique(self.queries)

    def subset(self, mask: np.ndarray) -> "EvalCases":
        return EvalCases(self.queries[mask], self.targets[mask])


def as_cases(test_cases, num_queries: int, num_items: int) -> tuple[EvalCases, int]:
    """Normalise ``test_cases`` to ``EvalCases``; returns (cases, number of duplicate pairs removed).

    Accepts ``EvalCases``, a pair ``(query_rows, target_rows)``, an int array of shape (c, 2), or a
    DataFrame with int columns ``query`` and ``target``.
    """
    if isinstance(test_cases, EvalCases):
        q, t = test_cases.queries, test_cases.targets
    elif isinstance(test_cases, pd.DataFrame):
        missing = [c for c in ("query", "target") if c not in test_cases.columns]
        if missing:
            raise ValueError(
                f"test_cases DataFrame is missing column(s) {missing}; it has {list(test_cases.columns)}. "
                "Give int columns 'query' (query row) and 'target' (item row)"
            )
        q, t = test_cases["query"].to_numpy(), test_cases["target"].to_numpy()
    elif isinstance(test_cases, tuple) and len(test_cases) == 2:
        q, t = test_cases
    else:
        arr = np.asarray(test_cases)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                f"test_cases must be (query_rows, target_rows), an (c, 2) int array or a DataFrame with "
                f"'query'/'target' columns; got {type(test_cases).__name__} of shape {arr.shape}"
            )
        q, t = arr[:, 0], arr[:, 1]
    q = _int_array(q, "test case query rows")
    t = _int_array(t, "test case target rows")
    if len(q) != len(t):
        raise ValueError(f"test cases: {len(q)} query rows but {len(t)} target rows; they must pair up")
    if len(q) == 0:
        raise ValueError("test cases are empty; the split produced no held-out interactions to score")
    _check_range(q, num_queries, "test case query rows", f"there are {num_queries} query vectors/rows")
    _check_range(t, num_items, "test case target rows", f"the catalogue has {num_items} items")
    keys = q * np.int64(num_items) + t
    _, first = np.unique(keys, return_index=True)
    first.sort()
    return EvalCases(q[first], t[first]), int(len(q) - len(first))


# The one exclusions type (also used by indexing and serving) lives in core; eval re-exports it.
__all__ = ["EvalCases", "as_cases", "Exclusions", "as_exclusions", "take_exclusions"]
