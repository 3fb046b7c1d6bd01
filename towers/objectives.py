"""Typed configuration of the training objectives: the retrieval loss and the SSL regulariser.

``TrainConfig`` nests them as ``loss:`` and ``ssl:``::

    train:
      loss: {logq: streaming, mns_negatives: 256}
      ssl: {mode: cfm, weight: 0.3, query_side: true}

Both are frozen dataclasses built with ``core.strict.from_dict`` (unknown keys rejected);
every value is checked in ``__post_init__`` (``ValueError`` naming the key, the value got and the
allowed range). The defaults switch every extra part off, which is the plain in-batch softmax of
``towers.model``. This module does not import TensorFlow.

Papers: logQ correction and the streaming frequency estimator — Yi et al., "Sampling-Bias-Corrected
Neural Modeling for Large Corpus Item Recommendations", RecSys 2019. Mixed negative sampling —
Yang et al., "Mixed Negative Sampling for Learning Two-tower Neural Networks in Recommendations",
WWW 2020. Feature-masking SSL (RFM / CFM) — Yao et al., "Self-supervised Learning for Large-scale
Item Recommendations", arXiv 2007.12865.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


def _check(ok: bool, owner: str, key: str, rule: str, value) -> None:
    if not ok:
        raise ValueError(f"{owner}.{key} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class RetrievalLossConfig:
    """The in-batch softmax retrieval loss and its corrections.

    logq                  sampling-bias correction of the softmax logits, s(q, c)/τ − log p(c):
                          "off"; "counts" (p from the item's training interaction count);
                          "streaming" (p from the hashed streaming estimator updated every step,
                          ``towers.frequency.StreamingFrequencyEstimator``)
    frequency_buckets     H, hash buckets of the streaming estimator (arrays A and B are [H]);
                          distinct items sharing a bucket share an estimate
    frequency_alpha       α of the estimator's moving average B ← (1−α)·B + α·(t − A), in (0, 1];
                          larger adapts faster, smaller averages more gaps (lower variance)
    mns_negatives         B′, extra negatives drawn uniformly from the item corpus every step and
                          scored against every query (mixed negative sampling); 0 = off
    remove_accidental_hits  a candidate with the positive's item id (in-batch or MNS) is not a negative
    hard_negatives        > 0: keep only the this many highest-scoring negatives per query in the
                          softmax (TFRS ``num_hard_negatives``); 0 = all negatives
    """

    logq: Literal["off", "counts", "streaming"] = "off"
    frequency_buckets: int = 1 << 20
    frequency_alpha: float = 0.05
    mns_negatives: int = 0
    remove_accidental_hits: bool = True
    hard_negatives: int = 0

    def __post_init__(self):
        owner = "RetrievalLossConfig"
        _check(self.logq in ("off", "counts", "streaming"), owner, "logq", "one of 'off', 'counts', 'streaming'",
               self.logq)
        _check(self.frequency_buckets >= 1, owner, "frequency_buckets", ">= 1", self.frequency_buckets)
        _check(0.0 < self.frequency_alpha <= 1.0, owner, "frequency_alpha", "in (0, 1]", self.frequency_alpha)
        _check(self.mns_negatives >= 0, owner, "mns_negatives", ">= 0 (0 = off)", self.mns_negatives)
        _check(self.hard_negatives >= 0, owner, "hard_negatives", ">= 0 (0 = all negatives)", self.hard_negatives)


@dataclass(frozen=True)
class SSLConfig:
    """The two-view contrastive (SSL) regulariser of Yao et al., added as ``weight`` · loss.

    mode                  "off"; "rfm" (random feature masking: each example's features split at
                          random into two complementary halves, one per view); "cfm" (correlated
                          feature masking: per batch a seed feature drawn uniformly, the seed and
                          its top-⌊k/2⌋ features by mutual information masked in one view, the
                          complement in the other)
    weight                α, the SSL loss weight (added per tower side)
    temperature           τ of the contrastive softmax between view-1 and view-2 embeddings
    item_batch_size       items per step drawn UNIFORMLY from the item corpus for the item-side loss
    multi_value_dropout   after masking, each value of a multi-valued feature (multi_categorical,
                          text tokens) is dropped independently with this probability, per view
    mask_ids              the item id (and user id) is one of the maskable features; false: ids stay
                          in both views (the views then share the id embedding)
    cfm_k                 k of CFM; 0 = the number of maskable features of the tower
    query_side            also apply the loss to two augmented views of the query (user features
                          masked as above + dropout of history elements) of the training batch's
                          queries
    query_batch_size      query side: the first this many queries of the (shuffled) training
                          batch, i.e. a uniform sample of it; 0 = the whole batch. Each query costs
                          two extra query-tower passes
    sequence_dropout      query side: each history element is dropped with this probability, per view
    """

    mode: Literal["off", "rfm", "cfm"] = "off"
    weight: float = 0.3
    temperature: float = 0.1
    item_batch_size: int = 512
    multi_value_dropout: float = 0.1
    mask_ids: bool = True
    cfm_k: int = 0
    query_side: bool = False
    query_batch_size: int = 128
    sequence_dropout: float = 0.2

    def __post_init__(self):
        owner = "SSLConfig"
        _check(self.mode in ("off", "rfm", "cfm"), owner, "mode", "one of 'off', 'rfm', 'cfm'", self.mode)
        _check(self.weight >= 0.0, owner, "weight", ">= 0", self.weight)
        _check(self.temperature > 0.0, owner, "temperature", "> 0", self.temperature)
        _check(self.item_batch_size >= 2, owner, "item_batch_size",
               ">= 2 (the other items of the batch are the negatives)", self.item_batch_size)
        _check(0.0 <= self.multi_value_dropout < 1.0, owner, "multi_value_dropout", "in [0, 1)",
               self.multi_value_dropout)
        _check(self.query_batch_size == 0 or self.query_batch_size >= 2, owner, "query_batch_size",
               ">= 2 (the other queries are the negatives) or 0 (the whole batch)", self.query_batch_size)
        _check(self.cfm_k >= 0, owner, "cfm_k", ">= 0 (0 = number of maskable features)", self.cfm_k)
        _check(0.0 <= self.sequence_dropout < 1.0, owner, "sequence_dropout", "in [0, 1)", self.sequence_dropout)

    @property
    def enabled(self) -> bool:
        """True when the regulariser contributes to the loss (mode on and weight > 0)."""
        return self.mode != "off" and self.weight > 0.0
