import numpy as np
import pandas as pd
import pytest

from recdata.splits import (TEST, TRAIN, VALID, leave_last_out, summarize, temporal,
                            temporal_cuts, train_counts)


def events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype(
        {"user_id": "str", "item_id": "str", "timestamp": "int64"})


def slow_leave_last_out(df):
    """Reference: per user, sort (timestamp, source row) in Python and label from the end."""
    part = np.zeros(len(df), dtype=np.int8)
    for _, rows in df.groupby("user_id", sort=False).groups.items():
        ordered = sorted(rows, key=lambda r: (df.at[r, "timestamp"], r))
        if len(ordered) >= 2:
            part[ordered[-1]] = TEST
        if len(ordered) >= 3:
            part[ordered[-2]] = VALID
    return part


def test_leave_last_out_small_example():
    df = events([
        ("a", "i1", 10), ("a", "i2", 30), ("b", "i1", 5), ("a", "i3", 20),
        ("a", "i4", 30),                      # tie with i2 at t=30: later source row is the last
        ("c", "i9", 1),                       # one event: train only
        ("d", "i1", 7), ("d", "i2", 3),       # two events: 1 train, 1 test, no valid
    ])
    s = leave_last_out(df)
    assert s.test.values.tolist() == [["a", "i4", 30], ["d", "i1", 7]]
    assert s.valid.values.tolist() == [["a", "i2", 30]]
    assert s.train.values.tolist() == [["a", "i1", 10], ["b", "i1", 5], ["a", "i3", 20], ["c", "i9", 1],
                                       ["d", "i2", 3]]
    assert s.part.tolist() == [TRAIN, VALID, TRAIN, TRAIN, TEST, TRAIN, TEST, TRAIN]
    assert s.kind == "leave-last-out" and list(s.test.index) == [0, 1]


def test_leave_last_out_matches_reference_on_random_data():
    rng = np.random.default_rng(0)
    users = np.concatenate([rng.integers(0, 200, 2700),             # ~13 events each
                            np.repeat(np.arange(200, 350), 2)])     # users with 1..3 events, shuffled in below
    users = rng.permutation(np.concatenate([users, np.arange(350, 400), np.repeat(np.arange(400, 450), 3)]))
    n = len(users)
    df = events({"user_id": users.astype(str), "item_id": rng.integers(0, 50, n).astype(str),
                 "timestamp": rng.integers(0, 40, n)})            # many ties
    s = leave_last_out(df)
    # an independent per-user ordering (pandas, not the module's lexsort): each user's events by time, ties by
    # source row; the last is test (users with >= 2 events), the one before valid (>= 3), the rest train
    ordered = df.assign(row=np.arange(n)).sort_values(["user_id", "timestamp", "row"], kind="stable")
    from_end = ordered.groupby("user_id").cumcount(ascending=False)
    per_user = ordered["user_id"].map(df["user_id"].value_counts())
    want = pd.Series(TRAIN, index=ordered["row"], dtype=np.int8)
    want[((from_end == 0) & (per_user >= 2)).to_numpy()] = TEST
    want[((from_end == 1) & (per_user >= 3)).to_numpy()] = VALID
    want = want.sort_index().to_numpy()
    assert np.array_equal(s.part, want)
    assert (want == VALID).sum() > 100 and (want == TEST).sum() > 150  # the data exercises every part
    for frame, code in ((s.train, TRAIN), (s.valid, VALID), (s.test, TEST)):  # frames hold those rows, in order
        assert frame.values.tolist() == df[want == code].values.tolist()
    assert np.array_equal(s.part, slow_leave_last_out(df))
    assert sum(s.sizes().values()) == n


def test_extra_columns_are_kept():
    df = events([("a", "i1", 1), ("a", "i2", 2)]).assign(weight=np.float32([1, 2]), rating=[3.0, 4.0])
    s = leave_last_out(df)
    assert list(s.test.columns) == ["user_id", "item_id", "timestamp", "weight", "rating"]
    assert s.test["weight"].dtype == np.float32


def test_temporal_boundaries():
    df = events([("a", "i1", 10), ("b", "i2", 20), ("a", "i3", 30), ("a", "i4", 40), ("c", "i5", 30)])
    s = temporal(df, train_end=30, valid_end=40)
    assert s.train["timestamp"].tolist() == [10, 20]
    assert s.valid["timestamp"].tolist() == [30, 30]                      # at the cut → later part
    assert s.test["timestamp"].tolist() == [40]
    s2 = temporal(df, train_end=25)
    assert len(s2.valid) == 0 and s2.test["item_id"].tolist() == ["i3", "i4", "i5"]   # several per user
    assert s2.test["user_id"].tolist().count("a") == 2


def test_temporal_errors_name_the_range():
    df = events([("a", "i1", 10), ("b", "i2", 20)])
    with pytest.raises(ValueError, match=r"leaves 0 train and 2 test events; the data spans timestamps 10..20"):
        temporal(df, train_end=5)
    with pytest.raises(ValueError, match=r"valid_end=3 is before train_end=15"):
        temporal(df, train_end=15, valid_end=3)


def test_temporal_cuts_by_quantile():
    df = events([("u", f"i{t}", t) for t in range(100)])
    train_end, valid_end = temporal_cuts(df, valid_fraction=0.1, test_fraction=0.2)
    s = temporal(df, train_end, valid_end)
    assert s.sizes() == {"train": 70, "valid": 10, "test": 20}


def test_bad_input():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['timestamp'\]"):
        leave_last_out(pd.DataFrame({"user_id": ["a"], "item_id": ["b"]}))
    with pytest.raises(ValueError, match="interactions table is empty"):
        leave_last_out(events([]))
    with pytest.raises(ValueError, match=r"timestamp must be int64 seconds, got dtype float64"):
        leave_last_out(pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "timestamp": [1.5]}))


def test_train_counts_and_head():
    df = events([("a", "x", 1), ("b", "x", 1), ("a", "y", 2), ("c", "z", 1), ("a", "q", 9), ("b", "w", 5)])
    s = leave_last_out(df)            # test: a→q, b→w; valid: a→y; train: a x, b x, c z
    counts = train_counts(s, ["y", "x", "unknown", "z", "q"])
    assert counts.dtype == np.int64 and counts.tolist() == [0, 2, 0, 1, 0]
    with pytest.raises(ValueError, match="duplicates"):
        train_counts(s, ["x", "x"])
    summary = summarize(s, ["y", "x", "unknown", "z", "q", "w"], [True, True, False, True, False, False])
    assert summary["slices"]["head"] == {"items": 3, "train_interactions": 3, "test_cases": 0, "test_users": 0}
    assert summary["slices"]["tail"] == {"items": 3, "train_interactions": 0, "test_cases": 2, "test_users": 2}
    with pytest.raises(ValueError, match=r"head must be bool with one entry per item, shape \(6,\); got \(2,\)"):
        summarize(s, ["y", "x", "unknown", "z", "q", "w"], [True, False])
    assert summary["parts"]["train"] == {"interactions": 3, "users": 3, "items": 2}
