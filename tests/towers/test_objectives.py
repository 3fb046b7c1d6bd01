import pytest

from towers.objectives import RetrievalLossConfig, SSLConfig
from core.strict import from_dict, to_dict


def test_defaults_switch_everything_off_and_round_trip():
    loss, ssl = RetrievalLossConfig(), SSLConfig()
    assert loss.logq == "off" and loss.mns_negatives == 0 and loss.hard_negatives == 0
    assert ssl.mode == "off" and not ssl.enabled
    assert from_dict(RetrievalLossConfig, to_dict(loss)) == loss
    cfg = from_dict(SSLConfig, {"mode": "cfm", "weight": 1, "query_side": True})
    assert cfg.enabled and cfg.weight == 1.0 and from_dict(SSLConfig, to_dict(cfg)) == cfg
    assert not SSLConfig(mode="rfm", weight=0.0).enabled


@pytest.mark.parametrize("cls,kwargs,message", [
    (RetrievalLossConfig, {"logq": "sampled"}, r"RetrievalLossConfig.logq must be one of 'off', 'counts', "
                                               r"'streaming', got 'sampled'"),
    (RetrievalLossConfig, {"frequency_alpha": 0.0}, r"frequency_alpha must be in \(0, 1\], got 0.0"),
    (RetrievalLossConfig, {"frequency_buckets": 0}, r"frequency_buckets must be >= 1, got 0"),
    (RetrievalLossConfig, {"mns_negatives": -1}, r"mns_negatives must be >= 0 \(0 = off\), got -1"),
    (RetrievalLossConfig, {"hard_negatives": -2}, r"hard_negatives must be >= 0"),
    (SSLConfig, {"mode": "mask"}, r"SSLConfig.mode must be one of 'off', 'rfm', 'cfm', got 'mask'"),
    (SSLConfig, {"temperature": 0.0}, r"SSLConfig.temperature must be > 0, got 0.0"),
    (SSLConfig, {"weight": -0.1}, r"SSLConfig.weight must be >= 0, got -0.1"),
    (SSLConfig, {"item_batch_size": 1}, r"item_batch_size must be >= 2 .*got 1"),
    (SSLConfig, {"multi_value_dropout": 1.0}, r"multi_value_dropout must be in \[0, 1\), got 1.0"),
    (SSLConfig, {"sequence_dropout": -0.5}, r"sequence_dropout must be in \[0, 1\), got -0.5"),
    (SSLConfig, {"cfm_k": -1}, r"cfm_k must be >= 0"),
    (SSLConfig, {"query_batch_size": 1}, r"query_batch_size must be >= 2 .* or 0 .*got 1"),
])
def test_bad_values_name_the_key_and_value(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match=r"unknown config key"):
        from_dict(SSLConfig, {"mdoe": "rfm"})
