import numpy as np
import pandas as pd
import pytest

from twotower.studies.scaling.subsets import user_subset


def _train(seed=0, users=40):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, users)
    uid = np.repeat([f"u{i}" for i in range(users)], lengths)
    return pd.DataFrame({"user_id": uid, "item_id": [f"i{j}" for j in range(len(uid))],
                         "timestamp": np.arange(len(uid), dtype=np.int64)}).sample(frac=1, random_state=seed)


def test_subsets_are_whole_users_nested_and_just_large_enough():
    train = _train()
    sizes = [10, 50, 120, 200]
    subsets = [user_subset(train, n, seed=3) for n in sizes]
    per_user = train.groupby("user_id").size()
    for n, sub in zip(sizes, subsets):
        assert len(sub) >= n
        users = sub["user_id"].unique()
        counts = sub.groupby("user_id").size()
        assert (counts.sort_index() == per_user[users].sort_index()).all()     # whole users
        # minimal: dropping the user added last (any one of them, at most the largest) falls below n
        assert len(sub) - counts.max() < n
    for small, big in zip(subsets, subsets[1:]):
        assert set(small.index) <= set(big.index)                              # nested
    assert list(subsets[1].index) == [i for i in train.index if i in set(subsets[1].index)]  # row order kept


def test_all_and_more_than_all_return_the_training_set():
    train = _train()
    assert user_subset(train, None) is train
    assert user_subset(train, len(train) + 5) is train


def test_seed_changes_the_users_deterministically():
    train = _train()
    a, b, c = user_subset(train, 60, seed=1), user_subset(train, 60, seed=1), user_subset(train, 60, seed=2)
    assert a.equals(b)
    assert set(a["user_id"]) != set(c["user_id"])


@pytest.mark.parametrize("n, match", [(0, "positive int"), (-3, "positive int"), (2.5, "positive int")])
def test_bad_sizes_are_rejected(n, match):
    with pytest.raises(ValueError, match=match):
        user_subset(_train(), n)


def test_missing_user_column_is_named():
    with pytest.raises(ValueError, match="need a 'user_id' column"):
        user_subset(pd.DataFrame({"item_id": ["a"]}), 1)
