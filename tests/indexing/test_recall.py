"""recall_against_exact vs a slow, obvious set-intersection implementation."""
import numpy as np
import pytest

from indexing.recall import exact_top_k, recall_against_exact, recall_from_results
from indexing.synthetic import clustered_vectors


class FixedResults:
    """A fake index returning given rows (to control exactly what is 'found')."""

    def __init__(self, rows):
        self.rows = rows

    def search(self, queries, k):
        return np.zeros(self.rows[:, :k].shape, np.float32), self.rows[:, :k]


def slow_recall(found, x, q, k):
    total = 0.0
    for i in range(len(q)):
        s = x.astype(np.float64) @ q[i].astype(np.float64)
        truth = set(np.argsort(-s, kind="stable")[:k].tolist())
        total += len(truth & set(found[i, :k].tolist())) / k
    return total / len(q)


def test_matches_set_intersection_without_ties():
    x, q = clustered_vectors(500, 16, 20, seed=1)
    rng = np.random.default_rng(0)
    _, exact = exact_top_k(x, q, 10)
    found = exact.copy()
    for i in range(len(q)):  # replace a random number of true neighbours by random other rows
        drop = rng.integers(0, 11)
        others = np.setdiff1d(np.arange(len(x)), exact[i])
        found[i, 10 - drop:] = rng.choice(others, size=drop, replace=False)
    expected = slow_recall(found, x, q, 10)
    assert 0.2 < expected < 0.9
    assert recall_against_exact(FixedResults(found), x, q, 10) == pytest.approx(expected, abs=1e-12)


def test_exact_results_have_recall_one_and_missing_rows_count_as_misses():
    x, q = clustered_vectors(300, 8, 10, seed=2)
    _, exact = exact_top_k(x, q, 5)
    assert recall_against_exact(FixedResults(exact), x, q, 5) == 1.0
    half = exact.copy()
    half[:, 3:] = -1
    assert recall_against_exact(FixedResults(half), x, q, 5) == pytest.approx(0.6)


def test_tied_items_count_as_found():
    x = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], np.float32)  # rows 0 and 1 tie for every query
    q = np.array([[1, 0]], np.float32)
    exact_scores, _ = exact_top_k(x, q, 1)
    assert recall_from_results(np.array([[1]]), x, q, exact_scores, 1) == 1.0
    assert recall_from_results(np.array([[0]]), x, q, exact_scores, 1) == 1.0
    assert recall_from_results(np.array([[3]]), x, q, exact_scores, 1) == 0.0


def test_k_larger_than_catalogue_uses_n_as_denominator():
    x, q = clustered_vectors(4, 8, 2, seed=3)
    rows = np.tile(np.arange(4), (2, 1))
    assert recall_against_exact(FixedResults(rows), x, q, 10) == 1.0
    with pytest.raises(ValueError, match="k must be a positive int"):
        recall_against_exact(FixedResults(rows), x, q, 0)
