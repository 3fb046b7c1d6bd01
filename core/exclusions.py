"""``Exclusions``: the items each query may not retrieve (a user's training or already-seen items).

One type for every room: evaluation (``eval``: the users' train+valid items), the index (``indexing``:
``ItemIndex.search(exclude=...)``) and serving (``serving``: a known user's seen items). Rows are catalogue
rows (positions in the vectors/index), never item ids. Held as CSR:

    indptr    int64 (m + 1,)   query q excludes indices[indptr[q]:indptr[q + 1]]
    indices   int64 (nnz,)     sorted and unique within each query
    num_items int              catalogue size n (every row is in [0, n))

``as_exclusions`` accepts what callers naturally have -- ``None``, an ``Exclusions``, a scipy sparse
(m, n) matrix (stored entries = excluded pairs), or a sequence of m int arrays -- and is the one place
that checks and normalises them; ``Exclusions.from_pairs`` builds one from (query, row) pairs.
Only NumPy is used (sparse matrices are read through their ``tocsr()``), so every layer may import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np


def _int_rows(values, what: str) -> np.ndarray:
    """1-D int64 rows; ``TypeError`` naming ``what`` for anything that is not integer rows."""
    arr = np.asarray([] if values is None else values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must be a 1-D array of int rows, got dtype {arr.dtype} shape {arr.shape}; "
                        "exclusions are catalogue rows, map item ids to rows first")
    return arr.astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class Exclusions:
    """Per-query excluded catalogue rows as CSR (see the module docstring)."""

    indptr: np.ndarray
    indices: np.ndarray
    num_items: int

    @property
    def num_queries(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @cached_property
    def counts(self) -> np.ndarray:
        """int64 (m,): number of excluded rows per query."""
        return np.diff(self.indptr).astype(np.int64)

    @cached_property
    def keys(self) -> np.ndarray:
        """int64 (nnz,) ``query * num_items + row``, globally sorted (CSR rows in order, sorted within)."""
        row_of = np.repeat(np.arange(self.num_queries, dtype=np.int64), self.counts)
        return row_of * np.int64(self.num_items) + self.indices

    def rows(self, q: int) -> np.ndarray:
        """Excluded rows of query ``q`` (sorted, unique)."""
        return self.indices[self.indptr[q]:self.indptr[q + 1]]

    def lists(self, queries: np.ndarray) -> list[np.ndarray]:
        """Excluded rows of each query in ``queries``."""
        return [self.indices[self.indptr[q]:self.indptr[q + 1]] for q in queries]

    def pairs(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``queries``, excluded row) for every exclusion of those queries; int64."""
        queries = np.asarray(queries, dtype=np.int64)
        starts, stops = self.indptr[queries], self.indptr[queries + 1]
        lengths = stops - starts
        pos = np.repeat(np.arange(len(queries), dtype=np.int64), lengths)
        offsets = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return pos, self.indices[np.repeat(starts, lengths) + offsets]

    def take(self, queries: np.ndarray) -> "Exclusions":
        """The exclusions of ``queries`` (int rows), re-indexed 0..len(queries)-1 in that order."""
        queries = np.asarray(queries, dtype=np.int64)
        counts = self.counts[queries]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        _, rows = self.pairs(queries)
        return Exclusions(indptr, rows, self.num_items)

    def contains(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """bool, True where ``items[i]`` is excluded for ``queries[i]`` (broadcast; e.g. queries (b, 1) and
        candidate rows (b, c) give (b, c)). Rows < 0 (padding) are never excluded."""
        queries, items = np.broadcast_arrays(np.asarray(queries, np.int64), np.asarray(items, np.int64))
        keys = self.keys
        if keys.size == 0:
            return np.zeros(queries.shape, dtype=bool)
        probe = queries * np.int64(self.num_items) + items
        pos = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
        return (keys[pos] == probe) & (items >= 0)

    @classmethod
    def empty(cls, num_queries: int, num_items: int) -> "Exclusions":
        return cls(np.zeros(num_queries + 1, np.int64), np.zeros(0, np.int64), int(num_items))

    @classmethod
    def from_pairs(cls, queries, rows, num_queries: int, num_items: int, what: str = "exclusions") -> "Exclusions":
        """From (query, row) pairs in any order, repeats allowed (they are removed)."""
        queries = _int_rows(queries, f"{what} query rows")
        rows = _int_rows(rows, f"{what} item rows")
        if len(queries) != len(rows):
            raise ValueError(f"{what}: {len(queries)} query rows but {len(rows)} item rows; they must pair up")
        _check_rows(queries, rows, num_items, what)
        if len(queries) and (queries.min() < 0 or queries.max() >= num_queries):
            bad = queries[(queries < 0) | (queries >= num_queries)][:5].tolist()
            raise ValueError(f"{what}: query rows must be in [0, {num_queries}), got e.g. {bad}")
        keys = np.unique(queries * np.int64(num_items) + rows)
        indptr = np.searchsorted(keys // max(num_items, 1) if num_items else keys,
                                 np.arange(num_queries + 1, dtype=np.int64)).astype(np.int64)
        return cls(indptr, (keys % num_items if num_items else keys).astype(np.int64), int(num_items))


def _check_rows(queries: np.ndarray, rows: np.ndarray, num_items: int, what: str) -> None:
    out = (rows < 0) | (rows >= num_items)
    if out.any():
        j = int(np.flatnonzero(out)[0])
        raise ValueError(f"{what}[{int(queries[j])}] holds row {int(rows[j])}, outside 0..{num_items - 1}: excluded "
                         f"item rows must be rows in [0, {num_items}), got e.g. {rows[out][:5].tolist()}; "
                         "exclusions are catalogue rows of this index, not item ids")


def as_exclusions(exclusions, num_queries: int, num_items: int, what: str = "exclusions") -> Exclusions:
    """Normalise ``exclusions`` to ``Exclusions`` for ``num_queries`` queries over ``num_items`` rows.

    Accepts ``None`` (nothing excluded), an ``Exclusions``, a scipy sparse matrix/array of shape
    (num_queries, num_items) whose stored entries are the excluded pairs (values are ignored), or a sequence
    of ``num_queries`` int arrays of rows (``None`` or ``[]`` for none). ``what`` names the argument in errors.
    """
    if exclusions is None:
        return Exclusions.empty(num_queries, num_items)
    if isinstance(exclusions, Exclusions):
        if exclusions.num_queries != num_queries or exclusions.num_items != num_items:
            raise ValueError(f"{what} cover {exclusions.num_queries} queries x {exclusions.num_items} items, "
                             f"expected {num_queries} x {num_items}")
        return exclusions
    if hasattr(exclusions, "tocsr") and hasattr(exclusions, "shape"):  # scipy sparse, without importing scipy
        if tuple(exclusions.shape) != (num_queries, num_items):
            raise ValueError(f"{what} matrix has shape {tuple(exclusions.shape)}, expected (num_queries, num_items) "
                             f"= ({num_queries}, {num_items}); rows are query rows, columns catalogue item rows")
        csr = exclusions.tocsr()
        q = np.repeat(np.arange(num_queries, dtype=np.int64), np.diff(csr.indptr))
        return Exclusions.from_pairs(q, np.asarray(csr.indices, dtype=np.int64), num_queries, num_items, what)
    if isinstance(exclusions, (str, bytes)) or not isinstance(exclusions, (Sequence, np.ndarray)):
        raise TypeError(f"{what} must be None, an Exclusions, a scipy sparse (queries x items) matrix or a list of "
                        f"int arrays, got {type(exclusions).__name__}")
    if len(exclusions) != num_queries:
        raise ValueError(f"{what} has {len(exclusions)} entries, expected one per query row ({num_queries}): one "
                         "array of rows per query; give an empty array for queries without exclusions")
    parts = [_int_rows(r, f"{what}[{i}]").ravel() for i, r in enumerate(exclusions)]
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    q = np.repeat(np.arange(num_queries, dtype=np.int64), lengths)
    rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return Exclusions.from_pairs(q, rows, num_queries, num_items, what)


def take_exclusions(exclusions: Exclusions, queries: np.ndarray) -> Exclusions:
    """``exclusions.take(queries)``."""
    return exclusions.take(queries)
