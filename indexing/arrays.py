"""Validation of the arrays every index entry point takes (vectors, item ids)."""
from __future__ import annotations

import numpy as np


def as_float32_matrix(x, name: str, dim: int | None = None) -> np.ndarray:
    """Validate ``x`` as a finite real (n, d) matrix and return it as C-contiguous float32."""
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a float array (float32 preferred), got dtype {x.dtype}; convert with "
                        f".astype(np.float32)")
    if x.ndim != 2:
        hint = " (for one vector use x.reshape(1, -1))" if x.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n, d), got shape {x.shape}{hint}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]} but the index holds {dim}-d vectors; "
                         "were they produced by a different model version?")
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} contains NaN or inf in {len(bad)} of {len(x)} rows (first rows: "
                         f"{bad[:5].tolist()}); fix the upstream embeddings or drop those rows")
    return x


def as_item_ids(item_ids, n: int) -> np.ndarray:
    """Item ids as an object ndarray of str (n,), unique; raises ValueError otherwise."""
    ids = np.asarray(item_ids, dtype=object)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"item_ids must be 1-D with one id per vector ({n}), got shape {ids.shape}")
    if n and not all(isinstance(i, str) for i in ids):
        bad = next(i for i in ids if not isinstance(i, str))
        raise TypeError(f"item_ids must be str (the data contract), got {type(bad).__name__} {bad!r}")
    if len(set(ids.tolist())) != n:
        uniq, counts = np.unique(ids.astype(str), return_counts=True)
        raise ValueError(f"item_ids must be unique; {int((counts > 1).sum())} ids repeat, e.g. "
                         f"{uniq[counts > 1][:3].tolist()}")
    return ids
