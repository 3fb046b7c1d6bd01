import numpy as np
import pytest

from recdata.schema import FeatureSpec
from towers.feature_masking import TwoViewAugmenter
from towers.negatives import STREAM_SSL_ITEM_VIEWS, STREAM_SSL_ITEMS, STREAM_SSL_QUERY_VIEWS, ItemCorpus, step_seed
from towers.ssl import ItemSSL, QuerySSL, contrastive_loss
from towers.tf_env import tf


def test_contrastive_loss_worked_example():
    # z1·z2ᵀ = [[0.6, 0], [0.8, 1]]; τ = 0.5 → logits [[1.2, 0], [1.6, 2]]
    # row 0: log(e^1.2 + 1) − 1.2 = log(1 + e^-1.2) = 0.26328; row 1: log(e^1.6 + e^2) − 2 = log(1 + e^-0.4) = 0.51302
    z1 = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    z2 = tf.constant([[0.6, 0.8], [0.0, 1.0]])
    want = (np.log1p(np.exp(-1.2)) + np.log1p(np.exp(-0.4))) / 2
    assert want == pytest.approx(0.38815, abs=1e-5)
    assert float(contrastive_loss(z1, z2, 0.5)) == pytest.approx(want, rel=1e-6)
    # the same group in both rows: no negatives left, loss 0
    assert float(contrastive_loss(z1, z2, 0.5, groups=tf.constant([7, 7]))) == pytest.approx(0.0, abs=1e-6)


class MaskedSumTower(tf.keras.layers.Layer):
    """Test tower: normalise(Σ_f keep_f · table_f[value_f]) with fixed random tables."""

    def __init__(self, names, specs, vocab, dim=4, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.feature_names, self.feature_specs = tuple(names), tuple(specs)
        self.vocab = {n: list(v) for n, v in vocab.items()}
        self.tables = {n: rng.normal(size=(len(v), dim)).astype(np.float32) for n, v in vocab.items()}
        self.lookups = {n: tf.keras.layers.StringLookup(vocabulary=v, num_oov_indices=1) for n, v in vocab.items()}

    def call(self, inputs, training=False, feature_mask=None):
        parts = []
        for i, n in enumerate(self.feature_names):
            table = tf.concat([tf.zeros([1, 4]), tf.constant(self.tables[n])], axis=0)
            part = tf.gather(table, self.lookups[n](inputs[n]))
            if part.shape.rank == 3:  # multi-valued: sum of values
                part = tf.reduce_sum(part, axis=1)
            parts.append(part if feature_mask is None else part * feature_mask[:, i:i + 1])
        return tf.math.l2_normalize(tf.add_n(parts), axis=-1)

    def numpy_embed(self, inputs, keep):
        out = 0
        for i, n in enumerate(self.feature_names):
            table = np.concatenate([np.zeros((1, 4), np.float32), self.tables[n]])
            index = {v: k + 1 for k, v in enumerate(self.vocab[n])}
            values = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(
                np.asarray(inputs[n], dtype=object))
            rows = np.vectorize(lambda v: index.get(v, 0))(values)
            part = table[rows] if rows.ndim == 1 else table[rows].sum(axis=1)
            out = out + part * keep[:, i:i + 1]
        # tf.math.l2_normalize: x / sqrt(max(|x|², 1e-12)); an all-masked example stays 0
        return out / np.sqrt(np.maximum((out ** 2).sum(axis=1, keepdims=True), 1e-12))


def numpy_contrastive(z1, z2, tau, groups):
    logits = z1 @ z2.T / tau
    same = (groups[:, None] == groups[None, :]) & ~np.eye(len(groups), dtype=bool)
    logits = np.where(same, -1e9, logits)
    m = logits.max(axis=1, keepdims=True)
    log_softmax = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(log_softmax))


def test_item_ssl_equals_the_loss_of_its_uniform_batch_views():
    items = {"item_id": np.array([f"i{k}" for k in range(6)], object),
             "color": np.array(["red", "red", "blue", "blue", "green", "green"], object),
             "tags": np.array([["a", "b"], ["a", ""], ["c", ""], ["b", "c"], ["a", "c"], ["", ""]], object)}
    specs = (FeatureSpec("color", "categorical"), FeatureSpec("tags", "multi_categorical"))
    names = ("item_id", "color", "tags")
    tower = MaskedSumTower(names, specs, {"item_id": items["item_id"], "color": ["red", "blue", "green"],
                                          "tags": ["a", "b", "c"]})
    aug = TwoViewAugmenter(names, specs, "rfm", value_dropout=0.3)
    ssl = ItemSSL(tower, ItemCorpus(items), aug, batch_size=8, temperature=0.2, seed=11)
    step = tf.constant(5, tf.int64)
    got = float(ssl(step))
    rows = ItemCorpus(items).uniform_rows(8, step_seed(11, step, STREAM_SSL_ITEMS)).numpy()
    batch = {k: v[rows] for k, v in items.items()}
    (in1, k1), (in2, k2) = aug.views({k: tf.constant(v) for k, v in batch.items()},
                                     step_seed(11, step, STREAM_SSL_ITEM_VIEWS))
    z1 = tower.numpy_embed({k: v.numpy() for k, v in in1.items()}, k1.numpy())
    z2 = tower.numpy_embed({k: v.numpy() for k, v in in2.items()}, k2.numpy())
    assert got == pytest.approx(numpy_contrastive(z1, z2, 0.2, rows), rel=1e-5)
    assert len(set(rows.tolist())) < 8  # duplicates were drawn, and left out of the negatives


