"""eval.compare: paired A - B per metric and slice, refusing runs graded on different test cases."""
import numpy as np
import pytest

from eval import EvalConfig, compare, evaluate_vectors
from eval.synthetic import planted_problem

CFG = EvalConfig(ks=(10, 50), bootstrap_samples=200)


@pytest.fixture(scope="module")
def runs():
    p = planted_problem(num_users=300, num_items=600, dim=16, clusters=10, noise=0.8, seed=2)
    rng = np.random.default_rng(0)
    good = evaluate_vectors(p.query_vectors, p.item_vectors, p.test_cases, p.user_items, p.train_counts, CFG,
                            name="good")
    noisy_q = p.query_vectors + 3.0 * rng.standard_normal(p.query_vectors.shape).astype(np.float32)
    bad = evaluate_vectors(noisy_q, p.item_vectors, p.test_cases, p.user_items, p.train_counts, CFG, name="bad")
    return p, good, bad


def test_planted_gain_is_detected_with_a_paired_interval(runs):
    _, good, bad = runs
    table = compare(good, bad)
    assert table.attrs["a"] == "good" and table.attrs["b"] == "bad"
    row = table.query("family == 'overall' and metric == 'recall@50'").iloc[0]
    assert row["diff"] == pytest.approx(good.value("recall@50") - bad.value("recall@50"))
    assert row["a"] == pytest.approx(good.value("recall@50"))
    assert row["lo"] <= row["diff"] <= row["hi"] and row["lo"] > 0 and row["excludes_zero"]
    # one row per slice and metric, slices in A's order
    n_slices = len(good.summary.query("source == 'exact'"))
    assert len(table) == n_slices * len(good.metric_columns("exact"))


def test_identical_runs_differ_by_exactly_zero(runs, tmp_path):
    _, good, _ = runs
    good.save(tmp_path / "a")
    table = compare(tmp_path / "a", good)
    assert (table["diff"].fillna(0) == 0).all()
    assert not table["excludes_zero"].any()


def test_runs_on_different_test_cases_are_refused(runs):
    p, good, _ = runs
    q, t = p.test_cases
    keep = np.ones(len(q), bool)
    keep[:5] = False
    other = evaluate_vectors(p.query_vectors, p.item_vectors, (q[keep], t[keep]), p.user_items, p.train_counts,
                             CFG, name="subset")
    with pytest.raises(ValueError, match="'good' and 'subset' were graded on different test cases"):
        compare(good, other)
    with pytest.raises(ValueError, match="run 'good' has no source 'index'"):
        compare(good, other, source="index")
    with pytest.raises(TypeError, match="expected an EvalResult or the path"):
        compare(good, 42)
