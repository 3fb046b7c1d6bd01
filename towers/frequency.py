"""Item sampling probabilities for the logQ correction: streaming estimate or training counts.

Both classes answer ``probability(item_ids, batch_size) -> tf.float32 [n]``: the probability that
ONE training example's positive item is the given item ("per draw"), the q of the corrected logit
s(q, c)/τ − log q(c) (Yi et al., RecSys 2019). Constant factors cancel in the softmax, so only
ratios between items matter; per-draw (not per-batch) probabilities are what the mixed-negative
correction of ``towers.negatives`` needs.

``StreamingFrequencyEstimator`` — Algorithm 2 of Yi et al.: with a global step t (one per training
batch) and two arrays of H hash buckets, A (the step an item was last seen) and B (the estimated
number of steps between two appearances), every item h = hash(id) present in the batch does

    B[h] ← (1 − α)·B[h] + α·(t − A[h]),   A[h] ← t,

and 1/B[h] estimates the probability that the item appears in a batch (per step). An item's
first appearance sets B[h] = t (the number of steps until it first showed up, which for a
geometric arrival process has mean 1/p as well); an item never seen reads 1/(t + 1). Duplicates of
an item within one batch count once (the estimator measures "appears in this step"). Per step p
saturates at 1 for items expected several times per batch, so ``probability`` converts it to a
per-draw probability assuming the batch is ``batch_size`` independent draws:

    p_draw = 1 − (1 − p_step)^(1 / batch_size)     (≈ p_step / batch_size for rare items),

with p_step capped at 1 − 1e-3 (expected count ≈ 6.9 per batch; beyond that the per-step signal
is saturated and carries no information).

Hashing is deterministic (``tf.strings.to_hash_bucket_fast``, FarmHash fingerprint): the same id
maps to the same bucket on every run and worker; items sharing a bucket share (and sum) their
estimate. A, B and t are non-trainable ``tf.Variable``s tracked by the owning Keras model, so
checkpoints carry them and training resumes with its estimates. Under a ``tf.distribute``
strategy ``update`` gathers the ids of all replicas (the global batch) and every replica applies
the same update (variables aggregate ONLY_FIRST_REPLICA).

``CountFrequency`` — p(c) = count(c) / N from the training interactions (a static hash table);
ids with no training interaction get half a count, 0.5 / N.
"""
from __future__ import annotations

import numpy as np

from towers.tf_env import tf

_MAX_STEP_PROBABILITY = 1.0 - 1e-3


def hash_buckets(item_ids: tf.Tensor, num_buckets: int) -> tf.Tensor:
    """tf.string ids (any shape) → int64 buckets in [0, num_buckets), deterministic across runs."""
    return tf.strings.to_hash_bucket_fast(item_ids, num_buckets)


def step_to_draw_probability(step_probability: tf.Tensor, batch_size) -> tf.Tensor:
    """P(item in a batch of ``batch_size`` i.i.d. draws) → P(one draw is the item), float32."""
    p = tf.clip_by_value(tf.cast(step_probability, tf.float32), 0.0, _MAX_STEP_PROBABILITY)
    n = tf.cast(batch_size, tf.float32)
    # 1 − (1 − p)^(1/n) computed as −expm1(log1p(−p)/n): exact for tiny p too
    return -tf.math.expm1(tf.math.log1p(-p) / n)


