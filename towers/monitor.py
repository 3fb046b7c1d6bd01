"""Held-out recall@k during training: a Keras callback that logs ``val_recall@k`` every epoch.

For up to ``max_queries`` validation examples (a seeded sample), every catalogue item is embedded
with the item tower, the queries with the query tower, and recall@k = the share of queries whose
target item is among the k best-scoring items, the user's training items excluded (brute force,
exact). The value is added to the epoch logs, so it shows in the progress bar, the Keras history,
TensorBoard and can drive early stopping. This is a training monitor; ``eval/`` computes the
reported metrics.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recdata.schema import Dataset
from towers.inputs import Examples, examples_query_features, item_features_batch
from towers.tf_env import tf


def top_k_recall(query_vecs: np.ndarray, item_vecs: np.ndarray, targets: np.ndarray,
                 exclude: list, k: int, chunk: int = 256) -> float:
    """Share of queries whose ``targets[q]`` (item row) is in the top ``k`` by inner product.

    query_vecs float32 (Q, D), item_vecs float32 (N, D), targets int64 (Q,), exclude: Q arrays of
    item rows never to rank for that query (the target itself is never excluded). Ties are
    broken against the target (an item scoring exactly the target's score ranks above it).
    """
    if len(query_vecs) == 0:
        return float("nan")
    hits = 0
    for start in range(0, len(query_vecs), chunk):
        scores = query_vecs[start:start + chunk] @ item_vecs.T
        rows = np.arange(len(scores))
        target_rows = targets[start:start + chunk]
        target_scores = scores[rows, target_rows]
        for r in rows:
            banned = exclude[start + r]
            if len(banned):
                scores[r, banned] = -np.inf
        scores[rows, target_rows] = target_scores
        better = (scores >= target_scores[:, None]).sum(axis=1) - 1  # items ranked above the target
        hits += int((better < k).sum())
    return hits / len(query_vecs)


class HeldoutRecall(tf.keras.callbacks.Callback):
    """Adds ``val_recall@{k}`` to each epoch's logs (see module docstring).

    Put it before TensorBoard / EarlyStopping in the callback list so they see the value.
    """

    def __init__(self, dataset: Dataset, examples: Examples, train: pd.DataFrame, k: int = 10,
                 max_queries: int = 2000, seed: int = 0, batch_size: int = 8192):
        super().__init__()
        rng = np.random.default_rng(seed)
        keep = np.arange(len(examples))
        if len(keep) > max_queries:
            keep = np.sort(rng.choice(len(keep), max_queries, replace=False))
        self.k = k
        self.name = f"val_recall@{k}"
        self.batch_size = batch_size
        examples = examples.subset(keep)
        self.targets = examples.item_rows
        self.query_features = examples_query_features(dataset, examples)
        self.item_features = item_features_batch(dataset.items, dataset.item_features)
        self.exclude = _training_items(dataset, train, examples.user_rows)

    def _embed(self, tower, features: dict) -> np.ndarray:
        n = len(next(iter(features.values())))
        parts = [tower({k: v[s:s + self.batch_size] for k, v in features.items()}, training=False).numpy()
                 for s in range(0, n, self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def on_epoch_end(self, epoch, logs=None):
        item_vecs = self._embed(self.model.item_tower, self.item_features)
        query_vecs = self._embed(self.model.query_tower, self.query_features)
        value = top_k_recall(query_vecs, item_vecs, self.targets, self.exclude, self.k)
        if logs is not None:
            logs[self.name] = value


def _training_items(dataset: Dataset, train: pd.DataFrame, user_rows: np.ndarray) -> list:
    """For each user row, the item rows of that user's training interactions (unique)."""
    users = pd.Index(dataset.users["user_id"]).get_indexer(train["user_id"])
    items = pd.Index(dataset.items["item_id"]).get_indexer(train["item_id"])
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    starts = np.searchsorted(pairs[:, 0], user_rows, side="left")
    ends = np.searchsorted(pairs[:, 0], user_rows, side="right")
    return [pairs[s:e, 1] for s, e in zip(starts, ends)]
