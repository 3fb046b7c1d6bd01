"""Build-time tuning (indexing.tuning, ItemIndex.tune) vs a brute-force NumPy reference."""
import math

import faiss
import numpy as np
import pytest

from indexing import faiss_index as fi
from indexing import tuning
from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec, default_nprobe
from indexing.store import load_index, save_index
from indexing.synthetic import clustered_vectors
from indexing.tuning import Z, knob, ladder, tune


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def data():
    x, q = clustered_vectors(8000, 16, 150, seed=11)
    return x, q, [f"i{i}" for i in range(len(x))]


SPEC = IndexSpec(factory="IVF64,Flat", gpu="never", recall_k=20, recall_queries=200, tune_queries=200,
                 target_recall=0.95)


def brute_truth(x, q, k):
    """Exact top-k row sets by float64 argsort (the clustered vectors have no ties at the k-th place)."""
    s = q.astype(np.float64) @ x.astype(np.float64).T
    return [set(np.argsort(-s[i], kind="stable")[:k].tolist()) for i in range(len(q))]


def brute_recall_per_query(truth, found, k):
    """Slow reference: |found ∩ exact top-k| / k per query."""
    return np.array([len(t & set(f[:k].tolist())) / k for t, f in zip(truth, found)])


def test_ladder_is_increasing_fine_grained_and_ends_at_high():
    assert ladder(1, 64) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64]
    assert ladder(100, 300) == [100, 112, 128, 160, 192, 224, 256, 300]
    assert ladder(5, 5) == [5]
    with pytest.raises(ValueError, match="need 1 <= low <= high, got low=0"):
        ladder(0, 4)


def test_tune_picks_the_smallest_ladder_value_meeting_the_target(data):
    x, q, _ = data
    index = fi.new_index("IVF64,Flat", x.shape[1], SPEC)
    fi.train(index, x, SPEC)
    index.add(x)
    k, target = 20, 0.95
    result = tune(index, x, q, k, target, "test")
    # reference: per-query recall by brute force at every ladder value, same lower-bound rule
    chosen, truth = None, brute_truth(x, q, k)
    for value in ladder(1, 64):
        index.nprobe = value
        per_query = brute_recall_per_query(truth, index.search(q, k)[1], k)
        bound = per_query.mean() - Z * per_query.std(ddof=1) / math.sqrt(len(q))
        if bound >= target:
            chosen = value
            break
        last_failing = (value, per_query.mean())
    assert chosen is not None and chosen > 1
    assert (result.param, result.value, result.reached) == ("nprobe", chosen, True)
    assert index.nprobe == chosen  # left set
    assert result.curve[-1][0] == chosen and result.curve[-2] == (last_failing[0], round(last_failing[1], 6))
    assert result.recall_lower_bound >= target


def test_unreachable_target_reports_it_and_keeps_the_largest_value(data):
    x, q, _ = data
    index = fi.new_index("IVF16,PQ2x4", x.shape[1], SPEC)  # 1-byte codes: recall@20 stays far below 1
    fi.train(index, x, SPEC)
    index.add(x)
    result = tune(index, x, q[:40], 20, 1.0, "test")
    assert not result.reached and result.value == 16 and result.recall < 0.9
    assert [v for v, _ in result.curve] == ladder(1, 16)


def test_knob_per_family():
    assert knob(faiss.index_factory(8, "Flat", faiss.METRIC_INNER_PRODUCT), 10) is None
    assert knob(faiss.index_factory(8, "PQ4", faiss.METRIC_INNER_PRODUCT), 10) is None
    assert knob(faiss.index_factory(8, "IVF32,PQ4x4fs,RFlat", faiss.METRIC_INNER_PRODUCT), 10)[0] == "nprobe"
    name, values = knob(faiss.index_factory(8, "HNSW8,Flat", faiss.METRIC_INNER_PRODUCT), 10)
    assert name == "ef_search" and values[0] == 10  # efSearch < k searches like k
    with pytest.raises(ValueError, match=r"target recall must be in \(0, 1\], got 1.5"):
        tune(faiss.IndexFlatIP(8), np.zeros((1, 8), np.float32), np.zeros((1, 8), np.float32), 1, 1.5, "x")


