"""core.exclusions: the one exclusions type of eval, indexing and serving."""
import numpy as np
import pytest
import scipy.sparse as sp

from core.exclusions import Exclusions, as_exclusions


def slow_membership(lists, q, item):
    return item >= 0 and item in set(lists[q])


def test_every_accepted_form_gives_the_same_csr():
    lists = [np.array([3, 1, 3]), [], None, np.array([0]), 4]
    pairs_q = np.array([3, 0, 0, 0, 4])
    pairs_r = np.array([0, 3, 1, 3, 4])
    mat = sp.csr_matrix((np.ones(5), (pairs_q, pairs_r)), shape=(5, 6))
    forms = [as_exclusions(lists, 5, 6), as_exclusions(mat, 5, 6), as_exclusions(mat.tocoo(), 5, 6),
             Exclusions.from_pairs(pairs_q, pairs_r, 5, 6)]
    for e in forms:
        assert e.indptr.tolist() == [0, 2, 2, 2, 3, 4] and e.indices.tolist() == [1, 3, 0, 4]
        assert e.counts.tolist() == [2, 0, 0, 1, 1] and e.nnz == 4 and e.num_items == 6
    assert as_exclusions(forms[0], 5, 6) is forms[0]


def test_contains_broadcasts_and_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    lists = [rng.choice(50, size=rng.integers(0, 10), replace=False) for _ in range(30)]
    e = as_exclusions(lists, 30, 50)
    queries = np.arange(30)[:, None]
    items = rng.integers(-1, 50, size=(30, 40))
    got = e.contains(queries, items)
    want = np.array([[slow_membership(lists, q, int(items[q, j])) for j in range(40)] for q in range(30)])
    np.testing.assert_array_equal(got, want)
    sub = e.take(np.array([7, 2]))
    assert sub.num_queries == 2 and sub.rows(0).tolist() == sorted(set(lists[7].tolist()))
    assert sub.rows(1).tolist() == sorted(set(lists[2].tolist()))
    assert not Exclusions.empty(3, 5).contains(np.array([0]), np.array([1]))[0]


def test_bad_exclusions_name_the_argument_and_the_fix():
    with pytest.raises(ValueError, match=r"exclude\[1\] holds row 9, outside 0..5: excluded item rows must be rows "
                                         r"in \[0, 6\), got e.g. \[9\]; exclusions are catalogue rows"):
        as_exclusions([[], [9]], 2, 6, what="exclude")
    with pytest.raises(TypeError, match=r"seen\[0\] must be a 1-D array of int rows, got dtype float64"):
        as_exclusions([[1.5]], 1, 6, what="seen")
    with pytest.raises(ValueError, match=r"exclusions has 1 entries, expected one per query row \(2\)"):
        as_exclusions([[1]], 2, 6)
    with pytest.raises(ValueError, match=r"exclusions matrix has shape \(2, 5\), expected .* = \(2, 6\)"):
        as_exclusions(sp.csr_matrix((2, 5)), 2, 6)
    with pytest.raises(ValueError, match=r"query rows must be in \[0, 2\), got e.g. \[2\]"):
        Exclusions.from_pairs([2], [1], 2, 6)
    with pytest.raises(TypeError, match="got dict"):
        as_exclusions({0: [1]}, 1, 6)


def test_eval_indexing_and_serving_share_the_type():
    import eval.cases
    import indexing.item_index
    import serving.state

    assert eval.cases.Exclusions is Exclusions
    assert indexing.item_index.Exclusions is Exclusions
    assert serving.state.Exclusions is Exclusions
    assert not hasattr(indexing.item_index, "_csr_lists")
