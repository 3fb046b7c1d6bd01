"""The optimizers ``TrainConfig.optimizer`` names, and sparse ("lazy") updates of embedding tables.

tf-keras' Adam applies a sparse gradient (``tf.IndexedSlices``, what an embedding lookup
produces) by decaying BOTH moment slots of EVERY row of the table and then updating every row of
the variable: one step costs O(table size), whatever the batch touched (371 ms per step on a 1M-row
64-d table, issue #17). ``LazyAdam`` updates only the rows present in the gradient (as TF Addons'
LazyAdam, Keras-RS, TorchRec's row-wise fused optimizers):

    m_r ← β₁ m_r + (1 − β₁) g_r          v_r ← β₂ v_r + (1 − β₂) g_r²        (touched rows r only)
    w_r ← w_r − α_t · m_r / (√v_r + ε),   α_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)

so its cost is O(rows touched). A row's moments do not decay in the steps that do not touch it,
which is the one difference from dense Adam: a row touched at every step follows dense Adam
exactly, a row never touched keeps its value, moments and weights bit for bit. Dense gradients
(every non-embedding weight) take the unchanged Adam update. The slots are Adam's (same names), so
a checkpoint written by one loads into the other. tf-keras' Adagrad already updates only the
touched rows (its accumulator is scatter-added), so it needs no lazy variant: with
``sparse_updates`` both optimizers cost O(rows touched) per table.

``make_optimizer(name, learning_rate, sparse_updates)`` is the one place training code builds an
optimizer (``towers.train`` and its CLUE pretraining).
"""
from __future__ import annotations

from towers.tf_env import tf

OPTIMIZERS = ("adam", "adagrad")


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam whose sparse-gradient update touches only the gradient's rows (module docstring).

    Same constructor as ``tf.keras.optimizers.Adam`` (tf-keras); ``amsgrad`` is not supported for
    sparse gradients (ValueError at construction), nor ``adaptive_epsilon``.
    """

    def __init__(self, learning_rate=0.001, *args, **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("LazyAdam does not support amsgrad=True (its v̂ slot would need a dense max over "
                             "the table every step); use tf.keras.optimizers.Adam for amsgrad")
        kwargs.setdefault("name", "LazyAdam")
        super().__init__(learning_rate, *args, **kwargs)
        if getattr(self, "adaptive_epsilon", False):
            raise ValueError("LazyAdam does not support adaptive_epsilon; use tf.keras.optimizers.Adam")

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, local_step)) / (1 - tf.pow(beta_1, local_step))
        key = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[key], self._velocities[key]
        # Optimizer.apply_gradients has already summed duplicate indices (_deduplicate_sparse_grad)
        rows, values = gradient.indices, tf.cast(gradient.values, dtype)
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        # rows are distinct, so gather − step + scatter_update is scatter_sub bit for bit, and costs a
        # third of it on large tables (TF's CPU scatter_sub: 7.5 ms for 19k rows of a 1M x 64 table,
        # gather + scatter_update: 2.3 ms; docs/notes/catstep.md)
        step = alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        variable.scatter_update(tf.IndexedSlices(tf.gather(variable, rows) - step, rows))


def make_optimizer(name: str, learning_rate: float, sparse_updates: bool = False) -> tf.keras.optimizers.Optimizer:
    """The tf-keras optimizer for ``TrainConfig.optimizer``: "adam" (``LazyAdam`` with
    ``sparse_updates``) or "adagrad" (sparse updates of tables either way)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    if name == "adam":
        return LazyAdam(learning_rate) if sparse_updates else tf.keras.optimizers.Adam(learning_rate)
    return tf.keras.optimizers.Adagrad(learning_rate)