def test_build_tunes_deterministically_and_reports_held_out_recall(data):
    x, q, ids = data
    a = ItemIndex.build(x, ids, SPEC, "mv")
    b = ItemIndex.build(x, ids, SPEC, "mv")
    assert a.tuning == b.tuning and fi.serialize(a.faiss_index) == fi.serialize(b.faiss_index)
    assert a.tuning["query_source"] == "item_vectors_held_out" and a.tuning["num_queries"] == 200
    assert a.search_params == {"nprobe": a.tuning["value"]} and not a.tune_pending
    assert a.recall["search_params"] == a.search_params and a.recall["recall"] >= 0.95  # held-out sample


def test_tuned_params_survive_save_and_load(data, tmp_path):
    x, q, ids = data
    built = ItemIndex.build(x, ids, SPEC, "mv")
    save_index(built, tmp_path / "v1")
    loaded = load_index(tmp_path / "v1")
    assert loaded.search_params == built.search_params and loaded.tuning == built.tuning
    assert loaded.recall == built.recall and not loaded.tune_pending
    for got, want in zip(loaded.search(q, 20), built.search(q, 20)):
        np.testing.assert_array_equal(got, want)
    overridden = load_index(tmp_path / "v1", {"nprobe": 3})
    assert overridden.search_params == {"nprobe": 3} and overridden.tuning is None and overridden.recall is None


def test_explicit_knob_or_no_target_means_no_tuning(data):
    x, _, ids = data
    fixed = ItemIndex.build(x, ids, IndexSpec(factory="IVF64,Flat", nprobe=5, gpu="never", recall_queries=50), "mv")
    assert fixed.search_params == {"nprobe": 5} and fixed.tuning is None
    untuned = ItemIndex.build(x, ids, IndexSpec(factory="IVF64,Flat", target_recall=None, gpu="never",
                                                recall_queries=50), "mv")
    assert untuned.search_params == {"nprobe": default_nprobe(64)} and untuned.tuning is None
    flat = ItemIndex.build(x[:500], ids[:500], IndexSpec(factory="Flat", gpu="never", recall_queries=50), "mv")
    assert flat.tuning is None and flat.recall["recall"] == 1.0
    with pytest.raises(ValueError, match="no recall target: pass target_recall"):
        untuned.tune(x)
    with pytest.raises(ValueError, match="vectors has 10 rows but the index holds 8000"):
        fixed.tune(x[:10], target_recall=0.9)


def test_set_search_params_drops_the_tuning(data):
    x, _, ids = data
    index = ItemIndex.build(x, ids, SPEC, "mv")
    index.set_search_params(nprobe=7)
    assert index.search_params == {"nprobe": 7} and index.tuning is None and index.recall is None


def test_spec_rejects_bad_targets():
    for bad in (0, 1.5, "0.9", True):
        with pytest.raises(ValueError, match="target_recall must be a number in \\(0, 1\\] or None"):
            IndexSpec(target_recall=bad)
    with pytest.raises(ValueError, match="tune_queries must be a positive int"):
        IndexSpec(tune_queries=0)


# ------------------------------------------------------------------ tuning on the queries the index serves

def between_cluster_queries(x, m, seed):
    """Normalised sums of two random items: like query-tower vectors they are not item vectors and sit between
    clusters, so their top-k spans more IVF lists than an item's own neighbourhood does."""
    rng = np.random.default_rng(seed)
    q = x[rng.integers(0, len(x), m)] + x[rng.integers(0, len(x), m)]
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def tight():
    x, _ = clustered_vectors(8000, 16, 0, seed=11, noise=0.3)  # tight clusters: item queries need few lists
    return x, [f"i{i}" for i in range(len(x))], between_cluster_queries(x, 600, 5), between_cluster_queries(x, 300, 6)


