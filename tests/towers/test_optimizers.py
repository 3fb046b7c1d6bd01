"""Sparse ("lazy") updates of embedding tables: rows a batch did not touch stay bit for bit,
touched rows follow the dense optimizer, checkpoints resume exactly, replicas agree."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.strict import from_dict
from towers.config import TrainConfig
from towers.optimizers import LazyAdam, make_optimizer
from towers.tf_env import tf

ROWS, DIM = 12, 4


def _table(seed=0):
    return tf.Variable(np.random.default_rng(seed).normal(size=(ROWS, DIM)).astype(np.float32))


def _step(optimizer, table, rows, seed):
    """One step of loss Σ_rows w·table[rows] (a gather: the gradient is tf.IndexedSlices, rows may repeat)."""
    weights = tf.constant(np.random.default_rng(seed).normal(size=(len(rows), DIM)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(weights * tf.gather(table, tf.constant(rows)))
    gradient = tape.gradient(loss, table)
    assert isinstance(gradient, tf.IndexedSlices)
    optimizer.apply_gradients([(gradient, table)])


def _slots(optimizer, table):
    key = optimizer._index_dict[optimizer._var_key(table)]
    return [optimizer._momentums[key].numpy(), optimizer._velocities[key].numpy()]


STEPS = [[1, 3, 3, 5], [3, 7], [3, 1, 9]]  # row 3 in every step; 0, 2, 4, 6, 8, 10, 11 never


def test_lazy_adam_leaves_untouched_rows_bit_identical():
    table = _table()
    optimizer = LazyAdam(0.1)
    before = table.numpy()
    _step(optimizer, table, STEPS[0], 0)
    after_first, slots_first = table.numpy(), _slots(optimizer, table)
    _step(optimizer, table, STEPS[1], 1)
    never = [r for r in range(ROWS) if not any(r in s for s in STEPS)]
    np.testing.assert_array_equal(table.numpy()[never], before[never])
    # rows 1 and 5 are not in step 2: weights AND moments exactly as after step 1
    np.testing.assert_array_equal(table.numpy()[[1, 5]], after_first[[1, 5]])
    for now, then in zip(_slots(optimizer, table), slots_first):
        np.testing.assert_array_equal(now[[1, 5]], then[[1, 5]])
        assert not now[never].any()
    assert not np.array_equal(table.numpy()[[3, 7]], after_first[[3, 7]])


def test_dense_adam_moves_rows_the_batch_did_not_touch():
    """What the lazy update saves: tf-keras Adam decays and applies every row's moments."""
    table = _table()
    optimizer = tf.keras.optimizers.Adam(0.1)
    _step(optimizer, table, STEPS[0], 0)
    after_first = table.numpy()
    _step(optimizer, table, STEPS[1], 1)
    assert not np.array_equal(table.numpy()[[1, 5]], after_first[[1, 5]])


def test_lazy_adam_touched_rows_match_dense_adam_and_the_formula():
    lazy_table, dense_table = _table(), _table()
    lazy, dense = LazyAdam(0.1), tf.keras.optimizers.Adam(0.1)
    m, v, w = np.zeros((ROWS, DIM)), np.zeros((ROWS, DIM)), lazy_table.numpy().astype(np.float64)
    for t, rows in enumerate(STEPS, start=1):
        _step(lazy, lazy_table, rows, t)
        _step(dense, dense_table, rows, t)
        # hand formula on the touched rows (duplicate rows' gradients summed)
        g = np.zeros((ROWS, DIM))
        np.add.at(g, rows, np.random.default_rng(t).normal(size=(len(rows), DIM)).astype(np.float32))
        touched = sorted(set(rows))
        m[touched] = 0.9 * m[touched] + 0.1 * g[touched]
        v[touched] = 0.999 * v[touched] + 0.001 * g[touched] ** 2
        alpha = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        w[touched] -= alpha * m[touched] / (np.sqrt(v[touched]) + 1e-7)
        np.testing.assert_allclose(lazy_table.numpy(), w, rtol=1e-5, atol=3e-6)
        if t == 1:  # from zero moments every row agrees with dense Adam
            np.testing.assert_allclose(lazy_table.numpy(), dense_table.numpy(), rtol=1e-6, atol=1e-6)
    # row 3 was touched at every step: its whole trajectory is dense Adam's
    np.testing.assert_allclose(lazy_table.numpy()[3], dense_table.numpy()[3], rtol=1e-6, atol=1e-6)
    # rows touched only in some steps differ (their moments did not decay in the skipped steps)
    assert not np.allclose(lazy_table.numpy()[1], dense_table.numpy()[1], rtol=1e-4, atol=1e-4)


