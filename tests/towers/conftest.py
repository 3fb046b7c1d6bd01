"""Small hand-built Datasets for the tower tests (no dependency on recdata's loaders/generators).

``planted_dataset`` plants a structure a two-tower model can find and a popularity ranking
cannot: users and items belong to one of ``n_clusters`` taste clusters; a user's events are
mostly items of their own cluster, each item at most once per user. Item popularity is Zipf-skewed *within* each cluster and the
clusters differ in size, so popularity is a real (but weaker) baseline. Every feature kind
appears: genres (multi_categorical, carries the cluster), kind (categorical, noise), year
(numeric with NaNs), title (text, carries a cluster word); users have gender (categorical) and
age (numeric with NaNs). Timestamps tie now and then so row order must break ties.

``leave_last_out`` is a tiny split: per user, the last event (time, then row order) is test,
the one before is valid, the rest train.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from recdata.schema import Dataset, FeatureSpec

ITEM_SPECS = (FeatureSpec("genres", "multi_categorical"), FeatureSpec("kind", "categorical"),
              FeatureSpec("year", "numeric"), FeatureSpec("title", "text"))
USER_SPECS = (FeatureSpec("gender", "categorical"), FeatureSpec("age", "numeric"))
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


@dataclass(frozen=True)
class FixtureSplit:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def planted_dataset(n_users: int = 240, n_items: int = 160, n_clusters: int = 8, events_per_user: int = 16,
                    in_cluster: float = 0.85, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, n_clusters, n_items)
    user_cluster = rng.integers(0, n_clusters, n_users)
    zipf = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = zipf[rng.permutation(n_items)]

    rows_u, rows_i, rows_t = [], [], []
    for u in range(n_users):  # small fixture: a loop is clearer than vectorising here
        own = np.flatnonzero(item_cluster == user_cluster[u])
        p_own = popularity[own] / popularity[own].sum()
        p_all = popularity / popularity.sum()
        t = int(rng.integers(1_000_000, 2_000_000))
        seen = set()
        for _ in range(events_per_user):
            while True:  # no repeats: a user meets each item at most once
                from_own = rng.random() < in_cluster and not seen.issuperset(own)
                item = int(rng.choice(own, p=p_own) if from_own else rng.choice(n_items, p=p_all))
                if item not in seen:
                    break
            seen.add(item)
            t += int(rng.integers(0, 3)) * 60  # zero gaps give timestamp ties
            rows_u.append(f"u{u}")
            rows_i.append(f"i{item}")
            rows_t.append(t)
    interactions = pd.DataFrame({"user_id": rows_u, "item_id": rows_i,
                                 "timestamp": np.asarray(rows_t, dtype=np.int64)})

    genres = []
    for c in item_cluster:
        g = [f"g{c}"]
        if rng.random() < 0.4:
            g.append(f"g{rng.integers(0, n_clusters)}")
        genres.append(g)
    year = rng.normal(1990, 10, n_items)
    year[rng.random(n_items) < 0.1] = np.nan
    items = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "genres": genres,
        "kind": rng.choice(["film", "series", ""], n_items),
        "year": year,
        "title": [f"The {WORDS[c % len(WORDS)].title()} story, part {i}!" for i, c in enumerate(item_cluster)],
    })
    age = rng.normal(35, 12, n_users)
    age[rng.random(n_users) < 0.2] = np.nan
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(n_users)],
                          "gender": rng.choice(["f", "m", ""], n_users), "age": age})
    return Dataset("planted", interactions, items, users, ITEM_SPECS, USER_SPECS, source="tests/towers_fixtures")


def leave_last_out(dataset: Dataset) -> FixtureSplit:
    df = dataset.interactions
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), df["user_id"].to_numpy()))
    ranked = df.iloc[order]
    from_end = ranked.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    pos = np.empty(len(df), dtype=np.int64)
    pos[order] = from_end
    return FixtureSplit(train=df[pos >= 2], valid=df[pos == 1], test=df[pos == 0])


@lru_cache(maxsize=None)
def planted() -> tuple[Dataset, FixtureSplit]:
    ds = planted_dataset()
    return ds, leave_last_out(ds)


PLANTED_TRAIN = {"tower": {"output_dim": 32, "id_embedding_dim": 32, "feature_embedding_dim": 8,
                           "hidden_units": [64], "max_history": 10},
                 "batch_size": 128, "epochs": 8, "learning_rate": 0.01, "temperature": 0.1, "verbose": 0,
                 "seed": 7, "tensorboard": False, "keep_checkpoints": 1}
_RUNS = tempfile.TemporaryDirectory(prefix="towers-tests-")  # removed at interpreter exit


@lru_cache(maxsize=None)
def trained_planted():
    """One short training run on the planted data, shared by the tower test modules.

    Returns (dataset, split, TrainResult); the run directory lives until the process exits.
    """
    from towers.config import TrainConfig
    from towers.train import train
    from core.strict import from_dict

    ds, split = planted()
    result = train(ds, split, from_dict(TrainConfig, PLANTED_TRAIN), Path(_RUNS.name) / "planted")
    return ds, split, result


def popularity_and_model_recall(ds: Dataset, split, query_vecs: np.ndarray, item_vecs: np.ndarray,
                                test_rows: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Held-out recall@k of (towers, training popularity), the user's train+valid items excluded.

    A slow obvious loop: one query at a time, full sort.
    """
    row = {x: i for i, x in enumerate(ds.items["item_id"])}
    seen = pd.concat([split.train, split.valid]).groupby("user_id")["item_id"].agg(list)
    popularity = np.bincount([row[x] for x in split.train["item_id"]], minlength=len(ds.items)).astype(float)
    test = split.test.iloc[test_rows]
    hits_model = hits_pop = 0
    for q, (user, target) in enumerate(zip(test["user_id"], test["item_id"])):
        banned = [row[x] for x in seen.get(user, [])]
        for scores, is_model in ((query_vecs[q] @ item_vecs.T, True), (popularity.copy(), False)):
            scores = scores.astype(np.float64)
            scores[banned] = -np.inf
            top = np.argsort(-scores, kind="stable")[:k]
            if row[target] in top:
                if is_model:
                    hits_model += 1
                else:
                    hits_pop += 1
    return hits_model / len(test), hits_pop / len(test)
