"""Train the two towers on a Dataset + split: ``train(dataset, split, cfg, out_dir) -> TrainResult``.

What it does, in order:
  1. picks the tf.distribute strategy (``towers.strategy``; before anything else touches TF),
     seeds Python / NumPy / TensorFlow (``tf.keras.utils.set_random_seed(cfg.seed)``);
  2. adapts vocabularies and statistics from ``split.train`` only (``towers.vocab``);
  3. one example per training interaction (history strictly before it, ``towers.inputs``); the
     batches of all epochs come from one tf.data stream whose epoch-e order is a function of
     (seed, e) (so a resumed run trains on the same batches), parallel batch assembly and
     prefetching; validation examples (if ``split.valid`` is not empty) see the user's training
     events only, and their batches are cached; batches carry only the most recent history
     entries the steps read (``TwoTowerModel.training_history_window``; CLUE pretraining gets all);
  4. builds the model under the strategy's scope (``build_model``); with ``cfg.resume`` restores
     the latest checkpoint under ``<out_dir>/checkpoints`` and continues at the epoch after it;
  5. ``clue: pretrain`` (and not resuming): ``clue_epochs`` epochs of the CLUE loss alone
     (``towers.clue``); ``clue: joint`` adds it to the retrieval loss;
  6. Keras ``fit`` of ``TwoTowerModel`` with a progress bar (``cfg.verbose``), TensorBoard logs
     under ``<out_dir>/logs``, a checkpoint after every epoch (latest ``cfg.keep_checkpoints``),
     ``val_recall@k`` and optional early stopping on it (or on the validation loss).

Nothing is exported here; ``towers.export.export_towers`` writes the SavedModels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recdata.schema import Dataset
from towers.clue import ClueObjective, CluePretrainer
from towers.config import TrainConfig
from towers.inputs import batches_per_epoch, heldout_examples, item_features_batch, make_tf_dataset, \
    training_examples
from towers.item_tower import ItemTower, make_item_id_embedding
from towers.model import TwoTowerModel
from towers import optimizers
from towers.monitor import HeldoutRecall
from towers.query_tower import QueryTower
from towers.strategy import is_chief, make_strategy
from towers.tf_env import tf
from towers.vocab import Vocabularies, build_vocabularies

CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    """What a training run produced (in memory) and how fast it ran.

    history               Keras history of the epochs run by this call: per-epoch "loss"
                          (in-batch softmax, mean per example), "regularization_loss", auxiliary
                          losses, and when validating "val_loss", "val_regularization_loss",
                          "val_recall@k"
    epoch_train_seconds   wall time of each epoch's training steps (validation excluded)
    num_train_examples    examples per epoch (= training interactions)
    initial_epoch         epochs already done when this call started (> 0 after ``resume``)
    extra                 "clue_pretrain": {"history", "epoch_train_seconds"} when pretraining ran
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
    initial_epoch: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def examples_per_second(self) -> float:
        """Median training throughput over epochs after the first (which includes tracing)."""
        secs = self.epoch_train_seconds[1:] or self.epoch_train_seconds
        return float(self.num_train_examples / np.median(secs)) if secs else float("nan")


def build_model(vocab: Vocabularies, cfg: TrainConfig, dataset: Dataset, train) -> TwoTowerModel:
    """Both towers (sharing the item-id table; with a sequence encoder also the item feature
    tables) joined by the retrieval task with the configured loss / SSL / CLUE terms. Statistics
    the terms need (corpus, item counts, MI tables) come from ``dataset`` and the TRAINING
    interactions ``train`` only (``TwoTowerModel.from_training_data``)."""
    item_ids = make_item_id_embedding(vocab, cfg.tower)
    item_tower = ItemTower(item_ids, vocab, cfg.tower)
    catalogue = None
    if cfg.tower.user_encoder == "sequence" and cfg.tower.sequence.item_features:
        catalogue = item_features_batch(dataset.items, vocab.item_specs)
    query_tower = QueryTower(item_ids, vocab, cfg.tower, item_features=item_tower.features if catalogue else None,
                             catalogue=catalogue)
    auxiliary = [clue_objective(query_tower, cfg, cfg.clue_weight)] if cfg.clue == "joint" else []
    return TwoTowerModel.from_training_data(query_tower, item_tower, cfg.temperature, dataset, train,
                                            loss=cfg.loss, ssl=cfg.ssl, seed=cfg.seed, auxiliary_losses=auxiliary)