class _ScatterSubLazyAdam(LazyAdam):
    """The textbook lazy step, w_r ← w_r − α_t·m_r/(√v_r + ε) as one scatter_sub (LazyAdam's update
    before it wrote gathered rows back with scatter_update, the faster CPU kernel)."""

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        t = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))
        key = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[key], self._velocities[key]
        rows, values = gradient.indices, tf.cast(gradient.values, dtype)
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def test_lazy_adam_is_bit_identical_to_the_scatter_sub_step():
    """Duplicate rows in a batch (STEPS[0] has row 3 twice) are summed before the update, so writing
    back gathered rows equals subtracting in place, bit for bit, weights and moments."""
    tables = [_table(), _table()]
    optimizers = [LazyAdam(0.1), _ScatterSubLazyAdam(0.1)]
    for t, rows in enumerate(STEPS * 2, start=1):
        for optimizer, table in zip(optimizers, tables):
            _step(optimizer, table, rows, t)
        np.testing.assert_array_equal(tables[0].numpy(), tables[1].numpy())
        for got, want in zip(_slots(optimizers[0], tables[0]), _slots(optimizers[1], tables[1])):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(tables[0].numpy(), _table().numpy())


def test_lazy_adam_updates_dense_weights_exactly_as_adam():
    kernels = [tf.Variable(np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32)) for _ in range(2)]
    for optimizer, kernel in zip((LazyAdam(0.05), tf.keras.optimizers.Adam(0.05)), kernels):
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(kernel) ** 2)
            optimizer.apply_gradients([(tape.gradient(loss, kernel), kernel)])
    np.testing.assert_array_equal(kernels[0].numpy(), kernels[1].numpy())


def test_adagrad_is_sparse_and_matches_dense_adagrad_on_touched_rows():
    sparse_table, dense_table = _table(), _table()
    sparse, dense = make_optimizer("adagrad", 0.1, sparse_updates=True), tf.keras.optimizers.Adagrad(0.1)
    before = sparse_table.numpy()
    for t, rows in enumerate(STEPS, start=1):
        _step(sparse, sparse_table, rows, t)
        weights = tf.constant(np.random.default_rng(t).normal(size=(len(rows), DIM)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(weights * tf.gather(dense_table, tf.constant(rows)))
        dense.apply_gradients([(tf.convert_to_tensor(tape.gradient(loss, dense_table)), dense_table)])
    never = [r for r in range(ROWS) if not any(r in s for s in STEPS)]
    np.testing.assert_array_equal(sparse_table.numpy()[never], before[never])
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), rtol=1e-6, atol=1e-7)


