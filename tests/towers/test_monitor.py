import numpy as np
import pandas as pd
import pytest

from tests.towers.conftest import trained_planted
from towers.inputs import examples_query_features, heldout_examples, item_features_batch
from towers.monitor import _training_items, top_k_recall


def slow_recall(query_vecs, item_vecs, targets, exclude, k):
    hits = 0
    for q in range(len(query_vecs)):
        scores = (item_vecs @ query_vecs[q]).astype(np.float64)
        target_score = scores[targets[q]]
        ranked_above = [i for i in range(len(item_vecs)) if i != targets[q] and i not in set(exclude[q])
                        and scores[i] >= target_score]
        hits += len(ranked_above) < k
    return hits / len(query_vecs)


def test_top_k_recall_matches_a_slow_reference_with_ties_and_exclusions():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(40, 4)).astype(np.float32)
    items[7] = items[3]  # an exact tie
    queries = rng.normal(size=(25, 4)).astype(np.float32)
    targets = rng.integers(0, 40, 25)
    targets[0] = 3
    exclude = [rng.choice(40, rng.integers(0, 10), replace=False) for _ in range(25)]
    exclude[1] = np.array([targets[1], 0, 1])  # the target itself is never excluded
    for k in (1, 5, 10):
        assert top_k_recall(queries, items, targets, exclude, k, chunk=7) == \
            pytest.approx(slow_recall(queries, items, targets, exclude, k))
    assert np.isnan(top_k_recall(queries[:0], items, targets[:0], [], 5))


def test_training_items_per_user():
    ds, split, _ = trained_planted()
    users = np.array([0, 5, 5, 239])
    got = _training_items(ds, split.train, users)
    row = {x: i for i, x in enumerate(ds.items["item_id"])}
    for u, items in zip(users, got):
        uid = ds.users["user_id"].iloc[u]
        want = sorted({row[x] for x in split.train.loc[split.train["user_id"] == uid, "item_id"]})
        assert items.tolist() == want


def test_logged_recall_is_the_recall_of_the_final_towers():
    ds, split, result = trained_planted()
    assert result.config.monitor_queries >= len(split.valid)  # every validation example is a query
    ex = heldout_examples(ds, split.train, split.valid, result.config.tower.max_history)
    queries = result.query_tower(examples_query_features(ds, ex)).numpy()
    items = result.item_tower(item_features_batch(ds.items, ds.item_features)).numpy()
    row = {x: i for i, x in enumerate(ds.items["item_id"])}
    seen = split.train.groupby("user_id")["item_id"].agg(lambda s: [row[x] for x in s])
    exclude = [np.array(seen.get(u, []), dtype=np.int64) for u in split.valid["user_id"]]
    want = slow_recall(queries, items, ex.item_rows, exclude, 10)
    assert result.history["val_recall@10"][-1] == pytest.approx(want)
    assert isinstance(pd.Series(result.history["val_recall@10"]).iloc[0], float)
