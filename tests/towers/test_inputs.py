import numpy as np
import pandas as pd
import pytest

from recdata.schema import FeatureSpec
from tests.towers.conftest import planted
from towers.inputs import (batches_per_epoch, build_examples, eval_queries, examples_query_features, feature_column,
                           heldout_examples, item_features_batch, make_tf_dataset, pad_string_lists,
                           query_features_batch, training_examples)


def reference_histories(events: pd.DataFrame, is_context, is_target, max_history):
    """Slow obvious version: per target, the same user's context rows before it in (time, row)."""
    users, items = events["user_id"].tolist(), events["item_id"].tolist()
    times = events["timestamp"].tolist()
    out = []
    for r in np.flatnonzero(is_target):
        before = [c for c in range(len(users)) if is_context[c] and users[c] == users[r]
                  and (times[c], c) < (times[r], r)]
        before.sort(key=lambda c: (times[c], c))
        out.append([items[c] for c in before][-max_history:])
    return out


def history_ids(dataset, ex):
    rows = ex.history_item_rows()
    ids = dataset.items["item_id"].to_numpy(dtype=object)
    return [[ids[x] for x in row if x >= 0] for row in rows]


def test_training_histories_match_reference_and_are_strictly_before():
    ds, split = planted()
    train = split.train.iloc[:600]  # the reference is quadratic
    ex = training_examples(ds, train, max_history=5)
    assert len(ex) == len(train)
    assert np.array_equal(ex.source_rows, np.arange(len(train)))
    flags = np.ones(len(train), dtype=bool)
    assert history_ids(ds, ex) == reference_histories(train, flags, flags, 5)
    # the fixture has timestamp ties, so row order really is exercised
    assert train.duplicated(["user_id", "timestamp"]).any()
    # no leakage: every history event is earlier in (time, row) order than its target
    ts, hist_ts = ex.timestamps, ex.history_timestamp_matrix()
    valid = ex.history_item_rows() >= 0
    assert (np.where(valid, hist_ts, 0) <= ts[:, None]).all()
    pos_in_user = train.groupby("user_id").cumcount().to_numpy()  # fixture rows are time-ordered per user
    assert (ex.history_length <= np.minimum(pos_in_user, 5)).all()
    assert (ex.history_length == np.minimum(pos_in_user, 5)).all()


def test_heldout_targets_see_only_context_events():
    ds, split = planted()
    users = split.train["user_id"].unique()[:30]
    ctx = split.train[split.train["user_id"].isin(users)]
    tgt = pd.concat([split.valid, split.test])
    tgt = tgt[tgt["user_id"].isin(users)]
    ex = heldout_examples(ds, ctx, tgt, max_history=7)
    events = pd.concat([ctx, tgt], ignore_index=True)
    is_ctx = np.arange(len(events)) < len(ctx)
    assert history_ids(ds, ex) == reference_histories(events, is_ctx, ~is_ctx, 7)
    # the valid event is not in the history of the same user's later test event
    assert all(len(h) == 7 for h in history_ids(ds, ex))


def test_eval_queries_use_train_and_valid_before_the_test_time():
    ds, split = planted()
    q = eval_queries(ds, split, max_history=6)
    assert len(q.user_ids) == split.test["user_id"].nunique() == q.features["history"].shape[0]
    assert set(q.features) == {"user_id", "gender", "age", "history", "history_timestamps", "timestamp"}
    for k in (0, 17, 101):
        u, t = q.user_ids[k], q.timestamps[k]
        seen = pd.concat([split.train, split.valid])
        seen = seen[(seen["user_id"] == u) & (seen["timestamp"] <= t)]
        expected = seen.sort_values("timestamp", kind="stable")["item_id"].tolist()[-6:]
        assert [x for x in q.features["history"][k] if x] == expected
        assert split.test.iloc[q.test_rows[k]]["user_id"] == u
    per_event = eval_queries(ds, split, max_history=6, per="interaction")
    assert len(per_event.user_ids) == len(split.test)
    with pytest.raises(ValueError, match="per must be 'user' or 'interaction', got 'item'"):
        eval_queries(ds, split, 6, per="item")


