"""Sharded indices (indexing.sharded_index): fan-out search equals one index on the same vectors; save/load."""
import json

import numpy as np
import pytest

from indexing import faiss_index as fi
from indexing.item_index import ItemIndex
from indexing.recall import recall_against_exact
from indexing.sharded import train_empty
from indexing.sharded_index import ShardedItemIndex, load_any, load_sharded, save_sharded, shard_bounds
from indexing.spec import IndexSpec
from indexing.store import save_index
from indexing.synthetic import clustered_vectors

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

FLAT = IndexSpec(factory="Flat", gpu="never", recall_k=20, recall_queries=100)
IVF = IndexSpec(factory="IVF32,Flat", gpu="never", recall_k=20, recall_queries=100, tune_queries=100, nprobe=4)


@pytest.fixture(scope="module")
def tied():
    """3000 vectors where every item has an exact duplicate somewhere else in the catalogue (often in another
    shard), plus queries: every top-k has ties, and shards split tie groups."""
    x, q = clustered_vectors(1500, 16, 60, seed=3)
    rng = np.random.default_rng(4)
    x = np.concatenate([x, x[rng.permutation(1500)]])  # row i and a row >= 1500 hold the same vector
    ids = np.array([f"i{i}" for i in range(len(x))], dtype=object)
    return x, q, ids


def exclusions(m, n, seed):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=int(rng.integers(0, 40)), replace=False) for _ in range(m)]


def brute_top_k(x, q, k, exclude):
    """Reference: float64 scores rounded to float32, excluded rows dropped, lexsort (row asc within score)."""
    s = (q.astype(np.float64) @ x.astype(np.float64).T).astype(np.float32)
    out = []
    for i in range(len(q)):
        keep = np.setdiff1d(np.arange(len(x)), exclude[i])
        order = np.lexsort((keep, -s[i, keep]))[:k]
        out.append(keep[order])
    return np.array(out)


