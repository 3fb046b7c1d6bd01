import numpy as np
import pytest

from tests.towers.conftest import planted
from towers.clue import info_nce
from towers.config import SequenceConfig, TowerConfig, TrainConfig
from towers.inputs import heldout_examples, training_examples
from twotower.studies.scaling.contrastive import ContrastiveLoss, fixed_loss_set, train_contrastive
from towers.tf_env import tf
from towers.train import build_model, clue_objective
from towers.vocab import build_vocabularies

CFG = TrainConfig(tower=TowerConfig(user_encoder="sequence", id_embedding_dim=8, feature_embedding_dim=4, output_dim=8,
                                    hidden_units=(), max_history=8,
                                    sequence=SequenceConfig(max_length=8, num_layers=1, width=8, ff_dim=16,
                                                            dropout=0.0, item_features=False)),
                  clue="pretrain", clue_epochs=2, clue_projection_dim=8, batch_size=64, learning_rate=0.01,
                  verbose=0, seed=3)


@pytest.fixture(scope="module")
def setup():
    dataset, split = planted()
    tf.keras.utils.set_random_seed(CFG.seed)
    vocab = build_vocabularies(dataset, split.train, CFG.tower)
    model = build_model(vocab, CFG, dataset, split.train)
    objective = clue_objective(model.query_tower, CFG, 1.0)
    train_ex = training_examples(dataset, split.train, 8)
    valid_ex = heldout_examples(dataset, split.train, split.valid, 8)
    return dataset, split, objective, train_ex, valid_ex


def test_fixed_loss_sets_are_reproducible_full_batches_of_non_empty_histories(setup):
    dataset, _, _, train_ex, valid_ex = setup
    one = fixed_loss_set(dataset, train_ex, 32, 100, "crops", 0.6, seed=5)
    two = fixed_loss_set(dataset, train_ex, 32, 100, "crops", 0.6, seed=5)
    assert one.examples == 96 and one.batch_size == 32 and len(one.batches) == 3   # 100 → 3 full batches
    for a, b in zip(one.batches, two.batches):
        for x, y in zip(a, b):
            assert np.array_equal(x.numpy(), y.numpy())
    for _, _, h1, _, h2, _ in one.batches:
        assert ((h1.numpy() != b"").sum(axis=1) > 0).all() and ((h2.numpy() != b"").sum(axis=1) > 0).all()
    other = fixed_loss_set(dataset, train_ex, 32, 100, "crops", 0.6, seed=6)
    assert any(not np.array_equal(a[2].numpy(), b[2].numpy()) for a, b in zip(one.batches, other.batches))
    small = fixed_loss_set(dataset, valid_ex, 1000, 50, "windows", 0.6, seed=0)
    assert small.batch_size == 50 and small.examples == 50                         # fewer examples than a batch
    empty = train_ex.subset(np.flatnonzero(train_ex.history_length == 0))
    assert fixed_loss_set(dataset, empty, 32, 100, "crops", 0.6, seed=0) is None
    assert fixed_loss_set(dataset, None, 32, 100, "crops", 0.6, seed=0) is None


def test_contrastive_loss_equals_info_nce_of_the_projections(setup):
    dataset, _, objective, _, valid_ex = setup
    loss_set = fixed_loss_set(dataset, valid_ex, 40, 80, "crops", 0.6, seed=1)
    expected = []
    for user_id, timestamp, h1, t1, h2, t2 in loss_set.batches:
        query = {"user_id": user_id, "timestamp": timestamp}
        a = objective.project(query, h1, t1)
        b = objective.project(query, h2, t2)
        groups = tf.strings.to_hash_bucket_fast(user_id, 2**63 - 1)  # same user, same group
        expected.append(float(info_nce(a, b, objective.temperature, groups)))
    assert ContrastiveLoss(objective)(loss_set) == pytest.approx(np.mean(expected), rel=1e-5)


def test_training_lowers_the_fixed_validation_loss(setup):
    dataset, _, objective, train_ex, valid_ex = setup
    loss_sets = {"valid": fixed_loss_set(dataset, valid_ex, 64, 192, "crops", 0.6, seed=0), "none": None}
    before = ContrastiveLoss(objective)(loss_sets["valid"])
    seen = []
    records = train_contrastive(objective, dataset, train_ex, CFG, loss_sets, on_epoch=seen.append)
    assert records == seen and [r["epoch"] for r in records] == [1, 2]
    assert all(r["loss_none"] is None and r["seconds"] > 0 for r in records)
    # measured: 5.20 before, 2.67 and 2.21 after epochs 1 and 2
    assert records[-1]["loss_valid"] < records[0]["loss_valid"] < before - 1.0
    assert np.isfinite(records[-1]["loss_train_running"])
