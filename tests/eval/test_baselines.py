"""eval.baselines: popularity tie rule and exclusions, seeded random, ALS and BPR beat random on planted data,
EASE against its per-item definition and its lambda tuned on validation."""
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
    pop, rnd, als, bpr = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, seed=0,
                                          include=("popularity", "random", "als", "bpr"))
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
    assert EvalConfig().baselines == ("popularity", "random", "als", "bpr", "ease")
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
    with pytest.raises(ValueError, match="unknown baseline\\(s\\) \\['sasrec'\\]; choose from popularity, random, als, bpr, ease"):
        baseline_results(([0], [1]), [[0]], np.array([1, 1]), include=("sasrec",))


def _ease_reference(x: np.ndarray, l2: float) -> np.ndarray:
    """EASE by its definition, one item at a time: column j is the ridge regression of item j's column on
    every other item's column (weight of j on itself fixed at 0). Slow and obvious."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = x[:, others]
        w = np.linalg.solve(a.T @ a + l2 * np.eye(n - 1), a.T @ x[:, j])
        b[others, j] = w
    return b


def test_ease_matches_the_per_item_ridge_reference_and_a_hand_worked_case():
    import scipy.sparse as sp

    from eval.baselines import ease_rankings, ease_weights

    # by hand: items a = [1, 1], b = [1, 0] (two users); lambda = 1:
    # B[b, a] = (b.a) / (b.b + 1) = 1/2;  B[a, b] = (a.b) / (a.a + 1) = 1/3;  diagonal 0
    hand = ease_weights(sp.csr_matrix(np.array([[1, 1], [1, 0]], np.float32)), 1.0)
    np.testing.assert_allclose(hand, [[0, 1 / 3], [1 / 2, 0]], rtol=1e-6)
    rng = np.random.default_rng(0)
    x = (rng.random((12, 7)) < 0.4).astype(np.float64)
    for l2 in (0.5, 3.0, 40.0):
        got = ease_weights(sp.csr_matrix(x), l2)
        assert got.dtype == np.float32 and got.shape == (7, 7)
        np.testing.assert_array_equal(np.diag(got), 0.0)
        np.testing.assert_allclose(got, _ease_reference(x, l2), rtol=1e-5, atol=1e-6)
    # scores = the user's row times B, seen items never ranked, -1 padding when too few are left
    b = ease_weights(sp.csr_matrix(x), 3.0)
    ranks = ease_rankings(b, sp.csr_matrix(x), 7, sp.csr_matrix(x))
    for u in range(12):
        scores = x[u] @ b.astype(np.float64)
        unseen = np.flatnonzero(x[u] == 0)
        want = unseen[np.argsort(-scores[unseen], kind="stable")]
        assert ranks[u, : len(unseen)].tolist() == want.tolist(), u
        assert (ranks[u, len(unseen):] == -1).all()


def _valid_split(p, seed=0):
    """Hold one training item per user out as validation: (train matrix, validation cases)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    x = p.user_items.tolil(copy=True)
    rows, cols = [], []
    for u in range(x.shape[0]):
        items = np.asarray(x.rows[u])
        if len(items) > 1:
            i = int(rng.choice(items))
            x[u, i] = 0
            rows.append(u)
            cols.append(i)
    train = sp.csr_matrix(x)
    train.eliminate_zeros()
    return train, (np.array(rows, np.int64), np.array(cols, np.int64))


def test_ease_lambda_is_the_validation_best_and_recorded():
    from eval.baselines import ease_rankings, ease_weights, tune_ease
    from eval.evaluate import evaluate_rankings

    p = planted_problem(num_users=300, num_items=240, dim=8, clusters=6, zipf=0.5, seed=3)
    train, valid = _valid_split(p)
    cfg = EvalConfig(ks=(10, 20), bootstrap_samples=0, ease_lambdas=(3000, 0.1, 300, 30, 3))
    counts = np.asarray(train.sum(axis=0)).ravel().astype(np.int64)
    chosen, scores = tune_ease(train, valid, train, counts, cfg)
    assert list(scores) == [0.1, 3.0, 30.0, 300.0, 3000.0]  # the grid, ascending
    # every lambda graded independently: fit on train, rank with train items excluded, ndcg@20 on validation
    one = EvalConfig(ks=(20,), bootstrap_samples=0, deciles=False)
    for l2 in scores:
        ranks = ease_rankings(ease_weights(train, l2), train, 20, train)
        want = evaluate_rankings(ranks, valid, counts, one, exclusions=train).value("ndcg@20")
        assert scores[l2] == pytest.approx(want, abs=1e-12), l2
    assert chosen == max(scores, key=scores.get)
    assert chosen == 300.0  # this data's validation optimum is inside the grid: picking an end of it fails
    # through baseline_results: the grid, every validation score and the choice land in the metadata
    (ease,) = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, include=("ease",),
                               valid_cases=valid, valid_user_items=train)
    meta = ease.info["metadata"]
    assert ease.name == "ease" and meta["baseline"] == "ease" and meta["l2"] == chosen
    assert meta["lambda_grid"] == [0.1, 3.0, 30.0, 300.0, 3000.0] and "warning" not in meta
    assert meta["tuned_on"] == "validation ndcg@20 (overall)"
    assert meta["validation"] == [[k, round(v, 6)] for k, v in scores.items()]
    # the test rows are EASE refit on all of user_items with the chosen lambda
    ranks = ease_rankings(ease_weights(p.user_items, chosen), p.user_items, 20, p.user_items)
    same = evaluate_rankings(ranks, p.test_cases, p.train_counts, cfg, exclusions=p.user_items)
    assert ease.value("recall@10") == same.value("recall@10") and ease.value("recall@20") == same.value("recall@20")


