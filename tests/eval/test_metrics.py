"""eval.metrics: hand-worked values on a tiny case, and a slow obvious reference on random data."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from eval.metrics import MISS, coverage, grouped_metrics, mean_popularity, metric_names, target_ranks

KS = (1, 2, 4)


def test_hand_worked_multi_target_query():
    # query 0 ranks items [5, 3, 9, 1]; its held-out items are {3, 1, 7}: ranks 1, 3, miss.
    rankings = np.array([[5, 3, 9, 1]])
    targets = np.array([3, 1, 7])
    ranks = target_ranks(rankings, np.zeros(3, np.int64), targets)
    assert ranks.tolist() == [1, 3, MISS]
    m = grouped_metrics(np.zeros(3, np.int64), ranks, KS, 1)
    assert m["n_targets"].tolist() == [3]
    assert m["recall@1"][0] == 0.0
    assert m["recall@2"][0] == pytest.approx(1 / 3)
    assert m["recall@4"][0] == pytest.approx(2 / 3)
    assert [m[f"hitrate@{k}"][0] for k in KS] == [0.0, 1.0, 1.0]
    # ndcg@2 = (1/log2 3) / (1 + 1/log2 3) = 0.63093 / 1.63093
    assert m["ndcg@1"][0] == 0.0
    assert m["ndcg@2"][0] == pytest.approx(0.6309297535714575 / 1.6309297535714575)
    # ndcg@4 = (1/log2 3 + 1/log2 5) / (1 + 1/log2 3 + 1/log2 4) = 1.06161 / 2.13093
    assert m["ndcg@4"][0] == pytest.approx((0.6309297535714575 + 0.43067655807339306) / 2.1309297535714575)
    assert m["mrr@4"][0] == pytest.approx(0.5)


def test_single_target_recall_equals_hitrate_and_ndcg_is_discount():
    rankings = np.array([[7, 8, 9], [1, 2, 3]])
    ranks = target_ranks(rankings, np.array([0, 1]), np.array([9, 4]))
    assert ranks.tolist() == [2, MISS]
    m = grouped_metrics(np.array([0, 1]), ranks, (3,), 2)
    assert m["recall@3"].tolist() == m["hitrate@3"].tolist() == [1.0, 0.0]
    assert m["ndcg@3"][0] == pytest.approx(1 / math.log2(4))
    assert m["mrr@3"].tolist() == pytest.approx([1 / 3, 0.0])


def test_mean_popularity_and_coverage_ignore_padding():
    rankings = np.array([[0, 1, -1], [2, 0, 1]])
    counts = np.array([10, 20, 30, 40])
    mp = mean_popularity(rankings, counts, (1, 3))
    assert mp["mean_pop@1"].tolist() == [10.0, 30.0]
    assert mp["mean_pop@3"].tolist() == [15.0, 20.0]
    empty = mean_popularity(np.full((1, 2), -1), counts, (2,))
    assert np.isnan(empty["mean_pop@2"][0])
    cov = coverage(rankings, 4, (1, 3))
    assert cov == {"coverage@1": 0.5, "coverage@3": 0.75}


def test_grouped_metrics_rejects_empty_groups():
    with pytest.raises(ValueError, match="groups have no cases"):
        grouped_metrics(np.array([0, 2]), np.array([0, 0]), (1,), 3)


def reference(ranking: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """The obvious definitions, one query at a time."""
    top = ranking[:k]
    hits = [i for i, item in enumerate(top) if item in relevant]
    dcg = sum(1 / math.log2(i + 2) for i in hits)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    first = next((i for i, item in enumerate(ranking) if item in relevant), None)
    return {"recall": len(hits) / len(relevant), "hitrate": float(bool(hits)), "ndcg": dcg / idcg,
            "mrr": 0.0 if first is None else 1 / (first + 1)}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_items=st.integers(5, 40), depth=st.integers(1, 12),
       num_queries=st.integers(1, 8))
def test_matches_slow_reference_on_random_rankings(seed, num_items, depth, num_queries):
    rng = np.random.default_rng(seed)
    depth = min(depth, num_items)
    ks = tuple(sorted({1, max(1, depth // 2), depth}))
    rankings = np.stack([rng.permutation(num_items)[:depth] for _ in range(num_queries)])
    pad = rng.integers(0, depth + 1, num_queries)  # some lists shorter than depth
    for q in range(num_queries):
        rankings[q, depth - pad[q]:] = -1
    queries, targets = [], []
    for q in range(num_queries):
        for t in rng.choice(num_items, size=rng.integers(1, 5), replace=False):
            queries.append(q)
            targets.append(int(t))
    queries, targets = np.array(queries), np.array(targets)
    ranks = target_ranks(rankings, queries, targets, block=3)
    m = grouped_metrics(queries, ranks, ks, num_queries)
    for q in range(num_queries):
        ranking = [int(i) for i in rankings[q] if i >= 0]
        rel = set(targets[queries == q].tolist())
        for k in ks:
            ref = reference(ranking, rel, k)
            assert m[f"recall@{k}"][q] == pytest.approx(ref["recall"])
            assert m[f"hitrate@{k}"][q] == ref["hitrate"]
            assert m[f"ndcg@{k}"][q] == pytest.approx(ref["ndcg"])
        assert m[f"mrr@{ks[-1]}"][q] == pytest.approx(reference(ranking, rel, ks[-1])["mrr"])
    assert list(m)[1:] == metric_names(ks)
