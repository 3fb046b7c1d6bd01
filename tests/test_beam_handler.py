"""ItemTowerHandler vs calling the SavedModel directly; batching vs towers.inputs (the training path)."""
import numpy as np
import pandas as pd
import pytest

from beam_jobs.beam_env import beam, pipeline_options
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from beam_jobs.handler import (FLOAT, STRING, STRING_LIST, ItemTowerHandler, LoadedItemTower, TowerInput,
                               TowerSignature, batch_features, model_version_of)
from beam_jobs.testing import DEFAULT_ITEM_FEATURES, cached_hashing_item_tower, synthetic_items
from towers.inputs import item_features_batch

TOL = 1e-6  # float32 rounding: TF kernels may round differently for different batch shapes


@pytest.fixture(scope="module")
def model_dir():
    return cached_hashing_item_tower(dim=16, model_version="mv-handler")


@pytest.fixture(scope="module")
def tower(model_dir):
    return LoadedItemTower(model_dir / "item_tower", "mv-handler")


@pytest.fixture(scope="module")
def rows():
    return synthetic_items(300, seed=3).to_dict("records")


def test_signature_is_read_from_the_saved_model(tower):
    kinds = {i.name: i.kind for i in tower.signature.inputs}
    assert kinds == {"item_id": STRING, "genre": STRING, "tags": STRING_LIST, "price": FLOAT, "title": STRING}
    assert tower.signature.inputs[0].name == "item_id"
    assert tower.signature.feature_names == ("genre", "price", "tags", "title")


def test_batch_features_equals_the_towers_training_inputs(tower, rows):
    ours = batch_features(rows, tower.signature)
    reference = item_features_batch(pd.DataFrame(rows), DEFAULT_ITEM_FEATURES)
    assert set(ours) == set(reference)
    for name, expected in reference.items():
        assert ours[name].shape == expected.shape and ours[name].dtype == expected.dtype, name
        if expected.dtype == object:
            assert (ours[name] == expected).all(), name
        else:
            np.testing.assert_array_equal(ours[name], expected)


def test_lists_are_padded_with_empty_strings_or_cut_to_a_fixed_width():
    rows = [{"item_id": "a", "tags": ["x", "y", "z"]}, {"item_id": "b", "tags": []}]
    free = TowerSignature((TowerInput("item_id", STRING), TowerInput("tags", STRING_LIST)))
    assert batch_features(rows, free)["tags"].tolist() == [["x", "y", "z"], ["", "", ""]]
    fixed = TowerSignature((TowerInput("item_id", STRING), TowerInput("tags", STRING_LIST, 2)))
    assert batch_features(rows, fixed)["tags"].tolist() == [["x", "y"], ["", ""]]
    empty = batch_features([{"item_id": "c", "tags": []}], free)["tags"]
    assert empty.shape == (1, 1) and empty[0, 0] == ""
    numeric = TowerSignature((TowerInput("item_id", STRING), TowerInput("p", FLOAT)))
    assert np.isnan(batch_features([{"item_id": "d", "p": None}], numeric)["p"][0])


def test_run_inference_returns_the_saved_models_vectors_in_order(model_dir, tower, rows):
    handler = ItemTowerHandler(model_dir / "item_tower")
    assert handler.model_version == "mv-handler"  # read from model/model_version
    direct = tower(item_features_batch(pd.DataFrame(rows), DEFAULT_ITEM_FEATURES))
    results = list(handler.run_inference(rows, tower))
    assert all(isinstance(r, PredictionResult) for r in results)
    assert [r.example["item_id"] for r in results] == [r["item_id"] for r in rows]
    assert {r.model_id for r in results} == {"mv-handler"}
    np.testing.assert_allclose(np.stack([r.inference for r in results]), direct, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, atol=1e-5)


def test_pipeline_vectors_equal_the_saved_models_direct_output(model_dir, tower, rows):
    """RunInference batching each element itself (BatchElements, sizes from batch_elements_kwargs)."""
    handler = ItemTowerHandler(model_dir / "item_tower", min_batch_size=7, max_batch_size=50)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 7, "max_batch_size": 50}
    direct = dict(zip([r["item_id"] for r in rows], tower.embed_rows(rows)))

    def check(results):
        got = {r.example["item_id"]: r.inference for r in results}
        assert sorted(got) == sorted(direct)
        worst = max(float(np.abs(got[k] - direct[k]).max()) for k in direct)
        assert worst <= TOL, f"max |pipeline - direct| = {worst}"

    with BeamTestPipeline(runner="DirectRunner", options=pipeline_options([])) as p:
        out = p | beam.Create(rows) | RunInference(handler)
        assert_that(out, check)


def test_bad_configuration_and_exports_are_refused_with_clear_messages(tmp_path, model_dir):
    with pytest.raises(ValueError, match="min_batch_size <= max_batch_size"):
        ItemTowerHandler(model_dir / "item_tower", "v", min_batch_size=10, max_batch_size=5)
    with pytest.raises(FileNotFoundError, match="model_version is missing"):
        model_version_of(tmp_path / "item_tower")
    with pytest.raises(ValueError, match="takes no inference_args"):
        ItemTowerHandler(model_dir / "item_tower", "v").validate_inference_args({"x": 1})


def test_unsupported_signature_inputs_are_refused():
    from towers.tf_env import tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="item_id"),
                                  tf.TensorSpec([None], tf.int64, name="year")])
    def serve(item_id, year):
        return {"embedding": tf.zeros([tf.shape(item_id)[0], 2])}

    with pytest.raises(ValueError, match=r"'year' is int64 .*tf.string \[B\]"):
        TowerSignature.from_concrete_function(serve.get_concrete_function())

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="title")])
    def no_id(title):
        return {"embedding": tf.zeros([tf.shape(title)[0], 2])}

    with pytest.raises(ValueError, match="no 'item_id' input"):
        TowerSignature.from_concrete_function(no_id.get_concrete_function())


def test_num_bytes_estimate_does_not_pickle_the_batch(rows):
    handler = ItemTowerHandler("unused", "v")
    assert handler.get_num_bytes(rows[:3]) == sum(len(r["item_id"]) + 64 for r in rows[:3])