def test_query_ssl_drops_history_and_groups_by_user():
    names = ("gender", "history")
    specs = (FeatureSpec("gender", "categorical"),)
    tower = MaskedSumTower(names, specs, {"gender": ["f", "m"], "history": ["x", "y", "z"]})
    aug = TwoViewAugmenter(names, specs, "rfm", sequence_dropout=0.5)
    ssl = QuerySSL(tower, aug, temperature=0.5, seed=2)
    q = {"user_id": np.array(["u1", "u2", "u1", "u3"], object), "gender": np.array(["f", "m", "f", "m"], object),
         "history": np.array([["x", "y", ""], ["z", "", ""], ["x", "y", "z"], ["y", "z", ""]], object),
         "history_timestamps": np.ones((4, 3), np.int64), "timestamp": np.ones(4, np.int64)}
    step = tf.constant(9, tf.int64)
    got = float(ssl({k: tf.constant(v) for k, v in q.items()}, step))
    (in1, k1), (in2, k2) = aug.views({k: tf.constant(v) for k, v in q.items()},
                                     step_seed(2, step, STREAM_SSL_QUERY_VIEWS))
    z1 = tower.numpy_embed({k: v.numpy() for k, v in in1.items()}, k1.numpy())
    z2 = tower.numpy_embed({k: v.numpy() for k, v in in2.items()}, k2.numpy())
    users = np.array([1, 2, 1, 3])
    assert got == pytest.approx(numpy_contrastive(z1, z2, 0.5, users), rel=1e-5)
    np.testing.assert_array_equal(k1.numpy() + k2.numpy(), 1)
    # batch_size = 2: the loss of the first two queries only
    first2 = QuerySSL(tower, aug, temperature=0.5, seed=2, batch_size=2)
    got2 = float(first2({k: tf.constant(v) for k, v in q.items()}, step))
    (in1, k1), (in2, k2) = aug.views({k: tf.constant(v[:2]) for k, v in q.items()},
                                     step_seed(2, step, STREAM_SSL_QUERY_VIEWS))
    z1 = tower.numpy_embed({k: v.numpy() for k, v in in1.items()}, k1.numpy())
    z2 = tower.numpy_embed({k: v.numpy() for k, v in in2.items()}, k2.numpy())
    assert got2 == pytest.approx(numpy_contrastive(z1, z2, 0.5, users[:2]), rel=1e-5)


@pytest.mark.parametrize("encoder,mode", [("features", "rfm"), ("sequence", "cfm")])
def test_query_ssl_encodes_each_history_once_with_the_same_loss(encoder, mode, monkeypatch):
    """Complementary masks keep each history in one view: encoding it once (for that view) gives
    the loss of two full tower passes, and the history encoder sees N rows, not 2N."""
    from tests.towers.conftest import planted
    from towers.config import SequenceConfig, TowerConfig
    from towers.feature_masking import feature_correlation
    from towers.inputs import make_tf_dataset, training_examples, user_features_batch
    from towers.item_tower import make_item_id_embedding
    from towers.query_tower import QueryTower
    from towers.vocab import build_vocabularies

    ds, split = planted()
    cfg = TowerConfig(output_dim=16, id_embedding_dim=16, feature_embedding_dim=8, hidden_units=(32,), max_history=8,
                      user_encoder=encoder, sequence=SequenceConfig(max_length=8, width=16, ff_dim=32, num_heads=2))
    vocab = build_vocabularies(ds, split.train, cfg)
    tower = QueryTower(make_item_id_embedding(vocab, cfg), vocab, cfg)
    correlation = None
    if mode == "cfm":
        users = user_features_batch(ds.users, tower.feature_specs)
        correlation = feature_correlation(users, tower.feature_specs, tower.feature_names,
                                          np.ones(len(ds.users), np.int64))
    aug = TwoViewAugmenter(tower.feature_names, tower.feature_specs, mode, correlation, sequence_dropout=0.3)
    ex = training_examples(ds, split.train, 8, True)
    query = next(iter(make_tf_dataset(ds, ex, 64, shuffle=True, seed=0, history_width=ex.max_history)))["query"]
    step = tf.constant(4, tf.int64)
    rows_encoded = []
    encode = tower.encode_history
    monkeypatch.setattr(tower, "encode_history", lambda inputs, training=False: (
        rows_encoded.append(int(tf.shape(inputs["history"])[0])), encode(inputs, training=training))[1])
    once = QuerySSL(tower, aug, temperature=0.2, seed=3, batch_size=32)(query, step)
    assert rows_encoded == [32]
    twice = QuerySSL(tower, aug, temperature=0.2, seed=3, batch_size=32, encode_history_once=False)(query, step)
    assert rows_encoded == [32, 32, 32]
    assert aug.in_one_view("history")
    np.testing.assert_allclose(once.numpy(), twice.numpy(), rtol=1e-6)


def test_history_alone_maskable_is_kept_in_both_views():
    aug = TwoViewAugmenter(("user_id", "history"), (), "rfm", mask_ids=False)
    assert not aug.in_one_view("history") and not aug.in_one_view("user_id")
    keep1, keep2 = aug.masks(tf.constant(3), tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(keep1.numpy(), 1)
    np.testing.assert_array_equal(keep2.numpy(), 1)
