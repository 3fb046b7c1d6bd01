"""Query tower: user id + user features + a bag of history items → MLP → L2-normalised [B, D].

The history encoder reads the item-id table of the item tower (the same ``IdEmbedding``
instance), so "user watched X" and "candidate is X" live in one space. It is a separate layer
with the signature (history, history_timestamps, timestamp) → [B, d] so a sequence encoder
(e.g. a Transformer using the timestamps) can replace the bag without touching the rest.
"""
from __future__ import annotations

import math

from towers.config import TowerConfig
from towers.features import FeatureEmbeddings, IdEmbedding
from towers.head import TowerHead
from towers.inputs import check_user_feature_names
from towers.tf_env import tf
from towers.vocab import Vocabularies


def keep_most_recent(history: tf.Tensor, history_timestamps: tf.Tensor, max_len: int):
    """Cut right-padded [B, L] histories (oldest → newest) to their last ``max_len`` entries.

    Returns (history, history_timestamps), each [B, min(L, max_len)], still oldest → newest and
    right-padded. A row's length is the position of its last non-"" entry + 1.
    """
    width = tf.shape(history)[1]
    positions = tf.range(1, width + 1)[tf.newaxis, :]
    lengths = tf.reduce_max(tf.where(history != "", positions, tf.zeros_like(positions)), axis=1)
    lengths = tf.cast(tf.maximum(lengths, 0), tf.int64)  # reduce_max over L = 0 columns is INT_MIN
    kept = tf.minimum(lengths, max_len)
    newest_first = tf.reverse_sequence(history, lengths, seq_axis=1, batch_axis=0)[:, :max_len]
    ts_newest_first = tf.reverse_sequence(history_timestamps, lengths, seq_axis=1, batch_axis=0)[:, :max_len]
    return (tf.reverse_sequence(newest_first, kept, seq_axis=1, batch_axis=0),
            tf.reverse_sequence(ts_newest_first, kept, seq_axis=1, batch_axis=0))


class HistoryBag(tf.keras.layers.Layer):
    """history str [B, L] → [B, d_id + 1]: masked mean of the items' id embeddings (padding "" is
    masked; unknown ids use the OOV rows) and log1p(count) / log1p(max_history).

    Timestamps are accepted for interface parity with time-aware encoders and not used.
    """

    def __init__(self, item_id_embedding: IdEmbedding, max_history: int, **kwargs):
        super().__init__(**kwargs)
        self.item_id_embedding = item_id_embedding
        self.max_history = max_history
        self.output_dim = item_id_embedding.dim + 1

    def call(self, history, history_timestamps, timestamp, training=False):
        history, _ = keep_most_recent(history, history_timestamps, self.max_history)
        rows = self.item_id_embedding.lookup(history)
        bag = self.item_id_embedding.mean_of_rows(rows)
        count = tf.reduce_sum(tf.cast(rows != 0, tf.float32), axis=1, keepdims=True)
        return tf.concat([bag, tf.math.log1p(count) / math.log1p(self.max_history)], axis=-1)


class QueryTower(tf.keras.Model):
    """Raw query features (dict, see ``towers.inputs``) → tf.float32 [B, output_dim], unit norm.

    ``feature_names`` = ("user_id", *user feature names, "history"): the columns of the
    optional ``feature_mask`` [B, F]. Inputs also need history_timestamps and timestamp.
    """

    def __init__(self, item_id_embedding: IdEmbedding, vocab: Vocabularies, cfg: TowerConfig,
                 history_encoder: tf.keras.layers.Layer | None = None, name: str = "query_tower", **kwargs):
        super().__init__(name=name, **kwargs)
        check_user_feature_names(vocab.user_specs)
        self.cfg = cfg
        v = vocab.user_id
        self.user_id_embedding = IdEmbedding(v.tokens, v.oov_buckets, v.hash_bins, cfg.id_embedding_dim,
                                             name="user_id")
        self.features = FeatureEmbeddings(vocab.user_specs, vocab.user_features, cfg, name="user_features")
        # any layer (history [B, L], history_timestamps [B, L], timestamp [B]) → [B, d] fits here
        if history_encoder is None:
            history_encoder = HistoryBag(item_id_embedding, cfg.max_history, name="history")
        self.history_encoder = history_encoder
        self.head = TowerHead(cfg, name="head")
        self.feature_specs = tuple(vocab.user_specs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("user_id",) + tuple(s.name for s in self.feature_specs) + ("history",)

    @property
    def raw_input_names(self) -> tuple[str, ...]:
        return self.feature_names + ("history_timestamps", "timestamp")

    def embed_features(self, inputs: dict, training=False) -> list:
        """One vector per entry of ``feature_names``."""
        missing = [n for n in self.raw_input_names if n not in inputs]
        if missing:
            raise ValueError(f"query tower inputs are missing {missing}; got {sorted(inputs)}")
        history = self.history_encoder(inputs["history"], tf.cast(inputs["history_timestamps"], tf.int64),
                                       tf.cast(inputs["timestamp"], tf.int64), training=training)
        return [self.user_id_embedding(inputs["user_id"])] + self.features(inputs) + [history]

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def call(self, inputs: dict, training=False, feature_mask=None) -> tf.Tensor:
        return self.head(self.embed_features(inputs, training=training), feature_mask=feature_mask,
                         training=training)
