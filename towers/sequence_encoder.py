"""A Transformer over the user's history: (history, history_timestamps, timestamp) → [B, width].

The user encoder of CLUE (arXiv 2111.11294) as a query-tower history encoder:

  1. keep the most recent ``max_length`` history items (oldest → newest, right-padded with "");
  2. each item = its row of the item tower's id table (the SAME ``IdEmbedding`` instance), plus,
     with ``item_features``, the item tower's feature embeddings of that item (shared tables;
     features looked up from the catalogue the encoder was built with), projected to ``width``
     (``project_items``: once per distinct item of the batch, then gathered to the positions);
  3. + a learned position embedding, counted from the NEWEST item (position 0 = most recent), so
     a short history and the tail of a long one line up;
  4. + a time-gap embedding: bucket ``min(floor(log2(1 + g)), time_buckets - 1)`` of the gap g in
     seconds between the event and the query time (``timestamp``; negative gaps count as 0);
  5. ``num_layers`` pre-layer-norm blocks (multi-head self-attention with a padding mask,
     ``towers.attention.SelfAttention``, then a
     GELU feed-forward layer, each with a residual connection), a final layer norm; every dropout
     (input, attention probabilities, residual branches) is ``towers.dropout.StatelessDropout``;
     layer norms, GELU and dropout use ``towers.kernels`` (closed-form gradients, same values);
  6. pooling over the valid positions: "mean" (masked mean) or "last" (the most recent item).

Padding ("" entries) never contributes: it is masked in attention and pooling, so appending
padding columns does not change the output. An empty history gives a zero vector. The encoder
reads only what it is given: the strictly-before-the-target history is built by
``towers.inputs`` (training) and by the caller at serving time.
"""
from __future__ import annotations

import numpy as np

from towers.config import SequenceConfig
from towers.attention import SelfAttention
from towers.dropout import StatelessDropout
from towers.features import FeatureEmbeddings, IdEmbedding, masked_mean
from towers.kernels import LayerNorm, gelu
from towers.tf_env import tf


def keep_most_recent(history: tf.Tensor, history_timestamps: tf.Tensor, max_len: int):
    """Cut right-padded [B, L] histories (oldest → newest) to their last ``max_len`` entries.

    Returns (history, history_timestamps), each [B, min(L, max_len)], still oldest → newest and
    right-padded. A row's length is the position of its last non-"" entry + 1. Row b reads
    columns start_b .. start_b + min(L, max_len) − 1 with start_b = length_b − min(length_b, max_len)
    (one gather: only the kept strings are copied).
    """
    width = tf.shape(history, out_type=tf.int64)[1]
    positions = tf.range(1, width + 1, dtype=tf.int64)[tf.newaxis, :]
    lengths = tf.reduce_max(tf.where(history != "", positions, tf.zeros_like(positions)), axis=1)
    lengths = tf.maximum(lengths, 0)  # reduce_max over L = 0 columns is INT_MIN
    start = lengths - tf.minimum(lengths, max_len)
    columns = start[:, tf.newaxis] + tf.range(tf.minimum(width, max_len), dtype=tf.int64)[tf.newaxis, :]
    kept, kept_ts = tf.gather(history, columns, batch_dims=1), tf.gather(history_timestamps, columns, batch_dims=1)
    if history.shape.rank == 2 and history.shape[1] is not None:  # a static width stays static
        kept.set_shape([history.shape[0], min(history.shape[1], max_len)])
        kept_ts.set_shape([history.shape[0], min(history.shape[1], max_len)])
    return kept, kept_ts


def time_gap_buckets(history_timestamps: tf.Tensor, timestamp: tf.Tensor, num_buckets: int) -> tf.Tensor:
    """int64 [B, L] event times and [B] query times (seconds) → int64 [B, L] buckets in
    [0, num_buckets): ``min(floor(log2(1 + max(timestamp - t, 0))), num_buckets - 1)``."""
    gap = tf.maximum(tf.cast(timestamp, tf.int64)[:, tf.newaxis] - tf.cast(history_timestamps, tf.int64), 0)
    bucket = tf.floor(tf.math.log1p(tf.cast(gap, tf.float64)) / np.log(2.0))
    return tf.minimum(tf.cast(bucket, tf.int64), num_buckets - 1)