def test_shard_bounds_are_contiguous_and_near_equal():
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(5, 5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    with pytest.raises(ValueError, match="cannot split 3 items into 4 non-empty shards"):
        shard_bounds(3, 4)
    with pytest.raises(ValueError, match="num_shards must be a positive int"):
        shard_bounds(3, 0)


@pytest.mark.parametrize("num_shards", [1, 3, 7])
def test_flat_shards_equal_the_single_flat_index_with_ties_and_exclusions(tied, num_shards):
    x, q, ids = tied
    single = ItemIndex.build(x, ids, FLAT, "mv")
    sharded = ShardedItemIndex.build(x, ids, FLAT, "mv", num_shards)
    assert sharded.ntotal == len(x) and list(sharded.item_ids) == list(ids) and sharded.is_exact
    excl = exclusions(len(q), len(x), 5)
    for k in (1, 10, 50):
        for ex in (None, excl):
            s1, r1 = single.search(q, k, ex)
            s2, r2 = sharded.search(q, k, ex)
            np.testing.assert_array_equal(r2, r1)
            np.testing.assert_array_equal(s2, s1)
    # the duplicates really are tied and split over shards, and the merge kept the lower row of each tie
    assert (sharded.search(x[1500:1510], 2)[0][:, 0] == sharded.search(x[1500:1510], 2)[0][:, 1]).all()
    np.testing.assert_array_equal(sharded.search(q, 50, excl)[1], brute_top_k(x, q, 50, excl))
    # more than n per query: padded like the single index; everything excluded: nothing returned
    s, r = sharded.search(q[:2], len(x) + 5)
    assert (r[:, -5:] == -1).all() and np.isinf(s[:, -5:]).all() and (np.sort(r[:, :len(x)], axis=1) == np.arange(len(x))).all()
    s, r = sharded.search(q[:1], 3, [np.arange(len(x))])
    assert (r == -1).all() and np.isinf(s).all()


def test_csr_exclusions_work_like_lists(tied):
    scipy = pytest.importorskip("scipy.sparse")
    x, q, ids = tied
    sharded = ShardedItemIndex.build(x, ids, FLAT, "mv", 4)
    excl = exclusions(len(q), len(x), 6)
    csr = scipy.csr_matrix((np.ones(sum(map(len, excl))), np.concatenate(excl),
                            np.concatenate([[0], np.cumsum([len(e) for e in excl])])), shape=(len(q), len(x)))
    np.testing.assert_array_equal(sharded.search(q, 30, csr)[1], sharded.search(q, 30, excl)[1])
    with pytest.raises(ValueError, match="outside 0..2999"):
        sharded.search(q[:1], 3, [np.array([3000])])


def test_ivf_shards_with_the_shared_quantizer_equal_the_single_ivf_index(tied):
    """Shards built from one trained IVF index at the same nprobe probe the same lists as the single index."""
    x, q, ids = tied
    trained = train_empty(x, IVF, n_items=len(x))
    single_faiss = fi.deserialize(trained)
    single_faiss.add(x)
    single = ItemIndex(single_faiss, ids, IVF, "mv", "IVF32,Flat")
    sharded = ShardedItemIndex.build(x, ids, IVF, "mv", 3)
    assert sharded.search_params == single.search_params == {"nprobe": 4}
    excl = exclusions(len(q), len(x), 7)
    for ex in (None, excl):
        s1, r1 = single.search(q, 20, ex)
        s2, r2 = sharded.search(q, 20, ex)
        np.testing.assert_array_equal(r2, r1)
        np.testing.assert_allclose(s2, s1, rtol=0, atol=1e-6)
    assert recall_against_exact(sharded, x, q, 20) < 1.0  # approximate: nprobe 4 of 32 lists misses some


def test_build_tunes_the_merged_search_on_the_query_set(tied):
    x, q, ids = tied
    spec = IndexSpec(factory="IVF32,Flat", gpu="never", recall_k=20, recall_queries=30, tune_queries=30,
                     target_recall=0.9)
    sharded = ShardedItemIndex.build(x, ids, spec, "mv", 3, queries=q, query_source="query_tower_valid_users")
    assert sharded.tuning["query_source"] == sharded.recall["query_source"] == "query_tower_valid_users"
    assert sharded.tuning["num_queries"] == sharded.recall["num_queries"] == 30
    assert sharded.tuning["reached"] and sharded.recall["search_params"] == {"nprobe": sharded.tuning["value"]}
    assert all(s.search_params == sharded.search_params for s in sharded.shards)
    # the shared quantizer was chosen among the restarts on the same query set
    assert sharded.quantizer["query_source"] == "query_tower_valid_users" and sharded.quantizer["restarts"] == 3
    # the chosen value is the first on the curve whose merged recall clears the bound; one lower does not
    curve = sharded.tuning["curve"]
    assert curve[-1][0] == sharded.tuning["value"] and len(curve) >= 2
    # fallback without queries: item vectors, and the manifest says so
    fallback = ShardedItemIndex.build(x, ids, spec, "mv", 3)
    assert fallback.tuning["query_source"] == "item_vectors_held_out"
    assert fallback.recall["query_source"] == "item_vectors_sample"


def test_save_load_same_results_and_load_any(tied, tmp_path):
    x, q, ids = tied
    sharded = ShardedItemIndex.build(x, ids, IVF, "mv", 3, queries=q)
    manifest = save_sharded(sharded, tmp_path / "v1")
    assert manifest["num_shards"] == 3 and [e["start"] for e in manifest["shards"]] == [0, 1000, 2000]
    assert all(len(e["manifest_sha256"]) == 64 and len(e["index_sha256"]) == 64 for e in manifest["shards"])
    on_disk = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    assert on_disk["shards"] == manifest["shards"] and on_disk["recall"] == sharded.recall
    assert on_disk["quantizer"] == sharded.quantizer is not None
    loaded = load_any(tmp_path / "v1")
    assert isinstance(loaded, ShardedItemIndex) and loaded.recall == sharded.recall
    excl = exclusions(len(q), len(x), 8)
    for a, b in zip(loaded.search(q, 20, excl), sharded.search(q, 20, excl)):
        np.testing.assert_array_equal(a, b)
    assert list(loaded.item_ids) == list(ids) and loaded.search_params == sharded.search_params
    # a single index opens through the same call
    single = ItemIndex.build(x, ids, FLAT, "mv")
    save_index(single, tmp_path / "single")
    assert isinstance(load_any(tmp_path / "single"), ItemIndex)
    # serving overrides apply to every shard and clear the recorded recall
    faster = load_any(tmp_path / "v1", {"nprobe": 1, "gpu": "never"})
    assert faster.search_params == {"nprobe": 1} and faster.recall is None


def test_load_refuses_tampered_missing_or_foreign_shards(tied, tmp_path):
    x, q, ids = tied
    sharded = ShardedItemIndex.build(x, ids, FLAT, "mv", 2)
    save_sharded(sharded, tmp_path / "v")
    with pytest.raises(FileExistsError, match="already holds a saved index"):
        save_sharded(sharded, tmp_path / "v")
    # a shard replaced by another valid saved index: its manifest hash no longer matches
    other = ShardedItemIndex.build(x[::-1].copy(), ids, FLAT, "mv", 2)
    save_sharded(other, tmp_path / "other")
    victim = tmp_path / "v" / "shard-00001" / "manifest.json"
    original = victim.read_bytes()
    victim.write_bytes((tmp_path / "other" / "shard-00001" / "manifest.json").read_bytes())
    with pytest.raises(ValueError, match="shard-00001/manifest.json: sha256 .* does not match the sharded manifest"):
        load_any(tmp_path / "v")
    victim.write_bytes(original)
    # a flipped byte inside a shard's index file: the shard's own manifest catches it
    blob = tmp_path / "v" / "shard-00000" / "index.faiss"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="index.faiss: sha256"):
        load_any(tmp_path / "v")
    # a missing shard directory
    import shutil
    shutil.rmtree(tmp_path / "other" / "shard-00000")
    with pytest.raises(ValueError, match="shard-00000: shard listed in .* is missing"):
        load_sharded(tmp_path / "other")
    with pytest.raises(ValueError, match="not a sharded item index"):
        load_sharded(tmp_path / "v" / "shard-00001")