def test_query_set_tuning_picks_enough_nprobe_where_item_vector_tuning_is_too_small(tight, tmp_path):
    x, ids, q, fresh = tight
    by_items = ItemIndex.build(x, ids, SPEC, "mv")
    assert by_items.tuning["query_source"] == "item_vectors_held_out"
    assert by_items.recall["query_source"] == "item_vectors_sample" and by_items.recall["recall"] >= 0.95
    # ... but on the queries the index serves, that nprobe misses the target by far
    from indexing.recall import recall_against_exact
    assert recall_against_exact(by_items, x, fresh, 20) < 0.9

    by_queries = ItemIndex.build(x, ids, SPEC, "mv", queries=q, query_source="query_tower_valid_users")
    assert by_queries.tuning["value"] > by_items.tuning["value"]
    assert by_queries.tuning["query_source"] == "query_tower_valid_users" and by_queries.tuning["num_queries"] == 200
    assert by_queries.recall["query_source"] == "query_tower_valid_users" and by_queries.recall["num_queries"] == 200
    assert by_queries.recall["recall"] >= 0.95
    assert recall_against_exact(by_queries, x, fresh, 20) >= 0.95  # queries neither tuned nor checked on
    # the curve is the recall per nprobe tried, ending at the chosen value, and it is in the manifest
    curve = by_queries.tuning["curve"]
    assert [v for v, _ in curve] == ladder(1, by_queries.tuning["value"])
    recalls = [r for _, r in curve]
    assert recalls == sorted(recalls) and recalls[0] < 0.9 and recalls[-1] >= 0.95  # IVF-Flat: monotone in nprobe
    manifest = save_index(by_queries, tmp_path / "v1")
    assert manifest["tuning"]["query_source"] == manifest["recall"]["query_source"] == "query_tower_valid_users"
    assert manifest["tuning"]["curve"] == [list(p) for p in curve]


