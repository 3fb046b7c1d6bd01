"""Sharded build (train_empty / add_shard / merge_shards) vs a single-process ItemIndex.build."""
import numpy as np
import pytest

from indexing import faiss_index as fi
from indexing.item_index import ItemIndex
from indexing.sharded import add_shard, merge_shards, train_empty
from indexing.spec import IndexSpec
from indexing.synthetic import clustered_vectors


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def data():
    x, q = clustered_vectors(6000, 16, 100, seed=5)
    return x, q, [f"i{i}" for i in range(len(x))]


def contiguous(n, parts):
    return np.array_split(np.arange(n), parts)


def sharded_build(x, spec, row_groups, deliver_order=None):
    trained = train_empty(x, spec, n_items=len(x))
    blobs = [add_shard(trained, x[rows], rows) for rows in row_groups]
    if deliver_order is not None:
        blobs = [blobs[i] for i in deliver_order]
    return merge_shards(trained, blobs)


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64_HNSW32,Flat", "IVF64,PQ8x4", "IVF64,PQ8x4fs",
                                     "IVF64,PQ8x4fs,RFlat", "Flat"])
def test_contiguous_shards_in_any_order_equal_single_build_bit_for_bit(data, factory):
    x, q, ids = data
    spec = IndexSpec(factory=factory, nprobe=8, gpu="never", recall_queries=100)
    single = ItemIndex.build(x, ids, spec, "mv")
    merged = sharded_build(x, spec, contiguous(len(x), 5), deliver_order=[3, 0, 4, 2, 1])
    wrapped = ItemIndex.from_faiss(merged, ids, spec, "mv", factory=factory)  # applies nprobe, as build does
    assert fi.serialize(wrapped.faiss_index) == fi.serialize(single.faiss_index)
    for a, b in zip(wrapped.search(q, 20), single.search(q, 20)):
        np.testing.assert_array_equal(a, b)


def test_tuned_sharded_build_equals_tuned_single_build(data):
    # build() tunes nprobe; the Beam path wraps the merged index (pending tuning) and its validation's
    # measure_recall tunes it: same data, same seeds -> same nprobe, same bytes, same recall.
    x, q, ids = data
    spec = IndexSpec(factory="IVF64,Flat", gpu="never", recall_k=20, recall_queries=100, tune_queries=100)
    single = ItemIndex.build(x, ids, spec, "mv")
    wrapped = ItemIndex.from_faiss(sharded_build(x, spec, contiguous(len(x), 4)), ids, spec, "mv")
    assert wrapped.tune_pending and wrapped.tuning is None
    assert wrapped.measure_recall(x) == single.recall
    assert wrapped.tuning == single.tuning and single.tuning["value"] > 1
    assert fi.serialize(wrapped.faiss_index) == fi.serialize(single.faiss_index)
    for a, b in zip(wrapped.search(q, 20), single.search(q, 20)):
        np.testing.assert_array_equal(a, b)


def test_interleaved_ivf_shards_return_the_same_results_as_single_build(data):
    x, q, ids = data
    spec = IndexSpec(factory="IVF64,Flat", nprobe=8, gpu="never", recall_queries=100)
    single = ItemIndex.build(x, ids, spec, "mv")
    rng = np.random.default_rng(1)
    groups = np.array_split(rng.permutation(len(x)), 4)  # rows scattered across shards
    merged = ItemIndex.from_faiss(sharded_build(x, spec, groups), ids, spec, "mv", factory="IVF64,Flat")
    exclude = [rng.choice(len(x), size=5, replace=False) for _ in range(len(q))]
    for a, b in zip(merged.search(q, 30, exclude), single.search(q, 30, exclude)):
        np.testing.assert_array_equal(a, b)


def test_hnsw_is_rebuilt_sequentially_in_merge_with_good_recall(data):
    x, q, ids = data
    spec = IndexSpec(factory="HNSW16,Flat", ef_search=64, gpu="never", recall_k=10, recall_queries=100)
    merged = sharded_build(x, spec, contiguous(len(x), 3))
    assert merged.ntotal == len(x)
    index = ItemIndex.from_faiss(merged, ids, spec, "mv", factory="HNSW16,Flat")
    assert index.recall is None
    assert index.measure_recall(x, q, k=10)["recall"] >= 0.95


def test_duplicated_or_missing_shard_is_refused(data):
    x, _, _ = data
    spec = IndexSpec(factory="IVF64,Flat", gpu="never")
    trained = train_empty(x, spec)
    groups = contiguous(len(x), 3)
    blobs = [add_shard(trained, x[g], g) for g in groups]
    with pytest.raises(ValueError, match=r"2000 duplicated \(e.g. \[0, 1, 2, 3, 4\]\)"):
        merge_shards(trained, blobs + blobs[:1])
    with pytest.raises(ValueError, match=r"2000 missing \(e.g. \[2000, 2001"):
        merge_shards(trained, [blobs[0], blobs[2]])
    with pytest.raises(ValueError, match="shards hold 4000 vectors but the catalogue has 6000 items"):
        merge_shards(trained, blobs[:2], n_items=len(x))
    flat = IndexSpec(factory="Flat")
    trained_flat = train_empty(x, flat)
    flat_blobs = [add_shard(trained_flat, x[g], g) for g in groups]
    with pytest.raises(ValueError, match="duplicated"):
        merge_shards(trained_flat, flat_blobs + flat_blobs[1:2])


def test_shard_from_another_training_is_refused(data):
    x, _, _ = data
    a = train_empty(x, IndexSpec(factory="IVF64,Flat", seed=1))
    b = train_empty(x, IndexSpec(factory="IVF64,Flat", seed=2))
    rows = np.arange(len(x))
    with pytest.raises(ValueError, match="shard 0 was not built from this trained index"):
        merge_shards(a, [add_shard(b, x, rows)])
    with pytest.raises(ValueError, match="not a raw-vector shard"):
        merge_shards(train_empty(x, IndexSpec(factory="Flat")), [add_shard(a, x, rows)])


def test_sharded_input_validation(data):
    x, _, _ = data
    with pytest.raises(ValueError, match="pass n_items"):
        train_empty(x, IndexSpec())
    trained = train_empty(x, IndexSpec(factory="IVF64,Flat"))
    with pytest.raises(ValueError, match="one per vector"):
        add_shard(trained, x[:10], np.arange(9))
    with pytest.raises(ValueError, match="dimension 8 but the index holds 16-d"):
        add_shard(trained, np.ones((2, 8), np.float32), [0, 1])
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        merge_shards(trained, [b"garbage"])
    with pytest.raises(ValueError, match="already holds"):
        add_shard(add_shard(trained, x[:5], np.arange(5)), x[5:6], [5])


def test_auto_spec_sharded_build_wraps_with_the_factory_build_would_choose(data):
    x, q, ids = data
    spec = IndexSpec(gpu="never", recall_queries=50)
    merged = sharded_build(x, spec, contiguous(len(x), 2))
    index = ItemIndex.from_faiss(merged, ids, spec, "mv")
    assert index.factory == "Flat" == ItemIndex.build(x, ids, spec, "mv").factory
    assert index.measure_recall(x)["recall"] == 1.0
