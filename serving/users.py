"""``KnownUsers``: what the service knows about the users of a run's data (``<run>/data``).

For each user of the users table: the raw feature values, the most recent ``max_history`` interactions
(item ids and timestamps, oldest → newest) and every item the user interacted with (for exclude_seen).
The history is all of train + valid + test, ordered by (timestamp, source row) — the data contract's
tie rule — because at serving time everything the data holds is the past.

Histories are held as flat arrays + offsets (CSR), so memory is O(interactions), and lookups are O(1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.exclusions import Exclusions
from recdata.schema import Dataset, FeatureSpec
from serving.tower_inputs import feature_value


class KnownUsers:
    """Users of a run's data. ``row_of(user_id)`` → row or None; per-row features, history, seen items.

    users         the users DataFrame (``user_id`` + user feature columns)
    user_specs    FeatureSpecs of the user features (what the query tower takes)
    interactions  DataFrame with user_id, item_id, timestamp (int seconds), in source row order
    max_history   how many of the most recent interactions a query carries
    """

    def __init__(self, users: pd.DataFrame, user_specs, interactions: pd.DataFrame, max_history: int):
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        missing = [c for c in ("user_id", "item_id", "timestamp") if c not in interactions.columns]
        if missing:
            raise ValueError(f"interactions lack column(s) {missing}; it has {list(interactions.columns)}")
        self.user_specs: tuple[FeatureSpec, ...] = tuple(user_specs)
        self.max_history = int(max_history)
        self._ids = pd.Index(users["user_id"].astype(str).to_numpy(dtype=object))
        if not self._ids.is_unique:
            raise ValueError("users.user_id holds duplicate ids; each user must appear once")
        if len(self._ids):
            self._ids.get_loc(self._ids[0])  # build the hash table now, not racily on concurrent first lookups
        self._feature_columns = {s.name: users[s.name].to_numpy(dtype=object) for s in self.user_specs}
        n_users = len(self._ids)

        users_of = self._ids.get_indexer(interactions["user_id"].astype(str).to_numpy(dtype=object))
        keep = users_of >= 0  # interactions of users absent from the users table cannot be served as known
        items = interactions["item_id"].astype(str).to_numpy(dtype=object)[keep]
        ts = interactions["timestamp"].to_numpy(dtype=np.int64)[keep]
        users_of = users_of[keep].astype(np.int64)
        order = np.lexsort((np.arange(len(items)), ts, users_of))  # user, then time, then source row
        self._items = items[order]
        self._timestamps = ts[order]
        counts = np.bincount(users_of, minlength=n_users)
        self._indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @classmethod
    def from_dataset(cls, dataset: Dataset, max_history: int) -> "KnownUsers":
        return cls(dataset.users, dataset.user_features, dataset.interactions, max_history)

    @classmethod
    def from_run_data(cls, data_dir: str | Path, max_history: int) -> "KnownUsers":
        """From the split a run saved (``recdata.loading.save_split``); train + valid + test are history."""
        from recdata.loading import load_split

        dataset, _ = load_split(data_dir)
        return cls.from_dataset(dataset, max_history)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def num_interactions(self) -> int:
        return len(self._items)

    def row_of(self, user_id: str) -> int | None:
        """Row of ``user_id`` in the users table, or None for an unknown user."""
        try:
            row = self._ids.get_loc(user_id)
        except KeyError:
            return None
        return int(row)

    def features_of(self, row: int) -> dict:
        """{feature name: value in tower form (``serving.tower_inputs.feature_value``)} for user ``row``."""
        return {s.name: feature_value(self._feature_columns[s.name][row], s.kind) for s in self.user_specs}

    def history_of(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(item ids object (L,), timestamps int64 (L,)): the most recent ``max_history``, oldest → newest."""
        end = self._indptr[row + 1]
        start = max(self._indptr[row], end - self.max_history)
        return self._items[start:end], self._timestamps[start:end]

    def seen_items_of(self, row: int) -> np.ndarray:
        """Every item id user ``row`` interacted with (object array, oldest → newest, may repeat)."""
        return self._items[self._indptr[row]:self._indptr[row + 1]]

    def seen_rows(self, item_index: pd.Index) -> Exclusions:
        """Every user's seen items as rows of an index whose catalogue is ``item_index``: an ``Exclusions``
        with one query per user (user u's rows, sorted and unique, are ``.rows(u)``); items the index does
        not hold are left out."""
        rows = item_index.get_indexer(self._items).astype(np.int64)
        users = np.repeat(np.arange(len(self._ids), dtype=np.int64), np.diff(self._indptr))
        ok = rows >= 0
        return Exclusions.from_pairs(users[ok], rows[ok], len(self._ids), len(item_index), "seen items")
