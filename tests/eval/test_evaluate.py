"""eval.evaluate: end-to-end against a slow reference, slices, exclusion policies, the index path."""
import math

import numpy as np
import pytest

from eval import EvalConfig, evaluate_rankings, evaluate_vectors
from eval.slices import popularity_tiers
from eval.synthetic import planted_problem
from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec

CFG = EvalConfig(ks=(5, 20), bootstrap_samples=50, activity_thresholds=(15,))


@pytest.fixture(scope="module")
def problem():
    return planted_problem(num_users=150, num_items=400, dim=16, clusters=8, noise=1.5, seed=3)


def slow_reference(p, k):
    """Per-user recall@k overall and per head/tail slice, from an obvious full sort."""
    scores = p.query_vectors.astype(np.float64) @ p.item_vectors.T.astype(np.float64)
    labels, tiers = popularity_tiers(p.train_counts, CFG.head_share)
    overall, per_tier = [], {lab: [] for lab in labels}
    queries, targets = p.test_cases
    for q in np.unique(queries):
        s = scores[q].copy()
        s[p.user_items[q].indices] = -np.inf
        top = set(np.argsort(-s, kind="stable")[:k].tolist())
        rel = targets[queries == q]
        overall.append(np.mean([t in top for t in rel]))
        for c, lab in enumerate(labels):
            rel_c = [t for t in rel if tiers[t] == c]
            if rel_c:
                per_tier[lab].append(np.mean([t in top for t in rel_c]))
    return np.mean(overall), {lab: (np.mean(v), len(v)) for lab, v in per_tier.items()}


def test_matches_slow_reference_overall_and_per_popularity_slice(problem):
    result = evaluate_vectors(problem.query_vectors, problem.item_vectors, problem.test_cases,
                              problem.user_items, problem.train_counts, CFG, name="planted")
    for k in CFG.ks:
        ref_overall, ref_tiers = slow_reference(problem, k)
        assert result.value(f"recall@{k}") == pytest.approx(ref_overall)
        for lab, (value, n_users) in ref_tiers.items():
            assert result.value(f"recall@{k}", f"popularity/{lab}") == pytest.approx(value)
            row = result.summary.query("source == 'exact' and family == 'popularity' and slice == @lab")
            assert int(row["n_queries"].iloc[0]) == n_users


def test_slices_partition_cases_and_intervals_bracket_values(problem):
    result = evaluate_vectors(problem.query_vectors, problem.item_vectors, problem.test_cases,
                              problem.user_items, problem.train_counts, CFG)
    n = result.info["counts"]["num_cases"]
    assert n == len(result.cases) == len(problem.test_cases[0])
    exact = result.summary[result.summary["source"] == "exact"]
    for family, rows in exact.groupby("family"):
        assert rows["n_cases"].sum() == n, family
    assert set(exact["family"]) == {"overall", "popularity", "decile", "cold", "activity"}
    defined = exact.dropna(subset=["recall@20_lo"])
    assert (defined["recall@20_lo"] <= defined["recall@20"] + 1e-12).all()
    assert (defined["recall@20"] <= defined["recall@20_hi"] + 1e-12).all()
    assert set(result.cases["slice_activity"]) <= {"hist<15", "hist>=15"}
    assert result.info["slices"]["popularity"]["n_items"]["head"] <= 0.2 * 400
    assert 0 < result.info["coverage"]["exact"]["coverage@20"] <= 1


def test_excluded_target_policies():
    rankings = np.array([[0, 1, 2], [2, 1, 0]])
    cases = (np.array([0, 0, 1]), np.array([1, 2, 2]))
    exclusions = [np.array([2]), np.array([], np.int64)]
    counts = np.array([3, 2, 1])
    cfg = EvalConfig(ks=(1, 3), bootstrap_samples=0, excluded_targets="drop")
    clean = np.array([[0, 1, -1], [2, 1, 0]])
    dropped = evaluate_rankings(clean, cases, counts, cfg, exclusions=exclusions)
    assert dropped.info["counts"]["excluded_target_cases"] == 1 and len(dropped.cases) == 2
    assert dropped.value("recall@3") == pytest.approx(1.0)
    kept = evaluate_rankings(clean, cases, counts, EvalConfig(ks=(1, 3), bootstrap_samples=0, excluded_targets="keep"),
                             exclusions=exclusions)
    assert kept.cases["rank_exact"].tolist() == [1, -1, 0]
    assert kept.value("recall@3") == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match=r"1 test case\(s\) have a target among the query's excluded"):
        evaluate_rankings(clean, cases, counts, EvalConfig(ks=(1, 3), excluded_targets="error"), exclusions=exclusions)
    with pytest.raises(ValueError, match=r"rankings contain 1 excluded item\(s\) \(e.g. for query row 0\)"):
        evaluate_rankings(rankings, cases, counts, cfg, exclusions=exclusions)


def test_input_errors_are_explained():
    counts = np.array([1, 1, 1])
    with pytest.raises(ValueError, match="rankings have depth 2 but max\\(ks\\) = 3"):
        evaluate_rankings(np.zeros((1, 2), np.int64), ([0], [1]), counts, EvalConfig(ks=(3,)))
    with pytest.raises(ValueError, match="query_ids must be unique .*1 repeated, e.g. 'u'"):
        evaluate_rankings(np.zeros((2, 3), np.int64) - 1, ([0], [1]), counts, EvalConfig(ks=(3,)),
                          query_ids=["u", "u"])
    with pytest.raises(ValueError, match=r"history_lengths must be int, one per query row, shape \(2,\)"):
        evaluate_rankings(np.zeros((2, 3), np.int64) - 1, ([0], [1]), counts, EvalConfig(ks=(3,)),
                          history_lengths=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"train_counts must have one count per catalogue item, shape \(4,\)"):
        evaluate_vectors(np.ones((2, 2)), np.ones((4, 2)), ([0], [1]), None, counts)


