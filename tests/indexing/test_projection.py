"""QProj{k} indices: an uncentred orthonormal projection learned from the queries, then a FAISS index on k dims."""
import faiss
import numpy as np
import pytest

from indexing import faiss_index as fi
from indexing import projection
from indexing.item_index import ItemIndex
from indexing.quantizer import train_best
from indexing.spec import IndexSpec, split_projection
from indexing.store import load_index, save_index

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

DIM = 16
K = 20


def _normalised(v):
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return make_data()


def make_data():
    """Vectors shaped like trained towers: the items have a large common mean and most of their variance in
    dims 0-7; the queries put their energy into dims 8-13, the items' low-variance directions; both then
    rotated by one random orthonormal matrix (so nothing is axis-aligned)."""
    rng = np.random.default_rng(5)
    item_scale = np.r_[np.full(8, 1.0), np.full(8, 0.3)]
    mean = np.zeros(DIM)
    mean[0] = 2.0
    x = mean + rng.standard_normal((4000, DIM)) * item_scale
    query_scale = np.r_[np.full(8, 0.01), np.full(6, 1.0), np.full(2, 0.01)]
    q = rng.standard_normal((600, DIM)) * query_scale
    rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    return _normalised(x @ rotation), _normalised(q @ rotation), [f"i{i}" for i in range(len(x))]


def _brute_recall(index, x, q, k=K):
    """Mean recall@k of ``index.search`` against a float64 brute force (ties at the k-th score count)."""
    scores = q.astype(np.float64) @ x.astype(np.float64).T
    kth = -np.sort(-scores, axis=1)[:, k - 1:k]
    _, rows = index.search(q, k)
    found = np.take_along_axis(scores, np.maximum(rows, 0), axis=1)
    return float((((found >= kth - 1e-6) & (rows >= 0)).sum(axis=1) / k).mean())


def _spec(factory, **kw):
    base = dict(factory=factory, gpu="never", recall_k=K, recall_queries=200, tune_queries=300, quantizer_restarts=1)
    return IndexSpec(**{**base, **kw})


def test_a_full_rank_projection_keeps_every_inner_product_exactly(data):
    """QProj{d} is a rotation: scores must equal q . x. A centred map (PCA: A(x - m)) would add the per-item
    term -(A m).(A x) and fail this."""
    x, q, ids = data
    index = ItemIndex.build(x, ids, _spec(f"QProj{DIM},Flat", target_recall=None), "mv", queries=q)
    scores, rows = index.search(q[:50], K)
    exact = np.take_along_axis(q[:50].astype(np.float64) @ x.astype(np.float64).T, rows, axis=1)
    np.testing.assert_allclose(scores, exact, atol=2e-5)
    transform = projection.projection_of(index.faiss_index)
    assert transform is not None and not transform.have_bias
    a = projection.matrix(index.faiss_index)
    np.testing.assert_allclose(a @ a.T, np.eye(DIM), atol=1e-5)  # orthonormal rows
    assert _brute_recall(index, x, q) >= 0.999


def test_the_kept_directions_are_the_queries_and_ranking_follows_them(data):
    """QProj6 keeps the queries' 6 directions: scores are (A q).(A x) with A the top-6 eigenvectors of the query
    second moment, and recall stays near exact. Learned from the items instead (no query set: the fallback),
    the same 6 dims keep the items' variance and recall collapses -- the build report says which was used."""
    x, q, ids = data
    spec = _spec("QProj6,Flat", target_recall=None)
    index = ItemIndex.build(x, ids, spec, "mv", queries=q, query_source="query_tower_valid_users")
    record = index.quantizer["projection"]
    assert record["source"] == "query_second_moment" and record["dims_kept"] == 6
    assert record["query_source"] == "query_tower_valid_users" and record["kept_energy"] > 0.95
    tune_q = q[np.sort(np.random.default_rng([spec.seed, 2]).permutation(len(q))[:300])]
    expected, _ = projection.second_moment_basis(tune_q, 6)
    a = projection.matrix(index.faiss_index)
    np.testing.assert_allclose(a, expected, atol=1e-5)
    scores, rows = index.search(q[:50], K)
    projected = np.take_along_axis((q[:50] @ a.T).astype(np.float64) @ (x @ a.T).astype(np.float64).T, rows, axis=1)
    np.testing.assert_allclose(scores, projected, atol=2e-5)
    with_queries = _brute_recall(index, x, q)
    assert with_queries >= 0.9

    fallback = ItemIndex.build(x, ids, spec, "mv")  # no query set: item vectors stand in for queries
    record = fallback.quantizer["projection"]
    assert record["source"] == "item_second_moment" and record["query_source"] is None
    assert _brute_recall(fallback, x, q) < with_queries - 0.3