def test_feature_columns_follow_the_contract_dtypes():
    df = pd.DataFrame({"c": ["a", None, np.nan, 3], "m": [["x", "y"], [], None, ("z",)],
                       "n": [1.5, None, np.nan, 2], "t": ["Hello", None, "", "x"]})
    assert feature_column(df, FeatureSpec("c", "categorical")).tolist() == ["a", "", "", "3"]
    assert feature_column(df, FeatureSpec("m", "multi_categorical")).tolist() == [
        ["x", "y"], ["", ""], ["", ""], ["z", ""]]
    n = feature_column(df, FeatureSpec("n", "numeric"))
    assert n.dtype == np.float32 and n[0] == 1.5 and np.isnan(n[1]) and np.isnan(n[2])
    assert feature_column(df, FeatureSpec("t", "text")).tolist() == ["Hello", "", "", "x"]


def test_feature_column_errors_say_what_to_fix():
    df = pd.DataFrame({"m": ["a|b"], "n": ["abc"], "c": [["a"]]})
    with pytest.raises(ValueError, match=r"items.m is multi_categorical .* got the string 'a\|b'"):
        feature_column(df, FeatureSpec("m", "multi_categorical"), "items")
    with pytest.raises(ValueError, match="items.n is a numeric feature but holds non-numeric values"):
        feature_column(df, FeatureSpec("n", "numeric"), "items")
    with pytest.raises(ValueError, match="items.c must hold one string per row, got list"):
        feature_column(df, FeatureSpec("c", "categorical"), "items")
    with pytest.raises(ValueError, match=r"items has no column 'x'"):
        feature_column(df, FeatureSpec("x", "numeric"), "items")


def test_query_features_batch_keeps_the_most_recent_items():
    users = pd.DataFrame({"user_id": ["a", "b"], "gender": ["f", None]})
    specs = (FeatureSpec("gender", "categorical"),)
    out = query_features_batch(users, specs, [["i1", "i2", "i3", "i4"], []], [100, 200], max_len=3,
                               history_timestamps=[[1, 2, 3, 4], []])
    assert out["history"].tolist() == [["i2", "i3", "i4"], ["", "", ""]]
    assert out["history_timestamps"].tolist() == [[2, 3, 4], [0, 0, 0]]
    assert out["history_timestamps"].dtype == np.int64 and out["timestamp"].tolist() == [100, 200]
    assert out["gender"].tolist() == ["f", ""]
    assert pad_string_lists([[]], width=0).shape == (1, 1)
    assert pad_string_lists([], width=3).shape == (0, 3)
    assert item_features_batch(pd.DataFrame({"item_id": [], "m": []}), (FeatureSpec("m", "multi_categorical"),)
                               )["m"].shape == (0, 1)
    with pytest.raises(ValueError, match="users_df has 2 rows but got 1 histories and 2 timestamps"):
        query_features_batch(users, specs, [["i1"]], [1, 2], max_len=3)
    with pytest.raises(ValueError, match=r"clash with query tower inputs"):
        query_features_batch(users.assign(history=["x", "y"]), (FeatureSpec("history", "categorical"),),
                             [[], []], [1, 2], max_len=3)


def test_unknown_ids_and_bad_flags_are_reported():
    ds, split = planted()
    bad = split.train.iloc[:3].assign(item_id=["nope", "i1", "i2"])
    with pytest.raises(ValueError, match=r"1 interaction\(s\) name item_ids absent from the items table"):
        training_examples(ds, bad, 5)
    with pytest.raises(ValueError, match=r"must both be \(3,\)"):
        build_examples(ds, split.train.iloc[:3], np.ones(2, bool), np.ones(3, bool), 5)


