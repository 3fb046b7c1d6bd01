import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from towers.frequency import step_to_draw_probability
from towers.model import TwoTowerModel
from towers.negatives import STREAM_MNS, ItemCorpus, step_seed
from towers.objectives import RetrievalLossConfig, SSLConfig
from towers.ssl import contrastive_loss
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
ITEMS = {"A": [0.8, 0.6], "B": [0.0, 1.0], "C": [0.6, -0.8]}
CORPUS = {"item_id": np.array(["A", "B", "C"], object)}


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


# ---------------------------------------------------------------------------------------------
# logQ, MNS, hard negatives: against a slow obvious NumPy version


def hand_general(qs, cand_ids, weights, temperature, remove_hits=True, log_q=None, hard=0):
    """Mean over rows b of weight_b · CE(row b of Q Cᵀ/τ − log q, label b), rows of B queries over the
    B in-batch + extra candidates; accidental hits (same id as the positive) and, with ``hard`` = k,
    all but the k highest negatives are left out."""
    q = np.array([QUERIES[x] for x in qs])
    c = np.array([ITEMS[x] for x in cand_ids])
    total = 0.0
    for b in range(len(qs)):
        logits = q[b] @ c.T / temperature - (0 if log_q is None else np.asarray(log_q))
        negatives = [j for j in range(len(cand_ids)) if j != b and not (remove_hits and cand_ids[j] == cand_ids[b])]
        if hard:
            negatives = sorted(negatives, key=lambda j: -logits[j])[:hard]
        keep = [b] + negatives
        total += weights[b] * -(logits[b] - np.log(np.sum(np.exp(logits[keep]))))
    return total / len(qs)


def make(**kwargs):
    kwargs.setdefault("corpus", CORPUS)
    return TwoTowerModel(FixedTower("user_id", QUERIES), FixedTower("item_id", ITEMS), 0.5, **kwargs)


def test_logq_counts_worked_example():
    # counts A 3, B 1, C 0 → p = 3/4, 1/4 (C: 0.5/4). logits [[1.6, 0], [1.2, 2]] − log p
    # = [[1.8877, 1.3863], [1.4877, 3.3863]]; loss = mean(log(e^1.8877 + e^1.3863) − 1.8877,
    #                                                   log(e^1.4877 + e^3.3863) − 3.3863)
    #      = mean(log(1 + e^-0.5014), log(1 + e^-1.8986)) = mean(0.4736, 0.1396) = 0.3066
    m = make(loss=RetrievalLossConfig(logq="counts"), item_counts=np.array([3, 1, 0]))
    got = float(m.compute_loss(batch(["q0", "q1"], ["A", "B"], [1.0, 1.0])))
    want = hand_general(["q0", "q1"], ["A", "B"], [1, 1], 0.5, log_q=np.log([0.75, 0.25]))
    assert want == pytest.approx(0.3066, abs=1e-4)
    assert got == pytest.approx(want, rel=1e-5)
    # three rows, weights, accidental hit (A twice), unseen C
    qs, items, w = ["q0", "q1", "q2"], ["A", "C", "A"], [1.0, 2.0, 0.5]
    got = float(m.compute_loss(batch(qs, items, w)))
    assert got == pytest.approx(hand_general(qs, items, w, 0.5, log_q=np.log([0.75, 0.125, 0.75])), rel=1e-5)


def test_logq_streaming_reads_the_estimator_and_updates_it_when_training():
    m = make(loss=RetrievalLossConfig(logq="streaming", frequency_alpha=0.5))
    b = batch(["q0", "q1"], ["A", "B"], [1.0, 1.0])
    # step 1 (training): A and B first seen at t = 1 → equal probabilities → plain softmax
    assert float(m.compute_loss(b, training=True)) == pytest.approx(hand_general(["q0", "q1"], ["A", "B"], [1, 1], 0.5),
                                                                    rel=1e-5)
    for ids in (["A"], ["A"], ["A", "B"]):  # t = 2, 3, 4: A's gap stays 1; B's gap 3 → B = 0.5·1 + 0.5·3 = 2
        m.frequency.update(tf.constant(ids))
    # per draw in a batch of 2: A 1 − √(1 − 0.999) = 0.96838, B 1 − √(1 − 1/2) = 0.29289
    p = [1 - np.sqrt(1e-3), 1 - np.sqrt(0.5)]
    np.testing.assert_allclose(m.frequency.probability(tf.constant(["A", "B"]), 2).numpy(), p, rtol=1e-4)
    got = float(m.compute_loss(b, training=False))
    assert got == pytest.approx(hand_general(["q0", "q1"], ["A", "B"], [1, 1], 0.5, log_q=np.log(p)), rel=1e-4)
    assert int(m.frequency.step.numpy()) == 4  # evaluation does not update
    m.compute_loss(b, training=True)
    assert int(m.frequency.step.numpy()) == 5


