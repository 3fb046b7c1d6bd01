"""The two inputs every evaluation shares: held-out test cases and per-query exclusions.

A test case is one (query row, target item row) pair: query rows index the query vectors (one per
test user), item rows index the catalogue (the vectors artifact order). A user with several
held-out items (temporal split) has several cases with the same query row; the relevant set of a
query is the set of its targets. Exclusions are, per query row, the item rows that may never be
retrieved (the user's training items); they are held here as a CSR structure with sorted, unique
rows per query, which gives vectorised membership tests and per-block lists for ``index.search``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp


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


@dataclass(frozen=True)
class Exclusions:
    """Per-query excluded item rows as CSR: query q excludes ``indices[indptr[q]:indptr[q+1]]``.

    indptr   int64 (m + 1,)
    indices  int64 (nnz,), sorted and unique within each query
    num_items  catalogue size n (rows are in [0, n))
    """

    indptr: np.ndarray
    indices: np.ndarray
    num_items: int

    @property
    def num_queries(self) -> int:
        return len(self.indptr) - 1

    @property
    def counts(self) -> np.ndarray:
        """int64 (m,): number of excluded items per query."""
        return np.diff(self.indptr)

    def rows(self, q: int) -> np.ndarray:
        return self.indices[self.indptr[q]:self.indptr[q + 1]]

    def lists(self, queries: np.ndarray) -> list[np.ndarray]:
        """Excluded rows of each query in ``queries``, as the list ``index.search(exclude=...)`` takes."""
        return [self.indices[self.indptr[q]:self.indptr[q + 1]] for q in queries]

    def pairs(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``queries``, excluded item row) for every exclusion of those queries; int64."""
        starts, stops = self.indptr[queries], self.indptr[queries + 1]
        lengths = stops - starts
        pos = np.repeat(np.arange(len(queries), dtype=np.int64), lengths)
        offsets = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return pos, self.indices[np.repeat(starts, lengths) + offsets]

    def contains(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """bool array, True where ``items[i]`` is excluded for ``queries[i]`` (same shapes, broadcast)."""
        queries, items = np.broadcast_arrays(np.asarray(queries, np.int64), np.asarray(items, np.int64))
        if self.indices.size == 0:
            return np.zeros(queries.shape, dtype=bool)
        n = np.int64(self.num_items)
        row_of = np.repeat(np.arange(self.num_queries, dtype=np.int64), self.counts)
        keys = row_of * n + self.indices  # globally sorted: CSR rows in order, sorted within
        probe = queries * n + items
        pos = np.searchsorted(keys, probe)
        pos = np.minimum(pos, len(keys) - 1)
        return (keys[pos] == probe) & (items >= 0)

    @classmethod
    def empty(cls, num_queries: int, num_items: int) -> "Exclusions":
        return cls(np.zeros(num_queries + 1, np.int64), np.zeros(0, np.int64), int(num_items))


def as_exclusions(exclusions, num_queries: int, num_items: int) -> Exclusions:
    """Normalise ``exclusions`` to ``Exclusions``.

    Accepts ``None`` (nothing excluded), an ``Exclusions``, a scipy sparse matrix/array of shape
    (num_queries, num_items) whose stored entries are the excluded (query, item) pairs (values are
    ignored), or a sequence of ``num_queries`` int arrays of item rows.
    """
    if exclusions is None:
        return Exclusions.empty(num_queries, num_items)
    if isinstance(exclusions, Exclusions):
        if exclusions.num_queries != num_queries or exclusions.num_items != num_items:
            raise ValueError(
                f"exclusions cover {exclusions.num_queries} queries x {exclusions.num_items} items, expected "
                f"{num_queries} x {num_items}"
            )
        return exclusions
    if sp.issparse(exclusions):
        if exclusions.shape != (num_queries, num_items):
            raise ValueError(
                f"exclusions matrix has shape {exclusions.shape}, expected (num_queries, num_items) = "
                f"({num_queries}, {num_items}); rows are query rows, columns catalogue item rows"
            )
        csr = sp.csr_matrix(exclusions)
        csr.sum_duplicates()
        csr.sort_indices()
        return Exclusions(csr.indptr.astype(np.int64), csr.indices.astype(np.int64), int(num_items))
    if isinstance(exclusions, (str, bytes)) or not isinstance(exclusions, Sequence) and not isinstance(
        exclusions, np.ndarray
    ):
        raise TypeError(
            f"exclusions must be None, a scipy sparse (queries x items) matrix or a list of int arrays, "
            f"got {type(exclusions).__name__}"
        )
    if len(exclusions) != num_queries:
        raise ValueError(
            f"exclusions has {len(exclusions)} entries, expected one per query row ({num_queries}); "
            "give an empty array for queries without training items"
        )
    rows = [np.unique(_int_array(np.asarray(r).reshape(-1) if np.ndim(r) else np.asarray([r]),
                                 f"exclusions[{i}]")) for i, r in enumerate(exclusions)]
    counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    _check_range(indices, num_items, "excluded item rows", f"the catalogue has {num_items} items")
    return Exclusions(indptr, indices, int(num_items))


def take_exclusions(exclusions: Exclusions, queries: np.ndarray) -> Exclusions:
    """The exclusions of ``queries`` (int64 rows), re-indexed 0..len(queries)-1 in that order."""
    queries = np.asarray(queries, dtype=np.int64)
    counts = exclusions.counts[queries]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    _, rows = exclusions.pairs(queries)
    return Exclusions(indptr, rows, exclusions.num_items)
