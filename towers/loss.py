"""The parts of the retrieval loss, each a small named unit (as TFRS ``layers/loss.py``), and
``RetrievalLoss``, the in-batch (+ MNS) softmax that composes them.

For B queries q_b and C >= B candidates c_j (the B positives on the diagonal, then B′ = C − B
extra negatives, e.g. drawn uniformly for mixed negative sampling), all L2-normalised:

    S[b, j] = q_b · c_j / τ                                       scores            [B, C]
    S[b, j] ← S[b, j] − log q̂(c_j)                                ``logq_correction``
    S[b, j] ← S[b, j] + MIN_FLOAT   when id(c_j) = id(c_b), j ≠ b  ``remove_accidental_hits``
    keep the positive + the k highest negatives of each row        ``hard_negative_mining``
    loss = Σ_b w_b · CE(S[b], e_b) / B                              ``RetrievalLoss``

The sampling probability q(c) is the per-draw probability of a candidate: the unigram training
frequency p(c) for in-batch candidates (``towers.frequency``), or with mixed negatives the
mixed-pool probability ``mixed_sampling_probability`` = (B·p(c) + B′/N) / (B + B′). The correction
uses q̂ = q / max_batch q (a shift of every logit of a row by the same constant, which leaves the
softmax unchanged) clipped to [1e-6, 1], so only ratios beyond 10⁶ within one batch are capped.
Accidental hits compare 64-bit fingerprints of the item ids (``item_fingerprints``; collide with
probability ~C²/2⁶³). The arithmetic of every part is that of TFRS 0.7.7's ``tasks.Retrieval``
(``tests/towers/test_loss.py`` checks the composed loss bit for bit against it).
"""
from __future__ import annotations

import numpy as np

from towers.tf_env import tf

MIN_FLOAT = float(np.finfo(np.float32).min / 100.0)  # added to removed logits (as TFRS)
MAX_FLOAT = float(np.finfo(np.float32).max / 100.0)  # lifts the positive above every negative in top-k
_ID_HASH_BUCKETS = 2**63 - 1


def item_fingerprints(item_ids: tf.Tensor) -> tf.Tensor:
    """int64 [n] fingerprints of string item ids (for ``remove_accidental_hits``): 64-bit hashes
    compare ~25× faster than strings over the B·C pairs."""
    return tf.strings.to_hash_bucket_fast(item_ids, _ID_HASH_BUCKETS)


def mixed_sampling_probability(p: tf.Tensor, batch_size, num_uniform: int, corpus_size: int) -> tf.Tensor:
    """Per-draw probability of a candidate in the mixed pool, q_mix = (B·p + B′/N) / (B + B′).

    Mixed negative sampling (Yang et al., WWW 2020) scores every query against the B in-batch
    candidates (draws from the unigram distribution p) plus B′ items drawn uniformly from the N
    catalogue items; the pool is a draw from p with weight B / (B + B′) and from the uniform
    distribution with weight B′ / (B + B′). p float32 [n]; batch_size B (int or scalar tensor);
    num_uniform B′ >= 0; corpus_size N >= 1. Returns float32 [n]; equals p when B′ = 0.
    """
    if num_uniform < 0 or corpus_size < 1:
        raise ValueError(f"mixed_sampling_probability needs num_uniform >= 0 and corpus_size >= 1, got "
                         f"num_uniform={num_uniform}, corpus_size={corpus_size}")
    if num_uniform == 0:
        return tf.cast(p, tf.float32)
    b = tf.cast(batch_size, tf.float32)
    uniform = float(num_uniform) / float(corpus_size)
    return (b * tf.cast(p, tf.float32) + uniform) / (b + float(num_uniform))


def logq_correction(logits: tf.Tensor, sampling_probability: tf.Tensor) -> tf.Tensor:
    """Sampling-bias correction (Yi et al., RecSys 2019): ``logits[:, j] − log q̂_j``.

    logits float32 [B, C]; sampling_probability float32 [C], the per-draw probability q of each
    candidate (> 0; zeros count as 1e-30). q̂ = q / max(q) clipped to [1e-6, 1] (module docstring).
    """
    log_q = tf.math.log(tf.maximum(tf.cast(sampling_probability, tf.float32), 1e-30))
    normalised = tf.exp(log_q - tf.reduce_max(log_q))
    return logits - tf.math.log(tf.clip_by_value(normalised, 1e-6, 1.0))


