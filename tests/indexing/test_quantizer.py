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


def _scripted_curves(monkeypatch, curves):
    """Make candidate r's coarse recall curve curves[r] = {nprobe: (recall, scanned fraction)} (lower bound =
    recall - 0.01; values missing from the dict get the previous value's point), to test the choice rule alone."""
    calls = iter(range(len(curves)))

    def curve(index, vectors, queries, exact_rows, values, size_rows):
        script, out, last = curves[next(calls)], [], (0.0, 0.0)
        for v in values:
            last = script.get(v, last)
            out.append((v, last[0], last[0] - 0.01, last[1]))
        return out

    monkeypatch.setattr(qz, "coarse_recall_curve", curve)


def test_the_choice_is_fewest_items_scanned_not_smallest_nprobe(data, monkeypatch):
    """Restart 0 reaches the target at nprobe 2 but scans 60% of the catalogue there (an unbalanced quantizer);
    restart 1 needs nprobe 8 and scans 10%; restart 2 scans least (2%) but never reaches the target. The rule is:
    among candidates reaching the target, fewest items scanned at their own smallest sufficient nprobe."""
    x, q, _ = data
    spec = IndexSpec(factory="IVF64,Flat", target_recall=0.9)
    _scripted_curves(monkeypatch, [
        {1: (0.5, 0.3), 2: (0.97, 0.6)},
        {1: (0.3, 0.01), 4: (0.8, 0.05), 8: (0.95, 0.10)},
        {1: (0.2, 0.002), 16: (0.85, 0.02)},
    ])
    _, report = qz.train_best("IVF64,Flat", x, spec, q[:50], "q")
    by_restart = {c["restart"]: c for c in report["candidates"]}
    assert [by_restart[r]["nprobe_needed"] for r in range(3)] == [2, 8, None]
    assert report["chosen"] == 1, report["candidates"]
    # equal scanned fractions: the higher recall wins, then the lower restart
    _scripted_curves(monkeypatch, [{4: (0.93, 0.1)}, {4: (0.96, 0.1)}, {4: (0.96, 0.1)}])
    assert qz.train_best("IVF64,Flat", x, spec, q[:50], "q")[1]["chosen"] == 1
    # no candidate reaches the target: all are compared at the largest nprobe tried (every list, scanned 1.0
    # each), so the highest recall there wins
    _scripted_curves(monkeypatch, [{64: (0.80, 1.0)}, {64: (0.85, 1.0)}, {64: (0.82, 1.0)}])
    assert qz.train_best("IVF64,Flat", x, spec, q[:50], "q")[1]["chosen"] == 1


def test_with_an_explicit_nprobe_the_choice_is_highest_recall_there(data, monkeypatch):
    x, q, _ = data
    spec = IndexSpec(factory="IVF64,Flat", nprobe=8)
    _scripted_curves(monkeypatch, [{8: (0.90, 0.05)}, {8: (0.97, 0.30)}, {8: (0.97, 0.20)}])
    _, report = qz.train_best("IVF64,Flat", x, spec, q[:50], "q")
    assert report["chosen"] == 2, report["candidates"]
