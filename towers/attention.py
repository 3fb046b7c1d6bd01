"""Multi-head self-attention of the sequence encoder, with plain matmuls instead of Keras' einsums.

``SelfAttention`` IS Keras' ``MultiHeadAttention`` (through ``towers.dropout.StatelessDropoutAttention``:
same constructor, same variables and variable names, so checkpoints and SavedModels of either load into
the other) and computes the same function, for the case the encoder uses: rank-3 inputs
query [B, T, d] and value/key [B, S, d], attention over axis 1, an optional boolean mask [B, T, S]:

    q = (x_q W_q + b_q) / √key_dim,  k = x_k W_k + b_k,  v = x_v W_v + b_v      (per head)
    p = softmax(q kᵀ + (1 − mask) · (−10⁹)),   p = dropout(p)                    (Keras' masked softmax)
    out = concat_heads(p v) W_o + b_o

Keras runs each projection as an ``EinsumDense`` ("abc,cde->abde") and the two attention products as
transposing einsums ("aecd,abcd->acbe", "acbe,aecd->abcd"); on CPU those einsums and their gradients
transpose [B, L, heads, dim] operands back and forth. Here each projection is one [B·T, d] × [d, heads·dim]
matmul, the heads are moved to a batch axis once, the two products are batched matmuls, and the output
projection is one [B·T, heads·dim] × [heads·dim, d] matmul. The attention-probability dropout draws the
same [B, heads, T, S] stateless mask as Keras' path (same shape, same seed and call count), so training
outputs match too. The first call (which builds the variables) and anything else (ragged inputs, other
ranks, attention axes or output shapes, returning the scores) run Keras' own ``call``.
"""
from __future__ import annotations

import math

from towers.dropout import StatelessDropoutAttention
from towers.tf_env import tf

_MASKED = -1e9  # what Keras' Softmax adds at masked positions (float32)


class SelfAttention(StatelessDropoutAttention):
    """``tf.keras.layers.MultiHeadAttention`` (stateless attention dropout) computed with matmuls
    (module docstring). Same arguments as Keras' layer."""

    def _fast_path(self, query, value, key, return_attention_scores) -> bool:
        tensors = [t for t in (query, value, key) if t is not None]
        return (not return_attention_scores and self._output_shape is None
                and not any(isinstance(t, tf.RaggedTensor) for t in tensors)
                and all(t.shape.rank == 3 for t in tensors)
                and tuple(self._attention_axes) == (1,))

    @staticmethod
    def _project(x, dense, width: int, scale: float | None = None):
        """[B, T, d] → [B, heads, T, dim]: ``dense`` (an EinsumDense "abc,cde->abde") as one matmul."""
        heads, dim = dense.kernel.shape[1], dense.kernel.shape[2]
        shape = tf.shape(x)
        y = tf.matmul(tf.reshape(x, [-1, width]), tf.reshape(dense.kernel, [width, heads * dim]))
        if dense.bias is not None:
            y += tf.reshape(dense.bias, [heads * dim])
        if scale is not None:
            y *= scale
        return tf.transpose(tf.reshape(y, [shape[0], shape[1], heads, dim]), [0, 2, 1, 3])

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False):
        if not self._built_from_signature:
            self._build_from_signature(query=query, value=value, key=key)
        if key is None:
            key = value
        # Keras' path on the first call: it builds the projections (variables named as Keras names them)
        if not self._output_dense.built or not self._fast_path(query, value, key, return_attention_scores):
            return super().call(query, value, key=key, attention_mask=attention_mask,
                                return_attention_scores=return_attention_scores, training=training,
                                use_causal_mask=use_causal_mask)
        attention_mask = self._compute_attention_mask(query, value, key=key, attention_mask=attention_mask,
                                                      use_causal_mask=use_causal_mask)
        q = self._project(query, self._query_dense, query.shape[-1], 1.0 / math.sqrt(float(self._key_dim)))
        k = self._project(key, self._key_dense, key.shape[-1])
        v = self._project(value, self._value_dense, value.shape[-1])
        scores = tf.matmul(q, k, transpose_b=True)                               # [B, heads, T, S]
        if attention_mask is not None:
            scores += (1.0 - tf.cast(attention_mask, scores.dtype))[:, tf.newaxis] * _MASKED
        probabilities = self._dropout_layer(tf.nn.softmax(scores, axis=-1), training=training)
        context = tf.transpose(tf.matmul(probabilities, v), [0, 2, 1, 3])       # [B, T, heads, dim]
        shape = tf.shape(query)
        kernel = self._output_dense.kernel                                       # [heads, dim, d_out]
        out = tf.matmul(tf.reshape(context, [-1, kernel.shape[0] * kernel.shape[1]]),
                        tf.reshape(kernel, [kernel.shape[0] * kernel.shape[1], kernel.shape[2]]))
        if self._output_dense.bias is not None:
            out += self._output_dense.bias
        return tf.reshape(out, [shape[0], shape[1], kernel.shape[2]])
