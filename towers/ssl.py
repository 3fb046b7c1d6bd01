"""The two-view contrastive SSL regulariser of Yao et al. (arXiv 2007.12865), item and query side.

Loss on a batch of N examples with two augmented views (``towers.feature_masking``) encoded by the
SAME tower (shared with the retrieval task) into L2-normalised z¹, z² float32 [N, D]:

    L = −(1/N) Σ_i log( exp(z¹_i·z²_i / τ) / Σ_j exp(z¹_i·z²_j / τ) )

(softmax over the other examples' second views: in-batch negatives). Pairs (i, j ≠ i) of the same
``group`` (the same item row drawn twice; the same user in two training examples) are removed
from the negatives. The model adds ``weight`` · L per side to the retrieval loss.

ItemSSL   each step draws ``item_batch_size`` rows UNIFORMLY (with replacement) from the item corpus
          (``towers.negatives.ItemCorpus``), not from the training stream, so the tail is seen
          as often as the head; views by RFM / CFM feature masking + multi-value dropout.
QuerySSL  the first ``batch_size`` queries of the (shuffled) training batch; views by feature masking of the query tower's parts
          (user features, "history") + dropout of history elements (→ "", works with any history
          encoder) + multi-value dropout. The masks are complementary, so each example's history
          is kept in exactly one view (zeroed in the other by the head's feature mask): the
          history encoder runs once per example, on the history of the view that keeps it, and
          both views reuse that output (the same loss as encoding both views; half the encoder
          cost). Towers without ``encode_history`` are called once per view.
"""
from __future__ import annotations

from towers.feature_masking import TwoViewAugmenter
from towers.negatives import STREAM_SSL_ITEM_VIEWS, STREAM_SSL_ITEMS, STREAM_SSL_QUERY_VIEWS, ItemCorpus, step_seed
from towers.tf_env import tf

_ID_HASH_BUCKETS = 2**63 - 1


def contrastive_loss(z1: tf.Tensor, z2: tf.Tensor, temperature: float, groups: tf.Tensor | None = None) -> tf.Tensor:
    """Mean over i of the softmax cross-entropy of row i of z1 z2ᵀ / τ with label i → float32 scalar.

    z1, z2 float32 [N, D] (the two views, rows paired); groups (any dtype [N], optional): column j
    is left out of row i's softmax when j ≠ i and groups[j] == groups[i].
    """
    logits = tf.matmul(z1, z2, transpose_b=True) / temperature
    if groups is not None:
        same = tf.equal(groups[:, tf.newaxis], groups[tf.newaxis, :])
        off_diagonal = tf.logical_not(tf.eye(tf.shape(z1)[0], dtype=tf.bool))
        logits = tf.where(tf.logical_and(same, off_diagonal), tf.constant(-1e9, logits.dtype), logits)
    labels = tf.range(tf.shape(z1)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class ItemSSL(tf.keras.layers.Layer):
    """SSL loss of the item tower on a uniform corpus batch: ``call(step, training) -> scalar`` (unweighted)."""

    def __init__(self, item_tower, corpus: ItemCorpus, augmenter: TwoViewAugmenter, batch_size: int,
                 temperature: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.item_tower = item_tower
        self.corpus = corpus
        self.augmenter = augmenter
        self.batch_size = int(batch_size)
        self.temperature = float(temperature)
        self.seed = int(seed)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def call(self, step, training=False):
        rows = self.corpus.uniform_rows(self.batch_size, step_seed(self.seed, step, STREAM_SSL_ITEMS))
        inputs = self.corpus.gather(rows)
        (in1, keep1), (in2, keep2) = self.augmenter.views(inputs, step_seed(self.seed, step, STREAM_SSL_ITEM_VIEWS))
        z1 = self.item_tower(in1, training=training, feature_mask=keep1)
        z2 = self.item_tower(in2, training=training, feature_mask=keep2)
        return contrastive_loss(z1, z2, self.temperature, groups=rows)


class QuerySSL(tf.keras.layers.Layer):
    """SSL loss of the query tower on a batch of raw query inputs:
    ``call(query_inputs, step, training) -> scalar`` (unweighted)."""

    def __init__(self, query_tower, augmenter: TwoViewAugmenter, temperature: float, seed: int,
                 batch_size: int = 0, encode_history_once: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.encode_history_once = bool(encode_history_once)  # False: two full tower passes (reference)
        self.batch_size = int(batch_size)  # 0 = every query of the batch
        self.query_tower = query_tower
        self.augmenter = augmenter
        self.temperature = float(temperature)
        self.seed = int(seed)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def call(self, query_inputs: dict, step, training=False):
        if self.batch_size:
            query_inputs = {name: value[:self.batch_size] for name, value in query_inputs.items()}
        (in1, keep1), (in2, keep2) = self.augmenter.views(query_inputs,
                                                          step_seed(self.seed, step, STREAM_SSL_QUERY_VIEWS))
        z1, z2 = self._encode(in1, keep1, in2, keep2, training)
        users = tf.strings.to_hash_bucket_fast(query_inputs["user_id"], _ID_HASH_BUCKETS)
        return contrastive_loss(z1, z2, self.temperature, groups=users)

    def _encode(self, in1, keep1, in2, keep2, training):
        tower = self.query_tower
        once = (self.encode_history_once and getattr(tower, "history_encoder", None) is not None
                and "history" in self.augmenter.names and self.augmenter.in_one_view("history"))
        if not once:
            return (tower(in1, training=training, feature_mask=keep1),
                    tower(in2, training=training, feature_mask=keep2))
        column = self.augmenter.names.index("history")
        in_first = keep1[:, column] > 0  # [N]: the view that keeps the example's history
        kept = dict(in1)
        for name in ("history", "history_timestamps"):
            kept[name] = tf.where(in_first[:, tf.newaxis], in1[name], in2[name])
        history = tower.encode_history(kept, training=training)
        return tuple(tower.head(tower.embed_features(inputs, training=training, history=history), feature_mask=keep,
                                training=training) for inputs, keep in ((in1, keep1), (in2, keep2)))
