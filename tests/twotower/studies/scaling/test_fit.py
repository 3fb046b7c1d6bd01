import math

import numpy as np
import pytest

from twotower.studies.scaling.fit import PowerLawFit, fit_power_law, pareto_frontier


def _noisy_law(a, b, c, x, noise, seed):
    rng = np.random.default_rng(seed)
    y = a * (x / 1e11) ** (-b) + c
    return y * np.exp(rng.normal(0.0, noise, len(x)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_known_exponent_from_noisy_points(seed):
    # 12 points over 4 decades, 1% multiplicative noise. Tolerance: |b̂ − b| < 0.03, |ĉ − c| < 0.06,
    # and the 95% interval of b covers the truth.
    x = np.logspace(9, 13, 12)
    y = _noisy_law(2.0, 0.3, 0.5, x, 0.01, seed)
    fit = fit_power_law(x, y, bootstrap=80, seed=seed)
    assert abs(fit.b - 0.3) < 0.03
    assert abs(fit.c - 0.5) < 0.06
    assert fit.b_ci[0] <= 0.3 <= fit.b_ci[1]
    assert fit.b_ci[0] <= fit.b <= fit.b_ci[1]
    assert fit.r2 > 0.999
    assert fit.bootstrap_failed == 0 and fit.at_bounds == ()


def test_recovers_a_shallow_exponent_with_more_noise():
    # b = 0.08, 3% noise, 16 points over 5 decades: |b̂ − b| < 0.03
    x = np.logspace(8, 13, 16)
    y = _noisy_law(1.0, 0.08, 1.5, x, 0.03, seed=7)
    fit = fit_power_law(x, y, bootstrap=60, seed=0)
    assert abs(fit.b - 0.08) < 0.03
    assert fit.b_ci[0] <= 0.08 <= fit.b_ci[1]


def test_noiseless_points_are_fitted_exactly():
    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5])
    y = 4.0 * x ** (-0.25) + 0.2
    fit = fit_power_law(x, y, bootstrap=0)
    assert fit.b == pytest.approx(0.25, rel=1e-5)
    assert fit.c == pytest.approx(0.2, rel=1e-4)
    assert fit.a_raw == pytest.approx(4.0, rel=1e-4)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(fit.predict(x), y, rtol=1e-6)
    assert max(abs(r) for r in fit.residuals) < 1e-6
    assert math.isnan(fit.b_ci[0])  # no bootstrap, no interval


def test_without_offset_is_the_log_log_line():
    x = np.logspace(1, 4, 5)
    y = 3.0 * x ** (-0.5)
    fit = fit_power_law(x, y, offset=False, bootstrap=0)
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    assert fit.b == pytest.approx(-slope, rel=1e-9)
    assert fit.a_raw == pytest.approx(math.exp(intercept), rel=1e-9)
    assert fit.c == 0.0 and not fit.offset
    assert fit.formula("C").endswith("^(−0.5)")


def test_points_that_do_not_follow_a_power_law_get_a_low_r2():
    x = np.logspace(1, 4, 10)
    y = np.where(np.arange(10) % 2 == 0, 1.0, 3.0)  # a zig-zag
    fit = fit_power_law(x, y, bootstrap=0)
    assert fit.r2 < 0.3


def test_bootstrap_is_deterministic_for_a_seed():
    x = np.logspace(9, 12, 8)
    y = _noisy_law(2.0, 0.2, 0.3, x, 0.02, seed=3)
    one = fit_power_law(x, y, bootstrap=30, seed=11)
    two = fit_power_law(x, y, bootstrap=30, seed=11)
    assert one.b_ci == two.b_ci and one.c_ci == two.c_ci


def test_to_dict_is_json_safe_and_complete():
    x = np.logspace(1, 4, 5)
    fit = fit_power_law(x, 3.0 * x ** (-0.5) + 0.1, bootstrap=0)
    d = fit.to_dict()
    assert d["b_ci"] == [None, None]  # NaN → None
    assert d["n"] == 5 and len(d["residuals"]) == 5 and d["formula"] == fit.formula()
    assert isinstance(fit, PowerLawFit)


@pytest.mark.parametrize("x, y, match", [
    ([1, 2, 3], [3, 2, 1], "needs at least 4 points; got 3"),
    ([1, 2, 3, 4], [3, 2, 0, 1], "finite and > 0"),
    ([1, 2, 3, 4], [3, 2, 1], "same length"),
    ([5, 5, 5, 5, 5], [1, 2, 3, 4, 5], "not identifiable"),
])
def test_bad_input_is_rejected_with_the_reason(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y, bootstrap=0)


def test_without_offset_three_points_are_enough():
    fit = fit_power_law([1, 10, 100], [1.0, 0.5, 0.26], offset=False, bootstrap=0)
    assert fit.n == 3
    with pytest.raises(ValueError, match="needs at least 3 points; got 2"):
        fit_power_law([1, 10], [1.0, 0.5], offset=False, bootstrap=0)


def test_pareto_frontier_matches_the_definition():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, 60).astype(float)
    y = rng.random(60)
    got = pareto_frontier(x, y)
    # reference: kept iff y is strictly below every point with x' <= x (other than itself), ties
    # broken towards the lowest y (the first of equal (x, y) pairs in lexsort order wins)
    order = np.lexsort((y, x))
    expected = np.zeros(60, bool)
    for pos, i in enumerate(order):
        expected[i] = all(y[i] < y[j] for j in order[:pos])
    assert np.array_equal(got, expected)
    assert got.sum() >= 1 and y[got].min() == y.min()