def test_split_queries_is_seeded_disjoint_and_proportional():
    from indexing.tuning import split_queries
    q = np.arange(1000, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    spec = IndexSpec(tune_queries=300, recall_queries=200)
    a, b = split_queries(q, spec)
    assert (len(a), len(b)) == (300, 200) and not set(a[:, 0]) & set(b[:, 0])
    a2, _ = split_queries(q, spec)
    np.testing.assert_array_equal(a, a2)
    small_a, small_b = split_queries(q[:50], spec)  # fewer than asked: split 3:2, all used, disjoint
    assert (len(small_a), len(small_b)) == (30, 20) and not set(small_a[:, 0]) & set(small_b[:, 0])
    one_a, one_b = split_queries(q[:1], spec)
    assert len(one_a) == len(one_b) == 1
    with pytest.raises(ValueError, match="the query set is empty"):
        split_queries(q[:0], spec)


def test_measure_recall_refuses_an_empty_query_set(tight):
    x, ids, q, _ = tight
    index = ItemIndex.build(x, ids, SPEC, "mv", queries=q)
    with pytest.raises(ValueError, match="empty query set"):
        index.measure_recall(x, q[:0])
    with pytest.raises(ValueError, match="queries"):
        index.measure_recall(x, q[:, :3])


# ---- refine tuning's plateau rule (indexing.tuning.plateaued), on scripted recall curves --------------------
# The index is real (IVF256 + fast-scan PQ + SQ8 re-ranking, so ``tune`` takes the refine path with the ladder
# 1..256); its measured recall is replaced by a script of (k_factor, nprobe), so only the stop rule is tested.

@pytest.fixture(scope="module")
def refine_index():
    x, q = clustered_vectors(4000, 8, 40, seed=5)
    spec = IndexSpec(factory="IVF256,PQ4x4fs,Refine(SQ8)", gpu="never")
    index = fi.new_index(spec.factory, x.shape[1], spec)
    fi.train(index, x, spec)
    index.add(x)
    return index, x, q


def _tune_scripted(refine_index, monkeypatch, script, target=0.95):
    """``tune`` with recall(k_factor, nprobe) = script(k_factor, nprobe) (lower bound = recall - 0.003); returns
    the result and {k_factor: [nprobe tried, ...]}."""
    index, x, q = refine_index
    tried = {}

    def scripted(idx, vectors, queries, exact_scores, k):
        nprobe, kf = int(faiss.extract_index_ivf(idx).nprobe), int(fi.refine_of(idx).k_factor)
        tried.setdefault(kf, []).append(nprobe)
        mean = script(kf, nprobe)
        return mean, mean - 0.003

    monkeypatch.setattr(tuning, "_search_recall", scripted)
    return tune(index, x, q, 20, target, "test"), tried


def _slow_climb(nprobe):
    """0.007 recall per doubling of nprobe at every nprobe: per ladder step 0.0013-0.0019 from nprobe 5 on (the
    old rule's 0.002 per step called this flat), lower bound >= 0.95 first at nprobe 192."""
    return 0.90 + 0.007 * math.log2(nprobe)


def test_refine_tuning_follows_a_slowly_climbing_curve_to_the_target(refine_index, monkeypatch):
    # k_factor 1 and 2: re-ranking saturated (flat), from 4 on the slow climb (trained-tower vectors: 0.003-0.005
    # per step at nprobe 48-96)
    def script(kf, nprobe):
        return {1: min(0.62, _slow_climb(nprobe) - 0.3), 2: min(0.85, _slow_climb(nprobe))}.get(kf,
                                                                                               _slow_climb(nprobe))

    result, tried = _tune_scripted(refine_index, monkeypatch, script)
    assert (result.reached, result.value, result.k_factor) == (True, 192, 4)
    assert result.recall_lower_bound >= 0.95
    assert tried[4] == ladder(1, 192)  # followed step by step, not skipped to the target
    assert max(tried[1]) <= 8 and max(tried[2]) <= 8  # the saturated k_factors stopped early
    grid = {kf: nprobe for kf, nprobe, _, _ in result.grid}
    assert grid[1] is None and grid[2] is None and grid[4] == 192 and grid[8] == 192


def test_refine_tuning_stops_early_on_flat_curves(refine_index, monkeypatch):
    # every k_factor climbs fast to a ceiling below the target (0.62 .. 0.92), then stays flat
    def script(kf, nprobe):
        return min(0.62 + 0.05 * math.log2(kf), 0.55 + 0.1 * math.log2(nprobe))

    result, tried = _tune_scripted(refine_index, monkeypatch, script)
    assert not result.reached and result.k_factor == 64 and result.recall == pytest.approx(0.92)
    for kf, values in tried.items():
        flat_from = min(v for v in ladder(1, 256) if script(kf, v) == script(kf, 256))
        # stopped at the 2nd ladder value a whole doubling past the start of the flat part, never near nlist
        assert values == [v for v in ladder(1, 256) if v <= values[-1]]
        assert values[-1] <= max(3, [v for v in ladder(1, 256) if v >= 2 * flat_from][1]), (kf, flat_from, values)
    assert sum(len(v) for v in tried.values()) <= 7 * 12


def test_refine_tuning_stops_on_a_creep_too_slow_for_the_gap(refine_index, monkeypatch):
    # saturated far below the target but creeping up in a zig-zag (+0.00275, -0.00025 per ladder step, ~0.005
    # per doubling): each up-step beats the best so far by > 0.002, so a per-step plateau rule never stops and
    # walks all 36 ladder values to nlist for every k_factor; at that rate the gap (0.25) needs ~50 doublings
    steps = {v: i for i, v in enumerate(ladder(1, 256))}

    def script(kf, nprobe):
        i = steps[nprobe]
        return 0.70 + 0.00125 * i + 0.0015 * (i % 2)

    result, tried = _tune_scripted(refine_index, monkeypatch, script)
    assert not result.reached
    assert all(max(values) <= 4 for values in tried.values()), tried


def test_out_of_reach_needs_a_doubling_and_extrapolates_in_log_nprobe():
    from indexing.tuning import out_of_reach
    # no decision before a first doubling was measured, however flat
    assert not out_of_reach([(10, 0.5, 0.5), (12, 0.5, 0.5), (14, 0.5, 0.5)], 0.95, 256)
    # 0.02 per doubling, gap 0.05: 2.5 doublings needed, 3 left (32 -> 256): go on; 2 left (32 -> 128): stop
    pts = [(16, 0.88, 0.88), (32, 0.90, 0.90)]
    assert not out_of_reach(pts, 0.95, 256) and out_of_reach(pts, 0.95, 128)
    # falling, or gaining < PLATEAU_GAIN_PER_DOUBLING, is flat whatever the gap
    assert out_of_reach([(16, 0.94, 0.94), (32, 0.939, 0.939)], 0.95, 4096)
    assert out_of_reach([(16, 0.9490, 0.9490), (32, 0.9495, 0.9495)], 0.95, 4096)
