import numpy as np
import pytest

from tests.towers.conftest import planted
from towers.config import SequenceConfig, TowerConfig, TrainConfig
from towers.inputs import item_features_batch, make_tf_dataset, training_examples
from towers.item_tower import ItemTower, make_item_id_embedding
from towers.query_tower import QueryTower
from towers.sequence_encoder import SequenceEncoder, time_gap_buckets
from towers.tf_env import tf
from towers.vocab import build_vocabularies

SEQ = SequenceConfig(num_layers=2, num_heads=2, width=16, ff_dim=32, dropout=0.0, time_buckets=8)
CFG = TowerConfig(output_dim=16, id_embedding_dim=8, feature_embedding_dim=4, hidden_units=(32,), max_history=4,
                  user_encoder="sequence", sequence=SEQ)


def build(cfg=CFG, with_features=True):
    tf.keras.utils.set_random_seed(0)
    ds, split = planted()
    vocab = build_vocabularies(ds, split.train, cfg)
    item_ids = make_item_id_embedding(vocab, cfg)
    item_tower = ItemTower(item_ids, vocab, cfg)
    catalogue = item_features_batch(ds.items, ds.item_features) if with_features else None
    tower = QueryTower(item_ids, vocab, cfg, item_features=item_tower.features if with_features else None,
                       catalogue=catalogue)
    return ds, tower, item_tower


def query(history, ts=None, now=None, users=None):
    history = np.array(history, dtype=object)
    b = len(history)
    ts = np.zeros(history.shape, np.int64) if ts is None else np.array(ts, np.int64)
    return {"user_id": np.array(users or ["u1"] * b, dtype=object), "gender": np.array([""] * b, dtype=object),
            "age": np.full(b, np.nan, np.float32), "history": history, "history_timestamps": ts,
            "timestamp": np.full(b, 1000 if now is None else now, np.int64)}


def test_time_gap_buckets_match_log2_by_hand():
    hist_ts = tf.constant([[999, 998, 990, 0, 1001]], tf.int64)
    got = time_gap_buckets(hist_ts, tf.constant([1000], tf.int64), 8).numpy().tolist()
    # gaps 1, 2, 10, 1000, -1→0: floor(log2(2))=1, floor(log2(3))=1, floor(log2(11))=3, log2(1001)→9→cap 7, 0
    assert got == [[1, 1, 3, 7, 0]]


def test_sequence_tower_shares_item_tables_and_names_its_parts():
    _, tower, item_tower = build()
    assert tower.feature_names == ("gender", "age", "history")
    assert tower.user_id_embedding is None
    enc = tower.history_encoder
    assert isinstance(enc, SequenceEncoder)
    assert enc.item_id_embedding is item_tower.item_id_embedding and enc.item_features is item_tower.features
    out = tower(query([["i1", "i2", ""]])).numpy()
    shared = {id(w) for w in item_tower.trainable_weights}
    assert len(shared & {id(w) for w in tower.trainable_weights}) >= 2  # id table + feature tables
    assert out.shape == (1, 16) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_padding_is_masked_and_only_the_last_max_length_items_count():
    _, tower, _ = build()
    enc = tower.history_encoder
    ts = [[100, 200, 300, 0, 0, 0]]
    base = enc(tf.constant([["i1", "i2", "i3", "", "", ""]]), tf.constant(ts, tf.int64), tf.constant([1000], tf.int64))
    short = enc(tf.constant([["i1", "i2", "i3"]]), tf.constant([ts[0][:3]], tf.int64), tf.constant([1000], tf.int64))
    assert np.allclose(base.numpy(), short.numpy(), atol=1e-5)
    longer = enc(tf.constant([["i7", "i8", "i9", "i1", "i2", "i3"]]), tf.constant([[1, 2, 3, 100, 200, 300]], tf.int64),
                 tf.constant([1000], tf.int64))  # max_length 4: i9 i1 i2 i3
    cut = enc(tf.constant([["i9", "i1", "i2", "i3"]]), tf.constant([[3, 100, 200, 300]], tf.int64),
              tf.constant([1000], tf.int64))
    assert np.allclose(longer.numpy(), cut.numpy(), atol=1e-5)