def drawn(seed, step, count):
    rows = ItemCorpus(CORPUS).uniform_rows(count, step_seed(seed, tf.constant(step, tf.int64), STREAM_MNS)).numpy()
    return [CORPUS["item_id"][r] for r in rows]


@pytest.mark.parametrize("remove_hits", [True, False])
def test_mns_appends_uniform_corpus_items_as_negatives(remove_hits):
    m = make(loss=RetrievalLossConfig(mns_negatives=4, remove_accidental_hits=remove_hits), seed=3)
    qs, items, w = ["q0", "q1", "q2"], ["A", "B", "A"], [1.0, 2.0, 0.5]
    extra = drawn(3, 0, 4)
    got = float(m.compute_loss(batch(qs, items, w)))
    assert got == pytest.approx(hand_general(qs, items + extra, w, 0.5, remove_hits=remove_hits), rel=1e-5)
    assert "C" in extra or "A" in extra  # the draw brought candidates beyond the batch / accidental hits


def test_mns_with_logq_uses_the_mixture_probability():
    # q_mix(c) = (B·p(c) + B′/N) / (B + B′) with B = 2, B′ = 3, N = 3, p = counts / 4
    m = make(loss=RetrievalLossConfig(mns_negatives=3, logq="counts"), item_counts=np.array([3, 1, 0]), seed=8)
    extra = drawn(8, 0, 3)
    cands = ["A", "B"] + extra
    p = {"A": 0.75, "B": 0.25, "C": 0.125}
    q_mix = [(2 * p[c] + 3 / 3) / 5 for c in cands]
    got = float(m.compute_loss(batch(["q0", "q1"], ["A", "B"], [1.0, 1.0])))
    assert got == pytest.approx(hand_general(["q0", "q1"], cands, [1, 1], 0.5, log_q=np.log(q_mix)), rel=1e-5)


def test_hard_negatives_keep_the_top_scoring_negatives():
    m = make(loss=RetrievalLossConfig(hard_negatives=1, remove_accidental_hits=False))
    qs, items, w = ["q0", "q1", "q2"], ["A", "B", "C"], [1.0, 1.0, 1.0]
    got = float(m.compute_loss(batch(qs, items, w)))
    assert got == pytest.approx(hand_general(qs, items, w, 0.5, remove_hits=False, hard=1), rel=1e-5)
    assert got < hand_general(qs, items, w, 0.5, remove_hits=False)


# ---------------------------------------------------------------------------------------------
# composition: SSL, auxiliary losses, retrieval weight


class MaskableFixedTower(FixedTower):
    """FixedTower with the tower interface the SSL regulariser needs (one feature: the id)."""

    def __init__(self, key, vectors):
        super().__init__(key, vectors)
        self.feature_names, self.feature_specs = (key,), ()

    def call(self, inputs, training=False, feature_mask=None):
        out = super().call(inputs)
        return out if feature_mask is None else out * feature_mask[:, :1]


class SquareAux(tf.keras.layers.Layer):
    def build(self, input_shape=None):
        self.w = self.add_weight(name="w", shape=(), initializer=tf.keras.initializers.Constant(3.0))

    def call(self, inputs, training=False):
        if not self.built:
            self.build()
        return tf.square(self.w)


