"""eval.exact: blocked exact top-K vs brute force, exclusions, the index path, the index's own recall."""
import numpy as np
import pytest

from eval.cases import as_exclusions
from eval.exact import as_vectors, count_by_slice, exact_top_k, index_correct, index_credit_by_slice, index_top_k
from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec


def brute_force(queries, items, k, exclude):
    """Obvious reference: full score matrix, excluded -> -inf, lexsort by (-score, row)."""
    scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    rows = np.full((len(queries), k), -1)
    for q in range(len(queries)):
        s = scores[q].copy()
        s[exclude[q]] = -np.inf
        order = np.lexsort((np.arange(len(items)), -s))
        order = order[np.isfinite(s[order])][:k]
        rows[q, : len(order)] = order
    return scores, rows


def random_problem(seed, m=60, n=500, d=16, max_excl=30):
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((m, d)).astype(np.float32)
    items = rng.standard_normal((n, d)).astype(np.float32)
    exclude = [rng.choice(n, size=rng.integers(0, max_excl), replace=False) for _ in range(m)]
    return queries, items, exclude


@pytest.mark.parametrize("query_block, item_block", [(7, 33), (64, 10_000), (1, 500)])
def test_matches_brute_force_with_exclusions(query_block, item_block):
    queries, items, exclude = random_problem(0)
    scores, rows = exact_top_k(queries, items, 20, exclude, query_block=query_block, item_block=item_block)
    ref_scores, ref_rows = brute_force(queries, items, 20, exclude)
    assert scores.dtype == np.float32 and rows.dtype == np.int64 and rows.shape == (60, 20)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, np.take_along_axis(ref_scores, rows, 1), rtol=1e-5, atol=1e-5)
    for q in range(60):
        assert not np.isin(rows[q], exclude[q]).any()


def test_pads_when_fewer_items_than_k_remain():
    queries, items, _ = random_problem(1, m=3, n=6, max_excl=3)
    exclude = [np.array([0, 1, 2, 3]), np.array([], np.int64), np.arange(6)]
    scores, rows = exact_top_k(queries, items, 4, exclude)
    assert (rows[0, :2] >= 0).all() and (rows[0, 2:] == -1).all() and np.isneginf(scores[0, 2:]).all()
    assert set(rows[0, :2]) == {4, 5}
    assert (rows[1] >= 0).all()
    assert (rows[2] == -1).all() and np.isneginf(scores[2]).all()
    wide_scores, wide_rows = exact_top_k(queries, items, 10, None)
    assert (wide_rows[:, 6:] == -1).all() and sorted(wide_rows[0, :6]) == list(range(6))


def test_ties_are_deterministic_and_ordered_by_row_within_a_list():
    rng = np.random.default_rng(3)
    items = rng.integers(-1, 2, (300, 3)).astype(np.float32)  # many exactly equal scores
    queries = rng.integers(-1, 2, (20, 3)).astype(np.float32)
    exclude = [rng.choice(300, 10, replace=False) for _ in range(20)]
    runs = [exact_top_k(queries, items, 25, exclude, query_block=qb, item_block=ib)
            for qb, ib in ((20, 300), (3, 7), (1, 13))]
    for scores, rows in runs[1:]:
        np.testing.assert_array_equal(rows, runs[0][1])
    scores, rows = runs[0]
    same = scores[:, 1:] == scores[:, :-1]
    assert (rows[:, 1:][same] > rows[:, :-1][same]).all()
    assert (np.diff(scores, axis=1) <= 0).all()
    # membership is right up to ties: every kept score >= every excluded-from-list eligible score
    ref_scores, _ = brute_force(queries, items, 25, exclude)
    for q in range(20):
        s = ref_scores[q].copy()
        s[exclude[q]] = -np.inf
        s[rows[q]] = -np.inf
        assert s.max() <= scores[q, -1]


class LeakyIndex:
    """Returns an excluded row: the suite must refuse it."""

    def __init__(self, bad):
        self.bad = bad

    def search(self, queries, k, exclude=None):
        rows = np.tile(np.arange(k), (len(queries), 1))
        return np.zeros((len(queries), k), np.float32), self.bad(rows)


@pytest.mark.parametrize("bad, message", [
    (lambda r: r, r"returned 1 excluded row\(s\), e.g. row 1 for query 0"),
    (lambda r: r[:, :-1], r"returned scores \(2, 3\) / rows \(2, 2\) for 2 queries and k=3"),
    (lambda r: np.where(r == 2, 0, r), "returned a row twice in one list"),
    (lambda r: r + 100, r"rows outside \[-1, 10\)"),
])
def test_index_answers_breaking_the_contract_are_refused(bad, message):
    queries = np.ones((2, 4), np.float32)
    excl = as_exclusions([[1], []] if "excluded" in message else [[], []], 2, 10)
    with pytest.raises(ValueError, match=message):
        index_top_k(LeakyIndex(bad), queries, 3, excl)