def test_lazy_adam_checkpoint_resumes_exactly_and_shares_adams_slots(tmp_path):
    table = _table()
    optimizer = LazyAdam(0.1)
    _step(optimizer, table, STEPS[0], 0)
    path = tf.train.Checkpoint(table=table, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    saved_slots = _slots(optimizer, table)
    _step(optimizer, table, STEPS[1], 1)
    straight = table.numpy()

    restored_table, restored = _table(seed=9), LazyAdam(0.1)
    restored.build([restored_table])
    tf.train.Checkpoint(table=restored_table, optimizer=restored).restore(path).assert_consumed()
    _step(restored, restored_table, STEPS[1], 1)
    np.testing.assert_array_equal(restored_table.numpy(), straight)
    # the slots are Adam's: a checkpoint of one optimizer loads into the other
    adam_table, adam = _table(seed=9), tf.keras.optimizers.Adam(0.1)
    adam.build([adam_table])
    tf.train.Checkpoint(table=adam_table, optimizer=adam).restore(path).assert_consumed()
    for got, want in zip(_slots(adam, adam_table), saved_slots):
        assert want.any()
        np.testing.assert_array_equal(got, want)


def test_make_optimizer_and_config_switch():
    assert isinstance(make_optimizer("adam", 0.1, sparse_updates=True), LazyAdam)
    assert not isinstance(make_optimizer("adam", 0.1), LazyAdam)
    assert from_dict(TrainConfig, {"sparse_updates": True}).sparse_updates is True
    with pytest.raises(ValueError, match="optimizer must be one of \\['adam', 'adagrad'\\], got 'sgd'"):
        make_optimizer("sgd", 0.1)
    with pytest.raises(ValueError, match="LazyAdam does not support amsgrad"):
        LazyAdam(0.1, amsgrad=True)


def test_model_step_leaves_item_rows_outside_the_batch_bit_identical():
    """A real training step of the two towers with LazyAdam: every table row outside the rows the
    batch's lookups touched (positives, history, features) is unchanged, and rows did move."""
    from tests.towers.conftest import planted
    from tests.towers.test_model import full_model
    from towers.inputs import make_tf_dataset, training_examples

    ds, split = planted()
    model = full_model(ds, split.train)
    model.compile(optimizer=LazyAdam(0.05))
    ex = training_examples(ds, split.train, 8, True)
    first, batch = list(make_tf_dataset(ds, ex, 32, shuffle=True, seed=0, history_width=ex.max_history).take(2))
    model.compute_loss(batch)
    model.train_step(first)  # moments are non-zero from here on: dense Adam would now move every row
    with tf.GradientTape() as tape:
        total = model._total(model._loss_terms(batch, training=True))
    gradients = tape.gradient(total, model.trainable_variables)
    tables = [(v, np.unique(g.indices.numpy())) for v, g in zip(model.trainable_variables, gradients)
              if isinstance(g, tf.IndexedSlices)]
    item_ids = model.item_tower.item_id_embedding.table.embeddings
    touched_items = [t for v, t in tables if v is item_ids]
    assert len(touched_items) == 1 and 0 < len(touched_items[0]) < item_ids.shape[0]
    before = [v.numpy() for v, _ in tables]
    model.train_step(batch)
    moved = 0
    for (variable, touched), old in zip(tables, before):
        untouched = np.setdiff1d(np.arange(variable.shape[0]), touched)
        np.testing.assert_array_equal(variable.numpy()[untouched], old[untouched], err_msg=variable.name)
        moved += int((variable.numpy()[touched] != old[touched]).any())
    assert moved == len(tables)


def test_resume_with_sparse_updates_is_exact(tmp_path):
    from tests.towers.test_train import _small
    from towers.train import train

    ds, split = _small()
    split = dataclasses.replace(split, valid=split.valid.iloc[:0])
    cfg = TrainConfig(epochs=1, batch_size=64, verbose=0, tensorboard=False, keep_checkpoints=1, seed=5,
                      sparse_updates=True)
    train(ds, split, cfg, tmp_path / "run")
    resumed = train(ds, split, dataclasses.replace(cfg, epochs=2, resume=True), tmp_path / "run")
    straight = train(ds, split, dataclasses.replace(cfg, epochs=2), tmp_path / "straight")
    assert isinstance(straight.model.optimizer, LazyAdam) and resumed.initial_epoch == 1
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"][1:], rtol=1e-5)
    for wa, wb in zip(resumed.model.weights, straight.model.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), atol=1e-5, err_msg=wa.name)


MIRRORED_SCRIPT = """
import numpy as np
from towers.strategy import configure_logical_cpus
cpus = configure_logical_cpus(2)
from towers.tf_env import tf
from towers.optimizers import LazyAdam
# two global batches of 4 examples (2 per replica): rows 1, 5, 7 only in the first, 2, 9, 10 only in the second
rows = tf.constant([[1, 3], [3, 5], [7, 3], [1, 5], [3, 9], [10, 3], [2, 9], [3, 3]])
def run(strategy):
    with strategy.scope():
        table = tf.Variable(np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
        optimizer = LazyAdam(0.1)
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(rows).batch(4))
    @tf.function
    def step(batch):
        def replica(batch):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(tf.gather(table, batch))) / 4.0
            optimizer.apply_gradients([(tape.gradient(loss, table), table)])
        strategy.run(replica, args=(batch,))
    snapshots = []
    for batch in data:
        step(batch)
        snapshots.append(tf.convert_to_tensor(table).numpy())
    return snapshots
before = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
(first, mirrored) = run(tf.distribute.MirroredStrategy([d.name for d in cpus],
                                                      cross_device_ops=tf.distribute.ReductionToOneDevice()))
single = run(tf.distribute.get_strategy())[1]
never = [0, 4, 6, 8, 11]
assert np.array_equal(mirrored[never], before[never])
assert np.array_equal(mirrored[[1, 5, 7]], first[[1, 5, 7]])  # not in the second batch
assert not np.array_equal(mirrored[[2, 3, 9, 10]], first[[2, 3, 9, 10]])
np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)
print("OK")
"""


def test_lazy_adam_under_mirrored_strategy_matches_one_device():
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=root, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]
