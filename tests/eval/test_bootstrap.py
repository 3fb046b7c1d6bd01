"""eval.bootstrap: seeded resampling, NaN-skipping slice means, CI coverage, paired differences."""
import numpy as np
import pandas as pd
import pytest

from eval.bootstrap import bootstrap_columns, bootstrap_difference, nan_means, replicate_weights, summarize


def test_replicate_weights_are_seeded_multinomial_draws():
    a = np.concatenate(list(replicate_weights(50, 130, seed=7, chunk=64)))
    b = np.concatenate(list(replicate_weights(50, 130, seed=7, chunk=64)))
    assert a.shape == (130, 50) and np.array_equal(a, b)
    assert (a.sum(axis=1) == 50).all() and (a >= 0).all()
    c = np.concatenate(list(replicate_weights(50, 130, seed=8, chunk=64)))
    assert not np.array_equal(a, c)


def test_replicate_means_skip_undefined_values():
    values = np.array([[1.0, np.nan], [3.0, 5.0], [np.nan, 7.0]])
    np.testing.assert_allclose(nan_means(values), [2.0, 6.0])
    lo, hi = bootstrap_columns(values, 400, 0, 0.95)
    assert 1.0 <= lo[0] <= hi[0] <= 3.0 and 5.0 <= lo[1] <= hi[1] <= 7.0
    lo, hi = bootstrap_columns(np.full((3, 1), np.nan), 50, 0, 0.95)
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    lo, hi = bootstrap_columns(values, 0, 0, 0.95)
    assert np.isnan(lo).all()


def test_constant_metric_has_zero_width_interval():
    lo, hi = bootstrap_columns(np.full((40, 1), 0.25), 200, 1, 0.95)
    assert lo[0] == pytest.approx(0.25) and hi[0] == pytest.approx(0.25)


def test_interval_covers_true_value_at_about_nominal_rate():
    # 300 simulated test sets of 150 users with Bernoulli(0.3) hits, plus a slice holding ~40% of users
    # whose hit rate is 0.6. The 95% percentile interval should cover the truth ~95% of the time.
    rng = np.random.default_rng(123)
    sims, users = 300, 150
    covered = np.zeros(2)
    for s in range(sims):
        overall = (rng.random(users) < 0.3).astype(float)
        in_slice = rng.random(users) < 0.4
        sliced = np.where(in_slice, (rng.random(users) < 0.6).astype(float), np.nan)
        lo, hi = bootstrap_columns(np.column_stack([overall, sliced]), 300, s, 0.95)
        covered += (lo <= np.array([0.3, 0.6])) & (np.array([0.3, 0.6]) <= hi)
    rate = covered / sims
    # binomial sd of the rate at 0.95 over 300 sims is ~0.013; percentile CIs run a little narrow
    assert ((rate > 0.90) & (rate < 0.99)).all(), rate


def test_paired_difference_is_tighter_than_unpaired_and_detects_planted_gain():
    rng = np.random.default_rng(5)
    base = (rng.random(400) < 0.4).astype(float)
    better = base.copy()
    flip = (base == 0) & (rng.random(400) < 0.1)  # B misses, A hits on ~6% of users
    better[flip] = 1.0
    diff, lo, hi = bootstrap_difference(better[:, None], base[:, None], 500, 0, 0.95)
    assert diff[0] == pytest.approx(flip.mean())
    assert 0 < lo[0] <= diff[0] <= hi[0]
    lo_a, hi_a = bootstrap_columns(better[:, None], 500, 0, 0.95)
    # pairing removes the shared per-user variance: narrower than even one run's own interval
    assert hi[0] - lo[0] < 0.7 * (hi_a[0] - lo_a[0])
    same, lo0, hi0 = bootstrap_difference(base[:, None], base[:, None], 100, 0, 0.95)
    assert same[0] == 0 and lo0[0] == 0 and hi0[0] == 0
    with pytest.raises(ValueError, match=r"same shape, got \(400, 1\) and \(3, 1\)"):
        bootstrap_difference(base[:, None], base[:3, None], 10, 0, 0.95)


def test_summarize_counts_and_means_per_slice():
    per_query = pd.DataFrame({
        "source": "exact",
        "family": ["overall"] * 3 + ["popularity"] * 4,
        "slice": ["all"] * 3 + ["head", "tail", "tail", "head"],
        "query": [0, 1, 2, 0, 0, 1, 2],
        "query_id": ["a", "b", "c", "a", "a", "b", "c"],
        "n_targets": [2, 1, 1, 1, 1, 1, 1],
        "recall@1": [0.5, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
    })
    groups = [("overall", "all"), ("popularity", "head"), ("popularity", "tail")]
    out = summarize(per_query, groups, ["recall@1"], 200, 0, 0.9)
    assert out["n_queries"].tolist() == [3, 2, 2]
    assert out["n_cases"].tolist() == [4, 2, 2]
    np.testing.assert_allclose(out["recall@1"], [0.5, 0.5, 0.5])
    assert (out["recall@1_lo"] <= out["recall@1"]).all() and (out["recall@1"] <= out["recall@1_hi"]).all()
    empty = summarize(per_query, groups + [("popularity", "torso")], ["recall@1"], 10, 0, 0.9)
    assert empty.iloc[3]["n_queries"] == 0 and np.isnan(empty.iloc[3]["recall@1"])
