"""The loss parts of towers.loss against values worked out by hand, and the composed loss bit for
bit against the TFRS ``tasks.Retrieval`` computation the model used before the parts existed."""
import math

import numpy as np
import pytest

from tests.towers.conftest import planted
from tests.towers.test_model import full_model
from towers.inputs import make_tf_dataset, training_examples
from towers.loss import (MIN_FLOAT, RetrievalLoss, hard_negative_mining, item_fingerprints, logq_correction,
                         mixed_sampling_probability, remove_accidental_hits)
from towers.objectives import RetrievalLossConfig
from towers.tf_env import tf, tfrs


# -- logQ correction ---------------------------------------------------------------------------

def test_logq_correction_by_hand():
    # q = [0.5, 0.25, 0.05] → q̂ = q / 0.5 = [1, 0.5, 0.1] → logits − log q̂ = [1, 2 + ln 2, 3 + ln 10]
    got = logq_correction(tf.constant([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), tf.constant([0.5, 0.25, 0.05])).numpy()
    np.testing.assert_allclose(got, [[1.0, 2.0 + math.log(2), 3.0 + math.log(10)],
                                     [0.0, math.log(2), math.log(10)]], rtol=1e-6)


def test_logq_correction_caps_ratios_beyond_a_million_and_survives_zeros():
    # q̂ = [1, 1e-8 → clipped 1e-6, 0 → 1e-30 → clipped 1e-6]: rare items gain at most ln 10⁶
    got = logq_correction(tf.zeros([1, 3]), tf.constant([0.2, 2e-9, 0.0])).numpy()
    np.testing.assert_allclose(got, [[0.0, math.log(1e6), math.log(1e6)]], rtol=1e-5)
    assert np.isfinite(got).all()


# -- accidental hits ---------------------------------------------------------------------------

def test_remove_accidental_hits_by_hand():
    # B = 3 queries, C = 4 candidates, ids [7, 8, 7, 9]: row 0's positive (7) reappears in column 2,
    # row 2's positive (7) in column 0; row 1 has no duplicate; the positives themselves stay.
    logits = tf.constant([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]])
    got = remove_accidental_hits(logits, tf.constant([7, 8, 7, 9], tf.int64)).numpy()
    want = logits.numpy().copy()
    want[0, 2] += MIN_FLOAT
    want[2, 0] += MIN_FLOAT
    np.testing.assert_array_equal(got, want)
    assert got[0, 0] == 1.0 and got[2, 2] == 11.0


def test_fingerprints_are_equal_exactly_for_equal_ids():
    got = item_fingerprints(tf.constant(["a", "b", "a", "ab"])).numpy()
    assert got.dtype == np.int64 and got[0] == got[2] and len({got[0], got[1], got[3]}) == 3


# -- mixed negatives ---------------------------------------------------------------------------

def test_mixed_sampling_probability_by_hand():
    # B = 4 in-batch (unigram p), B′ = 2 uniform over N = 10: q = (4p + 2/10) / 6
    got = mixed_sampling_probability(tf.constant([0.5, 0.1]), 4, 2, 10).numpy()
    np.testing.assert_allclose(got, [(2.0 + 0.2) / 6, (0.4 + 0.2) / 6], rtol=1e-6)
    np.testing.assert_allclose(mixed_sampling_probability(tf.constant([0.5, 0.1]), 4, 0, 10).numpy(), [0.5, 0.1])
    # a mixture of two distributions is a distribution
    p = np.random.default_rng(0).dirichlet(np.ones(10)).astype(np.float32)
    assert mixed_sampling_probability(tf.constant(p), 8, 3, 10).numpy().sum() == pytest.approx(1.0, rel=1e-5)


def test_mixed_sampling_probability_rejects_bad_sizes():
    with pytest.raises(ValueError, match="corpus_size >= 1.*corpus_size=0"):
        mixed_sampling_probability(tf.constant([0.5]), 4, 2, 0)
    with pytest.raises(ValueError, match="num_uniform=-1"):
        mixed_sampling_probability(tf.constant([0.5]), 4, -1, 10)


# -- hard negatives ----------------------------------------------------------------------------

def test_hard_negative_mining_by_hand():
    logits = tf.constant([[0.0, 5.0, 1.0, 3.0], [2.0, 0.0, 4.0, 1.0]])
    labels = tf.eye(2, 4)
    kept, kept_labels = hard_negative_mining(logits, labels, 1)
    # row 0: the positive (0.0, column 0) + the top negative 5.0; row 1: the positive 0.0 + 4.0
    for row, (positive, negatives) in enumerate([(0.0, [5.0]), (0.0, [4.0])]):
        values, flags = kept.numpy()[row], kept_labels.numpy()[row]
        assert sorted(values) == sorted([positive] + negatives)
        assert flags.sum() == 1.0 and values[flags == 1.0][0] == positive
    wide, _ = hard_negative_mining(logits, labels, 10)  # k + 1 capped at C
    assert wide.shape == (2, 4)
    with pytest.raises(ValueError, match="num_hard_negatives must be >= 1, got 0"):
        hard_negative_mining(logits, labels, 0)


# -- the composed loss -------------------------------------------------------------------------

Q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
C = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)  # two positives + one extra negative


def _ce(logits, positive):
    return -(logits[positive] - math.log(sum(math.exp(x) for x in logits)))