def test_ease_ties_go_to_the_smaller_lambda_and_an_edge_choice_is_flagged():
    from eval.baselines import tune_ease

    p = planted_problem(num_users=120, num_items=80, dim=8, clusters=4, seed=5)
    train, valid = _valid_split(p, seed=1)
    counts = np.asarray(train.sum(axis=0)).ravel().astype(np.int64)
    # the same lambda listed with a tiny difference scores the same: the smaller one wins
    chosen, scores = tune_ease(train, valid, train, counts, EvalConfig(ks=(10,), bootstrap_samples=0),
                               lambdas=(100.0, 100.0 + 1e-9))
    assert scores[100.0] == scores[100.0 + 1e-9] and chosen == 100.0
    cfg = EvalConfig(ks=(10,), bootstrap_samples=0, ease_lambdas=(1e-3, 1e-2))
    (ease,) = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, include=("ease",),
                               valid_cases=valid, valid_user_items=train)
    assert "at the edge of the grid" in ease.info["metadata"]["warning"]


def test_ease_is_reported_last_and_beats_random_and_popularity_on_planted_topics():
    p = planted_problem(num_users=400, num_items=500, dim=16, clusters=10, seed=4)
    train, valid = _valid_split(p)
    cfg = EvalConfig(ks=(10, 50), bootstrap_samples=200)
    pop, rnd, als, bpr, ease = baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, seed=0,
                                                valid_cases=valid, valid_user_items=train)
    assert ease.name == "ease"
    for weak in (pop, rnd):
        assert _overall(ease)["recall@10_lo"] > _overall(weak)["recall@10_hi"], weak.name


def test_ease_input_errors(monkeypatch):
    import scipy.sparse as sp

    import eval.baselines as baselines
    from eval.baselines import ease_weights

    x = sp.csr_matrix(np.eye(4, dtype=np.float32))
    with pytest.raises(TypeError, match="scipy sparse"):
        ease_weights(np.eye(3), 1.0)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match=r"lambda \(l2\) must be a finite number > 0, got"):
            ease_weights(x, bad)
    with pytest.raises(ValueError, match="EASE needs training data"):
        ease_weights(sp.csr_matrix((3, 4), dtype=np.float32), 1.0)
    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", 3)
    with pytest.raises(ValueError, match=r"4 items would need .* \(limit 3 items\); drop 'ease' from eval.baselines"):
        ease_weights(x, 1.0)
    monkeypatch.undo()
    p = planted_problem(num_users=50, num_items=40, dim=4, clusters=2, seed=0)
    with pytest.raises(ValueError, match=r"EASE tunes lambda on validation over eval.ease_lambdas=\[.*\] but no "
                                         r"validation data was given; pass valid_cases and valid_user_items, or set "
                                         r"eval.ease_lambdas to one value"):
        baseline_results(p.test_cases, p.user_items, p.train_counts, EvalConfig(ks=(10,)), include=("ease",))
    with pytest.raises(ValueError, match="needs both valid_cases and valid_user_items; got only valid_cases"):
        baseline_results(p.test_cases, p.user_items, p.train_counts, EvalConfig(ks=(10,)), include=("ease",),
                         valid_cases=p.test_cases)
    with pytest.raises(ValueError, match=r"valid_user_items must be a scipy sparse \(50, 40\) matrix"):
        baseline_results(p.test_cases, p.user_items, p.train_counts, EvalConfig(ks=(10,)), include=("ease",),
                         valid_cases=p.test_cases, valid_user_items=np.ones((50, 40)))
    # one lambda: no validation needed, recorded as not tuned
    (one,) = baseline_results(p.test_cases, p.user_items, p.train_counts,
                              EvalConfig(ks=(10,), bootstrap_samples=0, ease_lambdas=(50,)), include=("ease",))
    assert one.info["metadata"]["l2"] == 50.0 and "not tuned" in one.info["metadata"]["tuned_on"]
    for bad in ([], [0, 1], [5, 5], [float("inf")]):
        with pytest.raises(ValueError, match=r"ease_lambdas must be a non-empty list of distinct numbers > 0, got"):
            EvalConfig.from_dict({"ease_lambdas": bad})
    for bad in ("100", 100, (True, 3)):
        with pytest.raises(ValueError, match=r"ease_lambdas must be a non-empty list .* e.g. ease_lambdas: \[100, 300"):
            EvalConfig(ease_lambdas=bad)
    assert EvalConfig.from_dict({"ease_lambdas": [300, 30]}).ease_lambdas == (30.0, 300.0)
