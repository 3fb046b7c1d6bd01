"""The clustered synthetic vectors used by index tests and benchmarks."""
import numpy as np

from indexing.synthetic import clustered_vectors


def test_deterministic_normalised_float32():
    a, qa = clustered_vectors(1000, 16, 50, seed=3)
    b, qb = clustered_vectors(1000, 16, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(qa, qb)
    assert a.dtype == qa.dtype == np.float32 and a.shape == (1000, 16) and qa.shape == (50, 16)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(clustered_vectors(1000, 16, seed=4)[0], a)


def test_clustered_not_uniform():
    x, q = clustered_vectors(2000, 32, 100, seed=0)
    rng = np.random.default_rng(0)
    u = rng.standard_normal((2100, 32))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    nearest = lambda data, queries: np.sort(queries @ data.T, axis=1)[:, -10:].mean()
    assert nearest(x, q) > nearest(u[:2000], u[2000:]) + 0.2  # measured 0.76 vs 0.49: neighbours much closer
    assert (q @ x.T).max(axis=1).max() < 1.0 - 1e-6  # queries are not copies of items