def test_tf_dataset_batches_match_the_examples_and_cover_each_once():
    ds, split = planted()
    ex = training_examples(ds, split.train, max_history=20)  # > events per user: full histories
    data = make_tf_dataset(ds, ex, batch_size=512, shuffle=True, seed=3)
    items = item_features_batch(ds.items, ds.item_features)
    ref_hist = history_ids(ds, ex)
    user_ids, item_ids = ds.users["user_id"].to_numpy(), ds.items["item_id"].to_numpy()
    # (user, item, time, full-history length) identifies an example even when events repeat
    index = {(user_ids[u], item_ids[i], t, n): k for k, (u, i, t, n) in enumerate(
        zip(ex.user_rows, ex.item_rows, ex.timestamps, ex.history_length))}
    assert len(index) == len(ex)
    orders, first_batch_times = [], []
    for epoch in range(2):
        order = []
        for batch in data:
            q = {k: v.numpy() for k, v in batch["query"].items()}
            if not order:
                first_batch_times.append(q["timestamp"])
            c = {k: v.numpy() for k, v in batch["candidate"].items()}
            assert q["history"].shape[1] == max(1, max((x != b"").sum() for x in q["history"]))
            for b in range(len(q["timestamp"])):
                hist = [x.decode() for x in q["history"][b] if x]
                k = index[(q["user_id"][b].decode(), c["item_id"][b].decode(), int(q["timestamp"][b]), len(hist))]
                order.append(k)
                if epoch == 0:
                    assert hist == ref_hist[k]
                    assert (q["history_timestamps"][b][: len(hist)] <= q["timestamp"][b]).all()
                    row = ex.item_rows[k]
                    assert c["genres"][b].astype(str).tolist() == items["genres"][row].tolist()
                    assert c["title"][b].decode() == items["title"][row]
                    assert q["gender"][b].decode() == ds.users["gender"].fillna("").iloc[ex.user_rows[k]]
        orders.append(order)
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(len(ex)))  # each example once per epoch
    assert orders[0] != orders[1]  # reshuffled every epoch
    again = next(iter(make_tf_dataset(ds, ex, 512, True, 3)))["query"]["timestamp"].numpy()
    assert np.array_equal(again, first_batch_times[0])  # same seed, same order


def test_examples_query_features_match_eval_layout():
    ds, split = planted()
    ex = heldout_examples(ds, split.train, split.valid, 5)
    feats = examples_query_features(ds, ex)
    assert feats["history"].shape == (len(split.valid), 5)
    assert feats["history_timestamps"].shape == (len(split.valid), 5)
    assert feats["user_id"].tolist() == split.valid["user_id"].tolist()


def test_examples_subset_keeps_histories():
    ds, split = planted()
    ex = training_examples(ds, split.train, max_history=5)
    pick = np.array([7, 0, 100])
    sub = ex.subset(pick)
    assert np.array_equal(sub.history_item_rows(), ex.history_item_rows()[pick])
    assert np.array_equal(sub.item_rows, ex.item_rows[pick]) and len(sub) == 3


def test_most_recent_window_equals_building_with_that_max_history():
    ds, split = planted()
    full = training_examples(ds, split.train, max_history=10)
    cut, direct = full.most_recent(4), training_examples(ds, split.train, max_history=4)
    assert cut.max_history == 4 and np.array_equal(cut.history_item_rows(), direct.history_item_rows())
    assert np.array_equal(cut.history_timestamp_matrix(), direct.history_timestamp_matrix())
    assert np.array_equal(cut.history_length, direct.history_length) and full.history_length.max() > 4
    assert full.most_recent(10) is full and full.most_recent(50) is full
    with pytest.raises(ValueError, match="window must be > 0, got 0"):
        full.most_recent(0)


def test_epoch_stream_orders_depend_on_seed_and_epoch_only():
    """A resumed run (first_epoch=e) gets the same batches as an uninterrupted run from epoch e on."""
    ds, split = planted()
    ex = training_examples(ds, split.train, max_history=5)
    n, bs = len(ex), 500
    per_epoch = batches_per_epoch(n, bs)

    def stream(**kw):
        data = make_tf_dataset(ds, ex, bs, shuffle=True, seed=11, **kw)
        return [(b["query"]["user_id"].numpy().tolist(), b["candidate"]["item_id"].numpy().tolist()) for b in data]
    full = stream(epochs=3)
    assert len(full) == 3 * per_epoch and len(full[per_epoch - 1][0]) == n - (per_epoch - 1) * bs
    assert stream(epochs=3, first_epoch=1) == full[per_epoch:]
    epochs = [sorted(zip(sum((u for u, _ in full[e * per_epoch:(e + 1) * per_epoch]), []),
                         sum((i for _, i in full[e * per_epoch:(e + 1) * per_epoch]), []))) for e in range(3)]
    assert epochs[0] == epochs[1] == epochs[2] and len(epochs[0]) == n  # every example once per epoch
    assert full[0] != full[per_epoch]  # reshuffled
    dropped = make_tf_dataset(ds, ex, bs, shuffle=True, seed=11, epochs=2, drop_remainder=True)
    assert sum(1 for _ in dropped) == 2 * batches_per_epoch(n, bs, drop_remainder=True)
    with pytest.raises(ValueError, match="cache=True keeps the first pass's batches, which defeats shuffle=True"):
        make_tf_dataset(ds, ex, bs, shuffle=True, seed=0, cache=True)
