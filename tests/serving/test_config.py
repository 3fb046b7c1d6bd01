import pytest

from serving.config import ServingConfig
from core.strict import ConfigError, from_dict


def test_defaults_and_from_dict():
    cfg = from_dict(ServingConfig, {"max_batch": 8, "max_wait_ms": 2, "reload_interval_s": None})
    assert cfg.max_batch == 8 and cfg.max_wait_ms == 2.0 and cfg.reload_interval_s is None
    assert ServingConfig().index_overrides() == {}
    assert ServingConfig(nprobe=16).index_overrides() == {"nprobe": 16}


def test_unknown_key_is_rejected_with_the_allowed_keys():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['max_batchsize'\].*allowed keys.*max_batch"):
        from_dict(ServingConfig, {"max_batchsize": 8})


@pytest.mark.parametrize("field, value, message", [
    ("max_batch", 0, "max_batch must be a positive int, got 0"),
    ("max_k", True, "max_k must be a positive int, got True"),
    ("max_wait_ms", -1.0, "max_wait_ms must be a number >= 0"),
    ("request_timeout_s", 0, "request_timeout_s must be a number > 0"),
    ("reload_interval_s", 0.0, "reload_interval_s must be a number > 0 .* or None"),
    ("nprobe", 0, "nprobe must be a positive int or None"),
    ("search_threads", 0, r"search_threads must be a positive int or None \(= one per core\), got 0"),
    ("max_connections", 0, "max_connections must be a positive int, got 0"),
    ("idle_timeout_s", -1, r"idle_timeout_s must be a number > 0 \(seconds\), got -1"),
    ("read_timeout_s", float("nan"), "read_timeout_s must be a number > 0"),
    ("drain_timeout_s", "5", "drain_timeout_s must be a number > 0"),
])
def test_bad_values_say_what_is_wrong(field, value, message):
    with pytest.raises(ValueError, match=message):
        ServingConfig(**{field: value})


def test_wrong_type_from_yaml_is_a_type_error():
    with pytest.raises(ConfigError, match="max_batch: expected int, got str"):
        from_dict(ServingConfig, {"max_batch": "8"})