def remove_accidental_hits(logits: tf.Tensor, candidate_ids: tf.Tensor) -> tf.Tensor:
    """Candidates with the positive's id are not negatives: their logits get ``MIN_FLOAT`` added.

    logits [B, C] with row b's positive in column b; candidate_ids [C] (any comparable dtype,
    e.g. ``item_fingerprints``). Column b of row b (the positive itself) is left as it is.
    """
    batch = tf.shape(logits)[0]
    duplicate = tf.cast(tf.equal(tf.expand_dims(candidate_ids[:batch], 1), tf.expand_dims(candidate_ids, 0)),
                        logits.dtype)
    duplicate = duplicate - tf.eye(batch, tf.shape(logits)[1], dtype=logits.dtype)
    return logits + duplicate * MIN_FLOAT


def hard_negative_mining(logits: tf.Tensor, labels: tf.Tensor, num_hard_negatives: int):
    """Keep each row's positive and its ``num_hard_negatives`` highest-scoring negatives.

    logits, labels [B, C] (labels one-hot). Returns (logits, labels) [B, min(k + 1, C)], columns
    in ``top_k`` order (unsorted), the positive among them.
    """
    if num_hard_negatives < 1:
        raise ValueError(f"num_hard_negatives must be >= 1, got {num_hard_negatives}")
    num_sampled = tf.minimum(num_hard_negatives + 1, tf.shape(logits)[1])
    _, columns = tf.nn.top_k(logits + labels * MAX_FLOAT, k=num_sampled, sorted=False)
    return _gather_along_rows(logits, columns), _gather_along_rows(labels, columns)


def _gather_along_rows(data: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
    rows, width = tf.shape(data)[0], tf.shape(data)[1]
    picked = tf.shape(columns)[1]
    flat = tf.reshape(tf.tile(tf.expand_dims(tf.range(rows), -1), [1, picked]) * width + columns, [-1])
    return tf.reshape(tf.gather(tf.reshape(data, [-1]), flat), [rows, picked])


class RetrievalLoss(tf.keras.layers.Layer):
    """The in-batch softmax loss composed of the parts above (module docstring); no weights.

    ``call(query, candidate, sample_weight=None, sampling_probability=None, candidate_ids=None)``:
    query float32 [B, d], candidate float32 [C, d] (positives first), sample_weight [B] or None,
    sampling_probability [C] or None (no logQ correction), candidate_ids [C] (required when
    ``remove_hits``). Returns the float32 scalar Σ_b w_b · CE_b / B.
    """

    def __init__(self, temperature: float, remove_hits: bool = True, hard_negatives: int = 0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if hard_negatives < 0:
            raise ValueError(f"hard_negatives must be >= 0 (0 = all negatives), got {hard_negatives}")
        self.temperature = float(temperature)
        self.remove_hits = bool(remove_hits)
        self.hard_negatives = int(hard_negatives)
        # SUM then / B: tf.distribute refuses SUM_OVER_BATCH_SIZE in custom training steps
        self._cross_entropy = tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM)

    def call(self, query, candidate, sample_weight=None, sampling_probability=None, candidate_ids=None):
        if self.remove_hits and candidate_ids is None:
            raise ValueError("RetrievalLoss(remove_hits=True) needs candidate_ids (one id per candidate row); "
                             "pass item_fingerprints(ids) or build it with remove_hits=False")
        scores = tf.linalg.matmul(query, candidate, transpose_b=True)
        batch = tf.shape(scores)[0]
        labels = tf.eye(batch, tf.shape(scores)[1])
        scores = scores / self.temperature
        if sampling_probability is not None:
            scores = logq_correction(scores, sampling_probability)
        if self.remove_hits:
            scores = remove_accidental_hits(scores, candidate_ids)
        if self.hard_negatives:
            scores, labels = hard_negative_mining(scores, labels, self.hard_negatives)
        total = self._cross_entropy(y_true=labels, y_pred=scores, sample_weight=sample_weight)
        return total / tf.cast(batch, total.dtype)