def test_retrieval_loss_by_hand():
    # τ = 0.5, weights [1, 3]: rows S = Q·Cᵀ/τ = [2, 0, 1.2] and [0, 2, 1.6]
    loss = RetrievalLoss(0.5, remove_hits=False)
    got = float(loss(tf.constant(Q), tf.constant(C), sample_weight=tf.constant([1.0, 3.0])))
    want = (1 * _ce([2.0, 0.0, 1.2], 0) + 3 * _ce([0.0, 2.0, 1.6], 1)) / 2
    assert got == pytest.approx(want, rel=1e-6)


def test_retrieval_loss_with_logq_and_hits_by_hand():
    # q = [0.4, 0.1, 0.2] → q̂ = [1, 0.25, 0.5]: logits + [0, ln 4, ln 2]; ids [1, 2, 1]: the extra
    # candidate is row 0's positive again (removed from row 0 only)
    loss = RetrievalLoss(0.5, remove_hits=True)
    got = float(loss(tf.constant(Q), tf.constant(C), sampling_probability=tf.constant([0.4, 0.1, 0.2]),
                     candidate_ids=tf.constant([1, 2, 1], tf.int64)))
    row0 = _ce([2.0, 0.0 + math.log(4)], 0)                      # column 2 removed
    row1 = _ce([0.0, 2.0 + math.log(4), 1.6 + math.log(2)], 1)
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_retrieval_loss_says_what_is_missing():
    with pytest.raises(ValueError, match="needs candidate_ids"):
        RetrievalLoss(0.5)(tf.constant(Q), tf.constant(C))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        RetrievalLoss(0.0)
    with pytest.raises(ValueError, match="hard_negatives must be >= 0.*got -1"):
        RetrievalLoss(0.5, hard_negatives=-1)


def _tfrs_loss(query, candidate, weight, probability, ids, temperature, remove_hits, hard):
    """The computation of the model before towers.loss existed (TFRS task + batch-max shift)."""
    task = tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
        temperature=temperature, remove_accidental_hits=remove_hits, num_hard_negatives=hard or None)
    if probability is not None:
        log_q = tf.math.log(tf.maximum(probability, 1e-30))
        probability = tf.exp(log_q - tf.reduce_max(log_q))
    total = task(query, candidate, sample_weight=weight, candidate_sampling_probability=probability,
                 candidate_ids=ids, compute_metrics=False, compute_batch_metrics=False)
    return total / tf.cast(tf.shape(query)[0], total.dtype)


@pytest.mark.parametrize("remove_hits,logq,hard", [(True, True, 0), (False, False, 0), (True, True, 5),
                                                   (False, True, 3)])
def test_composed_loss_and_gradients_are_bit_identical_to_the_tfrs_task(remove_hits, logq, hard):
    rng = np.random.default_rng(3)
    b, extra, d = 32, 16, 8
    query = tf.math.l2_normalize(tf.constant(rng.normal(size=(b, d)), tf.float32), -1)
    candidate = tf.math.l2_normalize(tf.constant(rng.normal(size=(b + extra, d)), tf.float32), -1)
    ids = tf.constant(rng.integers(0, 12, b + extra), tf.int64)  # many accidental hits
    weight = tf.constant(rng.uniform(0.5, 2.0, b), tf.float32)
    probability = tf.constant(rng.dirichlet(np.ones(b + extra)), tf.float32) if logq else None
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, candidate])
        new = RetrievalLoss(0.07, remove_hits=remove_hits, hard_negatives=hard)(
            query, candidate, sample_weight=weight, sampling_probability=probability, candidate_ids=ids)
        old = _tfrs_loss(query, candidate, weight, probability, ids, 0.07, remove_hits, hard)
    assert new.numpy().tobytes() == old.numpy().tobytes()
    for a, z in zip(tape.gradient(new, [query, candidate]), tape.gradient(old, [query, candidate])):
        np.testing.assert_array_equal(a.numpy(), z.numpy())


def test_model_loss_on_a_fixed_batch_is_bit_identical_to_the_old_computation():
    """Real towers, streaming logQ + MNS + hits: TwoTowerModel.retrieval_loss composes the parts as
    the TFRS-task code did, to the bit."""
    from towers.negatives import STREAM_MNS, step_seed

    ds, split = planted()
    model = full_model(ds, split.train, loss=RetrievalLossConfig(logq="counts", mns_negatives=16))
    ex = training_examples(ds, split.train, 8, True)
    inputs = next(iter(make_tf_dataset(ds, ex, 64, shuffle=False, seed=0, history_width=ex.max_history)))
    step = tf.constant(3, tf.int64)
    new = model.retrieval_loss(inputs, training=False, step=step)

    query = model.query_tower(inputs["query"], training=False)
    item_ids = inputs["candidate"]["item_id"]
    extra = model.corpus.gather(model.corpus.uniform_rows(16, step_seed(model.seed, step, STREAM_MNS)))
    candidate = tf.concat([model.item_tower(inputs["candidate"], training=False),
                           model.item_tower(extra, training=False)], axis=0)
    all_ids = tf.concat([item_ids, extra["item_id"]], axis=0)
    batch = tf.shape(item_ids)[0]
    b, n = tf.cast(batch, tf.float32), float(model.corpus.size)
    p = (b * model.frequency.probability(all_ids, batch) + 16 / n) / (b + 16.0)
    old = _tfrs_loss(query, candidate, inputs["weight"], p, tf.strings.to_hash_bucket_fast(all_ids, 2**63 - 1),
                     model.temperature, True, 0)
    assert new.numpy().tobytes() == old.numpy().tobytes()
