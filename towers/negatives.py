"""Items drawn uniformly from the catalogue, and the mixed-negative-sampling (MNS) correction.

``ItemCorpus`` holds the raw item-tower inputs of the whole catalogue as tensors (the dict of
``towers.inputs.item_features_batch(dataset.items, specs)``: item_id str [N], features [N, ...])
and gathers rows drawn uniformly with replacement. Draws are stateless: a seed pair
(``run seed``, ``step · 16 + stream``) fixes them, so a resumed run draws what it would have
drawn, and under a ``tf.distribute`` strategy each replica adds its replica id to the stream.
Both the B′ extra negatives of MNS and the uniform item batch of the SSL regulariser come from here.

Mixed negative sampling (Yang et al., WWW 2020): the softmax of each query runs over the B in-batch
candidates (the positives of the batch, i.e. draws from the unigram / training distribution p)
plus B′ items drawn uniformly from the N catalogue items. With the logQ correction on, every
candidate's logit is corrected by the probability of the MIXED pool, which is a draw from the
unigram distribution with weight B / (B + B′) and from the uniform one with weight B′ / (B + B′):

    q_mix(c) = (B · p(c) + B′ / N) / (B + B′),      logit(q, c) = s(q, c)/τ − log q_mix(c),

applied to in-batch and uniform candidates alike (p(c) per draw, ``towers.frequency``;
q_mix is ``towers.loss.mixed_sampling_probability``). With B′ = 0 it is p(c), the plain logQ
correction. Without logQ the pool is used uncorrected.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from towers.tf_env import tf

# stream ids mixed into the stateless seed: one independent stream per purpose
STREAM_MNS = 1
STREAM_SSL_ITEMS = 2
STREAM_SSL_ITEM_VIEWS = 3
STREAM_SSL_QUERY_VIEWS = 4


def step_seed(seed: int, step: tf.Tensor, stream: int) -> tf.Tensor:
    """int64 [2] seed for stateless random ops: (seed, step · 16 + stream + 2⁴⁰ · replica id)."""
    offset = tf.cast(step, tf.int64) * 16 + stream
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        offset += tf.cast(ctx.replica_id_in_sync_group, tf.int64) * (1 << 40)
    return tf.stack([tf.constant(seed, tf.int64), offset])


class ItemCorpus:
    """The catalogue's raw item-tower inputs as constant tensors, for uniform draws.

    features  {"item_id": str (N,), feature name: array (N, ...)}; every array has N rows
    """

    def __init__(self, features: Mapping[str, np.ndarray]):
        if "item_id" not in features:
            raise ValueError(f"corpus features need 'item_id' (towers.inputs.item_features_batch); got {sorted(features)}")
        sizes = {name: len(values) for name, values in features.items()}
        n = sizes["item_id"]
        if n < 1 or len(set(sizes.values())) != 1:
            raise ValueError(f"corpus features must all have the same number of rows >= 1, got {sizes}")
        self.size = int(n)
        # eager tensors: captured by reference in tf.functions, never inlined into the graph
        self.features = {name: tf.convert_to_tensor(np.asarray(values)) for name, values in features.items()}

    def uniform_rows(self, count: int, seed: tf.Tensor) -> tf.Tensor:
        """int64 [count] rows drawn uniformly with replacement (stateless, ``seed`` int64 [2])."""
        return tf.random.stateless_uniform([count], seed=seed, minval=0, maxval=self.size, dtype=tf.int64)

    def gather(self, rows: tf.Tensor) -> dict:
        """Raw item-tower inputs of ``rows`` (int64 [n]): {name: tensor [n, ...]}."""
        return {name: tf.gather(values, rows) for name, values in self.features.items()}
