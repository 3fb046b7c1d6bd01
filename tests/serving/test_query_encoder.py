import numpy as np
import pytest

from serving.query_encoder import QueryEncoder
from tests.serving.conftest import tiny_run


@pytest.fixture(scope="module")
def tower_and_batch():
    from recdata.loading import load_split
    from towers.export import load_tower
    from towers.inputs import eval_queries

    run = tiny_run()
    dataset, split = load_split(run.data)
    tower = load_tower(run.query_tower)
    return tower, eval_queries(dataset, split, 20).features


class _PublicOnly:
    """The tower seen only through its public API."""

    def __init__(self, tower):
        self._tower = tower
        self.model_version, self.output_dim = tower.model_version, tower.output_dim
        self.features, self.feature_names = tower.features, tower.feature_names

    def __call__(self, features):
        return self._tower(features)


def test_encoder_equals_the_loaded_tower_chunked_or_not(tower_and_batch):
    tower, features = tower_and_batch
    encoder = QueryEncoder(tower)
    assert encoder.model_version == tower.model_version and encoder.output_dim == 16
    want = tower(features, batch_size=7)  # several signature calls, stitched back in order
    assert len(want) > 7
    np.testing.assert_allclose(encoder(features), want, atol=1e-6)
    one = {k: v[:1] for k, v in features.items()}
    np.testing.assert_allclose(encoder(one), want[:1], atol=1e-6)
    assert encoder(one).dtype == np.float32 and encoder(one).shape == (1, 16)
    np.testing.assert_allclose(QueryEncoder(_PublicOnly(tower))(features), want, atol=1e-6)


def test_inputs_that_do_not_match_the_features_are_refused(tower_and_batch):
    tower, _ = tower_and_batch
    odd = _PublicOnly(tower)
    odd.feature_names = tuple(tower.feature_names) + ("shoe_size",)
    with pytest.raises(ValueError, match="the query tower takes .*shoe_size.* re-export the towers"):
        QueryEncoder(odd)
    odd.feature_names = tuple(n for n in tower.feature_names if n != "history")
    with pytest.raises(ValueError, match="the query tower takes .* but its features imply .*'history'"):
        QueryEncoder(odd)
