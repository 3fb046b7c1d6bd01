import numpy as np
import pytest

from tests.towers.conftest import planted
from towers.config import TowerConfig
from towers.inputs import eval_queries
from towers.item_tower import ItemTower, make_item_id_embedding
from towers.query_tower import QueryTower, keep_most_recent
from towers.tf_env import tf
from towers.vocab import build_vocabularies

CFG = TowerConfig(output_dim=16, id_embedding_dim=8, feature_embedding_dim=4, hidden_units=(32,), max_history=3)


def build():
    ds, split = planted()
    vocab = build_vocabularies(ds, split.train, CFG)
    item_ids = make_item_id_embedding(vocab, CFG)
    return ds, split, QueryTower(item_ids, vocab, CFG), ItemTower(item_ids, vocab, CFG)


def query(user_ids, history, gender=None, age=None):
    b = len(user_ids)
    history = np.array(history, dtype=object).reshape(b, -1)
    return {"user_id": np.array(user_ids, dtype=object),
            "gender": np.array(gender or [""] * b, dtype=object),
            "age": np.array(age or [np.nan] * b, dtype=np.float32),
            "history": history, "history_timestamps": np.zeros(history.shape, np.int64),
            "timestamp": np.zeros(b, np.int64)}


def test_shapes_unit_norm_and_shared_item_table():
    ds, split, tower, item_tower = build()
    q = eval_queries(ds, split, CFG.max_history)
    out = tower(q.features).numpy()
    assert out.shape == (len(q.user_ids), 16)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert tower.history_encoder.item_id_embedding is item_tower.item_id_embedding
    shared = item_tower.item_id_embedding.table.embeddings
    assert sum(w is shared for w in tower.trainable_weights) == 1
    assert tower.feature_names == ("user_id", "gender", "age", "history")


def test_keep_most_recent_matches_numpy():
    hist = np.array([["a", "b", "c", "d", ""], ["a", "", "", "", ""], ["", "", "", "", ""],
                     ["a", "", "c", "", ""], ["a", "b", "c", "d", "e"]], dtype=object)
    ts = np.arange(25, dtype=np.int64).reshape(5, 5) * (hist != "")
    h, t = keep_most_recent(tf.constant(hist), tf.constant(ts), 3)
    assert h.numpy().astype(str).tolist() == [["b", "c", "d"], ["a", "", ""], ["", "", ""], ["a", "", "c"],
                                              ["c", "d", "e"]]
    assert t.numpy().tolist() == [[1, 2, 3], [5, 0, 0], [0, 0, 0], [15, 0, 17], [22, 23, 24]]
    short_h, _ = keep_most_recent(tf.constant(hist[:, :2]), tf.constant(ts[:, :2]), 3)
    assert short_h.shape == (5, 2)


def test_history_is_read_most_recent_first_and_padding_is_ignored():
    ds, split, tower, _ = build()
    base = tower(query(["u1"], [["i1", "i2", "i3"]])).numpy()
    longer = tower(query(["u1"], [["i9", "i8", "i1", "i2", "i3", ""]])).numpy()  # cut to the last 3
    padded = tower(query(["u1"], [["i3", "i1", "i2", "", "", ""]])).numpy()     # same bag, more padding
    other = tower(query(["u1"], [["i4", "i5", "i6"]])).numpy()
    assert np.allclose(base, longer, atol=1e-6) and np.allclose(base, padded, atol=1e-6)
    assert not np.allclose(base, other, atol=1e-4)


def test_unknown_users_and_items_and_empty_history_give_finite_unit_vectors():
    ds, split, tower, _ = build()
    out = tower(query(["nobody", "u1"], [["unknown-item", ""], ["", ""]], gender=["x", ""],
                      age=[float("nan"), 1e6])).numpy()
    assert np.isfinite(out).all() and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    empty = tower(query(["u1"], np.zeros((1, 0), dtype=object))).numpy()  # L = 0 columns
    assert np.allclose(empty, tower(query(["u1"], [[""]])).numpy(), atol=1e-6)


def test_masking_history_equals_an_empty_history():
    ds, split, tower, _ = build()
    feats = query(["u1", "u2"], [["i1", "i2"], ["i3", ""]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    masked = tower(feats, feature_mask=mask).numpy()
    empty = tower(query(["u1"], [[""]])).numpy()
    assert np.allclose(masked[0], empty[0], atol=1e-6)
    assert np.allclose(masked[1], tower(feats).numpy()[1], atol=1e-6)


def test_missing_inputs_are_reported():
    ds, split, tower, _ = build()
    feats = query(["u1"], [["i1"]])
    del feats["history_timestamps"]
    with pytest.raises(ValueError, match=r"query tower inputs are missing \['history_timestamps'\]"):
        tower(feats)


def test_ids_encoder_reads_only_the_user_id():
    ds, split = planted()
    cfg = TowerConfig(output_dim=8, id_embedding_dim=8, feature_embedding_dim=4, hidden_units=(8,), max_history=3,
                      user_encoder="ids")
    vocab = build_vocabularies(ds, split.train, cfg)
    item_ids = make_item_id_embedding(vocab, cfg)
    tower = QueryTower(item_ids, vocab, cfg)
    assert tower.feature_names == ("user_id",) and tower.history_encoder is None and tower.features is None
    assert tower.raw_input_names == ("user_id", "gender", "age", "history", "history_timestamps", "timestamp")
    a = tower(query(["u1"], [["i1", "i2", "i3"]], gender=["f"], age=[30.0])).numpy()
    b = tower(query(["u1"], [["i7", "", ""]], gender=["m"], age=[60.0])).numpy()
    assert np.allclose(a, b, atol=1e-6) and not np.allclose(a, tower(query(["u2"], [["i1"]])).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="has no history encoder"):
        tower.encode_history(query(["u1"], [["i1"]]))
    with pytest.raises(ValueError, match="a history_encoder was given but tower.user_encoder is 'ids'"):
        QueryTower(item_ids, vocab, cfg, history_encoder=tf.keras.layers.Lambda(lambda h, t, n: h))
