"""One query's tower inputs (``QueryInputs``) and a batch of them as the query tower's input dict.

The exported query tower takes (per the contract, batch dim B, history width L):
  user_id str [B]; each user feature (categorical / text str [B], numeric float32 [B] with NaN = missing,
  multi_categorical str [B, N] padded with ""); history str [B, L] oldest → newest right-padded with "";
  history_timestamps int64 [B, L] (0 padding); timestamp int64 [B].

``towers.inputs.query_features_batch`` builds the same dict from a pandas DataFrame; that costs a few
milliseconds per call, most of a request's budget, so serving converts each request's values once
(``feature_value``) and stacks them here with NumPy. ``tests/test_serving_tower_inputs.py`` checks the
two give identical dicts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from recdata.schema import FeatureSpec


@dataclass(frozen=True)
class QueryInputs:
    """One query, already converted: features[name] is str (categorical/text), float (numeric, NaN =
    missing) or tuple of str (multi_categorical); history / history_timestamps oldest → newest."""

    user_id: str
    features: dict
    history: Sequence[str]
    history_timestamps: np.ndarray   # int64, same length as history
    timestamp: int


def feature_value(value, kind: str):
    """A raw value (from the data or a validated request; None / NaN = missing) in tower form."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if kind in ("categorical", "text"):
        return "" if missing else (value if isinstance(value, str) else str(value))
    if kind == "numeric":
        return math.nan if missing else float(value)
    if kind == "multi_categorical":
        if missing:
            return ()
        return tuple("" if (x is None or (isinstance(x, float) and math.isnan(x))) else str(x) for x in value)
    raise ValueError(f"unsupported feature kind {kind!r}")


def batch_inputs(queries: Sequence[QueryInputs], user_specs: Sequence[FeatureSpec], max_history: int
                 ) -> dict[str, np.ndarray]:
    """The query tower's input dict for ``queries`` (B >= 1); each history keeps its last ``max_history``."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    b = len(queries)
    out: dict[str, np.ndarray] = {"user_id": np.array([q.user_id for q in queries], dtype=object)}
    for spec in user_specs:
        values = [q.features[spec.name] for q in queries]
        if spec.kind == "numeric":
            out[spec.name] = np.array(values, dtype=np.float32)
        elif spec.kind == "multi_categorical":
            width = max(1, max(len(v) for v in values))
            arr = np.full((b, width), "", dtype=object)
            for i, v in enumerate(values):
                arr[i, :len(v)] = v
            out[spec.name] = arr
        else:
            arr = np.empty(b, dtype=object)
            arr[:] = values
            out[spec.name] = arr
    kept = [min(len(q.history), max_history) for q in queries]
    width = max(1, max(kept))
    history = np.full((b, width), "", dtype=object)
    history_ts = np.zeros((b, width), dtype=np.int64)
    for i, (q, n) in enumerate(zip(queries, kept)):
        if n:
            history[i, :n] = q.history[len(q.history) - n:]
            history_ts[i, :n] = q.history_timestamps[len(q.history) - n:]
    out["history"] = history
    out["history_timestamps"] = history_ts
    out["timestamp"] = np.array([q.timestamp for q in queries], dtype=np.int64)
    return out
