import pytest

from towers.config import TowerConfig, TrainConfig
from core.strict import from_dict, to_dict


def test_nested_round_trip_and_defaults():
    cfg = from_dict(TrainConfig, {"epochs": 3, "tower": {"output_dim": 32, "hidden_units": [64, 32]}})
    assert cfg.epochs == 3 and cfg.tower.output_dim == 32 and cfg.tower.hidden_units == (64, 32)
    assert cfg.tower.max_history == TowerConfig().max_history
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    assert TowerConfig().output_dim == 64


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['tower.outptu_dim'\]"):
        from_dict(TrainConfig, {"tower": {"outptu_dim": 8}})


@pytest.mark.parametrize("cls,kwargs,message", [
    (TowerConfig, {"output_dim": 0}, r"TowerConfig.output_dim must be > 0, got 0"),
    (TowerConfig, {"hidden_units": (64, 0)}, r"hidden_units must all be > 0, got \[64, 0\]"),
    (TowerConfig, {"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    (TowerConfig, {"id_hash_bins": -1}, r"id_hash_bins must be >= 0, got -1"),
    (TrainConfig, {"temperature": 0.0}, r"TrainConfig.temperature must be > 0, got 0.0"),
    (TrainConfig, {"verbose": 3}, r"verbose must be 0, 1 or 2, got 3"),
    (TrainConfig, {"batch_size": -8}, r"batch_size must be > 0, got -8"),
    (TrainConfig, {"early_stopping_patience": 2, "monitor_recall_k": 0},
     r"early_stopping_monitor 'val_recall' needs monitor_recall_k > 0"),
])
def test_bad_values_name_the_key_and_value(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_literal_values_are_checked_by_from_dict():
    with pytest.raises(ValueError, match=r"optimizer: 'sgd' is not one of \['adam', 'adagrad'\]"):
        from_dict(TrainConfig, {"optimizer": "sgd"})


def test_new_switches_are_checked_with_the_fix():
    from towers.config import TrainConfig
    from core.strict import from_dict
    cfg = from_dict(TrainConfig, {"clue": "joint", "strategy": "mirrored", "logical_cpus": 2, "resume": True,
                                  "loss": {"logq": "streaming", "mns_negatives": 8}, "ssl": {"mode": "cfm"},
                                  "tower": {"user_encoder": "sequence", "sequence": {"max_length": 10}}})
    assert cfg.loss.logq == "streaming" and cfg.ssl.mode == "cfm" and cfg.tower.sequence.max_length == 10
    with pytest.raises(ValueError, match="clue must be 'off', 'pretrain' or 'joint', got 'yes'"):
        TrainConfig(clue="yes")
    with pytest.raises(ValueError, match=r"clue_crop must be in \(0, 1\], got 1.5"):
        TrainConfig(clue_crop=1.5)
    with pytest.raises(ValueError, match="strategy must be 'default', 'mirrored' or 'multi_worker', got 'tpu'"):
        TrainConfig(strategy="tpu")
    with pytest.raises(ValueError, match="logical_cpus must be >= 0"):
        TrainConfig(logical_cpus=-1)
