"""Train the two towers on a Dataset + split: ``train(dataset, split, cfg, out_dir) -> TrainResult``.

What it does, in order:
  1. seeds Python / NumPy / TensorFlow (``tf.keras.utils.set_random_seed(cfg.seed)``);
  2. adapts vocabularies and statistics from ``split.train`` only (``towers.vocab``);
  3. one example per training interaction (history strictly before it, ``towers.inputs``),
     fully shuffled each epoch from the seed; validation examples (if ``split.valid`` is not
     empty) see the user's training events only;
  4. Keras ``fit`` of ``TwoTowerModel`` with a progress bar (``cfg.verbose``), TensorBoard logs
     under ``<out_dir>/logs``, checkpoints under ``<out_dir>/checkpoints`` (latest
     ``cfg.keep_checkpoints``), optional early stopping on the validation loss.

Nothing is exported here; ``towers.export.export_towers`` writes the SavedModels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recdata.schema import Dataset
from towers.config import TrainConfig
from towers.inputs import heldout_examples, make_tf_dataset, training_examples
from towers.item_tower import ItemTower, make_item_id_embedding
from towers.model import TwoTowerModel
from towers.monitor import HeldoutRecall
from towers.query_tower import QueryTower
from towers.tf_env import tf
from towers.vocab import Vocabularies, build_vocabularies


@dataclass
class TrainResult:
    """What a training run produced (in memory) and how fast it ran.

    history               Keras history: per-epoch "loss" (in-batch softmax, mean per example),
                          "regularization_loss", and when validating "val_loss",
                          "val_regularization_loss", "val_recall@k"
    epoch_train_seconds   wall time of each epoch's training steps (validation excluded)
    num_train_examples    examples per epoch (= training interactions)
    """

    model: TwoTowerModel
    query_tower: QueryTower
    item_tower: ItemTower
    vocab: Vocabularies
    config: TrainConfig
    history: dict
    epoch_train_seconds: list
    num_train_examples: int
    num_valid_examples: int
    out_dir: Path
    stopped_epoch: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def examples_per_second(self) -> float:
        """Median training throughput over epochs after the first (which includes tracing)."""
        secs = self.epoch_train_seconds[1:] or self.epoch_train_seconds
        return float(self.num_train_examples / np.median(secs)) if secs else float("nan")


def build_model(vocab: Vocabularies, cfg: TrainConfig) -> TwoTowerModel:
    """Both towers (sharing the item-id table) joined by the retrieval task."""
    item_ids = make_item_id_embedding(vocab, cfg.tower)
    query_tower = QueryTower(item_ids, vocab, cfg.tower)
    item_tower = ItemTower(item_ids, vocab, cfg.tower)
    return TwoTowerModel(query_tower, item_tower, cfg.temperature, cfg.remove_accidental_hits)


def make_optimizer(cfg: TrainConfig):
    if cfg.optimizer == "adam":
        return tf.keras.optimizers.Adam(cfg.learning_rate)
    return tf.keras.optimizers.Adagrad(cfg.learning_rate)


def train(dataset: Dataset, split, cfg: TrainConfig, out_dir: str | Path) -> TrainResult:
    """Fit the towers on ``split.train`` (see module docstring); returns a ``TrainResult``."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a towers.config.TrainConfig, got {type(cfg).__name__}; "
                        "build it with twotower.strict.from_dict(TrainConfig, mapping)")
    for name in ("train", "test"):
        if not hasattr(split, name):
            raise TypeError(f"split must have .train/.valid/.test DataFrames; {type(split).__name__} has no .{name}")
    if len(split.train) == 0:
        raise ValueError("split.train is empty: nothing to train on; check the split settings")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic_ops:
        tf.config.experimental.enable_op_determinism()

    vocab = build_vocabularies(dataset, split.train, cfg.tower)
    train_ex = training_examples(dataset, split.train, cfg.tower.max_history, cfg.use_weights)
    train_ds = make_tf_dataset(dataset, train_ex, cfg.batch_size, shuffle=True, seed=cfg.seed,
                               shuffle_buffer=cfg.shuffle_buffer)
    valid = getattr(split, "valid", None)
    valid_ds, n_valid = None, 0
    if valid is not None and len(valid):
        valid_ex = heldout_examples(dataset, split.train, valid, cfg.tower.max_history, cfg.use_weights)
        valid_ds, n_valid = make_tf_dataset(dataset, valid_ex, cfg.batch_size, shuffle=False, seed=cfg.seed), len(valid_ex)
    if cfg.early_stopping_patience and valid_ds is None:
        raise ValueError("early_stopping_patience > 0 needs validation interactions but split.valid is empty; "
                         "set early_stopping_patience: 0 or use a split with a validation part")

    model = build_model(vocab, cfg)
    model.compile(optimizer=make_optimizer(cfg), steps_per_execution=cfg.steps_per_execution)
    # Create every variable (towers, then optimizer slots) eagerly, so Keras traces its train
    # step once instead of twice (a tf.function that creates variables is traced again).
    model.compute_loss(next(iter(train_ds)), training=False)
    model.optimizer.build(model.trainable_variables)

    timer = _EpochTimer()
    callbacks = [timer]
    recall_name = None
    if cfg.monitor_recall_k and valid_ds is not None:
        monitor = HeldoutRecall(dataset, valid_ex, split.train, k=cfg.monitor_recall_k,
                                max_queries=cfg.monitor_queries, seed=cfg.seed)
        callbacks.append(monitor)  # before TensorBoard / EarlyStopping, which read its value
        recall_name = monitor.name
    if cfg.tensorboard:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), write_graph=False,
                                                        update_freq="epoch", profile_batch=0))
    if cfg.keep_checkpoints:
        callbacks.append(_Checkpoints(model, out_dir / "checkpoints", cfg.keep_checkpoints))
    early = None
    if cfg.early_stopping_patience:
        by_recall = cfg.early_stopping_monitor == "val_recall"
        early = tf.keras.callbacks.EarlyStopping(monitor=recall_name if by_recall else "val_loss",
                                                 mode="max" if by_recall else "min",
                                                 patience=cfg.early_stopping_patience, restore_best_weights=True)
        callbacks.append(early)

    fit = model.fit(train_ds, epochs=cfg.epochs, validation_data=valid_ds, callbacks=callbacks,
                    verbose=cfg.verbose)
    return TrainResult(
        model=model, query_tower=model.query_tower, item_tower=model.item_tower, vocab=vocab, config=cfg,
        history={k: [float(x) for x in v] for k, v in fit.history.items()},
        epoch_train_seconds=timer.seconds, num_train_examples=len(train_ex), num_valid_examples=n_valid,
        out_dir=out_dir, stopped_epoch=int(early.stopped_epoch) if early is not None else 0,
    )


class _EpochTimer(tf.keras.callbacks.Callback):
    """Wall time of each epoch's training part (stops when validation starts)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def _stop(self):
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()


class _Checkpoints(tf.keras.callbacks.Callback):
    """Model + optimizer checkpoint after every epoch, keeping the latest ``keep``."""

    def __init__(self, model, directory: Path, keep: int):
        super().__init__()
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=keep)

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)
