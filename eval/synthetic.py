"""A planted retrieval problem with known structure, for tests, examples and ``bench/bench_eval.py``.

Items belong to ``clusters`` topics and have Zipf-like popularity; each user has one topic. A
user's training history and held-out targets are drawn from their topic, popularity-weighted, so
the training counts are long-tailed and a model that recovers the topics beats popularity and
random. "Oracle" vectors are returned too: topic centroid plus Gaussian noise (``noise``),
L2-normalised, for queries (user topic) and items (item topic).

Everything is vectorised and seeded; 100k users x 1M items x 64-d takes a few seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class PlantedProblem:
    """query_vectors float32 (m, d); item_vectors float32 (n, d); test_cases (queries, targets) int64;
    user_items CSR (m, n) binary training matrix (= the exclusions); train_counts int64 (n,);
    user_topic int64 (m,); item_topic int64 (n,)."""

    query_vectors: np.ndarray
    item_vectors: np.ndarray
    test_cases: tuple[np.ndarray, np.ndarray]
    user_items: sp.csr_matrix
    train_counts: np.ndarray
    user_topic: np.ndarray
    item_topic: np.ndarray


def _topic_draws(rng, user_topic, per_user, starts, cum):
    """Popularity-weighted item draws from each user's topic: (user, item) int64 arrays."""
    users = np.repeat(np.arange(len(user_topic), dtype=np.int64), per_user)
    topic = user_topic[users]
    lo, hi = cum[starts[topic]], cum[starts[topic + 1]]
    u = lo + rng.random(len(users)) * (hi - lo)
    items = np.searchsorted(cum, u, side="right") - 1
    items = np.clip(items, starts[topic], starts[topic + 1] - 1)
    return users, items.astype(np.int64)


def planted_problem(num_users: int = 1000, num_items: int = 2000, dim: int = 32, clusters: int = 20,
                    history: tuple[int, int] = (5, 40), test_per_user: tuple[int, int] = (1, 4),
                    zipf: float = 1.1, noise: float = 0.5, seed: int = 0) -> PlantedProblem:
    """Build the problem. ``history`` / ``test_per_user`` are [lo, hi) draws per user (before dedup);
    ``zipf`` is the popularity exponent (weight of the r-th item of a topic ~ 1 / r**zipf)."""
    if clusters > num_items:
        raise ValueError(f"clusters ({clusters}) must not exceed num_items ({num_items})")
    rng = np.random.default_rng(seed)
    item_topic = np.sort(rng.integers(0, clusters, num_items))
    item_topic[:clusters] = np.arange(clusters)  # every topic has at least one item
    item_topic.sort()
    starts = np.searchsorted(item_topic, np.arange(clusters + 1))
    within = np.arange(num_items) - starts[item_topic]
    weight = 1.0 / (1.0 + within) ** zipf
    # shuffle popularity inside each topic so item rows do not encode popularity
    perm = np.argsort(item_topic * 2.0 + rng.random(num_items), kind="stable")
    weight = weight[np.argsort(perm)]
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    user_topic = rng.integers(0, clusters, num_users).astype(np.int64)

    n_hist = rng.integers(history[0], history[1], num_users)
    hu, hi = _topic_draws(rng, user_topic, n_hist, starts, cum)
    train = sp.csr_matrix((np.ones(len(hu), np.float32), (hu, hi)), shape=(num_users, num_items))
    train.sum_duplicates()
    train.data[:] = 1.0
    n_test = rng.integers(test_per_user[0], test_per_user[1], num_users)
    tu, ti = _topic_draws(rng, user_topic, n_test, starts, cum)
    keep = ~np.asarray(train[tu, ti]).ravel().astype(bool)
    keys = np.unique(tu[keep] * num_items + ti[keep])
    test = (keys // num_items, keys % num_items)
    counts = np.bincount(train.indices, minlength=num_items).astype(np.int64)

    centroids = rng.standard_normal((clusters, dim)).astype(np.float32)

    def embed(topics):
        v = centroids[topics] + noise * rng.standard_normal((len(topics), dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v

    return PlantedProblem(embed(user_topic), embed(item_topic), test, train, counts, user_topic,
                          item_topic.astype(np.int64))
