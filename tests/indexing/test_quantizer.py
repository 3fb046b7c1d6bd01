"""Robust IVF training (indexing.quantizer): several seeded quantizers, the one chosen by recall on the queries."""
import numpy as np
import pytest

from indexing import faiss_index as fi
from indexing import quantizer as qz
from indexing.item_index import ItemIndex
from indexing.recall import exact_top_k, recall_against_exact
from indexing.sharded import train_empty_with_report
from indexing.spec import IndexSpec
from indexing.store import load_index, save_index
from indexing.synthetic import clustered_vectors
from indexing.tuning import ladder

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

SPEC = IndexSpec(factory="IVF64,Flat", gpu="never", recall_k=20, recall_queries=200, tune_queries=200)


@pytest.fixture(scope="module")
def data():
    x, q = clustered_vectors(8000, 16, 400, seed=11)
    return x, q, [f"i{i}" for i in range(len(x))]


@pytest.fixture
def bad_restart_0(data, monkeypatch):
    """Restart 0 trains its 64 centroids on 200 items from one corner of the space: a deliberately bad quantizer."""
    x = data[0]
    good = qz.restart_rows

    def rows(n, spec, restart):
        return np.sort(np.argsort(-x[:, 0])[:200]) if restart == 0 else good(n, spec, restart)

    monkeypatch.setattr(qz, "restart_rows", rows)


def test_coarse_recall_is_the_ivf_flat_recall(data):
    x, q, _ = data
    index, _ = qz.train_best("IVF64,Flat", x, IndexSpec(factory="IVF64,Flat", quantizer_restarts=1), None, "x")
    index.add(x)
    _, exact_rows = exact_top_k(x, q, 20)
    values = [1, 2, 4, 8, 16]
    curve = qz.coarse_recall_curve(index, x, q, exact_rows, values, np.arange(len(x)))
    for (value, coarse, bound, scanned), nprobe in zip(curve, values):
        index.nprobe = nprobe
        found = index.search(q, 20)[1]
        real = np.mean([len(set(f) & set(e)) / 20 for f, e in zip(found, exact_rows)])
        assert coarse == pytest.approx(real, abs=1e-9) and bound <= coarse
        sizes = np.array([index.invlists.list_size(i) for i in range(64)]) / len(x)
        lists = index.quantizer.search(q, nprobe)[1]
        assert scanned == pytest.approx(sizes[lists].sum(axis=1).mean(), abs=1e-9)


def test_a_bad_quantizer_is_chosen_against(data, bad_restart_0):
    x, q, ids = data
    chosen = ItemIndex.build(x, ids, SPEC, "mv", queries=q, query_source="query_tower_valid_users")
    report = chosen.quantizer
    assert report["restarts"] == 3 and report["chosen"] != 0
    assert report["query_source"] == "query_tower_valid_users" and report["num_queries"] == 200
    bad, picked = report["candidates"][0], report["candidates"][report["chosen"]]
    assert bad["nprobe_needed"] > picked["nprobe_needed"] and bad["scanned_fraction"] > 2 * picked["scanned_fraction"]
    # with one training the bad quantizer is all there is: tuning then has to probe many more lists
    only_bad = ItemIndex.build(x, ids, IndexSpec(**{**SPEC.__dict__, "quantizer_restarts": 1}), "mv", queries=q)
    assert only_bad.quantizer is None
    assert only_bad.tuning["value"] > chosen.tuning["value"]
    # and at the nprobe the good quantizer needs, its recall is far below the target: what the gate refuses
    fixed = IndexSpec(**{**SPEC.__dict__, "quantizer_restarts": 1, "nprobe": chosen.tuning["value"]})
    bad_fixed = ItemIndex.build(x, ids, fixed, "mv", queries=q)
    assert bad_fixed.recall["recall"] < 0.9 <= 0.95 <= chosen.recall["recall"]
    # an explicit nprobe picks by recall at that nprobe: restarts catch the bad quantizer there too
    caught = ItemIndex.build(x, ids, IndexSpec(**{**fixed.__dict__, "quantizer_restarts": 3}), "mv", queries=q)
    assert caught.quantizer["chosen"] != 0 and caught.recall["recall"] >= 0.95


def test_restarts_are_deterministic_and_saved(data, tmp_path):
    x, q, ids = data
    a = ItemIndex.build(x, ids, SPEC, "mv", queries=q)
    b = ItemIndex.build(x, ids, SPEC, "mv", queries=q)
    assert a.quantizer == b.quantizer and fi.serialize(a.faiss_index) == fi.serialize(b.faiss_index)
    seeds = [c["kmeans_seed"] for c in a.quantizer["candidates"]]
    assert seeds == [qz.kmeans_seed(SPEC, r) for r in range(3)] and seeds[0] == SPEC.seed and len(set(seeds)) == 3
    assert all(row[1] <= 1 and 0 < row[2] <= 1 for c in a.quantizer["candidates"] for row in c["curve"])
    manifest = save_index(a, tmp_path / "v")
    assert manifest["quantizer"] == a.quantizer and load_index(tmp_path / "v").quantizer == a.quantizer
    # the sharded build's trainer makes the same choice from the same vectors and queries
    blob, report = train_empty_with_report(x, SPEC, n_items=len(x), queries=q)
    assert report == a.quantizer


def test_restart_0_is_the_single_training(data):
    x, _, _ = data
    once = fi.new_index("IVF64,Flat", 16, SPEC)
    fi.train(once, x, SPEC)
    restarted, report = qz.train_best("IVF64,Flat", x, SPEC, x[:100], "x")
    if report["chosen"] == 0:
        assert fi.serialize(restarted) == fi.serialize(once)
    first = qz.restart_rows(len(x), IndexSpec(train_size=1000), 0)
    np.testing.assert_array_equal(first, fi.train_sample(len(x), IndexSpec(train_size=1000)))
    assert not np.array_equal(first, qz.restart_rows(len(x), IndexSpec(train_size=1000), 1))


def test_no_ivf_or_one_restart_trains_once(data):
    x, q, _ = data
    for factory in ("Flat", "HNSW8,Flat", "PCA8,IVF16,Flat"):
        index, report = qz.train_best(factory, x[:2000], IndexSpec(factory=factory), q, "x")
        assert report is None and index.is_trained


def test_spec_rejects_bad_restarts():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="quantizer_restarts must be a positive int"):
            IndexSpec(quantizer_restarts=bad)
