import numpy as np
import pandas as pd
import pytest

from recdata.schema import Dataset, FeatureSpec, _isin


def tiny(**over):
    parts = dict(
        interactions=pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"],
                                   "timestamp": np.array([1, 2], dtype=np.int64)}),
        items=pd.DataFrame({"item_id": ["i1", "i2"], "genre": ["a", "b"]}),
        users=pd.DataFrame({"user_id": ["u1", "u2"]}),
    )
    parts.update(over)
    return Dataset(name="tiny", item_features=(FeatureSpec("genre", "categorical"),), **parts)


def test_isin_matches_pandas_for_every_string_storage():
    values = pd.Series(["a", "b", None, "c", "é"], dtype=object)
    ref = pd.Series(["c", "é", "x"], dtype=object)
    expected = values.isin(ref).tolist()
    for dtype in (object, "str", pd.StringDtype("python"), pd.StringDtype("pyarrow")):
        got = _isin(values.astype(dtype) if dtype is not object else values, ref.astype(dtype))
        assert got.tolist() == expected, dtype
    assert _isin(pd.Series([1, 2]), pd.Series([2])).tolist() == [False, True]


def test_validate_messages():
    assert tiny().validate().num_items == 2
    with pytest.raises(ValueError, match=r"name items absent from the item table \(e.g. \['i9'\]\)"):
        tiny(interactions=pd.DataFrame({"user_id": ["u1"], "item_id": ["i9"], "timestamp": [1]})).validate()
    with pytest.raises(ValueError, match=r"users.user_id has 2 rows with duplicate ids"):
        tiny(users=pd.DataFrame({"user_id": ["u1", "u1", "u2"]})).validate()
    with pytest.raises(ValueError, match=r"timestamp has 1 missing value"):
        tiny(interactions=pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "timestamp": [None]})).validate()
    with pytest.raises(ValueError, match=r"items is missing column\(s\) \['genre'\]"):
        tiny(items=pd.DataFrame({"item_id": ["i1", "i2"]})).validate()


def _weighted(weights):
    inter = pd.DataFrame({"user_id": ["u1", "u2", "u1"], "item_id": ["i1", "i2", "i2"],
                          "timestamp": np.array([1, 2, 3], dtype=np.int64), "weight": weights})
    return tiny(interactions=inter)


def test_validate_refuses_weights_a_model_cannot_learn_from():
    # issue 13 item 10, for every source (hand-made and generated datasets too, not only tabular files)
    assert _weighted(np.array([0.0, 1.0, 2.5], dtype=np.float32)).validate()
    with pytest.raises(ValueError, match=r"tiny: interactions.weight has 1 negative value\(s\) \(e.g. \[-1.0\] at rows "
                                         r"\[2\]\); weights must be >= 0"):
        _weighted(np.array([1.0, 2.0, -1.0], dtype=np.float32)).validate()
    with pytest.raises(ValueError, match=r"tiny: interactions.weight is 0 in every row \(rows 0-2\)"):
        _weighted(np.zeros(3, dtype=np.float32)).validate()
    with pytest.raises(ValueError, match=r"interactions.weight has 1 missing or infinite value\(s\) \(rows \[0\]\)"):
        _weighted(np.array([np.inf, 1.0, 1.0])).validate()
    with pytest.raises(ValueError, match=r"interactions.weight must be numeric, got dtype"):
        _weighted(["1", "2", "3"]).validate()