def test_order_and_time_gaps_change_the_output_and_empty_history_gives_zeros():
    _, tower, _ = build()
    enc = tower.history_encoder
    now = tf.constant([10_000], tf.int64)
    a = enc(tf.constant([["i1", "i2", "i3"]]), tf.constant([[1, 2, 3]], tf.int64), now).numpy()
    reordered = enc(tf.constant([["i3", "i2", "i1"]]), tf.constant([[1, 2, 3]], tf.int64), now).numpy()
    later = enc(tf.constant([["i1", "i2", "i3"]]), tf.constant([[9_990, 9_995, 9_999]], tf.int64), now).numpy()
    assert not np.allclose(a, reordered, atol=1e-4) and not np.allclose(a, later, atol=1e-4)
    empty = enc(tf.constant([["", ""]]), tf.zeros([1, 2], tf.int64), now).numpy()
    none = enc(tf.zeros([1, 0], tf.string), tf.zeros([1, 0], tf.int64), now).numpy()
    assert np.all(empty == 0) and np.all(none == 0)


def test_a_known_width_skips_the_padding_column_with_the_same_output():
    """Training batches have a static history width: the encoder then reads L columns, not L + 1 (the
    padding column only keeps width-0 inputs non-empty). Unknown widths (serving signatures) keep it."""
    _, tower, _ = build()
    enc = tower.history_encoder
    h = tf.constant([["i1", "i2", "i3"], ["i4", "", ""], ["", "", ""]])
    ts, now = tf.constant([[1, 2, 3], [5, 0, 0], [0, 0, 0]], tf.int64), tf.constant([100, 100, 100], tf.int64)

    def traced(width):
        spec = [tf.TensorSpec([None, width], tf.string), tf.TensorSpec([None, width], tf.int64),
                tf.TensorSpec([None], tf.int64)]
        return tf.function(lambda a, b, c: enc(a, b, c), input_signature=spec).get_concrete_function()

    static, dynamic = traced(3), traced(None)
    pads = lambda f: [op.type for op in f.graph.get_operations() if op.type.startswith("Pad")]  # noqa: E731
    assert not pads(static) and pads(dynamic)
    np.testing.assert_allclose(static(h, ts, now).numpy(), dynamic(h, ts, now).numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(static(h, ts, now).numpy()[2] == 0)  # an empty history is still zeros


def test_last_pooling_reads_the_newest_position():
    cfg = TowerConfig(output_dim=16, id_embedding_dim=8, feature_embedding_dim=4, hidden_units=(32,), max_history=4,
                      user_encoder="sequence", sequence=SequenceConfig(num_layers=1, num_heads=2, width=8, ff_dim=8,
                                                                       dropout=0.0, pooling="last"))
    _, tower, _ = build(cfg, with_features=False)
    enc = tower.history_encoder
    assert enc.item_features is None
    out = enc(tf.constant([["i1", "i2", ""], ["i1", "", ""]]), tf.constant([[1, 2, 0], [1, 0, 0]], tf.int64),
              tf.constant([5, 5], tf.int64)).numpy()
    assert out.shape == (2, 8) and np.isfinite(out).all() and not np.allclose(out[0], out[1], atol=1e-4)


def test_unknown_items_are_finite_and_feature_free():
    _, tower, _ = build()
    out = tower(query([["nope", "i2", ""], ["", "", ""]], users=["u1", "nobody"])).numpy()
    assert np.isfinite(out).all() and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    feats = tower.history_encoder._history_item_features(tf.constant([["nope", "i2", ""]])).numpy()
    assert np.all(feats[0, 0] == 0) and np.all(feats[0, 2] == 0) and np.any(feats[0, 1] != 0)


def test_history_item_features_are_the_item_towers_features_of_that_item():
    """The encoder encodes the catalogue once at construction; a history item's feature vector is
    still the item tower's FeatureEmbeddings applied to that item's raw catalogue row."""
    ds, tower, item_tower = build()
    catalogue = item_features_batch(ds.items, ds.item_features)
    picks = [3, 0, 7, 3]
    ids = [catalogue["item_id"][i] for i in picks]
    raw = {n: tf.constant(np.asarray(catalogue[n])[picks]) for n in item_tower.features.names}
    want = tf.concat([tf.cast(v, tf.float32) for v in item_tower.features(raw)], axis=-1).numpy()
    got = tower.history_encoder._history_item_features(tf.constant([ids], tf.string)).numpy()[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(want[0], want[1])  # distinct items, distinct features


def test_training_batches_give_the_encoder_only_strictly_earlier_history():
    """No leakage (the full check against a reference is tests/test_towers_inputs.py): in a training
    batch no history event is later than the query time or is the target itself."""
    ds, split = planted()
    batch = next(iter(make_tf_dataset(ds, training_examples(ds, split.train, max_history=50), 1024,
                                      shuffle=True, seed=0)))
    q, target = batch["query"], batch["candidate"]["item_id"].numpy()
    hist, hts, now = q["history"].numpy(), q["history_timestamps"].numpy(), q["timestamp"].numpy()
    valid = hist != b""
    assert (hts[valid] <= np.broadcast_to(now[:, None], hts.shape)[valid]).all()
    assert not (hist == target[:, None]).any()  # planted users never repeat an item


def test_config_rejects_bad_shapes_with_the_fix():
    with pytest.raises(ValueError, match=r"width \(10\) must be divisible by num_heads \(4\)"):
        SequenceConfig(width=10, num_heads=4)
    with pytest.raises(ValueError, match="pooling must be 'mean' or 'last', got 'max'"):
        SequenceConfig(pooling="max")
    with pytest.raises(ValueError, match="user_encoder must be 'ids', 'features' or 'sequence', got 'rnn'"):
        TowerConfig(user_encoder="rnn")
    with pytest.raises(ValueError, match="clue='pretrain' needs a history encoder"):
        TrainConfig(clue="pretrain", tower=TowerConfig(user_encoder="ids"))
    _, tower, item_tower = build(with_features=False)
    with pytest.raises(ValueError, match="item_features and catalogue go together"):
        SequenceEncoder(tower.history_encoder.item_id_embedding, SEQ, 4, item_features=item_tower.features)


@pytest.mark.parametrize("with_features", [True, False])
def test_items_projected_once_per_distinct_item_equal_the_per_position_computation(with_features):
    """``project_items`` embeds and projects each distinct (id row, catalogue row) once and gathers;
    values and gradients equal projecting every position (repeats, padding, an unknown id)."""
    _, tower, _ = build(with_features=with_features)
    enc = tower.history_encoder
    history = tf.constant([["i1", "i2", "i1", ""], ["i2", "nope", "i3", "i1"], ["", "", "", ""]])
    rows = enc.item_id_embedding.lookup(history)

    def reference():
        items = enc.item_id_embedding.embed_rows(rows)
        if with_features:
            items = tf.concat([items, enc._history_item_features(history)], axis=-1)
        return enc.item_projection(items)

    upstream = tf.random.stateless_normal([3, 4, SEQ.width], seed=[1, 2])
    results = []
    for fn in (lambda: enc.project_items(history, rows), reference):
        with tf.GradientTape() as tape:
            out = fn()
            loss = tf.reduce_sum(out * upstream)
        grads = tape.gradient(loss, enc.trainable_variables)
        results.append((out.numpy(), [tf.convert_to_tensor(g).numpy() if g is not None else None for g in grads]))
    (out, grads), (ref_out, ref_grads) = results
    np.testing.assert_allclose(out, ref_out, rtol=1e-6, atol=1e-6)
    assert [g is None for g in grads] == [g is None for g in ref_grads]
    for g, r in zip(grads, ref_grads):
        if g is not None:
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert any(g is not None and np.any(g != 0) for g in grads)
