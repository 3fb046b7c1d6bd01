import dataclasses

import numpy as np
import pandas as pd
import pytest

from recdata.schema import Dataset, FeatureSpec
from tests.towers.conftest import planted
from towers.config import TowerConfig
from towers.vocab import (IdVocabulary, NumericStats, TokenVocabulary, build_vocabularies, load_vocabularies,
                          save_vocabularies)


def tiny_dataset() -> tuple[Dataset, pd.DataFrame]:
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "z"],
        "genres": [["x", "y"], ["y"], [], ["only-in-held-out"]],
        "title": ["Toy Story (1995)", "toy STORY 2", None, "Zed"],
        "year": [1995.0, np.nan, 2001.0, 3000.0],
        "kind": ["film", "film", "", "series"],
    })
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "age": [20.0, 40.0, np.nan]})
    inter = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u1", "u3"],
                          "item_id": ["a", "b", "b", "c", "b", "z"],
                          "timestamp": np.arange(6, dtype=np.int64)})
    ds = Dataset("tiny", inter, items, users,
                 (FeatureSpec("genres", "multi_categorical"), FeatureSpec("title", "text"),
                  FeatureSpec("year", "numeric"), FeatureSpec("kind", "categorical")),
                 (FeatureSpec("age", "numeric"),))
    return ds, inter.iloc[:5]  # the last interaction (u3, z) is held out


def test_vocabularies_come_from_training_rows_only_in_frequency_order():
    ds, train = tiny_dataset()
    v = build_vocabularies(ds, train, TowerConfig(numeric_buckets=2))
    assert v.item_id.tokens == ("b", "a", "c")          # b ×3, then a/c ×1 by id
    assert v.user_id.tokens == ("u1", "u2")              # u3 only appears in held-out data
    assert v.item_features["genres"].tokens == ("y", "x")
    assert v.item_features["kind"].tokens == ("film",)   # "" = missing is not a token; "series" is held out
    assert v.item_features["title"].tokens == ("story", "toy", "1995", "2")
    year = v.item_features["year"]
    assert year.mean == pytest.approx(1998.0) and year.std == pytest.approx(3.0)  # 3000 is held out
    assert year.missing_fraction == pytest.approx(1 / 3) and year.boundaries == (1998.0,)
    age = v.user_features["age"]
    assert age.mean == pytest.approx(30.0) and age.missing_fraction == 0.0


def test_id_vocabulary_caps_and_hashing():
    ds, train = tiny_dataset()
    assert build_vocabularies(ds, train, TowerConfig(max_id_vocab=1)).item_id.tokens == ("b",)
    assert build_vocabularies(ds, train, TowerConfig(min_id_count=2)).item_id.tokens == ("b",)
    hashed = build_vocabularies(ds, train, TowerConfig(id_hash_bins=64)).item_id
    assert hashed == IdVocabulary((), 1, 64, 3)


def test_feature_with_no_training_values_gets_an_empty_vocabulary():
    ds, train = tiny_dataset()
    ds.items["kind"] = ""
    assert build_vocabularies(ds, train, TowerConfig()).item_features["kind"].tokens == ()


def test_save_load_round_trip(tmp_path):
    ds, split = planted()
    exact = build_vocabularies(ds, split.train, TowerConfig())
    hashed = build_vocabularies(ds, split.train, TowerConfig(id_hash_bins=128))
    save_vocabularies(exact, tmp_path / "exact")
    save_vocabularies(hashed, tmp_path / "hashed")
    assert load_vocabularies(tmp_path / "exact") == exact
    assert load_vocabularies(tmp_path / "hashed") == hashed
    assert tuple((tmp_path / "exact" / "item_id.txt").read_text().splitlines()) == exact.item_id.tokens
    assert not (tmp_path / "hashed" / "item_id.txt").exists()


def test_load_reports_truncated_and_missing_files(tmp_path):
    ds, train = tiny_dataset()
    save_vocabularies(build_vocabularies(ds, train, TowerConfig()), tmp_path)
    (tmp_path / "item_id.txt").write_text("b\n")
    with pytest.raises(ValueError, match=r"item_id.txt: 1 lines, vocab.json says 3"):
        load_vocabularies(tmp_path)
    (tmp_path / "item_id.txt").unlink()
    with pytest.raises(FileNotFoundError, match="item_id.txt is missing but vocab.json lists it"):
        load_vocabularies(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a saved vocabulary directory"):
        load_vocabularies(tmp_path / "nowhere")


def test_bad_training_values_are_rejected_with_the_fix():
    ds, train = tiny_dataset()
    ds.items.loc[0, "kind"] = "two\nlines"
    with pytest.raises(ValueError, match=r"items.kind value 'two\\nlines' contains a line break"):
        build_vocabularies(ds, train, TowerConfig())
    ds, train = tiny_dataset()
    with pytest.raises(ValueError, match="empty item_id value"):
        build_vocabularies(ds, train.assign(item_id=["", "a", "b", "b", "b"]), TowerConfig())
    with pytest.raises(ValueError, match="empty training split"):
        build_vocabularies(ds, train.iloc[:0], TowerConfig())


def test_vocabulary_types_are_frozen():
    v = TokenVocabulary("categorical", ("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.tokens = ()
    assert NumericStats(0.0, 1.0, (), 1.0).boundaries == ()
