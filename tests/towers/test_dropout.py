import numpy as np
import pytest

from towers.dropout import StatelessDropout, StatelessDropoutAttention
from towers.tf_env import tf


def test_drops_the_rate_share_scales_the_rest_and_is_identity_outside_training():
    layer = StatelessDropout(0.25, seed=7)
    x = tf.ones([200, 50])
    out = layer(x, training=True).numpy()
    kept = out != 0
    assert abs(1 - kept.mean() - 0.25) < 0.02  # 10,000 draws: ±0.02 is > 4 standard deviations
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert layer(x, training=False) is x and StatelessDropout(0.0)(x, training=True) is x
    assert StatelessDropout(0.0).calls is None  # no state when it never drops


def test_every_call_draws_a_new_mask_and_the_stream_is_a_function_of_seed_and_count():
    x = tf.ones([64, 64])
    a, b = StatelessDropout(0.5, seed=3), StatelessDropout(0.5, seed=3)
    first, second = a(x, training=True).numpy(), a(x, training=True).numpy()
    assert not np.array_equal(first, second) and int(a.calls.numpy()) == 2
    np.testing.assert_array_equal(b(x, training=True).numpy(), first)  # same seed, same stream
    assert not np.array_equal(StatelessDropout(0.5, seed=4)(x, training=True).numpy(), first)
    b.calls.assign(1)  # e.g. restored from a checkpoint written after one call
    np.testing.assert_array_equal(b(x, training=True).numpy(), second)


def test_the_counter_is_checkpointed_so_a_restored_layer_continues_the_stream(tmp_path):
    x = tf.ones([32, 32])
    layer = StatelessDropout(0.3, seed=11)
    layer(x, training=True)
    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
    expected = layer(x, training=True).numpy()
    restored = StatelessDropout(0.3, seed=11)
    tf.train.Checkpoint(layer=restored).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(restored(x, training=True).numpy(), expected)


def test_symbolic_training_flag_and_gradient():
    layer = StatelessDropout(0.5, seed=1)
    x = tf.Variable(tf.ones([8, 8]))

    @tf.function
    def run(flag):
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(layer(x, training=flag))
        return y, tape.gradient(y, x)

    y, grad = run(tf.constant(True))
    assert set(np.unique(grad.numpy())) <= {0.0, 2.0} and 0 < (grad.numpy() != 0).mean() < 1
    y, grad = run(tf.constant(False))
    assert float(y) == 64.0 and np.all(grad.numpy() == 1.0)


def test_bad_rate_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\), got 1.0"):
        StatelessDropout(1.0)


def test_attention_uses_the_stateless_dropout_and_keeps_keras_attention_arithmetic():
    tf.keras.utils.set_random_seed(0)
    ours = StatelessDropoutAttention(2, 4, dropout=0.2)
    keras = tf.keras.layers.MultiHeadAttention(2, 4, dropout=0.2)
    x = tf.random.stateless_normal([3, 5, 8], seed=[1, 2])
    ours(x, x), keras(x, x)
    keras.set_weights(ours.get_weights()[:len(keras.get_weights())])
    assert isinstance(ours._dropout_layer, StatelessDropout)
    np.testing.assert_allclose(ours(x, x, training=False).numpy(), keras(x, x, training=False).numpy(), rtol=1e-6)
    a, b = ours(x, x, training=True).numpy(), ours(x, x, training=True).numpy()
    assert not np.allclose(a, b)  # attention probabilities are dropped, differently each call
