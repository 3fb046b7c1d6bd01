import math

import numpy as np
import pytest

from tests.towers.conftest import planted
from towers.clue import ClueObjective, CluePretrainer, history_views, info_nce
from towers.config import SequenceConfig, TowerConfig
from towers.inputs import make_tf_dataset, training_examples
from towers.item_tower import make_item_id_embedding
from towers.query_tower import QueryTower
from towers.tf_env import tf
from towers.vocab import build_vocabularies


def test_info_nce_equals_the_value_worked_out_by_hand():
    a = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    b = tf.constant([[1.0, 0.0], [0.6, 0.8]])
    # S = a bᵀ / 0.5 = [[2, 1.2], [0, 1.6]]
    rows = -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) - math.log(math.exp(1.6) / (1 + math.exp(1.6)))
    cols = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))
    expected = 0.5 * (rows / 2 + cols / 2)  # = 0.298736...
    assert float(info_nce(a, b, 0.5)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.2987361676, rel=1e-9)


def test_same_group_pairs_are_not_negatives():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=(3, 4)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    s = a @ b.T / 0.2
    keep = np.ones((3, 3), bool)
    keep[0, 2] = keep[2, 0] = False  # rows 0 and 2: the same user

    def ce(logits, allowed, label):
        z = logits[allowed]
        return -(logits[label] - np.log(np.exp(z).sum()))
    expected = 0.5 * (np.mean([ce(s[i], keep[i], i) for i in range(3)]) +
                      np.mean([ce(s[:, j], keep[:, j], j) for j in range(3)]))
    got = float(info_nce(tf.constant(a), tf.constant(b), 0.2, groups=tf.constant([7, 8, 7], tf.int64)))
    assert got == pytest.approx(expected, rel=1e-5)


def _views(history, mode, crop=0.6, seed=None):
    h = tf.constant(np.array(history, dtype=object))
    t = tf.constant(np.where(np.array(history, dtype=object) != "", np.arange(1, h.shape[1] + 1), 0), tf.int64)
    (h1, t1), (h2, t2) = history_views(h, t, mode, crop, seed=seed)
    return h1.numpy().astype(str).tolist(), t1.numpy().tolist(), h2.numpy().astype(str).tolist(), t2.numpy().tolist()


def test_windows_are_the_earlier_and_the_later_half():
    h1, t1, h2, t2 = _views([["a", "b", "c", "d", "e", ""], ["a", "", "", "", "", ""], [""] * 6], "windows")
    assert h1 == [["a", "b", "", "", "", ""], ["a", "", "", "", "", ""], [""] * 6]
    assert h2 == [["c", "d", "e", "", "", ""], ["a", "", "", "", "", ""], [""] * 6]
    assert t1[0] == [1, 2, 0, 0, 0, 0] and t2[0] == [3, 4, 5, 0, 0, 0]  # timestamps travel with their items


def test_crops_are_contiguous_pieces_of_the_right_length():
    history = [["a", "b", "c", "d", "e", ""], ["a", "b", "", "", "", ""]]
    seen = set()
    for seed in range(20):
        h1, _, h2, _ = _views(history, "crops", crop=0.6, seed=seed)
        for view in (h1, h2):
            first = [x for x in view[0] if x]
            assert len(first) == 3 and "".join(first) in "abcde"
            assert [x for x in view[1] if x] in (["a", "b"],)  # ceil(0.6 * 2) = 2: the whole history
            seen.add("".join(first))
    assert len(seen) >= 2  # random crops differ
    with pytest.raises(ValueError, match="mode must be 'crops' or 'windows', got 'halves'"):
        _views(history, "halves")


def test_pretraining_lowers_the_clue_loss_and_moves_only_encoder_weights():
    tf.keras.utils.set_random_seed(0)
    ds, split = planted()
    cfg = TowerConfig(output_dim=16, id_embedding_dim=16, feature_embedding_dim=4, hidden_units=(16,), max_history=10,
                      user_encoder="sequence", sequence=SequenceConfig(num_layers=1, num_heads=2, width=16, ff_dim=32,
                                                                       dropout=0.0, item_features=False))
    vocab = build_vocabularies(ds, split.train, cfg)
    tower = QueryTower(make_item_id_embedding(vocab, cfg), vocab, cfg)
    objective = ClueObjective(tower, projection_dim=16, temperature=0.2, views="windows")
    model = CluePretrainer(objective)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    ex = training_examples(ds, split.train, 10)
    data = make_tf_dataset(ds, ex.subset(np.arange(0, len(ex), 3)), 128, shuffle=True, seed=0)
    head_before = [w.numpy().copy() for w in tower.head.weights] if tower.head.weights else []
    losses = model.fit(data, epochs=3, verbose=0).history["clue_loss"]
    assert losses[-1] < 0.9 * losses[0], losses  # measured 4.20 → 3.54 (chance: log 128 = 4.85)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(head_before, tower.head.weights))


def test_clue_needs_a_history_encoder():
    ds, split = planted()
    cfg = TowerConfig(output_dim=8, id_embedding_dim=8, hidden_units=(8,), user_encoder="ids")
    vocab = build_vocabularies(ds, split.train, cfg)
    tower = QueryTower(make_item_id_embedding(vocab, cfg), vocab, cfg)
    with pytest.raises(ValueError, match="CLUE needs a query tower with a history encoder"):
        ClueObjective(tower, 8, 0.1)
