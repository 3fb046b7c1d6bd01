"""Train the CLUE objective alone, epoch by epoch, measuring comparable contrastive losses after each.

This is the hook the study needs and ``towers.train`` does not expose (its ``clue: pretrain``
stage keeps neither the objective nor a validation loss); it is composed from the public pieces
of ``towers.clue`` (``CluePretrainer``, ``history_views``, ``info_nce``) and ``towers.inputs``:

  ``fixed_loss_set``    fixed batches with fixed views (drawn once, eagerly, after
                        ``tf.random.set_seed(seed)``) → the same loss inputs for every epoch and
                        every point, whatever the model
  ``ContrastiveLoss``   InfoNCE of the objective's projection on a ``LossSet`` (one trace)
  ``train_contrastive`` ``cfg.clue_epochs`` epochs of ``CluePretrainer.train_step`` over the
                        seeded epoch stream of ``towers.inputs.make_tf_dataset`` (the batches
                        ``towers.train`` pretrains on), traced ONCE with a relaxed input
                        signature (history width varies per batch), then per epoch: the running
                        training loss, the wall time of the training steps, each LossSet's loss
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from recdata.schema import Dataset
from towers.clue import ClueObjective, CluePretrainer, history_views, info_nce
from towers.config import TrainConfig
from towers.inputs import Examples, batches_per_epoch, make_tf_dataset
from towers.tf_env import tf
from towers.train import make_optimizer

_GROUP_BUCKETS = 2**63 - 1  # user-id fingerprints: only equality matters (same user = not a negative)


@dataclass(frozen=True)
class LossSet:
    """Fixed contrastive-loss inputs: ``batches`` of (user_id [b], timestamp [b], h1, t1, h2, t2 [b, L]).

    examples     examples used (= batches × batch_size)
    batch_size   b, the number of candidates each view is contrasted with
    """

    batches: tuple
    examples: int
    batch_size: int


def fixed_loss_set(dataset: Dataset, examples: Examples | None, batch_size: int, max_examples: int, views: str,
                   crop: float, seed: int) -> LossSet | None:
    """A ``LossSet`` of up to ``max_examples`` of ``examples`` (seeded sample; empty histories,
    which have no views, left out) in full batches of ``min(batch_size, available)``; None if
    no example has a history."""
    if examples is None:
        return None
    candidates = np.flatnonzero(examples.history_length > 0)
    if len(candidates) < 2:
        return None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(candidates)[:max_examples])
    b = min(batch_size, len(chosen))
    chosen = chosen[: (len(chosen) // b) * b]
    data = make_tf_dataset(dataset, examples.subset(chosen), b, shuffle=False, seed=seed, drop_remainder=True)
    tf.random.set_seed(seed)
    batches = []
    for i, batch in enumerate(data):
        q = batch["query"]
        (h1, t1), (h2, t2) = history_views(q["history"], q["history_timestamps"], views, crop, seed=seed + 2 * i)
        batches.append((q["user_id"], tf.cast(q["timestamp"], tf.int64), h1, t1, h2, t2))
    return LossSet(batches=tuple(batches), examples=len(chosen), batch_size=b)


class ContrastiveLoss:
    """``loss_set`` → mean over its batches of the symmetric InfoNCE (``towers.clue.info_nce``,
    same-user pairs not negatives) of ``objective``'s projections, at the objective's temperature,
    without dropout. The per-batch function is traced once."""

    def __init__(self, objective: ClueObjective):
        self.objective = objective
        strings, ints = tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64)
        matrix_s, matrix_i = tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None, None], tf.int64)

        @tf.function(input_signature=[strings, ints, matrix_s, matrix_i, matrix_s, matrix_i])
        def batch_loss(user_id, timestamp, h1, t1, h2, t2):
            query = {"user_id": user_id, "timestamp": timestamp}
            a = objective.project(query, h1, t1, training=False)
            b = objective.project(query, h2, t2, training=False)
            groups = tf.strings.to_hash_bucket_fast(user_id, _GROUP_BUCKETS)
            return info_nce(a, b, objective.temperature, groups)

        self._batch_loss = batch_loss

    def __call__(self, loss_set: LossSet) -> float:
        return float(np.mean([float(self._batch_loss(*batch)) for batch in loss_set.batches]))


def train_contrastive(objective: ClueObjective, dataset: Dataset, examples: Examples, cfg: TrainConfig,
                      loss_sets: dict[str, LossSet | None],
                      on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``objective`` (its encoder and projection head) alone for ``cfg.clue_epochs`` epochs.

    Batches: ``make_tf_dataset(..., cfg.batch_size, shuffle=True, seed=cfg.seed + 1, epochs=...)``,
    optimizer ``towers.train.make_optimizer(cfg)``. Returns one record per epoch:
    {"epoch": 1.., "seconds": wall time of the epoch's training steps, "loss_train_running": mean
    training loss over the epoch's batches (at ``cfg.batch_size``, random views), and
    "loss_<name>" for each LossSet (None when the set is None)}; ``on_epoch`` gets each record.
    """
    if len(examples) == 0:
        raise ValueError("no training examples: the training interactions are empty")
    pretrainer = CluePretrainer(objective)
    pretrainer.compile(optimizer=make_optimizer(cfg))
    pretrainer.optimizer.build(objective.trainable_variables)  # slots now, not inside the traced step
    stream = make_tf_dataset(dataset, examples, cfg.batch_size, shuffle=True, seed=cfg.seed + 1,
                             shuffle_buffer=cfg.shuffle_buffer, epochs=cfg.clue_epochs)
    step = tf.function(pretrainer.train_step, input_signature=[stream.element_spec])
    evaluate = ContrastiveLoss(objective)
    steps = batches_per_epoch(len(examples), cfg.batch_size)
    batches = iter(stream)
    records = []
    for epoch in range(1, cfg.clue_epochs + 1):
        pretrainer.loss_tracker.reset_state()
        start = time.perf_counter()
        for _ in range(steps):
            step(next(batches))
        running = float(pretrainer.loss_tracker.result())
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "seconds": seconds, "loss_train_running": running}
        for name, loss_set in loss_sets.items():
            record[f"loss_{name}"] = evaluate(loss_set) if loss_set is not None else None
        records.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return records
