"""The data axis: nested training subsets made of whole users.

``user_subset(train, interactions, seed)`` keeps the training events of the first users of a
seeded permutation of the users (sorted user ids, then ``numpy.random.default_rng(seed)``) until
at least ``interactions`` events are kept. Whole users keep every history intact (the encoder's
input is a user's sequence), and because every size takes a prefix of the same permutation, a
smaller subset is contained in every larger one. Row order of ``train`` is preserved.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def user_subset(train: pd.DataFrame, interactions: int | None, seed: int = 0) -> pd.DataFrame:
    """The rows of ``train`` (interactions with a ``user_id`` column) of the smallest prefix of
    the seeded user permutation holding >= ``interactions`` events; None or more than there
    are → all of ``train``."""
    if "user_id" not in train.columns:
        raise ValueError(f"training interactions need a 'user_id' column; got {list(train.columns)}")
    if interactions is None or interactions >= len(train):
        return train
    if isinstance(interactions, bool) or not isinstance(interactions, (int, np.integer)) or interactions <= 0:
        raise ValueError(f"interactions must be a positive int (or None for all), got {interactions!r}")
    users, counts = np.unique(train["user_id"].to_numpy(dtype=str), return_counts=True)
    order = np.random.default_rng(seed).permutation(len(users))
    kept = np.cumsum(counts[order])
    take = int(np.searchsorted(kept, interactions)) + 1   # first prefix with >= interactions events
    chosen = users[order[:take]]
    return train[train["user_id"].astype(str).isin(chosen)]
