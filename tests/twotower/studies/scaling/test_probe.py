import numpy as np
import pandas as pd
import pytest

from eval.config import EvalConfig
from eval.slices import popularity_tiers
from tests.towers.conftest import ITEM_SPECS, planted
from twotower.studies.grading import embed
from twotower.studies.scaling.probe import evaluate_recall
from towers.tf_env import tf


class _LookupTower:
    """A stand-in tower: a fixed random vector per id (of ``column``)."""

    def __init__(self, ids, column: str, dim: int = 6, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.table = {str(i): rng.normal(size=dim).astype(np.float32) for i in ids}
        self.column = column
        self.calls = 0

    def __call__(self, features, training=False):
        self.calls += 1
        ids = [x.decode() for x in features[self.column].numpy()]
        return tf.constant(np.stack([self.table[i] for i in ids]))


class _Model:
    def __init__(self, dataset):
        self.query_tower = _LookupTower(dataset.users["user_id"], "user_id", seed=1)
        self.item_tower = _LookupTower(dataset.items["item_id"], "item_id", seed=2)


def _reference(dataset, split, model, k, head_share):
    """Slow obvious recall@k: one test case at a time, full sort, train+valid items excluded."""
    items = dataset.items["item_id"].astype(str).tolist()
    item_vecs = np.stack([model.item_tower.table[i] for i in items])
    seen = pd.concat([split.train, split.valid]).groupby("user_id")["item_id"].agg(set)
    counts = split.train["item_id"].value_counts().reindex(items, fill_value=0).to_numpy()
    labels, codes = popularity_tiers(counts, head_share)
    hits = {"overall": [], "head": [], "tail": []}
    for user, target in zip(split.test["user_id"], split.test["item_id"]):
        scores = item_vecs @ model.query_tower.table[user]
        ranked = [items[j] for j in np.argsort(-scores, kind="stable") if items[j] not in seen.get(user, set())]
        hit = float(target in ranked[:k])
        hits["overall"].append(hit)
        hits[labels[codes[items.index(target)]]].append(hit)
    return {part: float(np.mean(v)) for part, v in hits.items()}


def test_recall_matches_a_slow_reference():
    dataset, split = planted()
    model = _Model(dataset)
    cfg = EvalConfig(ks=(5, 10), bootstrap_samples=30, head_share=0.2)
    got = evaluate_recall(model, dataset, split, ITEM_SPECS, max_history=5, eval_cfg=cfg, recall_k=10)
    expected = _reference(dataset, split, model, 10, 0.2)
    assert got["k"] == 10 and got["test_cases"] == len(split.test)
    for part in ("overall", "head", "tail"):
        assert got[part]["value"] == pytest.approx(expected[part], abs=1e-12)
        assert got[part]["lo"] <= got[part]["value"] <= got[part]["hi"]
    assert got["head"]["cases"] + got["tail"]["cases"] == got["overall"]["cases"] == len(split.test)


def test_recall_k_must_be_an_eval_cutoff():
    dataset, split = planted()
    with pytest.raises(ValueError, match=r"recall_k=20 is not one of eval.ks=\[5, 10\]"):
        evaluate_recall(_Model(dataset), dataset, split, ITEM_SPECS, 5, EvalConfig(ks=(5, 10)), 20)


def test_embed_runs_in_chunks_and_keeps_order():
    dataset, _ = planted()
    tower = _LookupTower(dataset.users["user_id"], "user_id")
    ids = dataset.users["user_id"].to_numpy(dtype=object)
    out = embed(tower, {"user_id": ids}, chunk=50)
    assert tower.calls == -(-len(ids) // 50)
    assert np.array_equal(out, np.stack([tower.table[i] for i in ids]))
