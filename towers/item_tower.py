"""Item tower: item id + item features → MLP → L2-normalised [B, D] vector."""
from __future__ import annotations

from towers.config import TowerConfig
from towers.features import FeatureEmbeddings, IdEmbedding
from towers.head import TowerHead
from towers.tf_env import tf
from towers.vocab import Vocabularies


def make_item_id_embedding(vocab: Vocabularies, cfg: TowerConfig) -> IdEmbedding:
    """The item-id table; pass the same instance to ``ItemTower`` and ``QueryTower`` to share it."""
    v = vocab.item_id
    return IdEmbedding(v.tokens, v.oov_buckets, v.hash_bins, cfg.id_embedding_dim, name="item_id")


class ItemTower(tf.keras.Model):
    """Raw item features (dict, see ``towers.inputs``) → tf.float32 [B, output_dim], unit norm.

    ``feature_names`` = ("item_id", *item feature names): the inputs, and the columns of the
    optional ``feature_mask`` [B, F] that zeroes single features per example.
    """

    def __init__(self, item_id_embedding: IdEmbedding, vocab: Vocabularies, cfg: TowerConfig,
                 name: str = "item_tower", **kwargs):
        super().__init__(name=name, **kwargs)
        self.cfg = cfg
        self.item_id_embedding = item_id_embedding
        self.features = FeatureEmbeddings(vocab.item_specs, vocab.item_features, cfg, name="item_features")
        self.head = TowerHead(cfg, name="head")
        self.feature_specs = tuple(vocab.item_specs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("item_id",) + tuple(s.name for s in self.feature_specs)

    def embed_features(self, inputs: dict) -> list:
        """One vector per entry of ``feature_names``: [[B, d_id], [B, d_1], ...]."""
        if "item_id" not in inputs:
            raise ValueError(f"item tower inputs need 'item_id'; got {sorted(inputs)}")
        return [self.item_id_embedding(inputs["item_id"])] + self.features(inputs)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def call(self, inputs: dict, training=False, feature_mask=None) -> tf.Tensor:
        return self.head(self.embed_features(inputs), feature_mask=feature_mask, training=training)
