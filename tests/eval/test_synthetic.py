"""eval.synthetic: the planted problem is seeded, consistent and long-tailed."""
import numpy as np
import pytest

from eval.synthetic import planted_problem


def test_planted_problem_is_consistent_and_seeded():
    p = planted_problem(num_users=200, num_items=300, dim=8, clusters=5, seed=7)
    q = planted_problem(num_users=200, num_items=300, dim=8, clusters=5, seed=7)
    assert np.array_equal(p.item_vectors, q.item_vectors) and np.array_equal(p.test_cases[1], q.test_cases[1])
    assert p.query_vectors.shape == (200, 8) and p.item_vectors.shape == (300, 8)
    np.testing.assert_allclose(np.linalg.norm(p.item_vectors, axis=1), 1, rtol=1e-5)
    users, items = p.test_cases
    assert (p.user_topic[users] == p.item_topic[items]).all()  # targets come from the user's topic
    assert not np.asarray(p.user_items[users, items]).any()  # never a training item
    assert np.array_equal(p.train_counts, np.bincount(p.user_items.indices, minlength=300))
    assert p.train_counts.max() > 5 * np.median(p.train_counts)  # long tail
    with pytest.raises(ValueError, match="clusters \\(10\\) must not exceed num_items \\(5\\)"):
        planted_problem(num_items=5, clusters=10)
