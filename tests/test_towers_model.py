import numpy as np
import pytest

from towers.model import TwoTowerModel
from towers.tf_env import tf


class FixedTower(tf.keras.layers.Layer):
    """A stand-in tower: looks up a known unit vector by id (inputs[key])."""

    def __init__(self, key, vectors: dict):
        super().__init__()
        self.key = key
        self.lookup = tf.keras.layers.StringLookup(vocabulary=list(vectors), num_oov_indices=0)
        self.matrix = tf.constant(np.array(list(vectors.values()), np.float32))

    def call(self, inputs, training=False):
        return tf.gather(self.matrix, self.lookup(inputs[self.key]))


QUERIES = {"q0": [1.0, 0.0], "q1": [0.0, 1.0], "q2": [0.6, 0.8]}
ITEMS = {"A": [0.8, 0.6], "B": [0.0, 1.0]}


def batch(qs, items, weights):
    return {"query": {"user_id": tf.constant(qs)}, "candidate": {"item_id": tf.constant(items)},
            "weight": tf.constant(weights, tf.float32)}


def hand_loss(qs, items, weights, temperature, remove_hits):
    q = np.array([QUERIES[x] for x in qs])
    c = np.array([ITEMS[x] for x in items])
    total = 0.0
    for b in range(len(qs)):
        logits = q[b] @ c.T / temperature
        keep = [j for j in range(len(items)) if j == b or not (remove_hits and items[j] == items[b])]
        total += weights[b] * -(logits[b] - np.log(np.sum(np.exp(logits[keep]))))
    return total / len(qs)


def model(remove_hits=True, temperature=0.5):
    return TwoTowerModel(FixedTower("user_id", QUERIES), FixedTower("item_id", ITEMS), temperature, remove_hits)


@pytest.mark.parametrize("remove_hits", [True, False])
def test_in_batch_softmax_loss_equals_hand_computation(remove_hits):
    qs, items, w = ["q0", "q1", "q2"], ["A", "B", "A"], [1.0, 2.0, 0.5]
    got = float(model(remove_hits).compute_loss(batch(qs, items, w)))
    assert got == pytest.approx(hand_loss(qs, items, w, 0.5, remove_hits), rel=1e-5)


def test_worked_example_two_pairs():
    # q0·A = 0.8, q0·B = 0, q1·A = 0.6, q1·B = 1; T = 0.5 → logits [[1.6, 0], [1.2, 2]]
    # loss = (-(1.6 - log(e^1.6 + 1)) - (2 - log(e^1.2 + e^2))) / 2 = (0.1839 + 0.3711) / 2 = 0.2775
    want = (np.log(np.exp(1.6) + 1) - 1.6 + np.log(np.exp(1.2) + np.exp(2.0)) - 2.0) / 2
    got = float(model().compute_loss(batch(["q0", "q1"], ["A", "B"], [1.0, 1.0])))
    assert got == pytest.approx(want, rel=1e-5) and want == pytest.approx(0.2775, abs=1e-4)


def test_reported_loss_is_the_epoch_mean_over_examples():
    m = model()
    m.compile(optimizer=tf.keras.optimizers.Adam(0.1))
    b1 = (["q0", "q1", "q2"], ["A", "B", "A"], [1.0, 1.0, 1.0])
    b2 = (["q1"], ["B"], [1.0])
    data = tf.data.Dataset.from_tensors(batch(*b1)).concatenate(tf.data.Dataset.from_tensors(batch(*b2)))
    reported = m.evaluate(data, verbose=0, return_dict=True)["loss"]
    want = (3 * hand_loss(*b1, 0.5, True) + 1 * hand_loss(*b2, 0.5, True)) / 4
    assert reported == pytest.approx(want, rel=1e-5)


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        model(temperature=0)