class _Block(tf.keras.layers.Layer):
    """Pre-layer-norm Transformer block: x + MHA(LN(x)), then x + FFN(LN(x)); [B, L, d] → [B, L, d]."""

    def __init__(self, cfg: SequenceConfig, **kwargs):
        super().__init__(**kwargs)
        self.norm_attention = LayerNorm(epsilon=1e-6, name="norm_attention")
        self.attention = SelfAttention(cfg.num_heads, cfg.width // cfg.num_heads, dropout=cfg.dropout,
                                       name="attention")
        self.norm_ff = LayerNorm(epsilon=1e-6, name="norm_ff")
        self.ff_in = tf.keras.layers.Dense(cfg.ff_dim, activation=gelu, name="ff_in")
        self.ff_out = tf.keras.layers.Dense(cfg.width, name="ff_out")
        self.dropout = StatelessDropout(cfg.dropout, name="dropout")

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def call(self, x, attention_mask, training=False):
        h = self.norm_attention(x)
        x = x + self.dropout(self.attention(h, h, attention_mask=attention_mask, training=training),
                             training=training)
        h = self.norm_ff(x)
        return x + self.dropout(self.ff_out(self.ff_in(h)), training=training)


class SequenceEncoder(tf.keras.layers.Layer):
    """history str [B, L], history_timestamps int64 [B, L], timestamp int64 [B] → float32 [B, width].

    item_id_embedding   the item tower's id table (shared)
    cfg                 ``towers.config.SequenceConfig``
    max_length          the most recent items read (``TowerConfig.max_history``)
    item_features       the item tower's ``FeatureEmbeddings`` (shared) to add each history item's
                        features; needs ``catalogue``
    catalogue           raw item features of the catalogue, ``towers.inputs.item_features_batch``
                        dict ("item_id" + each feature); history ids not in it get no feature vector
    """

    def __init__(self, item_id_embedding: IdEmbedding, cfg: SequenceConfig, max_length: int,
                 item_features: FeatureEmbeddings | None = None, catalogue: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if max_length <= 0:
            raise ValueError(f"max_length must be > 0, got {max_length}")
        if (item_features is None) != (catalogue is None):
            raise ValueError("item_features and catalogue go together: pass both (history items carry their "
                             "features) or neither (id embeddings only)")
        self.cfg = cfg
        self.max_length = int(max_length)
        self.item_id_embedding = item_id_embedding
        self.item_features = item_features
        self.output_dim = cfg.width
        if catalogue is not None:
            if "item_id" not in catalogue:
                raise ValueError(f"catalogue needs an 'item_id' column; got {sorted(catalogue)}")
            missing = [n for n in item_features.names if n not in catalogue]
            if missing:
                raise ValueError(f"catalogue lacks item feature(s) {missing}; build it with "
                                 "towers.inputs.item_features_batch(items, item_specs)")
            ids = np.asarray(catalogue["item_id"], dtype=object)
            # "" → 0 (padding), unknown → 1 (OOV), catalogue row r → r + 2
            self.catalogue_lookup = tf.keras.layers.StringLookup(vocabulary=list(ids), mask_token="",
                                                                 num_oov_indices=1, name="catalogue_lookup")
            # the catalogue's features encoded once (tokenised, looked up): a step gathers int rows
            # and runs only the embedding part (FeatureEmbeddings.embed), no string work per step
            # (int rows kept as int32: half the bytes; every vocabulary is far below 2^31 rows)
            encoded = item_features.encode({n: tf.constant(catalogue[n]) for n in item_features.names})
            self.catalogue = {n: tf.cast(t, tf.int32) if t.dtype == tf.int64 else t for n, t in encoded.items()}
            self.catalogue_span = int(self.catalogue_lookup.vocabulary_size())  # catalogue rows + 2
        self.item_projection = tf.keras.layers.Dense(cfg.width, name="item_projection")
        self.position_embedding = tf.keras.layers.Embedding(self.max_length, cfg.width, name="position")
        self.time_embedding = tf.keras.layers.Embedding(cfg.time_buckets, cfg.width, name="time_gap")
        self.input_dropout = StatelessDropout(cfg.dropout, name="input_dropout")
        self.blocks = [_Block(cfg, name=f"block_{i}") for i in range(cfg.num_layers)]
        self.final_norm = LayerNorm(epsilon=1e-6, name="final_norm")

    def _history_item_features(self, history: tf.Tensor) -> tf.Tensor:
        """str [B, L] → [B, L, Σ d_f], each position's item features (zeros for "" and items not in
        the catalogue); the per-position reference of ``project_items``."""
        index = tf.cast(self.catalogue_lookup(history), tf.int64)
        known = index >= 2
        unique, position = tf.unique(tf.reshape(tf.where(known, index - 2, 0), [-1]))
        encoded = {n: tf.gather(t, unique) for n, t in self.catalogue.items()}
        vectors = tf.concat([tf.cast(v, tf.float32) for v in self.item_features.embed(encoded)], axis=-1)
        out = tf.reshape(tf.gather(vectors, position), tf.concat([tf.shape(history), [-1]], axis=0))
        return out * tf.cast(known, tf.float32)[..., tf.newaxis]

    def project_items(self, history: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """str [B, L] history and its int64 id-table ``rows`` → [B, L, width]: each position's
        id vector (+ item features) through ``item_projection``.

        An item's vector depends on the item alone, so it is computed once per DISTINCT item of
        the batch (a (id row, catalogue row) pair) and gathered to the positions: the projection,
        the feature encoders and their gradients run on U ≤ min(B·L, catalogue) rows instead of
        B·L, and the id table's gradient has one row per distinct item. Each position's value is
        the per-position computation's (``_history_item_features`` is that reference).
        """
        flat_rows = tf.reshape(rows, [-1])
        if self.item_features is None:
            unique_rows, position = tf.unique(flat_rows)
            vectors = self.item_id_embedding.embed_rows(unique_rows)
        else:
            span = self.catalogue_span
            index = tf.reshape(tf.cast(self.catalogue_lookup(history), tf.int64), [-1])
            unique_keys, position = tf.unique(flat_rows * span + index)
            unique_rows, unique_index = unique_keys // span, unique_keys % span
            known = unique_index >= 2  # "" → 0, not in the catalogue → 1
            encoded = {n: tf.gather(t, tf.where(known, unique_index - 2, 0)) for n, t in self.catalogue.items()}
            features = tf.concat([tf.cast(v, tf.float32) for v in self.item_features.embed(encoded)], axis=-1)
            vectors = tf.concat([self.item_id_embedding.embed_rows(unique_rows),
                                 features * tf.cast(known, tf.float32)[:, tf.newaxis]], axis=-1)
        projected = self.item_projection(vectors)
        return tf.reshape(tf.gather(projected, position), tf.concat([tf.shape(history), [-1]], axis=0))

    @tf.autograph.experimental.do_not_convert
    def call(self, history, history_timestamps, timestamp, training=False):
        history, history_timestamps = keep_most_recent(history, tf.cast(history_timestamps, tf.int64),
                                                       self.max_length)
        if history.shape[1] is None or history.shape[1] == 0:
            # one extra padding column keeps every shape non-empty (L = 0 inputs); padding is masked
            # everywhere, so a known non-zero width (training batches) skips it: 10 positions, not 11
            history = tf.pad(history, [[0, 0], [0, 1]], constant_values="")
            history_timestamps = tf.pad(history_timestamps, [[0, 0], [0, 1]])
        rows = self.item_id_embedding.lookup(history)
        valid = rows != 0
        x = self.project_items(history, rows)

        cols = tf.range(tf.shape(history, out_type=tf.int64)[1], dtype=tf.int64)[tf.newaxis, :]
        newest = tf.reduce_max(tf.where(valid, cols, -1), axis=1, keepdims=True)           # [B, 1], -1 if empty
        from_newest = tf.clip_by_value(newest - cols, 0, self.max_length - 1)              # [B, L]
        x += self.position_embedding(from_newest)
        x += self.time_embedding(time_gap_buckets(history_timestamps, timestamp, self.cfg.time_buckets))
        mask = tf.cast(valid, x.dtype)[..., tf.newaxis]
        x = self.input_dropout(x, training=training) * mask

        attention_mask = tf.logical_and(valid[:, :, tf.newaxis], valid[:, tf.newaxis, :])
        for block in self.blocks:
            x = block(x, attention_mask, training=training) * mask
        x = self.final_norm(x) * mask
        if self.cfg.pooling == "mean":
            return masked_mean(x, valid)
        pooled = tf.gather(x, tf.maximum(newest[:, 0], 0), batch_dims=1)
        return pooled * tf.cast(newest >= 0, x.dtype)
