import numpy as np
import pytest

from towers.frequency import (CountFrequency, StreamingFrequencyEstimator, hash_buckets,
                              step_to_draw_probability)
from towers.tf_env import tf


def _zipf_stream(num_items=100, steps=15_000, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, num_items + 1) ** 1.1
    p /= p.sum()
    ids = np.array([f"item_{i}" for i in range(num_items)])
    draws = rng.choice(num_items, size=(steps, batch), p=p)
    return ids, p, draws


def _run(estimator, ids, draws):
    stream = tf.constant(ids[draws])

    @tf.function
    def feed():
        for t in tf.range(tf.shape(stream)[0]):
            estimator.update(stream[t])

    feed()


def test_streaming_estimate_converges_to_true_frequency_within_10_percent():
    ids, p, draws = _zipf_stream()
    est = StreamingFrequencyEstimator(num_buckets=1 << 20, alpha=0.002)
    assert len(np.unique(hash_buckets(tf.constant(ids), 1 << 20).numpy())) == len(ids)  # no collisions
    _run(est, ids, draws)
    batch = draws.shape[1]
    expected_steps = len(draws) * (1 - (1 - p) ** batch)  # steps in which each item appears
    enough = expected_steps >= 2000  # ≥ 1/α gaps: past the start-up of the moving average
    assert enough.sum() >= 25
    step_p = est.step_probability(tf.constant(ids)).numpy()
    true_step_p = 1 - (1 - p) ** batch
    np.testing.assert_array_less(np.abs(step_p / true_step_p - 1)[enough], 0.10)
    draw_p = est.probability(tf.constant(ids), batch).numpy()
    # items expected in nearly every batch saturate the per-step signal (documented cap)
    unsaturated = enough & (true_step_p < 0.99)
    assert unsaturated.sum() >= 15
    rel = np.abs(draw_p / p - 1)[unsaturated]
    np.testing.assert_array_less(rel, 0.10)
    assert np.median(rel) < 0.04
    assert int(est.step.numpy()) == len(draws)


def test_streaming_update_follows_the_recurrence_by_hand():
    est = StreamingFrequencyEstimator(num_buckets=1 << 20, alpha=0.5)
    seq = [["a", "b", "a"], ["b"], ["c"], ["a"], ["b"]]  # steps 1..5
    for batch in seq:
        est.update(tf.constant(batch))
    # a: seen at 1 (B = 1), then 4: B = 0.5·1 + 0.5·3 = 2 → p = 1/2
    # b: seen at 1 (B = 1), 2: B = 0.5·1 + 0.5·1 = 1, 5: B = 0.5·1 + 0.5·3 = 2 → p = 1/2
    # c: first seen at 3: B = 3 → p = 1/3; d never seen at t = 5 → 1/6
    got = est.step_probability(tf.constant(["a", "b", "c", "d"])).numpy()
    np.testing.assert_allclose(got, [0.5, 0.5, 1 / 3, 1 / 6], rtol=1e-6)


def test_step_to_draw_probability_inverts_batch_inclusion():
    p = np.array([1e-7, 1e-3, 0.02])
    step = 1 - (1 - p) ** 256
    np.testing.assert_allclose(step_to_draw_probability(tf.constant(step), 256).numpy(), p, rtol=1e-3)
    assert step_to_draw_probability(tf.constant([1.0]), 256).numpy()[0] == pytest.approx(1 - 1e-3 ** (1 / 256), rel=1e-5)


def test_count_frequency_is_count_over_total():
    freq = CountFrequency(["x", "y", "z"], [3, 1, 0])
    got = freq.probability(tf.constant(["y", "x", "z", "unknown"])).numpy()
    np.testing.assert_allclose(got, [0.25, 0.75, 0.125, 0.125], rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"item_ids": ["a", "b"], "counts": [1]}, r"same length, got shapes \(2,\) and \(1,\)"),
    ({"item_ids": ["a", "b"], "counts": [0, 0]}, r"positive total"),
    ({"item_ids": ["a", "a"], "counts": [1, 2]}, r"must be distinct"),
])
def test_count_frequency_rejects_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CountFrequency(**kwargs)


def test_estimator_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got 0"):
        StreamingFrequencyEstimator(16, 0)
    with pytest.raises(ValueError, match=r"num_buckets must be >= 1, got 0"):
        StreamingFrequencyEstimator(0, 0.1)