def test_exact_index_path_equals_exact_path():
    queries, items, exclude = random_problem(4, m=120, n=3000, d=16, max_excl=60)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    index = ItemIndex.build(items, [f"i{r}" for r in range(len(items))], IndexSpec(factory="Flat"), "v1")
    excl = as_exclusions(exclude, len(queries), len(items))
    exact = exact_top_k(queries, items, 50, excl)
    approx = index_top_k(index, queries, 50, excl, query_block=17)
    assert (approx[1] == exact[1]).mean() > 0.999  # same lists up to float-rounding swaps of near-ties
    np.testing.assert_allclose(approx[0], exact[0], atol=1e-5)
    correct = index_correct(queries, items, exact[0], approx[1], (10, 50))
    assert correct[10].all() and correct[50].all()


def test_index_correct_equals_set_recall_without_ties_and_counts_by_slice():
    queries, items, exclude = random_problem(5, m=200, n=4000, d=8, max_excl=20)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    index = ItemIndex.build(items, np.arange(len(items)).astype(str), IndexSpec(factory="IVF64,Flat", nprobe=1), "v1")
    excl = as_exclusions(exclude, len(queries), len(items))
    exact = exact_top_k(queries, items, 20, excl)
    approx = index_top_k(index, queries, 20, excl)
    correct = index_correct(queries, items, exact[0], approx[1], (5, 20))
    codes = np.arange(len(items)) % 3
    for k in (5, 20):
        n_exact = count_by_slice(exact[1][:, :k], exact[1][:, :k] >= 0, codes, 3)
        n_correct = count_by_slice(approx[1][:, :k], correct[k], codes, 3)
        for q in range(len(queries)):
            ex, got = set(exact[1][q, :k]), set(approx[1][q, :k]) - {-1}
            assert correct[k][q].sum() == len(ex & got)
            for c in range(3):
                assert n_exact[q, c] == sum(1 for r in ex if r % 3 == c)
                assert n_correct[q, c] == sum(1 for r in ex & got if r % 3 == c)
    assert 0.2 < correct[20].mean() < 0.99  # nprobe=1 on 64 lists really loses neighbours


def test_vector_validation_messages():
    with pytest.raises(ValueError, match=r"query vectors have dim 3 but the item vectors have dim 4"):
        exact_top_k(np.ones((2, 3)), np.ones((5, 4)), 2)
    with pytest.raises(ValueError, match=r"item vectors contain NaN/inf in 1 row\(s\), e.g. rows \[1\]"):
        exact_top_k(np.ones((2, 4)), np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]]), 1)
    with pytest.raises(TypeError, match="must be float vectors, got dtype int64"):
        as_vectors(np.ones((2, 2), np.int64), "item vectors")
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        exact_top_k(np.ones((2, 4)), np.ones((5, 4)), 0)


def test_index_credit_by_slice_by_hand_with_a_tie_across_slices():
    # one query; item scores 0.9 (row 0, slice 0), 0.5 (row 1, slice 0), 0.5 (row 2, slice 1), 0.1 (row 3, slice 1)
    items = np.array([[0.9, 0], [0.5, 0], [0.5, 0], [0.1, 0]], np.float32)
    queries = np.array([[1.0, 0]], np.float32)
    codes = np.array([0, 0, 1, 1])
    exact_scores, exact_rows = np.array([[0.9, 0.5]], np.float32), np.array([[0, 1]])  # exact took row 1 at the tie

    def credit(index_rows):
        n_exact, got = index_credit_by_slice(queries, items, exact_scores, exact_rows, np.array([index_rows]), 2,
                                             codes, 2)
        assert n_exact.tolist() == [[2, 0]]
        return got.tolist()[0]

    assert credit([0, 1]) == [2, 0]    # the exact list
    assert credit([0, 2]) == [2, 0]    # the other tied item (slice 1): its place is credited to slice 0, no loss
    assert credit([0, 3]) == [1, 0]    # 0.1 is below the tie: a loss
    assert credit([2, 1]) == [1, 0]    # both tied items but not the sure one: one loss
    assert credit([1, -1]) == [1, 0]   # padding is never found
    # without ties it is index_correct counted by slice
    correct = index_correct(queries, items, exact_scores, np.array([[0, 3]]), (2,))
    assert count_by_slice(np.array([[0, 3]]), correct[2], codes, 2).tolist() == [[1, 0]]