def test_total_loss_adds_weighted_ssl_and_auxiliary_terms():
    aux = SquareAux(name="clue_loss")
    m = TwoTowerModel(MaskableFixedTower("user_id", QUERIES), MaskableFixedTower("item_id", ITEMS), 0.5,
                      corpus=CORPUS, ssl=SSLConfig(mode="rfm", weight=0.25, item_batch_size=4, temperature=0.5,
                                                   query_side=True),
                      auxiliary_losses=[aux], seed=1)
    b = batch(["q0", "q1", "q2"], ["A", "B", "A"], [1.0, 1.0, 1.0])
    terms = m._loss_terms(b, training=False)
    assert sorted(terms) == ["clue_loss", "loss", "regularization_loss", "ssl_item_loss", "ssl_query_loss"]
    # one feature only: nothing to mask, both views equal the tower output of the uniform rows
    rows = ItemCorpus(CORPUS).uniform_rows(4, step_seed(1, tf.constant(1, tf.int64), 2)).numpy()
    z = np.array([ITEMS[CORPUS["item_id"][r]] for r in rows], np.float32)
    want_item = float(contrastive_loss(tf.constant(z), tf.constant(z), 0.5, tf.constant(rows)))
    assert float(terms["ssl_item_loss"]) == pytest.approx(want_item, rel=1e-5)
    zq = np.array([QUERIES[x] for x in ["q0", "q1", "q2"]], np.float32)
    want_query = float(contrastive_loss(tf.constant(zq), tf.constant(zq), 0.5))
    assert float(terms["ssl_query_loss"]) == pytest.approx(want_query, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(hand_loss(["q0", "q1", "q2"], ["A", "B", "A"], [1, 1, 1], 0.5, True))
    want_total = float(terms["loss"]) + 0.25 * (want_item + want_query) + 9.0
    assert float(m._total(terms)) == pytest.approx(want_total, rel=1e-5)
    assert any(v is aux.w for v in m.trainable_variables)
    assert [t.name for t in m.metrics] == ["loss", "regularization_loss", "ssl_item_loss", "ssl_query_loss",
                                           "clue_loss"]


def test_retrieval_weight_zero_trains_the_auxiliary_loss_only():
    aux = SquareAux(name="clue_loss")
    m = make(auxiliary_losses=[aux], retrieval_weight=0.0)
    m.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    data = tf.data.Dataset.from_tensors(batch(["q0", "q1"], ["A", "B"], [1.0, 1.0]))
    history = m.fit(data, epochs=1, verbose=0).history
    assert history["loss"] == [0.0] and history["clue_loss"] == [pytest.approx(9.0)]
    assert float(aux.w.numpy()) == pytest.approx(3.0 - 0.1 * 6.0)  # d(w²)/dw = 6


def test_options_that_need_statistics_say_so():
    with pytest.raises(ValueError, match=r"loss.mns_negatives > 0 need\(s\) the item corpus: pass corpus="):
        make(corpus=None, loss=RetrievalLossConfig(mns_negatives=2))
    with pytest.raises(ValueError, match=r"logq 'counts' needs item_counts, one training count per corpus row \(3\), "
                                         r"got 2 counts"):
        make(loss=RetrievalLossConfig(logq="counts"), item_counts=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"ssl mode 'cfm' needs item_correlation"):
        TwoTowerModel(MaskableFixedTower("user_id", QUERIES), MaskableFixedTower("item_id", ITEMS), 0.5,
                      corpus=CORPUS, ssl=SSLConfig(mode="cfm"))
    with pytest.raises(TypeError, match=r"loss must be a RetrievalLossConfig"):
        make(loss={"logq": "counts"})


# ---------------------------------------------------------------------------------------------
# real towers, every option on


def full_model(dataset, train, **loss_ssl):
    from towers.config import TowerConfig
    from towers.item_tower import ItemTower, make_item_id_embedding
    from towers.query_tower import QueryTower
    from towers.vocab import build_vocabularies

    cfg = TowerConfig(output_dim=16, id_embedding_dim=16, feature_embedding_dim=8, hidden_units=(32,), max_history=8)
    vocab = build_vocabularies(dataset, train, cfg)
    ids = make_item_id_embedding(vocab, cfg)
    return TwoTowerModel.from_training_data(QueryTower(ids, vocab, cfg), ItemTower(ids, vocab, cfg), 0.1,
                                            dataset, train, seed=5, **loss_ssl)


FULL_RUN_SCRIPT = """
import numpy as np
from towers.strategy import configure_logical_cpus
cpus = configure_logical_cpus(2)
from towers.tf_env import tf
from tests.towers.conftest import planted
from tests.towers.test_model import full_model
from towers.inputs import make_tf_dataset, training_examples
from towers.objectives import RetrievalLossConfig, SSLConfig
ds, split = planted()
strategy = tf.distribute.MirroredStrategy([d.name for d in cpus])
with strategy.scope():
    m = full_model(ds, split.train, loss=RetrievalLossConfig(logq="streaming", mns_negatives=16),
                   ssl=SSLConfig(mode="cfm", item_batch_size=32, query_side=True))
    m.compile(optimizer=tf.keras.optimizers.Adam(0.01))
ex = training_examples(ds, split.train, 8, True)
ex = ex.subset(np.arange(0, len(ex), 2))  # half the examples: 7 steps per epoch (speed; each costs ~0.5 s)
data = make_tf_dataset(ds, ex, 256, shuffle=True, seed=1)
with strategy.scope():  # create every variable eagerly, as towers.train does
    m.compute_loss(next(iter(data)), training=False)
    m.optimizer.build(m.trainable_variables)
assert m.item_ssl.augmenter.group_table is not None and m.query_ssl.augmenter.group_table is not None
history = m.fit(data, epochs=2, verbose=0).history
steps = 2 * int(np.ceil(len(ex) / 256))
assert int(m.frequency.step.numpy()) == steps and int(m.sample_step.numpy()) == steps, \
    (int(m.frequency.step.numpy()), int(m.sample_step.numpy()), steps)
last = m.frequency.last_step.values
assert len(last) == 2 and np.array_equal(last[0].numpy(), last[1].numpy())  # replicas agree
assert (last[0].numpy() > 0).sum() > 100  # the estimator saw the items of the global batches
for name in ("loss", "ssl_item_loss", "ssl_query_loss"):
    assert np.isfinite(history[name]).all() and history[name][1] < history[name][0], (name, history)
print("OK", history)
"""


def test_every_option_trains_under_mirrored_strategy_on_two_logical_cpus():
    """Streaming logQ + MNS + CFM SSL on both towers, real towers, two replicas: losses fall, the
    estimator counts every global step and its replicas hold the same state."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", FULL_RUN_SCRIPT], cwd=root, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]


def test_training_history_window_batches_give_the_same_loss_and_gradients():
    """Batches cut to ``training_history_window`` (what towers.train feeds) give the full-width
    batches' loss and gradients bit for bit; query-side SSL or CLUE-joint turn the window off."""
    from tests.towers.conftest import planted
    from towers.clue import ClueObjective
    from towers.config import SequenceConfig, TowerConfig
    from towers.inputs import item_features_batch, make_tf_dataset, training_examples
    from towers.item_tower import ItemTower, make_item_id_embedding
    from towers.query_tower import QueryTower
    from towers.vocab import build_vocabularies

    ds, split = planted()
    cfg = TowerConfig(output_dim=16, id_embedding_dim=16, feature_embedding_dim=8, hidden_units=(32,), max_history=12,
                      user_encoder="sequence", sequence=SequenceConfig(max_length=4, width=16, ff_dim=16, dropout=0.0))
    tf.keras.utils.set_random_seed(3)
    vocab = build_vocabularies(ds, split.train, cfg)
    ids = make_item_id_embedding(vocab, cfg)
    item_tower = ItemTower(ids, vocab, cfg)
    query_tower = QueryTower(ids, vocab, cfg, item_features=item_tower.features,
                             catalogue=item_features_batch(ds.items, ds.item_features))
    m = TwoTowerModel.from_training_data(query_tower, item_tower, 0.1, ds, split.train, seed=5,
                                         loss=RetrievalLossConfig(logq="counts", mns_negatives=8))
    assert m.training_history_window == 4 and query_tower.history_window == 4
    ex = training_examples(ds, split.train, cfg.max_history, True)
    assert ex.history_length.max() > 4
    full = next(iter(make_tf_dataset(ds, ex, 256, shuffle=False, seed=0, history_width=12)))
    cut = next(iter(make_tf_dataset(ds, ex.most_recent(4), 256, shuffle=False, seed=0, history_width=4)))
    assert full["query"]["history"].shape[1] == 12 and cut["query"]["history"].shape[1] == 4
    results = []
    for b in (full, cut):
        m.sample_step.assign(0)
        with tf.GradientTape() as tape:
            loss = m._total(m._loss_terms(b, training=True))
        grads = tape.gradient(loss, m.trainable_variables)
        results.append([loss.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads if g is not None])
    for a, b in zip(*results):  # equal up to float rounding (oneDNN's kernels may round differently per buffer)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    ssl_model = TwoTowerModel.from_training_data(query_tower, item_tower, 0.1, ds, split.train, seed=5,
                                                 ssl=SSLConfig(mode="rfm", query_side=True))
    joint = TwoTowerModel(query_tower, item_tower, 0.1,
                          auxiliary_losses=[ClueObjective(query_tower, 8, 0.1, name="clue_loss")])
    assert ssl_model.training_history_window is None and joint.training_history_window is None
