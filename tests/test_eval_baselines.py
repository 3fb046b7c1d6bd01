"""eval.baselines: popularity tie rule and exclusions, seeded random, ALS beats random on planted data."""
import numpy as np
import pytest

from eval import EvalConfig
from eval.baselines import als_vectors, baseline_results, popularity_rankings, random_rankings
from eval.synthetic import planted_problem


def test_popularity_orders_by_count_then_row_and_skips_exclusions():
    counts = np.array([5, 9, 5, 0, 9, 1])
    ranks = popularity_rankings(counts, 4, [np.array([], np.int64), np.array([4, 0]), np.arange(5)])
    assert ranks[0].tolist() == [1, 4, 0, 2]
    assert ranks[1].tolist() == [1, 2, 5, 3]
    assert ranks[2].tolist() == [5, -1, -1, -1]
    with pytest.raises(ValueError, match="give num_queries"):
        popularity_rankings(counts, 2)
    assert popularity_rankings(counts, 2, num_queries=2).tolist() == [[1, 4], [1, 4]]


def test_random_is_seeded_distinct_and_respects_exclusions():
    excl = [np.arange(0, 50), np.array([], np.int64), np.arange(1, 60)]
    a = random_rankings(60, 10, excl, seed=3)
    assert np.array_equal(a, random_rankings(60, 10, excl, seed=3))
    assert not np.array_equal(a, random_rankings(60, 10, excl, seed=4))
    assert not np.isin(a[0], excl[0]).any() and len(set(a[0])) == 10
    assert a[2].tolist() == [0] + [-1] * 9
    # uniform over eligible items: every one of 10 eligible items shows up for query 0
    assert set(a[0]) == set(range(50, 60))


def test_als_beats_random_and_popularity_on_planted_topics():
    p = planted_problem(num_users=400, num_items=500, dim=16, clusters=10, seed=4)
    cfg = EvalConfig(ks=(10, 50), bootstrap_samples=200)
    pop, rnd, als = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, seed=0)
    assert [r.name for r in (pop, rnd, als)] == ["popularity", "random", "als-32"]
    als_row = als.summary.query("source == 'exact' and family == 'overall'").iloc[0]
    rnd_row = rnd.summary.query("source == 'exact' and family == 'overall'").iloc[0]
    assert als_row["recall@10_lo"] > rnd_row["recall@10_hi"]
    assert als.value("recall@10") > pop.value("recall@10")
    users, items = als_vectors(p.user_items, factors=8, iterations=3, seed=1)
    assert users.shape == (400, 8) and items.shape == (500, 8) and users.dtype == np.float32
    again, _ = als_vectors(p.user_items, factors=8, iterations=3, seed=1)
    np.testing.assert_allclose(users, again, rtol=1e-4, atol=1e-5)


def test_baseline_input_errors():
    with pytest.raises(TypeError, match="scipy sparse"):
        als_vectors(np.ones((2, 2)))
    with pytest.raises(ValueError, match="unknown baseline\\(s\\) \\['bpr'\\]"):
        baseline_results(([0], [1]), [[0]], np.array([1, 1]), include=("bpr",))
