import dataclasses

import numpy as np
import pytest

from tests.towers.conftest import planted, planted_dataset, leave_last_out, popularity_and_model_recall, \
    trained_planted
from towers.config import SequenceConfig, TowerConfig, TrainConfig
from towers.inputs import eval_queries, item_features_batch
from towers.train import train


def test_short_training_beats_popularity_on_held_out_recall():
    ds, split, result = trained_planted()
    q = eval_queries(ds, split, result.config.tower.max_history)
    query_vecs = result.query_tower(q.features).numpy()
    item_vecs = result.item_tower(item_features_batch(ds.items, ds.item_features)).numpy()
    model, popularity = popularity_and_model_recall(ds, split, query_vecs, item_vecs, q.test_rows)
    assert model >= popularity + 0.2, (model, popularity)  # measured: 0.53 vs 0.16


def test_result_reports_history_timing_and_writes_checkpoints():
    ds, split, result = trained_planted()
    cfg = result.config
    assert set(result.history) == {"loss", "regularization_loss", "val_loss", "val_regularization_loss",
                                   "val_recall@10"}
    assert len(result.history["loss"]) == cfg.epochs == len(result.epoch_train_seconds)
    assert result.history["loss"][-1] < 0.8 * result.history["loss"][0]
    assert result.num_train_examples == len(split.train) and result.num_valid_examples == len(split.valid)
    assert result.examples_per_second > 0
    checkpoints = sorted(p.name for p in (result.out_dir / "checkpoints").iterdir())
    assert "checkpoint" in checkpoints and any(p.startswith(f"ckpt-{cfg.epochs}.") for p in checkpoints)
    assert not any(p.startswith(f"ckpt-{cfg.epochs - 1}.") for p in checkpoints)  # keep_checkpoints=1


def _small():
    ds = planted_dataset(n_users=40, n_items=30, events_per_user=8, seed=3)
    return ds, leave_last_out(ds)


# One 2-epoch run shared by the same-seed and the resume tests (each train() call costs a trace).
SEEDED = TrainConfig(epochs=2, batch_size=64, verbose=0, tensorboard=True, keep_checkpoints=2, seed=5)


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    """(ds, split without validation, TrainResult of SEEDED in <tmp>/run). The resume test
    continues that run directory; the result's in-memory model is not touched by it."""
    ds, split = _small()
    split = dataclasses.replace(split, valid=split.valid.iloc[:0])  # no validation: one traced function
    return ds, split, train(ds, split, SEEDED, tmp_path_factory.mktemp("seeded") / "run")


def test_same_seed_same_model(seeded_run, tmp_path):
    ds, split, a = seeded_run
    b = train(ds, split, SEEDED, tmp_path / "b")
    assert a.history["loss"] == b.history["loss"]
    for wa, wb in zip(a.model.weights, b.model.weights):
        assert np.array_equal(wa.numpy(), wb.numpy()), wa.name
    assert any((a.out_dir / "logs").rglob("events.out.tfevents.*"))


def test_bad_arguments_say_what_to_fix(tmp_path):
    ds, split = planted()
    with pytest.raises(TypeError, match="cfg must be a towers.config.TrainConfig, got dict"):
        train(ds, split, {"epochs": 1}, tmp_path)
    empty = dataclasses.replace(split, train=split.train.iloc[:0])
    with pytest.raises(ValueError, match="split.train is empty"):
        train(ds, empty, TrainConfig(), tmp_path)
    no_valid = dataclasses.replace(split, valid=split.valid.iloc[:0])
    with pytest.raises(ValueError, match="early_stopping_patience > 0 needs validation interactions"):
        train(ds, no_valid, TrainConfig(early_stopping_patience=2, verbose=0), tmp_path)


def test_resume_continues_at_the_saved_epoch_as_if_never_stopped(seeded_run, tmp_path):
    ds, split, first = seeded_run
    cfg = dataclasses.replace(SEEDED, tensorboard=False)
    run = first.out_dir  # holds ckpt-1, ckpt-2 (keep_checkpoints=2)
    resumed = train(ds, split, dataclasses.replace(cfg, epochs=4, resume=True), run)
    straight = train(ds, split, dataclasses.replace(cfg, epochs=4), tmp_path / "straight")
    assert resumed.initial_epoch == 2 and len(resumed.history["loss"]) == 2
    assert first.history["loss"] == straight.history["loss"][:2]
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"][2:], rtol=1e-5)
    for wa, wb in zip(resumed.model.weights, straight.model.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), atol=1e-5, err_msg=wa.name)
    assert sorted(p.name.split(".")[0] for p in (run / "checkpoints").glob("ckpt-*.index")) == \
        ["ckpt-3", "ckpt-4"]
    done = train(ds, split, dataclasses.replace(cfg, epochs=4, resume=True), run)
    assert done.initial_epoch == 4 and done.history == {}  # nothing left to do


def test_early_stopping_on_validation_recall_stops_and_restores(tmp_path):
    ds, split = _small()
    cfg = TrainConfig(epochs=6, batch_size=64, verbose=0, tensorboard=False, keep_checkpoints=0, seed=1,
                      learning_rate=1e-12, early_stopping_patience=1, monitor_recall_k=5)
    result = train(ds, split, cfg, tmp_path)
    recall = result.history["val_recall@5"]
    assert len(recall) == 2 and recall[0] == recall[1]  # no improvement after epoch 1: stop after epoch 2
    assert result.stopped_epoch == 1


def test_clue_pretraining_then_retrieval_and_joint_training_report_the_clue_loss(tmp_path):
    ds, split = _small()
    split = dataclasses.replace(split, valid=split.valid.iloc[:0])
    tower = TowerConfig(output_dim=8, id_embedding_dim=8, feature_embedding_dim=4, hidden_units=(8,), max_history=6,
                        user_encoder="sequence", sequence=SequenceConfig(max_length=6, width=8, ff_dim=8))
    cfg = TrainConfig(tower=tower, epochs=1, batch_size=64, verbose=0, tensorboard=False, keep_checkpoints=0,
                      clue="pretrain", clue_epochs=3, clue_views="windows", learning_rate=0.01)
    pre = train(ds, split, cfg, tmp_path / "pre")
    clue = pre.extra["clue_pretrain"]["history"]["clue_loss"]
    assert len(clue) == 3 and clue[-1] < clue[0] and len(pre.history["loss"]) == 1
    joint = train(ds, split, dataclasses.replace(cfg, clue="joint", clue_weight=0.5), tmp_path / "joint")
    assert "clue_pretrain" not in joint.extra and len(joint.history["clue_loss"]) == 1
    assert all(np.isfinite(joint.history["clue_loss"]))
