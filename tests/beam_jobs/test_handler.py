"""ItemTowerHandler vs calling the SavedModel directly; batching vs towers.inputs (the training path)."""
import numpy as np
import pandas as pd
import pytest

from beam_jobs.beam_env import beam, pipeline_options
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from core.guard import ModelVersionMismatch
from beam_jobs.handler import ItemBatch, ItemBatchHandler, ItemTowerHandler, batch_features, open_item_tower
from beam_jobs.testing import DEFAULT_ITEM_FEATURES, cached_hashing_item_tower, synthetic_items
from recdata.schema import FeatureSpec
from towers.inputs import item_features_batch

TOL = 1e-6  # float32 rounding: TF kernels may round differently for different batch shapes


@pytest.fixture(scope="module")
def model_dir():
    return cached_hashing_item_tower(dim=16)  # the export the other beam test modules share


@pytest.fixture(scope="module")
def tower(model_dir):
    return open_item_tower(model_dir / "item_tower")


@pytest.fixture(scope="module")
def rows():
    return synthetic_items(300, seed=3).to_dict("records")


def test_batch_features_equals_the_towers_training_inputs(tower, rows):
    assert tower.features == DEFAULT_ITEM_FEATURES
    ours = batch_features(rows, tower.features)
    reference = item_features_batch(pd.DataFrame(rows), DEFAULT_ITEM_FEATURES)
    assert set(ours) == set(reference)
    for name, expected in reference.items():
        assert ours[name].shape == expected.shape and ours[name].dtype == expected.dtype, name
        if expected.dtype == object:
            assert (ours[name] == expected).all(), name
        else:
            np.testing.assert_array_equal(ours[name], expected)


def test_lists_are_padded_with_empty_strings_to_the_longest_in_the_batch():
    tags = (FeatureSpec("tags", "multi_categorical"),)
    rows = [{"item_id": "a", "tags": ["x", "y", "z"]}, {"item_id": "b", "tags": []}]
    assert batch_features(rows, tags)["tags"].tolist() == [["x", "y", "z"], ["", "", ""]]
    empty = batch_features([{"item_id": "c", "tags": []}], tags)["tags"]
    assert empty.shape == (1, 1) and empty[0, 0] == ""
    numeric = (FeatureSpec("p", "numeric"),)
    assert np.isnan(batch_features([{"item_id": "d", "p": None}], numeric)["p"][0])


def test_run_inference_returns_the_saved_models_vectors_in_order(model_dir, tower, rows):
    handler = ItemTowerHandler(model_dir / "item_tower")
    assert handler.load_model().model_version == "hash-v1"  # carried by the SavedModel
    direct = tower(item_features_batch(pd.DataFrame(rows), DEFAULT_ITEM_FEATURES))
    results = list(handler.run_inference(rows, tower))
    assert all(isinstance(r, PredictionResult) for r in results)
    assert [r.example["item_id"] for r in results] == [r["item_id"] for r in rows]
    assert {r.model_id for r in results} == {"hash-v1"}
    np.testing.assert_allclose(np.stack([r.inference for r in results]), direct, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, atol=1e-5)


def test_pipeline_vectors_equal_the_saved_models_direct_output(model_dir, tower, rows):
    """RunInference batching each element itself (BatchElements, sizes from batch_elements_kwargs)."""
    handler = ItemTowerHandler(model_dir / "item_tower", min_batch_size=7, max_batch_size=50)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 7, "max_batch_size": 50}
    direct = dict(zip([r["item_id"] for r in rows], tower(batch_features(rows, tower.features))))

    def check(results):
        got = {r.example["item_id"]: r.inference for r in results}
        assert sorted(got) == sorted(direct)
        worst = max(float(np.abs(got[k] - direct[k]).max()) for k in direct)
        assert worst <= TOL, f"max |pipeline - direct| = {worst}"

    with BeamTestPipeline(runner="DirectRunner", options=pipeline_options([])) as p:
        out = p | beam.Create(rows) | RunInference(handler)
        assert_that(out, check)


def item_batches(rows, tower, size):
    return [ItemBatch(np.arange(lo, min(lo + size, len(rows)), dtype=np.int64),
                      np.array([r["item_id"] for r in rows[lo:lo + size]], dtype=object),
                      batch_features(rows[lo:lo + size], tower.features)) for lo in range(0, len(rows), size)]