def test_index_path_on_exact_and_approximate_indices(problem):
    ids = np.arange(len(problem.item_vectors)).astype(str)
    flat = ItemIndex.build(problem.item_vectors, ids, IndexSpec(factory="Flat"), "v1")
    res = evaluate_vectors(problem.query_vectors, problem.item_vectors, problem.test_cases, problem.user_items,
                           problem.train_counts, CFG, index=flat, query_ids=[f"u{i}" for i in range(150)])
    assert res.sources == ["exact", "index", "index_vs_exact"]
    for k in CFG.ks:
        assert res.value(f"index_recall@{k}", source="index_vs_exact") == 1.0
        assert res.value(f"recall@{k}", source="index") == pytest.approx(res.value(f"recall@{k}"), abs=0.02)
    assert res.cases["query_id"].str.startswith("u").all()
    ivf = ItemIndex.build(problem.item_vectors, ids, IndexSpec(factory="IVF16,Flat", nprobe=1), "v1")
    lossy = evaluate_vectors(problem.query_vectors, problem.item_vectors, problem.test_cases, problem.user_items,
                             problem.train_counts, CFG, index=ivf)
    overall = lossy.value("index_recall@20", source="index_vs_exact")
    assert 0.05 < overall < 0.999
    vs = lossy.per_query[(lossy.per_query["source"] == "index_vs_exact") & (lossy.per_query["family"] == "overall")]
    assert math.isclose(vs["index_recall@20"].mean(), overall)
    head = lossy.summary.query("source == 'index_vs_exact' and family == 'popularity' and slice == 'head'")
    assert int(head["n_cases"].iloc[0]) > 0  # exact neighbours that are head items


class TieFlippingIndex:
    """An exact index that breaks ties the other way from the exact path: by (-score, -row), so among
    items tied at the K-th score it returns the highest rows. ``drop_first`` makes a lossy index instead:
    it skips each query's best item (a real loss, not a tie choice)."""

    def __init__(self, items, drop_first=False):
        self.items = np.asarray(items, np.float32)
        self.drop_first = drop_first

    def search(self, queries, k, exclude=None):
        m, n = len(queries), len(self.items)
        scores = np.full((m, k), -np.inf, np.float32)
        rows = np.full((m, k), -1, np.int64)
        for i, q in enumerate(np.asarray(queries, np.float32)):
            s = self.items @ q
            if exclude is not None:
                s[exclude.rows(i)] = -np.inf  # a core.exclusions.Exclusions, as index_top_k passes
            order = np.lexsort((-np.arange(n), -s))
            order = order[np.isfinite(s[order])][int(self.drop_first):][:k]
            scores[i, :len(order)], rows[i, :len(order)] = s[order], order
        return scores, rows


def _tied_pairs_problem():
    """Items come in identical pairs (rows 2j, 2j+1): even rows popular (head), odd rows cold (tail), so
    every tie at the K-th score straddles the head/tail slices. K = 3 and 5 cut through pairs."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    items = np.repeat(base, 2, axis=0)  # (80, 8)
    counts = np.where(np.arange(80) % 2 == 0, 50, 0).astype(np.int64)
    queries = rng.standard_normal((60, 8)).astype(np.float32)
    cases = np.stack([np.arange(60), rng.integers(0, 80, 60)], axis=1)
    return queries, items, cases, counts


def test_index_tie_choices_are_not_counted_as_losses_overall_or_per_slice():
    queries, items, cases, counts = _tied_pairs_problem()
    cfg = EvalConfig(ks=(3, 5), bootstrap_samples=0, head_share=0.5)
    # the index really chooses differently among ties: at K = 3 many of its lists differ from the exact ones
    from eval.cases import as_exclusions
    from eval.exact import exact_top_k, index_top_k

    none = as_exclusions(None, len(queries), len(items))
    exact, flipped = exact_top_k(queries, items, 5, none), index_top_k(TieFlippingIndex(items), queries, 5, none)
    np.testing.assert_allclose(flipped[0], exact[0], atol=1e-6)  # the same scores: only tie choices differ
    set_differs = (np.sort(flipped[1][:, :3]) != np.sort(exact[1][:, :3])).any(axis=1)
    assert set_differs.sum() > 10
    assert (np.asarray(counts)[flipped[1][set_differs, 2]] == 0).mean() > 0.5  # chosen from the cold (tail) row
    result = evaluate_vectors(queries, items, cases, None, counts, cfg, index=TieFlippingIndex(items))
    assert labels_of(result, "popularity") == {"head", "tail"}
    vs = result.summary[result.summary["source"] == "index_vs_exact"]
    for k in (3, 5):
        assert (vs[f"index_recall@{k}"].dropna() == 1.0).all(), vs[["family", "slice", f"index_recall@{k}"]]
        for key in ("overall/all", "popularity/head", "popularity/tail", "cold/warm", "cold/cold"):
            assert result.value(f"index_recall@{k}", key, "index_vs_exact") == 1.0, (k, key)
        # and the index's own metrics are the exact ones overall (the same scores were retrieved)
        assert result.value(f"recall@{k}", source="index") == pytest.approx(result.value(f"recall@{k}"), abs=0.05)

    lossy = evaluate_vectors(queries, items, cases, None, counts, cfg, index=TieFlippingIndex(items, drop_first=True))
    for k in (3, 5):  # missing the best item is a loss: the tolerance does not hide it
        assert lossy.value(f"index_recall@{k}", source="index_vs_exact") < 0.9


def labels_of(result, family):
    return set(result.summary.query(f"source == 'index_vs_exact' and family == '{family}'")["slice"])
