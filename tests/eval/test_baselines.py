"""eval.baselines: popularity tie rule and exclusions, seeded random, ALS and BPR beat random on planted data."""
import numpy as np
import pytest

from eval import EvalConfig
from eval.baselines import als_vectors, baseline_results, bpr_vectors, popularity_rankings, random_rankings
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


def _overall(result):
    return result.summary.query("source == 'exact' and family == 'overall'").iloc[0]


def test_als_and_bpr_beat_random_and_popularity_on_planted_topics():
    p = planted_problem(num_users=400, num_items=500, dim=16, clusters=10, seed=4)
    cfg = EvalConfig(ks=(10, 50), bootstrap_samples=200)
    pop, rnd, als, bpr = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, seed=0)
    assert [r.name for r in (pop, rnd, als, bpr)] == ["popularity", "random", "als-32", "bpr-32"]
    for model in (als, bpr):
        assert _overall(model)["recall@10_lo"] > _overall(rnd)["recall@10_hi"], model.name
        assert model.value("recall@10") > pop.value("recall@10"), model.name
    assert bpr.info["metadata"] == {"baseline": "bpr", "factors": 32, "seed": 0}
    users, items = als_vectors(p.user_items, factors=8, iterations=3, seed=1)
    assert users.shape == (400, 8) and items.shape == (500, 8) and users.dtype == np.float32
    again, _ = als_vectors(p.user_items, factors=8, iterations=3, seed=1)
    np.testing.assert_allclose(users, again, rtol=1e-4, atol=1e-5)


def test_bpr_is_seeded_and_scores_with_the_item_bias():
    p = planted_problem(num_users=200, num_items=300, dim=8, clusters=5, seed=2)
    users, items = bpr_vectors(p.user_items, factors=8, iterations=5, seed=1)
    assert users.shape == (200, 9) and items.shape == (300, 9) and users.dtype == items.dtype == np.float32
    np.testing.assert_array_equal(users[:, -1], 1.0)  # the bias column: score = u·v + b_i
    assert np.abs(items[:, -1]).max() > 0
    again_users, again_items = bpr_vectors(p.user_items, factors=8, iterations=5, seed=1)
    np.testing.assert_array_equal(users, again_users)  # one thread: exactly repeatable
    np.testing.assert_array_equal(items, again_items)
    other, _ = bpr_vectors(p.user_items, factors=8, iterations=5, seed=2)
    assert not np.array_equal(users, other)


def test_config_chooses_the_baselines():
    p = planted_problem(num_users=100, num_items=120, dim=8, clusters=4, seed=1)
    cfg = EvalConfig(ks=(10,), bootstrap_samples=0, baselines=("bpr", "popularity"))
    got = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg)
    assert [r.name for r in got] == ["popularity", "bpr-32"]  # reported in the fixed order
    only = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, include=("random",), bpr_factors=4)
    assert [r.name for r in only] == ["random"]
    assert EvalConfig().baselines == ("popularity", "random", "als", "bpr")
    assert EvalConfig.from_dict({"baselines": []}).baselines == ()
    with pytest.raises(ValueError, match=r"baselines must be a list of distinct names .* got \['sasrec'\]"):
        EvalConfig.from_dict({"baselines": ["sasrec"]})
    with pytest.raises(ValueError, match=r"baselines must be a list .* got 'als'; e.g. baselines: \[popularity"):
        EvalConfig(baselines="als")


def test_baseline_input_errors():
    with pytest.raises(TypeError, match="scipy sparse"):
        als_vectors(np.ones((2, 2)))
    with pytest.raises(TypeError, match="scipy sparse"):
        bpr_vectors(np.ones((2, 2)))
    import scipy.sparse as sp
    with pytest.raises(ValueError, match="BPR needs training data"):
        bpr_vectors(sp.csr_matrix((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 2 items, got 1"):
        bpr_vectors(sp.csr_matrix(np.ones((3, 1), np.float32)))
    with pytest.raises(ValueError, match="unknown baseline\\(s\\) \\['sasrec'\\]; choose from popularity, random, als, bpr"):
        baseline_results(([0], [1]), [[0]], np.array([1, 1]), include=("sasrec",))
