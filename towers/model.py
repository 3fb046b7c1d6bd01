"""The two-tower retrieval model: in-batch softmax over cosine scores / temperature (TFRS).

For a batch of B (query, positive item) pairs, with q_b and c_b the L2-normalised tower
outputs, the loss of example b is the softmax cross-entropy of row b of
``S = Q Cᵀ / temperature`` [B, B] with label b; candidates in the batch carrying the positive's
item id (other than the positive itself) are removed from the softmax ("accidental hits").
The batch loss is the (weighted) sum over examples divided by B; the "loss" Keras reports (and
"val_loss") is its mean over the epoch's examples.
"""
from __future__ import annotations

from towers.tf_env import tf, tfrs

_ID_HASH_BUCKETS = 2**63 - 1


class TwoTowerModel(tfrs.Model):
    """``compute_loss`` takes a batch {"query": dict, "candidate": dict, "weight": [B] (optional)}
    as produced by ``towers.inputs.make_tf_dataset``; the candidate dict must hold "item_id".
    """

    def __init__(self, query_tower: tf.keras.Model, item_tower: tf.keras.Model, temperature: float,
                 remove_accidental_hits: bool = True, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.query_tower = query_tower
        self.item_tower = item_tower
        self.temperature = float(temperature)
        self.task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE),
            temperature=temperature,
            remove_accidental_hits=remove_accidental_hits,
        )
        # Epoch means (weighted by batch size); TFRS' default steps report the last batch only.
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.regularization_tracker = tf.keras.metrics.Mean(name="regularization_loss")

    @property
    def metrics(self):
        return [self.loss_tracker, self.regularization_tracker]

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        query = self.query_tower(inputs["query"], training=training)
        candidate = self.item_tower(inputs["candidate"], training=training)
        # Accidental hits are found by comparing ids; 64-bit fingerprints compare ~25x faster than
        # strings (B² comparisons) and collide with probability ~B²/2⁶³.
        candidate_ids = tf.strings.to_hash_bucket_fast(inputs["candidate"]["item_id"], _ID_HASH_BUCKETS)
        return self.task(query, candidate, sample_weight=inputs.get("weight"), candidate_ids=candidate_ids,
                         compute_metrics=False, compute_batch_metrics=False)

    def _loss_terms(self, inputs, training: bool):
        loss = self.compute_loss(inputs, training=training)
        regularization = tf.add_n([tf.reduce_sum(x) for x in self.losses]) if self.losses else tf.constant(0.0)
        return loss, regularization

    def _update_loss_metrics(self, inputs, loss, regularization) -> dict:
        batch = tf.cast(tf.shape(inputs["candidate"]["item_id"])[0], tf.float32)
        self.loss_tracker.update_state(loss, sample_weight=batch)
        self.regularization_tracker.update_state(regularization, sample_weight=batch)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, inputs):
        """One optimizer step on retrieval loss + regularisation; reports epoch-mean losses."""
        with tf.GradientTape() as tape:
            loss, regularization = self._loss_terms(inputs, training=True)
            total = loss + regularization
        gradients = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._update_loss_metrics(inputs, loss, regularization)

    def test_step(self, inputs):
        loss, regularization = self._loss_terms(inputs, training=False)
        return self._update_loss_metrics(inputs, loss, regularization)