class StreamingFrequencyEstimator(tf.keras.layers.Layer):
    """Hashed streaming estimate of item frequencies (see module docstring).

    num_buckets  H, size of the arrays A and B
    alpha        α in (0, 1], weight of the newest gap in the moving average
    """

    def __init__(self, num_buckets: int, alpha: float, **kwargs):
        super().__init__(trainable=False, **kwargs)
        if int(num_buckets) < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets!r}")
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.num_buckets = int(num_buckets)
        self.alpha = float(alpha)
        sync = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # A: last step seen, 0 = never (steps count from 1); B: estimated gap in steps
        self.last_step = self.add_weight(name="last_step", shape=(self.num_buckets,), dtype=tf.int64,
                                         initializer="zeros", **sync)
        self.gap = self.add_weight(name="gap", shape=(self.num_buckets,), dtype=tf.float32,
                                   initializer="zeros", **sync)
        self.step = self.add_weight(name="step", shape=(), dtype=tf.int64, initializer="zeros", **sync)

    def update(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Record one training step whose batch holds ``item_ids`` (tf.string [n]); returns t."""
        buckets = hash_buckets(tf.reshape(item_ids, [-1]), self.num_buckets)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            buckets = ctx.all_gather(buckets, axis=0)  # collectives take numbers, not strings
        buckets, _ = tf.unique(buckets)
        t = self.step.assign_add(1)
        last = tf.gather(self.last_step, buckets)
        old_gap = tf.gather(self.gap, buckets)
        gap_now = tf.cast(t - last, tf.float32)
        new_gap = tf.where(last > 0, (1.0 - self.alpha) * old_gap + self.alpha * gap_now, gap_now)
        with tf.control_dependencies([last, old_gap]):
            self.gap.scatter_update(tf.IndexedSlices(new_gap, buckets))
            self.last_step.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(buckets), t), buckets))
        return t

    def step_probability(self, item_ids: tf.Tensor) -> tf.Tensor:
        """tf.string [n] → float32 [n], estimated probability that the item appears in a step's batch."""
        buckets = hash_buckets(item_ids, self.num_buckets)
        seen = tf.gather(self.last_step, buckets) > 0
        never = 1.0 / (tf.cast(self.step, tf.float32) + 1.0)
        return tf.where(seen, 1.0 / tf.maximum(tf.gather(self.gap, buckets), 1.0), never)

    def probability(self, item_ids: tf.Tensor, batch_size) -> tf.Tensor:
        """tf.string [n] → float32 [n], per-draw probability (``step_to_draw_probability``)."""
        return step_to_draw_probability(self.step_probability(item_ids), batch_size)


class CountFrequency(tf.keras.layers.Layer):
    """p(c) = training count(c) / total count, looked up by item id (tf.string → float32).

    item_ids  str (n,), distinct; counts  int (n,) >= 0 — e.g. every catalogue item with its number
    of training interactions. Unknown ids and zero counts get 0.5 / total.
    """

    def __init__(self, item_ids, counts, **kwargs):
        super().__init__(trainable=False, **kwargs)
        item_ids = np.asarray(item_ids, dtype=object)
        counts = np.asarray(counts, dtype=np.float64)
        if item_ids.ndim != 1 or item_ids.shape != counts.shape:
            raise ValueError(f"item_ids and counts must be 1-D of the same length, got shapes "
                             f"{item_ids.shape} and {counts.shape}")
        if len(counts) == 0 or (counts < 0).any() or counts.sum() <= 0:
            raise ValueError("counts must be >= 0 with a positive total (the training interactions per item); "
                             f"got {len(counts)} counts summing to {counts.sum() if len(counts) else 0}")
        if len(set(item_ids.tolist())) != len(item_ids):
            raise ValueError("item_ids must be distinct (one count per item)")
        total = counts.sum()
        self.unseen_probability = float(0.5 / total)
        probs = np.where(counts > 0, counts / total, self.unseen_probability).astype(np.float32)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(item_ids.astype(str)), tf.constant(probs)),
            default_value=np.float32(self.unseen_probability))

    def update(self, item_ids: tf.Tensor):
        """No state to update (interface parity with ``StreamingFrequencyEstimator``)."""
        return tf.constant(0, tf.int64)

    def probability(self, item_ids: tf.Tensor, batch_size=None) -> tf.Tensor:
        """tf.string [n] → float32 [n], count / total (``batch_size`` is ignored)."""
        return self.table.lookup(item_ids)
