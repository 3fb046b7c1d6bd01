import numpy as np
import pytest

from tests.towers.conftest import planted
from towers.config import TowerConfig
from towers.inputs import item_features_batch
from towers.item_tower import ItemTower, make_item_id_embedding
from towers.vocab import build_vocabularies

CFG = TowerConfig(output_dim=16, id_embedding_dim=8, feature_embedding_dim=4, hidden_units=(32,))


def build():
    ds, split = planted()
    vocab = build_vocabularies(ds, split.train, CFG)
    return ds, ItemTower(make_item_id_embedding(vocab, CFG), vocab, CFG)


def test_shapes_unit_norm_and_feature_names():
    ds, tower = build()
    feats = item_features_batch(ds.items, ds.item_features)
    out = tower(feats).numpy()
    assert out.shape == (len(ds.items), 16) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert tower.feature_names == ("item_id", "genres", "kind", "year", "title")
    # a single row gives the same vector as inside a batch
    one = tower({k: v[3:4] for k, v in feats.items()}).numpy()
    assert np.allclose(one[0], out[3], atol=1e-6)


def test_unknown_ids_and_categories_give_finite_unit_vectors():
    ds, tower = build()
    feats = {"item_id": np.array(["brand-new", "i1"], dtype=object),
             "genres": np.array([["unseen-genre", ""], ["", ""]], dtype=object),
             "kind": np.array(["documentary", ""], dtype=object),
             "year": np.array([np.nan, 1e9], dtype=np.float32),
             "title": np.array(["Nothing we know", ""], dtype=object)}
    out = tower(feats).numpy()
    assert np.isfinite(out).all() and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_feature_mask_drops_single_features_per_example():
    ds, tower = build()
    feats = item_features_batch(ds.items.iloc[:2], ds.item_features)
    mask = np.ones((2, 5), np.float32)
    mask[0, 0] = 0.0  # drop the id of example 0 only
    masked = tower(feats, feature_mask=mask).numpy()
    plain = tower(feats).numpy()
    assert not np.allclose(masked[0], plain[0]) and np.allclose(masked[1], plain[1], atol=1e-6)


def test_missing_item_id_is_reported():
    ds, tower = build()
    feats = item_features_batch(ds.items.iloc[:2], ds.item_features)
    del feats["item_id"]
    with pytest.raises(ValueError, match="item tower inputs need 'item_id'"):
        tower(feats)
