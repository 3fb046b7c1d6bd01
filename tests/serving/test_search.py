"""serving.search: the narrow-first search equals the index's own exclusion search, on every index it is used
for, including ties, lists cut short by IVF probes, and queries that must be searched again."""
import numpy as np
import pytest

from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec
from serving import search as search_module
from serving.search import narrow_first_is_exact, search_excluding


def _vectors(n, d, seed, duplicates=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if duplicates:  # exact ties: some items share a vector
        x[n - duplicates:] = x[:duplicates]
    return x


def _exclusions(rng, m, n, top_rows):
    """Per query: mostly its own best rows (so the narrow pass loses many), some random, some none."""
    out = []
    for q in range(m):
        kind = q % 4
        if kind == 0:
            out.append(np.zeros(0, dtype=np.int64))
        elif kind == 1:
            out.append(np.unique(top_rows[q, :rng.integers(1, top_rows.shape[1])]))
        elif kind == 2:
            out.append(np.unique(rng.choice(n, size=rng.integers(1, n // 3), replace=False)))
        else:
            out.append(np.unique(np.concatenate([top_rows[q, :25], rng.choice(n, 40, replace=False)])))
    return out


@pytest.mark.parametrize("factory,nprobe", [("Flat", None), ("IVF16,Flat", 2), ("IVF16,Flat", 16)])
@pytest.mark.parametrize("margin", [0, 3, 20])
def test_equals_the_index_exclusion_search(factory, nprobe, margin):
    n, d = 600, 16
    x = _vectors(n, d, seed=1, duplicates=40)
    index = ItemIndex.build(x, [f"i{i}" for i in range(n)], IndexSpec(factory=factory, nprobe=nprobe, gpu="never",
                                                                        target_recall=None, recall_k=10), "mv")
    assert narrow_first_is_exact(index)
    rng = np.random.default_rng(2)
    queries = np.concatenate([_vectors(60, d, seed=3), x[:20]])  # item vectors as queries: tied candidates
    _, top = index.search(queries, 60)
    exclude = _exclusions(rng, len(queries), n, top)
    for k in (1, 7, 30):
        want = index.search(queries, k, exclude)
        got = search_excluding(index, queries, k, exclude, margin=margin)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


def test_queries_that_lose_too_many_are_searched_again(monkeypatch):
    n, d = 300, 8
    x = _vectors(n, d, seed=4)
    index = ItemIndex.build(x, [f"i{i}" for i in range(n)], IndexSpec(factory="Flat", gpu="never"), "mv")
    queries = x[:4]
    _, top = index.search(queries, 30)
    exclude = [top[0, :25], np.zeros(0, np.int64), top[2, :1], top[3, :29]]
    calls = []
    original = ItemIndex.search

    def spy(self, q, k, exclude=None, **kw):
        calls.append((len(q), k, exclude is not None))
        return original(self, q, k, exclude, **kw)

    monkeypatch.setattr(ItemIndex, "search", spy)
    got = search_excluding(index, queries, 5, exclude, margin=5)
    assert calls == [(4, 10, False), (2, 5, True)]  # one narrow pass (5 + 5), then queries 0 and 3 alone
    monkeypatch.setattr(ItemIndex, "search", original)
    np.testing.assert_array_equal(got[1], index.search(queries, 5, exclude)[1])


def test_other_indices_get_the_index_exclusion_search():
    n, d = 400, 8
    x = _vectors(n, d, seed=5)
    hnsw = ItemIndex.build(x, [f"i{i}" for i in range(n)], IndexSpec(factory="HNSW16,Flat", gpu="never"), "mv")
    assert not narrow_first_is_exact(hnsw)
    exclude = [np.arange(0, 50, dtype=np.int64)] * 3
    want = hnsw.search(x[:3], 10, exclude)
    got = search_excluding(hnsw, x[:3], 10, exclude)
    np.testing.assert_array_equal(got[1], want[1])
    assert not narrow_first_is_exact(object())


def test_no_exclusions_is_one_plain_search_and_a_bad_margin_is_refused():
    x = _vectors(50, 8, seed=6)
    index = ItemIndex.build(x, [f"i{i}" for i in range(50)], IndexSpec(factory="Flat", gpu="never"), "mv")
    np.testing.assert_array_equal(search_excluding(index, x[:2], 5, None)[1], index.search(x[:2], 5)[1])
    np.testing.assert_array_equal(search_excluding(index, x[:2], 5, [np.zeros(0, np.int64)] * 2)[1],
                                  index.search(x[:2], 5)[1])
    with pytest.raises(ValueError, match="margin must be an int >= 0, got -1"):
        search_excluding(index, x[:2], 5, [np.arange(3)] * 2, margin=-1)
    assert search_module.MARGIN >= 1
