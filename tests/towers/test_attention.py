import numpy as np
import pytest

from towers.attention import SelfAttention
from towers.dropout import StatelessDropoutAttention
from towers.tf_env import tf


def _pair(heads=2, key_dim=8, dropout=0.0, seed=0, **kwargs):
    """A SelfAttention and Keras' layer (stateless dropout) with the same weights and dropout seed."""
    fast = SelfAttention(heads, key_dim, dropout=dropout, **kwargs)
    reference = StatelessDropoutAttention(heads, key_dim, dropout=dropout, **kwargs)
    return fast, reference


def _inputs(batch=6, length=7, width=16, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, length, width)), tf.float32)
    valid = rng.random((batch, length)) < 0.7
    valid[:, 0] = True
    valid[-1] = False  # an all-padding row: every score masked (Keras then attends uniformly)
    mask = tf.constant(valid[:, :, None] & valid[:, None, :])
    return x, mask


def _built(fast, reference, x, mask):
    reference(x, x, attention_mask=mask)
    fast(x, x, attention_mask=mask)
    rng = np.random.default_rng(1)
    for f, r in zip(fast.weights, reference.weights):  # random weights (biases too), the same in both
        f.assign(0.3 * rng.normal(size=f.shape).astype(np.float32) if f.dtype.is_floating else r)
        r.assign(f)
    return fast, reference


def test_same_variables_as_keras_attention_so_checkpoints_are_interchangeable():
    x, mask = _inputs()
    fast, reference = _built(*_pair(), x, mask)
    names = lambda layer: [w.name.split("/", 1)[1] for w in layer.weights]  # noqa: E731 (layer name differs)
    assert names(fast) == names(reference) and len(fast.trainable_weights) == 8
    assert [w.shape for w in fast.weights] == [w.shape for w in reference.weights]


@pytest.mark.parametrize("heads,key_dim,width", [(2, 16, 32), (1, 8, 16), (4, 4, 12)])
def test_equals_keras_attention_at_inference_with_a_padding_mask(heads, key_dim, width):
    x, mask = _inputs(width=width, seed=heads)
    fast, reference = _built(*_pair(heads, key_dim), x, mask)
    expected = reference(x, x, attention_mask=mask).numpy()
    np.testing.assert_allclose(fast(x, x, attention_mask=mask).numpy(), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast(x, x).numpy(), reference(x, x).numpy(), atol=1e-5, rtol=1e-5)  # no mask


def test_cross_attention_with_other_lengths_and_a_separate_key():
    rng = np.random.default_rng(3)
    q = tf.constant(rng.normal(size=(4, 5, 16)), tf.float32)
    v = tf.constant(rng.normal(size=(4, 9, 16)), tf.float32)
    k = tf.constant(rng.normal(size=(4, 9, 16)), tf.float32)
    mask = tf.constant(rng.random((4, 5, 9)) < 0.6)
    fast, reference = _pair(2, 8)
    reference(q, v, key=k, attention_mask=mask)
    fast(q, v, key=k, attention_mask=mask)
    for f, r in zip(fast.weights, reference.weights):
        f.assign(0.3 * rng.normal(size=f.shape).astype(np.float32))
        r.assign(f)
    np.testing.assert_allclose(fast(q, v, key=k, attention_mask=mask).numpy(),
                               reference(q, v, key=k, attention_mask=mask).numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fast(q, v, key=k, use_causal_mask=True).numpy(),
                               reference(q, v, key=k, use_causal_mask=True).numpy(), atol=1e-5, rtol=1e-5)


def test_gradients_equal_keras_attention():
    x, mask = _inputs(seed=5)
    fast, reference = _built(*_pair(2, 8), x, mask)
    upstream = tf.constant(np.random.default_rng(9).normal(size=(6, 7, 16)), tf.float32)

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, x, attention_mask=mask) * upstream)
        return tape.gradient(loss, [x] + layer.trainable_weights)

    for g_fast, g_ref in zip(grads(fast), grads(reference)):
        np.testing.assert_allclose(g_fast.numpy(), g_ref.numpy(), atol=1e-5, rtol=1e-4)


def test_training_draws_the_same_dropout_mask_as_keras_attention():
    x, mask = _inputs(seed=7)
    fast, reference = _built(*_pair(2, 8, dropout=0.3), x, mask)
    fast._dropout_layer.seed = reference._dropout_layer.seed = 1234
    fast._dropout_layer.calls.assign(5)
    reference._dropout_layer.calls.assign(5)
    out = fast(x, x, attention_mask=mask, training=True).numpy()
    np.testing.assert_allclose(out, reference(x, x, attention_mask=mask, training=True).numpy(), atol=1e-5, rtol=1e-5)
    assert not np.allclose(out, fast(x, x, attention_mask=mask, training=False).numpy())  # dropout did apply


def test_in_a_tf_function_with_unknown_batch_and_length():
    x, mask = _inputs(seed=11)
    fast, reference = _built(*_pair(2, 8), x, mask)
    spec = [tf.TensorSpec([None, None, 16], tf.float32), tf.TensorSpec([None, None, None], tf.bool)]
    run = tf.function(lambda a, m: fast(a, a, attention_mask=m), input_signature=spec)
    np.testing.assert_allclose(run(x, mask).numpy(), reference(x, x, attention_mask=mask).numpy(), atol=1e-5,
                               rtol=1e-5)


def test_what_it_does_not_cover_falls_back_to_keras():
    x, mask = _inputs(seed=13)
    fast, reference = _built(*_pair(2, 8), x, mask)
    out, scores = fast(x, x, attention_mask=mask, return_attention_scores=True)
    ref_out, ref_scores = reference(x, x, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), atol=1e-6)


def test_after_the_first_call_the_graph_has_no_einsum():
    x, mask = _inputs(seed=17)
    fast, _ = _built(*_pair(2, 8), x, mask)
    graph = tf.function(lambda a: fast(a, a, attention_mask=mask, training=True)).get_concrete_function(x).graph
    types = {op.type for op in graph.get_operations()}
    assert "Einsum" not in types and "BatchMatMulV2" in types
