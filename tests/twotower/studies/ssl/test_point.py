import numpy as np
import pandas as pd
import pytest

from recdata.splits import Split
from twotower.studies.ssl.point import supervision_subset


def _split(n=200):
    train = pd.DataFrame({"user_id": [f"u{i % 17}" for i in range(n)], "item_id": [f"i{i % 31}" for i in range(n)],
                          "timestamp": np.arange(n, dtype=np.int64)})
    one = train.iloc[:3].copy()
    return Split(train=train, valid=one, test=one, kind="test")


def test_subset_is_fixed_by_seed_nested_across_fractions_and_keeps_source_order():
    split = _split()
    small, big = supervision_subset(split, 0.1, seed=3), supervision_subset(split, 0.5, seed=3)
    assert len(small.train) == 20 and len(big.train) == 100
    assert set(small.train["timestamp"]) <= set(big.train["timestamp"])          # nested
    assert small.train["timestamp"].is_monotonic_increasing                       # source order kept
    again = supervision_subset(split, 0.1, seed=3)
    pd.testing.assert_frame_equal(small.train, again.train)
    assert not supervision_subset(split, 0.1, seed=4).train.equals(small.train)
    assert small.valid is split.valid and small.test is split.test               # held-out parts untouched
    assert supervision_subset(split, 1.0, seed=3).train.equals(split.train)


@pytest.mark.parametrize("fraction, message", [(0.0, r"fraction must be in \(0, 1\], got 0.0"),
                                               (1.5, r"got 1.5"), (0.001, r"keeps none")])
def test_bad_fractions_are_refused(fraction, message):
    with pytest.raises(ValueError, match=message):
        supervision_subset(_split(), fraction, seed=0)
