"""Typed configuration of the towers (``TowerConfig``) and of their training (``TrainConfig``).

Both are frozen dataclasses built from plain dicts with ``core.strict.from_dict`` (unknown
keys are rejected). ``TrainConfig.tower`` nests the tower shape so one mapping describes a run::

    train:
      epochs: 10
      batch_size: 1024
      tower: {output_dim: 64, hidden_units: [128]}

Every value is checked in ``__post_init__``; bad values raise ``ValueError`` naming the key, the
value got and the allowed range. This module does not import TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from towers.objectives import RetrievalLossConfig, SSLConfig


def _positive(owner: str, **values) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{key} must be > 0, got {value!r}")


def _non_negative(owner: str, **values) -> None:
    for key, value in values.items():
        if value < 0:
            raise ValueError(f"{owner}.{key} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class SequenceConfig:
    """The Transformer user encoder (``towers.sequence_encoder``), used when
    ``TowerConfig.user_encoder == "sequence"``.

    max_length            the most recent history items it reads (at most ``TowerConfig.max_history``,
                          which bounds what the inputs carry); attention costs O(max_length²)
    num_layers            Transformer blocks (pre-layer-norm self-attention + feed-forward)
    num_heads             attention heads; ``width`` must be divisible by it
    width                 model width d_model of the sequence (item vectors are projected to it)
    ff_dim                hidden width of each block's feed-forward layer
    dropout               dropout inside the blocks (training only)
    time_buckets          time-gap embedding rows: gap g seconds between a history event and the
                          query time goes to bucket min(floor(log2(1 + g)), time_buckets - 1)
    pooling               "mean" (masked mean over the valid positions) or "last" (the most recent)
    item_features         also embed each history item's features with the item tower's feature
                          tables (shared) and add them to its id vector
    """

    max_length: int = 20
    num_layers: int = 1
    num_heads: int = 2
    width: int = 32
    ff_dim: int = 64
    dropout: float = 0.1
    time_buckets: int = 32
    pooling: Literal["mean", "last"] = "mean"
    item_features: bool = True

    def __post_init__(self):
        owner = "SequenceConfig"
        _positive(owner, max_length=self.max_length, num_layers=self.num_layers, num_heads=self.num_heads, width=self.width,
                  ff_dim=self.ff_dim, time_buckets=self.time_buckets)
        if self.width % self.num_heads:
            raise ValueError(f"{owner}.width ({self.width}) must be divisible by num_heads ({self.num_heads}); "
                             "change one of them")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{owner}.dropout must be in [0, 1), got {self.dropout!r}")
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"{owner}.pooling must be 'mean' or 'last', got {self.pooling!r}")


@dataclass(frozen=True)
class TowerConfig:
    """Shape of both towers and of their feature encoders.

    output_dim            D, width of the L2-normalised tower output (query and item alike)
    id_embedding_dim      width of the user-id and item-id tables (the item-id table is shared with
                          the query tower's history encoder)
    feature_embedding_dim width of every categorical / multi_categorical / text / numeric-bucket table
    hidden_units          ReLU layers of each tower's MLP, before the final linear layer to D
    dropout               dropout after each hidden layer (training only)
    max_history           L, most recent history items the query tower reads; longer inputs are cut
    oov_buckets           hashed out-of-vocabulary buckets of every id / categorical lookup (>= 1)
    max_id_vocab          at most this many (most frequent) ids get their own row; rarer ids share
                          the OOV buckets. Keeps million-id catalogues bounded
    min_id_count          ids seen fewer times than this in training share the OOV buckets
    id_hash_bins          > 0: hash ids into this many rows instead of a vocabulary (no vocabulary
                          file, constant memory, collisions allowed); 0: exact vocabulary
    max_category_vocab    cap on categorical / multi_categorical / text vocabularies (most frequent)
    numeric_buckets       quantile buckets of each numeric feature (boundaries from training data)
    text_max_tokens       text vocabulary size cap (most frequent tokens of training texts)
    text_max_length       tokens read per text value (the rest are ignored)
    user_encoder          what the query tower reads: "ids" (user id only), "features" (user id +
                          user features + a bag of history items), "sequence" (user features + the
                          Transformer over the history, ``sequence``)
    sequence              the Transformer's shape (``SequenceConfig``)
    """

    output_dim: int = 64
    id_embedding_dim: int = 64
    feature_embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (128,)
    activation: Literal["relu", "gelu", "swish"] = "relu"
    dropout: float = 0.0
    max_history: int = 50
    oov_buckets: int = 1
    max_id_vocab: int = 1_000_000
    min_id_count: int = 1
    id_hash_bins: int = 0
    max_category_vocab: int = 100_000
    numeric_buckets: int = 10
    text_max_tokens: int = 20_000
    text_max_length: int = 32
    user_encoder: Literal["ids", "features", "sequence"] = "features"
    sequence: SequenceConfig = field(default_factory=SequenceConfig)

    def __post_init__(self):
        owner = "TowerConfig"
        if self.user_encoder not in ("ids", "features", "sequence"):
            raise ValueError(f"{owner}.user_encoder must be 'ids', 'features' or 'sequence', "
                             f"got {self.user_encoder!r}")
        _positive(owner, output_dim=self.output_dim, id_embedding_dim=self.id_embedding_dim,
                  feature_embedding_dim=self.feature_embedding_dim, max_history=self.max_history,
                  oov_buckets=self.oov_buckets, max_id_vocab=self.max_id_vocab,
                  min_id_count=self.min_id_count, max_category_vocab=self.max_category_vocab,
                  numeric_buckets=self.numeric_buckets, text_max_tokens=self.text_max_tokens,
                  text_max_length=self.text_max_length)
        _non_negative(owner, id_hash_bins=self.id_hash_bins)
        if any(u <= 0 for u in self.hidden_units):
            raise ValueError(f"{owner}.hidden_units must all be > 0, got {list(self.hidden_units)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{owner}.dropout must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How the towers are trained (in-batch softmax over cosine scores / temperature).

    temperature           softmax temperature applied to cosine scores (smaller = sharper)
    learning_rate         optimizer step size
    optimizer             "adam" or "adagrad" (tf-keras; ``towers.optimizers``)
    sparse_updates        embedding tables update only the rows the batch touched, so a step costs
                          O(rows touched), not O(table size): "adam" becomes ``LazyAdam`` (a row's
                          moments do not decay in steps that skip it); "adagrad" is sparse either way
    batch_size            examples per step; every other candidate in the batch is a negative
    epochs                passes over the training interactions
    shuffle_buffer        examples held by the shuffler; 0 = all of them (a full shuffle)
    seed                  seeds Python, NumPy, TensorFlow and the shuffle order (epoch e is a
                          stateless permutation of (seed, e), so a resumed run sees the same order)
    loss                  the retrieval loss and its corrections (``towers.objectives``: logQ, MNS,
                          accidental hits, hard negatives)
    ssl                   the feature-masking SSL regulariser (``towers.objectives``: off|rfm|cfm)
    clue                  CLUE contrastive objective on the user encoder (``towers.clue``): "off";
                          "pretrain" (``clue_epochs`` epochs of that loss alone, then the retrieval
                          epochs); "joint" (retrieval loss + ``clue_weight`` · CLUE loss)
    clue_views            how the two views of a history are made: "crops" (two random contiguous
                          crops of ``clue_crop`` of its length) or "windows" (the earlier and the later half)
    clue_crop             crop length as a share of the history length, in (0, 1]
    clue_temperature      InfoNCE temperature of the CLUE loss
    clue_weight           weight of the CLUE loss in "joint" mode
    clue_epochs           pretraining epochs in "pretrain" mode
    clue_projection_dim   width of the projection head the CLUE loss is computed on
    use_weights           use the interactions' ``weight`` column (if present) as example weights
    verbose               Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch
    monitor_recall_k      > 0: log ``val_recall@k`` each epoch (exact top-k over the catalogue, the
                          user's training items excluded) for up to ``monitor_queries`` validation
                          examples; 0: off
    early_stopping_patience  > 0: stop after this many epochs without a better
                          ``early_stopping_monitor`` and restore the best weights (needs validation)
    early_stopping_monitor  "val_recall" (needs monitor_recall_k > 0) or "val_loss"
    keep_checkpoints      checkpoints kept under ``<out_dir>/checkpoints`` (0 = none written)
    tensorboard           write TensorBoard logs under ``<out_dir>/logs``
    steps_per_execution   training steps per tf.function call (larger = less Python overhead,
                          coarser progress bar)
    deterministic_ops     ``tf.config.experimental.enable_op_determinism()`` for bit-exact reruns
                          (slower; process-wide)
    resume                continue from the latest checkpoint under ``<out_dir>/checkpoints`` at the
                          epoch it was saved after (CLUE pretraining is skipped when resuming)
    strategy              tf.distribute strategy (``towers.strategy``): "default" (one device),
                          "mirrored" (all GPUs, or ``logical_cpus`` CPU devices when no GPU / asked),
                          "multi_worker" (MultiWorkerMirroredStrategy, cluster from TF_CONFIG)
    logical_cpus          > 0: split the CPU into this many logical devices for "mirrored" (must be
                          set before TensorFlow initialises its devices: a fresh process)
    """

    tower: TowerConfig = field(default_factory=TowerConfig)
    temperature: float = 0.05
    learning_rate: float = 0.003
    optimizer: Literal["adam", "adagrad"] = "adam"
    sparse_updates: bool = False
    batch_size: int = 1024
    epochs: int = 10
    shuffle_buffer: int = 0
    seed: int = 42
    loss: RetrievalLossConfig = field(default_factory=RetrievalLossConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    clue: Literal["off", "pretrain", "joint"] = "off"
    clue_views: Literal["crops", "windows"] = "crops"
    clue_crop: float = 0.6
    clue_temperature: float = 0.1
    clue_weight: float = 0.1
    clue_epochs: int = 3
    clue_projection_dim: int = 64
    use_weights: bool = True
    verbose: int = 1
    monitor_recall_k: int = 10
    monitor_queries: int = 2000
    early_stopping_patience: int = 0
    early_stopping_monitor: Literal["val_recall", "val_loss"] = "val_recall"
    keep_checkpoints: int = 1
    tensorboard: bool = True
    steps_per_execution: int = 1
    deterministic_ops: bool = False
    resume: bool = False
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    logical_cpus: int = 0

    def __post_init__(self):
        owner = "TrainConfig"
        if self.clue not in ("off", "pretrain", "joint"):
            raise ValueError(f"{owner}.clue must be 'off', 'pretrain' or 'joint', got {self.clue!r}")
        if self.clue_views not in ("crops", "windows"):
            raise ValueError(f"{owner}.clue_views must be 'crops' or 'windows', got {self.clue_views!r}")
        if not 0.0 < self.clue_crop <= 1.0:
            raise ValueError(f"{owner}.clue_crop must be in (0, 1], got {self.clue_crop!r}")
        _positive(owner, clue_temperature=self.clue_temperature, clue_projection_dim=self.clue_projection_dim)
        _non_negative(owner, clue_weight=self.clue_weight, clue_epochs=self.clue_epochs,
                      logical_cpus=self.logical_cpus)
        if self.clue != "off" and self.tower.user_encoder == "ids":
            raise ValueError(f"{owner}.clue={self.clue!r} needs a history encoder but tower.user_encoder is 'ids'; "
                             "set tower.user_encoder to 'sequence' (or 'features'), or clue: off")
        if self.strategy not in ("default", "mirrored", "multi_worker"):
            raise ValueError(f"{owner}.strategy must be 'default', 'mirrored' or 'multi_worker', "
                             f"got {self.strategy!r}")
        _positive(owner, temperature=self.temperature, learning_rate=self.learning_rate,
                  batch_size=self.batch_size, epochs=self.epochs,
                  steps_per_execution=self.steps_per_execution)
        _non_negative(owner, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
                      early_stopping_patience=self.early_stopping_patience,
                      monitor_recall_k=self.monitor_recall_k, monitor_queries=self.monitor_queries,
                      keep_checkpoints=self.keep_checkpoints)
        if self.early_stopping_patience and self.early_stopping_monitor == "val_recall" and not self.monitor_recall_k:
            raise ValueError(f"{owner}: early_stopping_monitor 'val_recall' needs monitor_recall_k > 0; "
                             "set monitor_recall_k (e.g. 10) or early_stopping_monitor: val_loss")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"{owner}.verbose must be 0, 1 or 2, got {self.verbose!r}")
