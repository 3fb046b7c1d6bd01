"""eval.cases: normalising test cases and exclusions; vectorised membership."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from eval.cases import EvalCases, Exclusions, as_cases, as_exclusions, take_exclusions


def test_cases_accept_tuple_array_frame_and_dedupe():
    pairs = np.array([[0, 3], [1, 2], [0, 3], [0, 1]])
    for given in (pairs, (pairs[:, 0], pairs[:, 1]), pd.DataFrame({"query": pairs[:, 0], "target": pairs[:, 1]})):
        cases, dup = as_cases(given, 2, 4)
        assert dup == 1
        assert cases.queries.tolist() == [0, 1, 0] and cases.targets.tolist() == [3, 2, 1]
    assert isinstance(cases, EvalCases) and len(cases) == 3
    assert cases.unique_queries().tolist() == [0, 1]


@pytest.mark.parametrize("given, error, message", [
    ((np.array([0, 5]), np.array([1, 1])), ValueError, r"query rows must be rows in \[0, 3\), got e.g. \[5\]"),
    ((np.array([0]), np.array([9])), ValueError, r"target rows must be rows in \[0, 4\), got e.g. \[9\]; the catalogue"),
    ((np.array([0, 1]), np.array([1])), ValueError, "2 query rows but 1 target rows"),
    ((np.array([0.5]), np.array([1])), TypeError, "must hold integer rows, got dtype float64"),
    ((np.array([], int), np.array([], int)), ValueError, "test cases are empty"),
    (pd.DataFrame({"user": [0], "item": [1]}), ValueError, r"missing column\(s\) \['query', 'target'\]"),
    (np.zeros((2, 3), int), ValueError, r"shape \(2, 3\)"),
])
def test_bad_cases_messages(given, error, message):
    with pytest.raises(error, match=message):
        as_cases(given, 3, 4)


def test_exclusions_from_lists_and_sparse_agree():
    lists = [np.array([3, 1, 3]), np.array([], dtype=np.int64), np.array([0])]
    a = as_exclusions(lists, 3, 5)
    mat = sp.csr_matrix((np.ones(4), ([0, 0, 0, 2], [3, 1, 3, 0])), shape=(3, 5))
    b = as_exclusions(mat, 3, 5)
    for e in (a, b):
        assert e.indptr.tolist() == [0, 2, 2, 3] and e.indices.tolist() == [1, 3, 0]
        assert e.counts.tolist() == [2, 0, 1]
    assert [r.tolist() for r in a.lists(np.array([2, 0]))] == [[0], [1, 3]]
    assert a.contains(np.array([0, 0, 1, 2, 2]), np.array([3, 2, 3, 0, -1])).tolist() == [True, False, False, True, False]
    pos, rows = a.pairs(np.array([2, 0]))
    assert pos.tolist() == [0, 1, 1] and rows.tolist() == [0, 1, 3]
    sub = take_exclusions(a, np.array([2, 0]))
    assert sub.num_queries == 2 and [r.tolist() for r in sub.lists(np.arange(2))] == [[0], [1, 3]]
    none = as_exclusions(None, 2, 5)
    assert none.counts.tolist() == [0, 0] and not none.contains(np.array([0]), np.array([1]))[0]


def test_bad_exclusions_messages():
    with pytest.raises(ValueError, match=r"exclusions matrix has shape \(2, 5\), expected .* \(3, 5\)"):
        as_exclusions(sp.csr_matrix((2, 5)), 3, 5)
    with pytest.raises(ValueError, match="exclusions has 2 entries, expected one per query row \\(3\\)"):
        as_exclusions([[1], [2]], 3, 5)
    with pytest.raises(ValueError, match=r"excluded item rows must be rows in \[0, 5\), got e.g. \[7\]"):
        as_exclusions([[1], [7], []], 3, 5)
    with pytest.raises(TypeError, match="got dict"):
        as_exclusions({0: [1]}, 1, 5)
    with pytest.raises(ValueError, match="cover 1 queries x 5 items, expected 2 x 5"):
        as_exclusions(Exclusions.empty(1, 5), 2, 5)