def test_mismatched_shards_and_bad_input_are_refused(tied):
    x, q, ids = tied
    a = ItemIndex.build(x[:100], ids[:100], FLAT, "mv")
    b = ItemIndex.build(x[100:200], ids[100:200], FLAT, "other-model")
    with pytest.raises(ValueError, match=r"shard 1 differs from shard 0 in \['model_version'\]"):
        ShardedItemIndex([a, b])
    with pytest.raises(ValueError, match="needs at least one shard"):
        ShardedItemIndex([])
    with pytest.raises(TypeError, match="shard 0 must be an ItemIndex"):
        ShardedItemIndex([object()])
    sharded = ShardedItemIndex([a, ItemIndex.build(x[100:200], ids[100:200], FLAT, "mv")])
    with pytest.raises(ValueError, match="k must be a positive int"):
        sharded.search(q, 0)
    with pytest.raises(ValueError, match="vectors has 10 rows but the sharded index holds 200"):
        sharded.measure_recall(x[:10])
    with pytest.raises(ValueError, match="no measured recall"):
        save_sharded(sharded, "/nonexistent")
    with pytest.raises(ValueError, match="item_ids has 5 entries for 3000 vectors"):
        ShardedItemIndex.build(x, ids[:5], FLAT, "mv", 2)


def test_eval_grades_a_sharded_index_like_the_single_index(tied):
    """eval.evaluate_vectors reads a sharded index through the same search API (issue 15: eval reads shards)."""
    from eval.config import EvalConfig
    from eval.evaluate import evaluate_vectors

    x, q, ids = tied
    rng = np.random.default_rng(9)
    cases = np.stack([np.arange(len(q)), rng.integers(0, len(x), len(q))], axis=1).astype(np.int64)
    excl = exclusions(len(q), len(x), 10)
    counts = np.ones(len(x), dtype=np.int64)
    config = EvalConfig(ks=(10, 20))
    single = evaluate_vectors(q, x, cases, excl, counts, config, index=ItemIndex.build(x, ids, FLAT, "mv"))
    sharded = evaluate_vectors(q, x, cases, excl, counts, config, index=ShardedItemIndex.build(x, ids, FLAT, "mv", 3))
    assert single.summary.equals(sharded.summary)
    vs_exact = sharded.summary.loc[sharded.summary["source"] == "index_vs_exact", "index_recall@20"].dropna()
    assert len(vs_exact) and (vs_exact == 1.0).all()  # Flat shards: the merge is exact


def test_publish_sharded_then_load_current_any(tied, tmp_path):
    from indexing.sharded_index import load_current_any, publish_sharded
    from indexing.store import publish_index

    x, q, ids = tied
    sharded = ShardedItemIndex.build(x, ids, FLAT, "mv", 3)
    publish_index(tmp_path / "index", ItemIndex.build(x, ids, FLAT, "mv"), "v1")
    final = publish_sharded(tmp_path / "index", sharded, "v2", extra_manifest={"source": "test"})
    assert final == tmp_path / "index" / "v2" and json.loads((final / "manifest.json").read_text())["version"] == "v2"
    current = load_current_any(tmp_path / "index")
    assert isinstance(current, ShardedItemIndex)
    np.testing.assert_array_equal(current.search(q, 10)[1], sharded.search(q, 10)[1])
    with pytest.raises(FileExistsError, match="versions are immutable"):
        publish_sharded(tmp_path / "index", sharded, "v2")
    assert not [p for p in (tmp_path / "index").iterdir()
                if p.name.startswith(".") and p.name != ".lease"]  # no staging left (the released lease stays)
