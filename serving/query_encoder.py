"""``QueryEncoder``: the exported query tower, called with as little per-call overhead as possible.

Online batches are small (1..max_batch rows), so fixed per-call costs dominate. ``LoadedTower.__call__``
(towers/export.py) slices every input tensor into ``batch_size`` chunks even when the batch is one chunk;
those eager slice ops cost more than the tower itself for B = 1 (measured ~16 ms vs ~3 ms per call on the
shared 2-core machine, see the serving notes in the report). Until towers offers a single-chunk fast path,
this wrapper converts the contract dict to tensors once and calls the tower's serving signature directly;
when the tower object does not expose it, it falls back to ``tower(features)``.
``tests/test_serving_query_encoder.py`` checks both paths give the same embeddings.
"""
from __future__ import annotations

import numpy as np

from towers.tf_env import tf

_STRING_KINDS = ("categorical", "text", "multi_categorical")


class QueryEncoder:
    """``encoder(features) -> float32 [B, D]`` for the query-tower contract dict (see towers/export.py)."""

    def __init__(self, tower):
        self.tower = tower
        self.model_version: str = tower.model_version
        self.output_dim: int = int(tower.output_dim)
        self.features = tuple(tower.features)
        dtypes = {"user_id": tf.string, "history": tf.string, "history_timestamps": tf.int64, "timestamp": tf.int64}
        dtypes.update({s.name: tf.string if s.kind in _STRING_KINDS else tf.float32 for s in self.features})
        names = tuple(tower.feature_names)
        if set(names) != set(dtypes):
            raise ValueError(f"the query tower takes {list(names)} but its features imply {sorted(dtypes)}; "
                             "re-export the towers")
        self._dtypes = {name: dtypes[name] for name in names}
        self._signature = getattr(tower, "_serve", None)  # the "serving_default" concrete function

    @property
    def fast(self) -> bool:
        """True when calls go straight to the serving signature (no chunking)."""
        return self._signature is not None

    def __call__(self, features: dict) -> np.ndarray:
        if self._signature is None:
            return self.tower(features)
        tensors = {name: tf.constant(features[name], dtype) for name, dtype in self._dtypes.items()}
        return self._signature(**tensors)["embedding"].numpy().astype(np.float32, copy=False)
