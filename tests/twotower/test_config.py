import pytest

from core.strict import ConfigError

from twotower.config import RunConfig, config_to_yaml, load_config, parse_overrides, save_config


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["name=x", "train.epochs=3", "eval.ks=[5, 20]", "index.factory=HNSW32,Flat"])
    assert (cfg.name, cfg.train.epochs, cfg.eval.ks, cfg.index.factory) == ("x", 3, (5, 20), "HNSW32,Flat")
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg


def test_demo_config_loads():
    cfg = load_config("configs/demo.yaml")
    assert cfg.name == "demo" and cfg.data.source == "movielens-100k"


def test_unknown_key_in_file_names_file_and_allowed_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: a\ntrain:\n  epochz: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key\(s\) \['train.epochz'\].*allowed keys"):
        load_config(p)


def test_unknown_override_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown config key 'trian' in 'trian.epochs' for RunConfig; allowed keys: \['data'"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ValueError, match=r"--set expects KEY=VALUE, got 'train.epochs'"):
        parse_overrides(["train.epochs"])
    with pytest.raises(ConfigError, match="config with --set train.epochs: train.epochs: expected int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ValueError, match="must be > 0"):
        load_config(None, ["train.epochs=0"])


def test_words_stay_strings_and_booleans_parse():
    assert parse_overrides(["a=off", "b=true", "c=3"]) == [("a", "off"), ("b", True), ("c", 3)]


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml does not exist and is not a shipped config; shipped run "
                                                "configs: demo, full"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_config(p)


def test_run_name_must_be_a_plain_directory_name():
    with pytest.raises(ValueError, match="plain directory name"):
        RunConfig(name="a/b")


def test_yaml_is_readable():
    text = config_to_yaml(RunConfig())
    assert text.startswith("name: run\ndata:")


def test_overrides_are_validated_together(tmp_path):
    # issue 13 item 12: each --set used to be validated alone, so this pair failed with "needs data.path".
    cfg = load_config("configs/demo.yaml", ["data.source=tabular", f"data.path={tmp_path / 'schema.yaml'}"])
    assert (cfg.data.source, cfg.data.path) == ("tabular", str(tmp_path / "schema.yaml"))
    with pytest.raises(ConfigError, match=r"demo.yaml with --set data.source: data.source='tabular' needs data.path"):
        load_config("configs/demo.yaml", ["data.source=tabular"])