def test_item_batch_handler_makes_one_model_call_per_batch_pre_batched_in_a_pipeline(model_dir, tower, rows):
    batches = item_batches(rows, tower, 64)
    handler = ItemBatchHandler(model_dir / "item_tower", "hash-v1")
    assert handler.get_num_bytes(batches[0]) == 64 * 128 and handler.get_num_bytes(batches[:2]) == 128 * 128
    expected = {int(b.positions[0]): tower(b.features) for b in batches}
    direct = handler.run_inference(batches[1], tower)  # a bare ItemBatch = one pre-batched element
    assert len(direct) == 1 and np.array_equal(direct[0].inference, expected[64])

    def check(results):
        assert sorted(int(r.example.positions[0]) for r in results) == sorted(expected)
        for r in results:  # same batch -> bit-identical to calling the SavedModel on it directly
            assert r.model_id == "hash-v1" and np.array_equal(r.inference, expected[int(r.example.positions[0])])

    with BeamTestPipeline(runner="DirectRunner", options=pipeline_options([])) as p:
        out = p | beam.Create(batches) | RunInference(handler.with_no_batching())
        assert_that(out, check)


def test_item_batch_coder_round_trips(tower, rows):
    from beam_jobs.handler import ItemBatchCoder

    batch = item_batches(rows, tower, 50)[1]
    coder = beam.coders.registry.get_coder(ItemBatch)
    assert isinstance(coder, ItemBatchCoder) and coder.estimate_size(batch) > 0
    back = coder.decode(coder.encode(batch))
    assert back.positions.tolist() == list(range(50, 100)) and back.item_ids.tolist() == batch.item_ids.tolist()
    assert all(np.array_equal(back.features[k], v, equal_nan=True) for k, v in batch.features.items()
               if v.dtype != object)
    assert all((back.features[k] == v).all() for k, v in batch.features.items() if v.dtype == object)


def test_bad_configuration_and_a_changed_model_are_refused_with_clear_messages(model_dir):
    with pytest.raises(ValueError, match="min_batch_size <= max_batch_size"):
        ItemTowerHandler(model_dir / "item_tower", "v", min_batch_size=10, max_batch_size=5)
    with pytest.raises(ValueError, match="takes no inference_args"):
        ItemTowerHandler(model_dir / "item_tower", "v").validate_inference_args({"x": 1})
    with pytest.raises(ModelVersionMismatch, match="was made by model version 'hash-v1' but the model this job "
                                                   "started with is model version 'old'.*re-exported while the job ran"):
        ItemTowerHandler(model_dir / "item_tower", "old").load_model()


def test_num_bytes_estimate_does_not_pickle_the_batch(rows):
    handler = ItemTowerHandler("unused", "v")
    assert handler.get_num_bytes(rows[:3]) == 3 * 128


def test_tower_info_is_read_without_loading_the_model_and_matches_the_loaded_tower(model_dir, tower):
    from towers.export import TOWER_INFO

    from beam_jobs.handler import TOWER_INFO as OURS, read_item_tower_info

    assert OURS == TOWER_INFO
    info = read_item_tower_info(model_dir / "item_tower")
    assert (info.model_version, info.features, info.output_dim) == (tower.model_version, tower.features, 16)
    with pytest.raises(FileNotFoundError, match="is not an item tower exported by towers.export"):
        read_item_tower_info(model_dir)


def upload_dir(local, url):
    from core.storage import open_storage

    store = open_storage(url)
    for p in sorted(local.rglob("*")):
        if p.is_file():
            store.write_bytes(p.relative_to(local).as_posix(), p.read_bytes())


def test_a_tower_on_object_storage_is_loaded_from_the_verified_local_cache(model_dir, tower, rows, s3_url, tmp_path,
                                                                          monkeypatch):
    from beam_jobs.handler import local_tower, read_item_tower_info
    from core.storage import open_storage

    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    upload_dir(model_dir, f"{s3_url}/model")
    url = f"{s3_url}/model/item_tower"
    info = read_item_tower_info(url)
    assert (info.model_version, info.features) == ("hash-v1", DEFAULT_ITEM_FEATURES)
    local = local_tower(url)
    assert local.is_relative_to(tmp_path / "cache") and local.name == "item_tower"
    handler = ItemTowerHandler(url)
    loaded = handler.load_model()
    batch = batch_features(rows[:20], loaded.features)
    np.testing.assert_allclose(loaded(batch), tower(batch), atol=TOL, rtol=0)
    # a truncated variables file on the store is refused before TensorFlow reads anything
    store = open_storage(f"{s3_url}/model")
    key = next(k for k in store.list() if k.startswith("item_tower/variables/") and k.endswith(".data-00000-of-00001"))
    store.write_bytes(key, store.read_bytes(key)[:-1])
    store.write_bytes("manifest.json", store.read_bytes("manifest.json") + b" ")  # a new export: a new cache key
    with pytest.raises(ValueError, match=rf"{key}: \d+ bytes, the manifest says \d+; the object is truncated"):
        ItemTowerHandler(url).load_model()