def test_ivf_sq_on_the_projection_matches_brute_force_and_survives_save_and_load(data, tmp_path):
    """The 48 B/item shape of ``auto`` (QProj{k},IVF,SQ6), small: tuned on the queries, the recall it reports
    is the recall a float64 brute force sees (within 0.03); save -> load gives identical results and matrix."""
    x, q, ids = data
    index = ItemIndex.build(x, ids, _spec("QProj8,IVF32,SQ6", quantizer_restarts=2, target_recall=0.9), "mv", queries=q,
                            query_source="query_tower_valid_users")
    assert index.tuning["reached"] and index.recall["recall"] >= 0.88 and index.search_params["nprobe"] < 32
    assert abs(_brute_recall(index, x, q) - index.recall["recall"]) <= 0.03
    assert index.quantizer["restarts"] == 2 and index.quantizer["projection"]["source"] == "query_second_moment"
    parts = index.bytes_per_item
    assert (parts["codes"], parts["ids"], parts["refine"], parts["total"]) == (6, 8, 0, 14)
    # fixed: projection 16*8*4 + centroids 32*8*4 + SQ ranges 2*8*4
    assert parts["fixed_bytes"] == DIM * 8 * 4 + 32 * 8 * 4 + 2 * 8 * 4
    save_index(index, tmp_path / "v")
    loaded = load_index(tmp_path / "v")
    np.testing.assert_array_equal(projection.matrix(loaded.faiss_index), projection.matrix(index.faiss_index))
    assert loaded.search_params == index.search_params and loaded.quantizer == index.quantizer
    for a, b in zip(loaded.search(q, K), index.search(q, K)):
        np.testing.assert_array_equal(a, b)


def test_bad_projection_requests_say_what_was_wrong(data):
    x, q, ids = data
    with pytest.raises(ValueError, match="keeps 17 projected dims but the vectors have only 16"):
        ItemIndex.build(x, ids, _spec("QProj17,Flat"), "mv", queries=q)
    for bad in ("QProj0,Flat", "QProj,Flat", "QProj8", "QProjx,IVF8,Flat"):
        with pytest.raises(ValueError, match="'QProj<k>,<FAISS factory>'"):
            split_projection(bad)
    with pytest.raises(ValueError, match="FAISS cannot build index factory 'IVF8,Nonsense' for dim=8"):
        fi.new_index("QProj8,IVF8,Nonsense", DIM, _spec("QProj8,IVF8,Nonsense"))
    index = fi.new_index("QProj8,IVF8,Flat", DIM, _spec("QProj8,IVF8,Flat"))
    with pytest.raises(ValueError, match="QProj8 needs at least 8 vectors to learn 8 directions from, got 5"):
        projection.fit(index, x[:5], q[:5], "query_tower_valid_users")
    with pytest.raises(ValueError, match=r"expected vectors of shape \(m, 16\)"):
        projection.fit(index, x[:, :8], None, "item_vectors_held_out")
    with pytest.raises(ValueError, match="learned from the queries before training"):
        fi.train_rows(index, x, np.arange(1000))
    with pytest.raises(ValueError, match="not a QProj index"):
        projection.matrix(fi.new_index("IVF8,Flat", DIM, _spec("IVF8,Flat")))


def test_item_vector_queries_are_labelled_as_the_item_second_moment(data):
    """The rebuild's fallback passes held-out item vectors as the tuning queries: the projection must say it
    was learned from items, not queries."""
    x, _, _ = data
    index, report = train_best("QProj8,IVF16,Flat", x, _spec("QProj8,IVF16,Flat"), x[:300], "item_vectors_held_out")
    assert report["projection"]["source"] == "item_second_moment" and index.is_trained


def test_sharded_build_of_a_projected_index_equals_the_single_build(data):
    from indexing.sharded import add_shard, merge_shards, train_empty

    x, q, ids = data
    spec = _spec("QProj8,IVF16,SQ6", nprobe=4, target_recall=None)
    trained = train_empty(x, spec, queries=q)
    blobs = [add_shard(trained, x[start:start + 1500], np.arange(start, min(len(x), start + 1500)))
             for start in range(0, len(x), 1500)]
    merged = merge_shards(trained, reversed(blobs), len(x))
    single = ItemIndex.build(x, ids, spec, "mv", queries=q)
    np.testing.assert_array_equal(projection.matrix(merged), projection.matrix(single.faiss_index))
    fi.apply_search_params(merged, nprobe=4)
    for a, b in zip(merged.search(q[:100], K), single.faiss_index.search(q[:100], K)):
        np.testing.assert_array_equal(a, b)
    assert isinstance(faiss.downcast_index(merged), faiss.IndexPreTransform)


def test_auto_picks_the_projected_index_when_ivf_flat_and_the_sq8_index_exceed_the_budget(data):
    """At d = 16 auto's last compressed entry is QProj13,IVF{nlist},SQ6 (10 + 8 = 18 B/item); with a budget of
    20 B/item it is chosen, learns its projection from the query set and is tuned to the target (0.9 here: 6-bit
    codes of these small vectors top out near 0.957 at k = 20)."""
    from indexing.spec import choose_nlist

    x, q, ids = data
    spec = IndexSpec(gpu="never", memory_budget_bytes=len(x) * 20, recall_k=K, recall_queries=200, tune_queries=300,
                     quantizer_restarts=1, target_recall=0.9)
    index = ItemIndex.build(x, ids, spec, "mv", queries=q, query_source="query_tower_valid_users")
    assert index.factory == f"QProj13,IVF{choose_nlist(len(x))},SQ6" and index.bytes_per_item["total"] == 18
    assert index.quantizer["projection"]["source"] == "query_second_moment"
    assert index.tuning["reached"] and index.recall["recall"] >= 0.88
    assert abs(_brute_recall(index, x, q) - index.recall["recall"]) <= 0.03
