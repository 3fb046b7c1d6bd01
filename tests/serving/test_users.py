import numpy as np
import pandas as pd
import pytest

from recdata.schema import FeatureSpec
from serving.users import KnownUsers

SPECS = (FeatureSpec("age", "numeric"), FeatureSpec("country", "categorical"))
USERS = pd.DataFrame({"user_id": ["a", "b", "c"], "age": [30.0, np.nan, 41.0], "country": ["se", None, "fr"]})
# source row order breaks timestamp ties: for "a", x (row 0) comes before y (row 2) at t=5
INTERACTIONS = pd.DataFrame({
    "user_id": ["a", "b", "a", "a", "b", "a", "zz"],
    "item_id": ["x", "p", "y", "w", "q", "x", "x"],
    "timestamp": np.array([5, 1, 5, 3, 2, 9, 1], dtype=np.int64),
})


def users(max_history=10):
    return KnownUsers(USERS, SPECS, INTERACTIONS, max_history)


def test_history_is_oldest_to_newest_with_row_order_breaking_ties():
    u = users()
    items, ts = u.history_of(u.row_of("a"))
    assert items.tolist() == ["w", "x", "y", "x"] and ts.tolist() == [3, 5, 5, 9]
    assert u.history_of(u.row_of("c"))[0].tolist() == []
    assert u.num_interactions == 6  # the interaction of "zz" (not in the users table) is left out


def test_max_history_keeps_the_most_recent():
    u = users(max_history=2)
    items, ts = u.history_of(u.row_of("a"))
    assert items.tolist() == ["y", "x"] and ts.tolist() == [5, 9]
    assert u.seen_items_of(u.row_of("a")).tolist() == ["w", "x", "y", "x"]  # seen = everything


def test_unknown_user_and_features():
    u = users()
    assert u.row_of("nobody") is None and len(u) == 3
    assert u.features_of(u.row_of("a")) == {"age": 30.0, "country": "se"}
    b = u.features_of(u.row_of("b"))
    assert np.isnan(b["age"]) and b["country"] == ""


def test_seen_rows_match_a_slow_reference():
    u = users()
    catalogue = pd.Index(["y", "x", "q", "unused"])  # "w" and "p" are not in this index
    excl = u.seen_rows(catalogue)
    assert excl.num_queries == len(u) and excl.num_items == len(catalogue)
    for name in ("a", "b", "c"):
        r = u.row_of(name)
        seen = INTERACTIONS.loc[INTERACTIONS.user_id == name, "item_id"]
        want = sorted({catalogue.get_loc(i) for i in seen if i in catalogue})
        assert excl.rows(r).tolist() == want


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match=r"interactions lack column\(s\) \['timestamp'\]"):
        KnownUsers(USERS, SPECS, INTERACTIONS.drop(columns="timestamp"), 5)
    with pytest.raises(ValueError, match="duplicate ids"):
        KnownUsers(pd.concat([USERS, USERS]), SPECS, INTERACTIONS, 5)
    with pytest.raises(ValueError, match="max_history must be >= 1"):
        KnownUsers(USERS, SPECS, INTERACTIONS, 0)