def clue_objective(query_tower: QueryTower, cfg: TrainConfig, weight: float) -> ClueObjective:
    return ClueObjective(query_tower, cfg.clue_projection_dim, cfg.clue_temperature, weight=weight,
                         views=cfg.clue_views, crop=cfg.clue_crop, name="clue_loss")


def make_optimizer(cfg: TrainConfig):
    """The configured optimizer (``towers.optimizers.make_optimizer``)."""
    return optimizers.make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.sparse_updates)


def train(dataset: Dataset, split, cfg: TrainConfig, out_dir: str | Path, extra_callbacks=()) -> TrainResult:
    """Fit the towers on ``split.train`` (see module docstring); returns a ``TrainResult``.

    ``extra_callbacks``: more Keras callbacks, run after the built-in ones (so at ``on_epoch_end`` the epoch's
    checkpoint is already saved; ``twotower`` uploads it for a run on object storage)."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a towers.config.TrainConfig, got {type(cfg).__name__}; "
                        "build it with core.strict.from_dict(TrainConfig, mapping)")
    for name in ("train", "test"):
        if not hasattr(split, name):
            raise TypeError(f"split must have .train/.valid/.test DataFrames; {type(split).__name__} has no .{name}")
    if len(split.train) == 0:
        raise ValueError("split.train is empty: nothing to train on; check the split settings")
    valid = getattr(split, "valid", None)
    has_valid = valid is not None and len(valid) > 0
    if cfg.early_stopping_patience and not has_valid:
        raise ValueError("early_stopping_patience > 0 needs validation interactions but split.valid is empty; "
                         "set early_stopping_patience: 0 or use a split with a validation part")
    strategy = make_strategy(cfg.strategy, cfg.logical_cpus)  # first: logical devices need a fresh TF
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    replicated = strategy.num_replicas_in_sync > 1

    vocab = build_vocabularies(dataset, split.train, cfg.tower)
    train_ex = training_examples(dataset, split.train, cfg.tower.max_history, cfg.use_weights)
    steps = batches_per_epoch(len(train_ex), cfg.batch_size, drop_remainder=replicated)
    if steps == 0:
        raise ValueError(f"{len(train_ex)} training examples make no full batch of {cfg.batch_size} for "
                         f"{strategy.num_replicas_in_sync} replicas; lower batch_size")
    with strategy.scope():
        model = build_model(vocab, cfg, dataset, split.train)
        model.compile(optimizer=make_optimizer(cfg), steps_per_execution=cfg.steps_per_execution)
    # the steps read only the most recent `window` history entries: batches carry just those
    window = model.training_history_window
    step_ex = train_ex.most_recent(window) if window else train_ex
    valid_ds, n_valid, valid_ex = None, 0, None
    if has_valid:
        valid_ex = heldout_examples(dataset, split.train, valid, cfg.tower.max_history, cfg.use_weights)
        valid_step_ex = valid_ex.most_recent(window) if window else valid_ex
        valid_ds = make_tf_dataset(dataset, valid_step_ex, cfg.batch_size, shuffle=False, seed=cfg.seed,
                                   drop_remainder=replicated and len(valid_ex) >= cfg.batch_size,
                                   cache=True, history_width=valid_step_ex.max_history)
        n_valid = len(valid_ex)
    with strategy.scope():
        # Create every variable (towers, then optimizer slots) eagerly, so Keras traces its train
        # step once instead of twice (a tf.function that creates variables is traced again).
        probe = make_tf_dataset(dataset, step_ex.subset(np.arange(min(len(step_ex), cfg.batch_size))),
                                cfg.batch_size, shuffle=False, seed=cfg.seed, history_width=step_ex.max_history)
        model.compute_loss(next(iter(probe)), training=False)
        model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(out_dir / CHECKPOINTS), max_to_keep=max(cfg.keep_checkpoints, 1))
    initial_epoch = 0
    if cfg.resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        initial_epoch = min(int(manager.latest_checkpoint.rsplit("-", 1)[1]), cfg.epochs)
    extra = {}
    if cfg.clue == "pretrain" and cfg.clue_epochs and initial_epoch == 0:
        extra["clue_pretrain"] = _clue_pretrain(dataset, train_ex, model, cfg, strategy, replicated)

    train_ds = make_tf_dataset(dataset, step_ex, cfg.batch_size, shuffle=True, seed=cfg.seed,
                               shuffle_buffer=cfg.shuffle_buffer, epochs=cfg.epochs, first_epoch=initial_epoch,
                               drop_remainder=replicated, history_width=step_ex.max_history)
    chief = is_chief(strategy)
    timer = _EpochTimer()
    callbacks = [timer]
    recall_name = None
    if cfg.monitor_recall_k and valid_ex is not None:
        monitor = HeldoutRecall(dataset, valid_ex, split.train, k=cfg.monitor_recall_k,
                                max_queries=cfg.monitor_queries, seed=cfg.seed)
        callbacks.append(monitor)  # before TensorBoard / EarlyStopping, which read its value
        recall_name = monitor.name
    if cfg.tensorboard and chief:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), write_graph=False,
                                                        update_freq="epoch", profile_batch=0))
    if cfg.keep_checkpoints and chief:
        callbacks.append(_Checkpoints(manager))
    early = None
    if cfg.early_stopping_patience:
        by_recall = cfg.early_stopping_monitor == "val_recall"
        early = tf.keras.callbacks.EarlyStopping(monitor=recall_name if by_recall else "val_loss",
                                                 mode="max" if by_recall else "min",
                                                 patience=cfg.early_stopping_patience, restore_best_weights=True)
        callbacks.append(early)

    callbacks += list(extra_callbacks)
    history = {}
    if initial_epoch < cfg.epochs:
        fit = model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                        validation_data=valid_ds, callbacks=callbacks, verbose=cfg.verbose)
        history = {k: [float(x) for x in v] for k, v in fit.history.items()}
    return TrainResult(
        model=model, query_tower=model.query_tower, item_tower=model.item_tower, vocab=vocab, config=cfg,
        history=history, epoch_train_seconds=timer.seconds, num_train_examples=len(train_ex),
        num_valid_examples=n_valid, out_dir=out_dir,
        stopped_epoch=int(early.stopped_epoch) if early is not None else 0, initial_epoch=initial_epoch,
        extra=extra,
    )


def _clue_pretrain(dataset, train_ex, model, cfg: TrainConfig, strategy, replicated: bool) -> dict:
    """``cfg.clue_epochs`` epochs of the CLUE loss alone on the training examples' histories."""
    with strategy.scope():
        pretrainer = CluePretrainer(clue_objective(model.query_tower, cfg, 1.0))
        pretrainer.compile(optimizer=make_optimizer(cfg), steps_per_execution=cfg.steps_per_execution)
        pretrainer.optimizer.build(pretrainer.objective.trainable_variables)  # slots now: the step traces once
    data = make_tf_dataset(dataset, train_ex, cfg.batch_size, shuffle=True, seed=cfg.seed + 1,
                           shuffle_buffer=cfg.shuffle_buffer, epochs=cfg.clue_epochs, drop_remainder=replicated,
                           history_width=train_ex.max_history)
    timer = _EpochTimer()
    fit = pretrainer.fit(data, epochs=cfg.clue_epochs, callbacks=[timer], verbose=cfg.verbose,
                         steps_per_epoch=batches_per_epoch(len(train_ex), cfg.batch_size, replicated))
    return {"history": {k: [float(x) for x in v] for k, v in fit.history.items()},
            "epoch_train_seconds": timer.seconds}


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
    """Model + optimizer checkpoint ``ckpt-<epochs done>`` after every epoch (manager keeps the latest)."""

    def __init__(self, manager: tf.train.CheckpointManager):
        super().__init__()
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)
