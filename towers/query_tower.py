"""Query tower: the user encoder → MLP → L2-normalised [B, D].

``TowerConfig.user_encoder`` picks what it reads (the head's parts = ``feature_names``):

  ids        user id only                                       ("user_id",)
  features   user id + user features + a bag of history items   ("user_id", *user features, "history")
  sequence   user features + a Transformer over the history      (*user features, "history")
             (``towers.sequence_encoder.SequenceEncoder``)

History encoders read the item-id table of the item tower (the same ``IdEmbedding`` instance),
so "user watched X" and "candidate is X" live in one space. Any layer with the signature
(history [B, L], history_timestamps [B, L], timestamp [B]) → [B, d] fits as ``history_encoder``.
Whatever the encoder, the tower takes the full contract input dict (unused inputs are ignored),
so exported query towers of every variant have the same signature.
"""
from __future__ import annotations

import math

from towers.config import TowerConfig
from towers.features import FeatureEmbeddings, IdEmbedding
from towers.head import TowerHead
from towers.inputs import check_user_feature_names
from towers.sequence_encoder import SequenceEncoder, keep_most_recent
from towers.tf_env import tf
from towers.vocab import Vocabularies

__all__ = ["HistoryBag", "QueryTower", "keep_most_recent"]


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

    ``feature_names`` (see module docstring) are the columns of the optional ``feature_mask``
    [B, F]; ``raw_input_names`` are the inputs it requires (always the full contract list).

    item_features / catalogue   for ``user_encoder: sequence`` with ``sequence.item_features``:
                                the item tower's ``FeatureEmbeddings`` (shared) and the raw item
                                features of the catalogue (``towers.inputs.item_features_batch``)
    """

    def __init__(self, item_id_embedding: IdEmbedding, vocab: Vocabularies, cfg: TowerConfig,
                 history_encoder: tf.keras.layers.Layer | None = None, item_features: FeatureEmbeddings | None = None,
                 catalogue: dict | None = None, name: str = "query_tower", **kwargs):
        super().__init__(name=name, **kwargs)
        check_user_feature_names(vocab.user_specs)
        self.cfg = cfg
        self.user_encoder = cfg.user_encoder
        self.feature_specs = tuple(vocab.user_specs)
        v = vocab.user_id
        self.user_id_embedding = None
        if self.user_encoder in ("ids", "features"):
            self.user_id_embedding = IdEmbedding(v.tokens, v.oov_buckets, v.hash_bins, cfg.id_embedding_dim,
                                                 name="user_id")
        self.features = None
        if self.user_encoder in ("features", "sequence"):
            self.features = FeatureEmbeddings(vocab.user_specs, vocab.user_features, cfg, name="user_features")
        if history_encoder is None and self.user_encoder == "features":
            history_encoder = HistoryBag(item_id_embedding, cfg.max_history, name="history")
        elif history_encoder is None and self.user_encoder == "sequence":
            use_features = cfg.sequence.item_features and item_features is not None and catalogue is not None
            history_encoder = SequenceEncoder(item_id_embedding, cfg.sequence,
                                              min(cfg.sequence.max_length, cfg.max_history),
                                              item_features=item_features if use_features else None,
                                              catalogue=catalogue if use_features else None, name="history")
        elif history_encoder is not None and self.user_encoder == "ids":
            raise ValueError("a history_encoder was given but tower.user_encoder is 'ids' (user id only); "
                             "set user_encoder to 'features' or 'sequence'")
        self.history_encoder = history_encoder
        self.head = TowerHead(cfg, name="head")

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = tuple(s.name for s in self.feature_specs)
        if self.user_encoder == "ids":
            return ("user_id",)
        if self.user_encoder == "sequence":
            return names + ("history",)
        return ("user_id",) + names + ("history",)

    @property
    def raw_input_names(self) -> tuple[str, ...]:
        return ("user_id",) + tuple(s.name for s in self.feature_specs) + (
            "history", "history_timestamps", "timestamp")

    @property
    def history_window(self) -> int | None:
        """How many of the most recent history entries the tower reads (older ones never change its
        output), or None when that is not known (a custom history encoder, or none)."""
        if isinstance(self.history_encoder, SequenceEncoder):
            return min(self.history_encoder.max_length, self.cfg.max_history)
        if isinstance(self.history_encoder, HistoryBag):
            return self.cfg.max_history
        return None

    def encode_history(self, inputs: dict, training=False) -> tf.Tensor:
        """The history encoder's output [B, d] (what CLUE trains); needs a history encoder."""
        if self.history_encoder is None:
            raise ValueError("this query tower has no history encoder (tower.user_encoder is 'ids')")
        return self.history_encoder(inputs["history"], tf.cast(inputs["history_timestamps"], tf.int64),
                                    tf.cast(inputs["timestamp"], tf.int64), training=training)

    def embed_features(self, inputs: dict, training=False, history: tf.Tensor | None = None) -> list:
        """One vector per entry of ``feature_names``. ``history``: the history encoder's output
        for these inputs when already computed (``encode_history``); it is used as is."""
        missing = [n for n in self.raw_input_names if n not in inputs]
        if missing:
            raise ValueError(f"query tower inputs are missing {missing}; got {sorted(inputs)}")
        parts = []
        if self.user_id_embedding is not None:
            parts.append(self.user_id_embedding(inputs["user_id"]))
        if self.features is not None:
            parts += self.features(inputs)
        if self.history_encoder is not None:
            parts.append(history if history is not None else self.encode_history(inputs, training=training))
        return parts

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def call(self, inputs: dict, training=False, feature_mask=None) -> tf.Tensor:
        return self.head(self.embed_features(inputs, training=training), feature_mask=feature_mask,
                         training=training)
