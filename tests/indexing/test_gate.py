"""The publish gate (indexing.gate): each check refuses what issue 13 item 6 saw published, with its message."""
import numpy as np
import pytest

from indexing.gate import IndexValidationError, check_publishable
from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec
from indexing.synthetic import clustered_vectors

pytestmark = pytest.mark.usefixtures("one_faiss_thread")
FLAT = IndexSpec(factory="Flat", gpu="never", recall_queries=50, recall_k=10)


def ids_of(n):
    return np.array([f"i{i}" for i in range(n)], dtype=object)


def gate(vectors, *, model="m1", run_model="m1", spec=FLAT, floor=0.95, unit_norm=True):
    vectors = np.asarray(vectors, dtype=np.float32)
    ids = ids_of(len(vectors))
    index = ItemIndex.build(vectors, ids, spec, model)
    manifest = {"count": len(vectors), "dim": vectors.shape[1], "model_version": model}
    return check_publishable(index, vectors, ids, manifest, run_model, floor, unit_norm=unit_norm)


@pytest.fixture(scope="module")
def good():
    return clustered_vectors(300, 8, seed=3)[0]


def test_good_vectors_pass_with_recall_measured(good):
    assert gate(good)["recall"] == 1.0


def test_all_zero_vectors_are_refused(good):
    with pytest.raises(IndexValidationError, match=r"300 of 300 vectors are all zeros \(e.g. items \['i0', 'i1', "
                                                   r"'i2'\]\)"):
        gate(np.zeros_like(good))


def test_unnormalised_vectors_are_refused_when_the_tower_normalises(good):
    with pytest.raises(IndexValidationError, match=r"300 of 300 vectors are not L2-normalised .*the tower "
                                                   r"normalises its output.*norms range 5..5"):
        gate(good * 5)
    assert gate(good * 5, unit_norm=False)["recall"] == 1.0  # a tower that does not normalise may scale


def test_huge_vectors_are_refused_even_when_the_tower_does_not_normalise(good):
    huge = np.full_like(good, 3e38)
    with pytest.raises(IndexValidationError, match=r"300 of 300 vectors are not L2-normalised.*norms range 8.485e\+38"):
        gate(huge)
    with pytest.raises(IndexValidationError, match=r"300 of 300 vectors have norms above 1.84e\+19 \(inner products "
                                                   r"overflow float32\)"):
        gate(huge, unit_norm=False)


def test_all_identical_vectors_are_refused(good):
    same = np.repeat(good[:1], len(good), axis=0)
    with pytest.raises(IndexValidationError, match=r"all 300 vectors are identical \(a collapsed tower"):
        gate(same)


def test_nan_dimension_model_and_count_are_each_listed(good):
    bad = good.copy()
    bad[7] = np.nan
    ids = ids_of(300)
    index = ItemIndex.build(good, ids, FLAT, "m1")
    with pytest.raises(IndexValidationError) as info:
        check_publishable(index, bad, ids, {"count": 299, "dim": 9, "model_version": "m1"}, "m2", 0.95,
                          catalogue_rows=301)
    message = str(info.value)
    assert message.startswith("index validation failed, nothing was published:\n  - ")
    for part in ("item count: index holds 300, vectors artifact 299, item ids 300, catalogue 301",
                 "1 of 300 vectors contain NaN/inf (e.g. items ['i7'])", "dimension: index 8, vectors artifact 9",
                 "model version mismatch: the vectors artifact was made by model version 'm1' but the run's model is "
                 "model version 'm2'"):
        assert part in message
    with pytest.raises(IndexValidationError, match="the index was made by model version 'm9' but the vectors "
                                                   "artifact is model version 'm1'"):
        check_publishable(ItemIndex.build(good, ids, FLAT, "m9"), good, ids,
                          {"count": 300, "dim": 8, "model_version": "m1"}, None)


def test_recall_below_the_floor_is_refused():
    x = clustered_vectors(3000, 16, seed=1)[0]
    spec = IndexSpec(factory="IVF256,PQ8", nprobe=1, gpu="never", recall_queries=200, recall_k=100)
    with pytest.raises(IndexValidationError, match=r"recall@100 = 0\.\d+ over 200 sampled queries is below "
                                                   r"recall_floor=0.95 \(factory IVF256,PQ8, search params "
                                                   r"\{'nprobe': 1\}\)"):
        gate(x, spec=spec)
