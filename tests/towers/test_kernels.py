"""towers.kernels against the TensorFlow/Keras ops they replace: values and every gradient."""
import numpy as np
import pytest

from towers.kernels import LayerNorm, gelu, layer_norm, stateless_dropout
from towers.tf_env import tf


def _grads(fn, *variables, weights=None):
    """fn's output and d(Σ w · fn)/d(variables) for a fixed random cotangent w."""
    with tf.GradientTape() as tape:
        out = fn()
        w = weights if weights is not None else tf.constant(
            np.random.default_rng(9).normal(size=out.shape), out.dtype)
        total = tf.reduce_sum(out * w)
    return out, tape.gradient(total, list(variables))


@pytest.mark.parametrize("shape", [(6, 5, 8), (4, 32), (3, 2, 7, 4)])
def test_layer_norm_value_and_gradients_equal_keras(shape):
    rng = np.random.default_rng(sum(shape))
    x = tf.Variable(rng.normal(loc=0.5, scale=2.0, size=shape).astype(np.float32))
    keras = tf.keras.layers.LayerNormalization(epsilon=1e-6)
    ours = LayerNorm(epsilon=1e-6)
    keras.build(x.shape)
    ours.build(x.shape)
    for k, o in zip(keras.weights, ours.weights):  # non-trivial scale and offset, the same in both
        k.assign(rng.normal(size=k.shape).astype(np.float32))
        o.assign(k)
    want, want_g = _grads(lambda: keras(x), x, *keras.weights)
    got, got_g = _grads(lambda: ours(x), x, *ours.weights)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    for g, w in zip(got_g, want_g):  # dx, dγ, dβ
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-4)


def test_layer_norm_keeps_keras_variables_and_falls_back_for_other_axes():
    ours, keras = LayerNorm(epsilon=1e-3, name="n"), tf.keras.layers.LayerNormalization(epsilon=1e-3, name="n")
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 4, 5)), tf.float32)
    ours(x), keras(x)
    assert [w.name for w in ours.weights] == [w.name for w in keras.weights]  # checkpoints interchangeable
    # axis=1 (not the last axis) runs Keras' own call: same value
    a, b = LayerNorm(axis=1, epsilon=1e-3), tf.keras.layers.LayerNormalization(axis=1, epsilon=1e-3)
    np.testing.assert_allclose(a(x).numpy(), b(x).numpy(), rtol=1e-6, atol=1e-6)


def test_layer_norm_by_hand_on_one_row():
    # x = [1, 2, 3, 6]: mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5
    x = tf.constant([[1.0, 2.0, 3.0, 6.0]])
    got = layer_norm(x, tf.constant([1.0, 2.0, 1.0, 1.0]), tf.constant([0.0, 0.0, 0.5, 0.0]), 0.0).numpy()
    s = np.sqrt(3.5)
    np.testing.assert_allclose(got, [[-2 / s, 2 * -1 / s, 0.5, 3 / s]], rtol=1e-6)


def test_gelu_value_and_gradient_equal_tf_nn_gelu():
    x = tf.Variable(np.concatenate([np.linspace(-8, 8, 161), np.random.default_rng(1).normal(size=200) * 3])
                    .astype(np.float32))
    want, (want_g,) = _grads(lambda: tf.nn.gelu(x, approximate=False), x)
    got, (got_g,) = _grads(lambda: gelu(x), x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_g.numpy(), want_g.numpy(), rtol=1e-5, atol=1e-6)
    # by hand: gelu(0) = 0, gelu'(0) = ½; gelu(1) = Φ(1) = 0.841345
    np.testing.assert_allclose(gelu(tf.constant([0.0, 1.0])).numpy(), [0.0, 0.8413447], rtol=1e-6)


def test_gelu_as_a_dense_activation_keeps_the_layer_weights():
    layer = tf.keras.layers.Dense(4, activation=gelu)
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 5)), tf.float32)
    out = layer(x)
    np.testing.assert_allclose(out.numpy(), tf.nn.gelu(x @ layer.kernel + layer.bias).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_stateless_dropout_is_tf_stateless_dropout_bit_for_bit(rate):
    x = tf.Variable(np.random.default_rng(3).normal(size=(64, 7, 16)).astype(np.float32))
    seed = tf.constant([11, 4], tf.int64)
    want, (want_g,) = _grads(lambda: tf.nn.experimental.stateless_dropout(x, rate, seed=seed), x)
    got, (got_g,) = _grads(lambda: stateless_dropout(x, rate, seed), x)
    assert got.numpy().tobytes() == want.numpy().tobytes()
    assert got_g.numpy().tobytes() == want_g.numpy().tobytes()
    dropped = got.numpy() == 0
    assert abs(dropped.mean() - rate) < 0.02  # the rate is honoured
    other = stateless_dropout(x, rate, tf.constant([11, 5], tf.int64)).numpy() == 0
    assert (other != dropped).any()  # another seed, another mask


def test_stateless_dropout_inside_a_function_and_rate_checks():
    x = tf.ones([8, 3])
    f = tf.function(lambda x, s: stateless_dropout(x, 0.25, s),
                    input_signature=[tf.TensorSpec([None, 3]), tf.TensorSpec([2], tf.int64)])
    np.testing.assert_array_equal(f(x, tf.constant([1, 2], tf.int64)).numpy(),
                                  tf.nn.experimental.stateless_dropout(x, 0.25, seed=[1, 2]).numpy())
    assert stateless_dropout(x, 0.0, tf.constant([1, 2], tf.int64)) is x
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got 1.0"):
        stateless_dropout(x, 1.0, tf.constant([1, 2], tf.int64))
