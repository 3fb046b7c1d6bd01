"""The top of both towers: per-feature vectors → (optional per-example mask) → MLP → L2 norm."""
from __future__ import annotations

from typing import Sequence

from towers.config import TowerConfig
from towers.dropout import StatelessDropout
from towers.tf_env import tf


class TowerHead(tf.keras.layers.Layer):
    """list of F tensors [B, d_i] → tf.float32 [B, output_dim], unit L2 norm.

    ``feature_mask`` (optional, float/bool [B, F]) scales feature i of example b by
    ``feature_mask[b, i]`` before concatenation: 0 drops that feature for that example (the hook
    for feature-dropout / masking SSL regularisers). Hidden layers use ``cfg.activation`` and
    ``cfg.dropout``; the last layer is linear.
    """

    def __init__(self, cfg: TowerConfig, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [tf.keras.layers.Dense(units, activation=cfg.activation, name=f"hidden_{i}")
                       for i, units in enumerate(cfg.hidden_units)]
        self.dropouts = [StatelessDropout(cfg.dropout, name=f"dropout_{i}") if cfg.dropout > 0 else None
                         for i in range(len(cfg.hidden_units))]
        self.projection = tf.keras.layers.Dense(cfg.output_dim, name="projection")

    def call(self, parts: Sequence[tf.Tensor], feature_mask=None, training=False) -> tf.Tensor:
        parts = [tf.cast(p, tf.float32) for p in parts]
        if feature_mask is not None:
            mask = tf.cast(feature_mask, tf.float32)
            if mask.shape.rank != 2 or (mask.shape[1] is not None and mask.shape[1] != len(parts)):
                raise ValueError(
                    f"feature_mask must be [batch, {len(parts)}] (one column per feature), got shape {mask.shape}"
                )
            parts = [p * mask[:, i:i + 1] for i, p in enumerate(parts)]
        x = tf.concat(parts, axis=-1)
        for dense, dropout in zip(self.hidden, self.dropouts):
            x = dense(x)
            if dropout is not None:
                x = dropout(x, training=training)
        return tf.math.l2_normalize(self.projection(x), axis=-1)
