"""The sequence encoder's element-wise ops with hand-written gradients: layer norm, exact GELU and
dropout (issue #17, "where the time goes").

TensorFlow differentiates these ops op by op: Keras' ``LayerNormalization`` runs ``moments`` +
``batch_normalization`` and its gradient is ~15 element-wise passes over [B, L, d]; ``tf.nn.gelu``'s
gradient re-derives ``erfc``, ``exp`` and five multiplies; the gradient of
``tf.nn.experimental.stateless_dropout`` differentiates its ``where`` and its scale separately. Each
function here computes the same value with the same ops (forward bit for bit where stated) and
returns the closed-form gradient, which keeps what the forward already computed:

  layer_norm   y = (x − μ) · rsqrt(σ² + ε) · γ + β over the last axis
               dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)),  g = dy · γ;  dγ = Σ dy · x̂;  dβ = Σ dy
  gelu         y = x · Φ(x),  Φ(x) = ½ (1 + erf(x / √2))      dx = dy · (Φ(x) + x · φ(x))
  dropout      y = where(u ≥ rate, x / (1 − rate), 0)         dx = where(u ≥ rate, dy / (1 − rate), 0)

Forward + backward at the full model's shapes: ``python -m bench.bench_kernels`` (numbers in
docs/notes/trainfast.md, session 9). ``tests/towers/test_kernels.py`` checks each value and gradient
against the TensorFlow/Keras op it replaces.
"""
from __future__ import annotations

import math

from towers.tf_env import tf

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    """Layer normalisation over the last axis of ``x`` [..., d] with scale ``gamma`` [d] and offset
    ``beta`` [d] (module docstring); float32/float64."""

    @tf.custom_gradient
    def _ln(x, gamma, beta):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centred = x - mean
        rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True) + epsilon)
        normalised = centred * rstd

        def grad(dy):
            outer = tf.range(tf.rank(dy) - 1)
            g = dy * gamma
            dx = rstd * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                         - normalised * tf.reduce_mean(g * normalised, axis=-1, keepdims=True))
            return dx, tf.reduce_sum(dy * normalised, axis=outer), tf.reduce_sum(dy, axis=outer)

        return normalised * gamma + beta, grad

    return _ln(x, tf.cast(tf.convert_to_tensor(gamma), x.dtype), tf.cast(tf.convert_to_tensor(beta), x.dtype))


class LayerNorm(tf.keras.layers.LayerNormalization):
    """``tf.keras.layers.LayerNormalization`` (same constructor, variables, names and checkpoints)
    computed with ``layer_norm`` when it normalises the last axis with scale and centre; any other
    configuration runs Keras' own ``call``."""

    def call(self, inputs):
        if (self.axis == [len(inputs.shape) - 1] and self.scale and self.center
                and inputs.dtype in (tf.float32, tf.float64)):
            return layer_norm(inputs, self.gamma, self.beta, self.epsilon)
        return super().call(inputs)


@tf.custom_gradient
def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU ``x · Φ(x)`` (``tf.nn.gelu(x, approximate=False)`` to float rounding) with the
    closed-form gradient ``Φ(x) + x · φ(x)``. Usable as a Keras ``activation``."""
    cdf = 0.5 * (1.0 + tf.math.erf(x * _INV_SQRT2))

    def grad(dy):
        return dy * (cdf + x * (_INV_SQRT_2PI * tf.exp(-0.5 * tf.square(x))))

    return x * cdf, grad


def stateless_dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """``tf.nn.experimental.stateless_dropout(x, rate, seed)`` bit for bit (same uniform draws,
    same keep test ``u ≥ rate``, same ``x · 1/(1 − rate)``), with a one-pass gradient.
    ``rate`` a Python float in [0, 1); ``seed`` int [2]."""
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    if rate == 0.0:
        return x
    x = tf.convert_to_tensor(x)
    keep = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype) >= rate
    scale = tf.constant(1.0 / (1.0 - rate), dtype=x.dtype)
    zero = tf.zeros([], dtype=x.dtype)

    @tf.custom_gradient
    def _drop(x):
        def grad(dy):
            return tf.where(keep, dy * scale, zero)

        return tf.where(keep, x * scale, zero), grad

    return _drop(x)
