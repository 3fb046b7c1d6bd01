"""eval.config.EvalConfig: defaults, strict construction from dicts, validation messages."""
import pytest

from eval.config import EvalConfig


def test_defaults_and_round_trip():
    cfg = EvalConfig()
    assert cfg.ks == (10, 50, 100) and cfg.max_k == 100 and cfg.head_share == 0.2
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    cfg2 = EvalConfig.from_dict({"ks": [5, 20], "activity_thresholds": [3, 30], "torso_share": 0.3})
    assert cfg2.ks == (5, 20) and cfg2.activity_thresholds == (3, 30) and cfg2.max_k == 20


def test_unknown_key_rejected():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['head_shares'\]"):
        EvalConfig.from_dict({"head_shares": 0.1})


@pytest.mark.parametrize("kwargs, message", [
    ({"ks": ()}, "ks is empty"),
    ({"ks": (50, 10)}, r"strictly ascending without repeats, got \[50, 10\]; use \[10, 50\]"),
    ({"ks": (0, 10)}, "positive integers"),
    ({"head_share": 1.0}, r"head_share must be in \(0, 1\), got 1.0"),
    ({"head_share": 0.5, "torso_share": 0.5}, r"torso_share must be in \[0, 1 - head_share\)"),
    ({"activity_thresholds": (20, 5)}, "strictly ascending positive integers, got \\[20, 5\\]"),
    ({"bootstrap_samples": -1}, "bootstrap_samples must be >= 0"),
    ({"confidence": 1.5}, r"confidence must be in \(0, 1\)"),
    ({"query_block": 0}, "query_block must be > 0"),
    ({"excluded_targets": "ignore"}, "'drop', 'keep' or 'error', got 'ignore'"),
])
def test_bad_values_say_what_and_how(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**kwargs)
