"""serving.tower_inputs.batch_inputs against the reference path towers.inputs.query_features_batch."""
import math

import numpy as np
import pandas as pd
import pytest

from recdata.schema import FeatureSpec
from serving.tower_inputs import QueryInputs, batch_inputs, feature_value
from towers.inputs import query_features_batch

SPECS = (FeatureSpec("age", "numeric"), FeatureSpec("gender", "categorical"),
         FeatureSpec("tags", "multi_categorical"), FeatureSpec("bio", "text"), FeatureSpec("zip", "categorical"))

RAW_USERS = [  # raw values as a data table or a request may hold them
    {"user_id": "u1", "age": 31.0, "gender": "F", "tags": ["a", "b", "c"], "bio": "hello there", "zip": 55},
    {"user_id": "u2", "age": None, "gender": None, "tags": None, "bio": None, "zip": None},
    {"user_id": "", "age": float("nan"), "gender": "M", "tags": [], "bio": "", "zip": "9"},
]
HISTORIES = [["i1", "i2", "i3", "i4", "i5"], [], ["i9"]]
HISTORY_TS = [[10, 20, 30, 40, 50], [], [7]]


def assert_same_dicts(got: dict, want: dict):
    assert list(got) == list(want)
    for name in want:
        g, w = got[name], want[name]
        assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, w.shape, g.dtype, w.dtype)
        if g.dtype.kind == "f":
            np.testing.assert_array_equal(g, w)  # NaN == NaN here
        else:
            assert (g == w).all(), (name, g, w)


@pytest.mark.parametrize("max_history", [1, 3, 50])
def test_batch_inputs_equal_query_features_batch(max_history):
    users = pd.DataFrame(RAW_USERS)
    want = query_features_batch(users, SPECS, HISTORIES, [100, 200, 300], max_history,
                                history_timestamps=HISTORY_TS)
    queries = [QueryInputs(u["user_id"], {s.name: feature_value(u[s.name], s.kind) for s in SPECS}, h,
                           np.asarray(t, dtype=np.int64), ts)
               for u, h, t, ts in zip(RAW_USERS, HISTORIES, HISTORY_TS, [100, 200, 300])]
    got = batch_inputs(queries, SPECS, max_history)
    assert_same_dicts(got, want)
    assert got["history"].shape[1] == min(5, max_history)
    assert list(got["history"][0, -1:]) == ["i5"]  # the most recent items are kept


def test_all_empty_histories_have_width_one():
    q = QueryInputs("u", {s.name: feature_value(None, s.kind) for s in SPECS}, (), np.zeros(0, np.int64), 0)
    got = batch_inputs([q], SPECS, 20)
    assert got["history"].shape == (1, 1) and got["history"][0, 0] == ""
    assert got["tags"].shape == (1, 1) and math.isnan(got["age"][0])


def test_feature_value_by_kind():
    assert feature_value(5, "categorical") == "5"
    assert feature_value(float("nan"), "text") == ""
    assert feature_value(["a", None, 3], "multi_categorical") == ("a", "", "3")
    assert math.isnan(feature_value(None, "numeric"))
    with pytest.raises(ValueError, match="unsupported feature kind 'image'"):
        feature_value(1, "image")
    with pytest.raises(ValueError, match="max_history must be >= 1"):
        batch_inputs([], SPECS, 0)
