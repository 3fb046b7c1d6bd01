"""eval.slices: the tie rule, tier shares, deciles, cold items, activity buckets, exact partitions."""
import numpy as np
import pytest

from eval.config import EvalConfig
from eval.slices import (activity_buckets, popularity_deciles, popularity_rank, popularity_tiers, slice_families,
                         validate_counts)


def test_rank_is_last_position_of_tie_group():
    counts = np.array([5, 9, 5, 0, 9, 1])
    # sorted desc: 9 9 5 5 1 0 -> tie groups end at positions 2, 4, 5, 6
    assert popularity_rank(counts).tolist() == [4, 2, 4, 6, 2, 5]


def test_head_share_with_tie_straddling_the_boundary_goes_to_tail():
    # 10 items, head_share 0.2 -> at most 2 head items. Counts 9, 7, 7, ... : the 7s straddle
    # positions 2-3, so only the 9 is head.
    counts = np.array([9, 7, 7, 3, 3, 2, 1, 0, 0, 0])
    labels, codes = popularity_tiers(counts, 0.2)
    assert labels == ("head", "tail")
    assert [labels[c] for c in codes] == ["head"] + ["tail"] * 9
    counts2 = np.array([9, 8, 7, 3, 3, 2, 1, 0, 0, 0])
    _, codes2 = popularity_tiers(counts2, 0.2)
    assert codes2.tolist() == [0, 0] + [1] * 8


def test_tiers_depend_only_on_counts_not_catalogue_order():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, 500)
    perm = rng.permutation(500)
    for fn in (lambda c: popularity_tiers(c, 0.2, 0.3)[1], lambda c: popularity_deciles(c)[1]):
        assert np.array_equal(fn(counts)[perm], fn(counts[perm]))


def test_torso_and_shares_are_upper_bounds():
    rng = np.random.default_rng(1)
    counts = rng.zipf(1.3, 2000).clip(0, 10**6)
    labels, codes = popularity_tiers(counts, 0.2, 0.3)
    assert labels == ("head", "torso", "tail")
    share = np.bincount(codes, minlength=3) / len(counts)
    assert share[0] <= 0.2 and share[0] + share[1] <= 0.5
    # every head item is at least as popular as every torso item, and so on
    assert (codes == 1).any()
    assert counts[codes == 0].min() > counts[codes == 1].max()
    assert counts[codes == 1].min() > counts[codes == 2].max()


def test_distinct_counts_give_exact_shares_and_equal_deciles():
    counts = np.arange(100)[::-1]  # all distinct
    _, codes = popularity_tiers(counts, 0.2)
    assert (codes == 0).sum() == 20
    labels, dec = popularity_deciles(counts)
    assert labels[0] == "d01" and labels[-1] == "d10"
    assert np.bincount(dec).tolist() == [10] * 10
    assert dec[0] == 0 and dec[-1] == 9


def test_cold_items_are_always_tail_and_last_decile():
    counts = np.array([0] * 90 + [5] * 10)
    _, tiers = popularity_tiers(counts, 0.2)
    _, dec = popularity_deciles(counts)
    assert (tiers[:90] == 1).all() and (dec[:90] == 9).all()
    # the 10 popular items fill exactly the top decile, hence head too
    assert (tiers[90:] == 0).all() and (dec[90:] == 0).all()


def test_activity_buckets_labels_and_bounds():
    labels, codes = activity_buckets(np.array([0, 4, 5, 19, 20, 100]), (5, 20))
    assert labels == ("hist<5", "hist5-19", "hist>=20")
    assert codes.tolist() == [0, 0, 1, 1, 2, 2]


def test_every_family_partitions_the_test_set_exactly():
    rng = np.random.default_rng(2)
    n, m = 300, 80
    counts = rng.zipf(1.5, n).clip(0, 1000)
    counts[rng.random(n) < 0.2] = 0
    history = rng.integers(0, 40, m)
    queries, targets = rng.integers(0, m, 1000), rng.integers(0, n, 1000)
    fams = slice_families(counts, history, EvalConfig(torso_share=0.3, activity_thresholds=(5, 20)))
    assert [f.name for f in fams] == ["overall", "popularity", "decile", "cold", "activity"]
    # the label of each case worked out by hand from the module's rule, one case at a time, in plain Python:
    # rank = #items at least as popular as the target; head iff rank <= ⌊.2n⌋, torso iff rank <= ⌊.5n⌋;
    # decile = ⌈10·rank/n⌉; cold iff count 0; activity by the query's history length at the cut points 5, 20
    by_hand = {name: [] for name in ("overall", "popularity", "decile", "cold", "activity")}
    for q, t in zip(queries.tolist(), targets.tolist()):
        rank = sum(1 for c in counts.tolist() if c >= counts[t])
        by_hand["overall"].append("all")
        by_hand["popularity"].append("head" if rank <= n * 2 // 10 else "torso" if rank <= n * 5 // 10 else "tail")
        by_hand["decile"].append(f"d{-(-10 * rank // n):02d}")
        by_hand["cold"].append("cold" if counts[t] == 0 else "warm")
        h = int(history[q])
        by_hand["activity"].append("hist<5" if h < 5 else "hist5-19" if h < 20 else "hist>=20")
    for fam in fams:
        codes = fam.case_codes(queries, targets)
        assert codes.shape == (1000,)
        assert codes.min() >= 0 and codes.max() < len(fam.labels)
        assert [fam.labels[c] for c in codes] == by_hand[fam.name], fam.name
        assert len(set(by_hand[fam.name])) >= min(len(fam.labels), 3), fam.name  # several slices used: it bites


def test_no_deciles_when_disabled():
    fams = slice_families(np.arange(10), np.zeros(3, np.int64), EvalConfig(deciles=False))
    assert "decile" not in [f.name for f in fams]


def test_validate_counts_messages():
    with pytest.raises(ValueError, match=r"one count per catalogue item, shape \(5,\), got \(4,\)"):
        validate_counts(np.zeros(4, np.int64), 5)
    with pytest.raises(ValueError, match="must be >= 0, got minimum -1"):
        validate_counts(np.array([1, -1]), 2)
    with pytest.raises(TypeError, match="integer interaction counts"):
        validate_counts(np.array([0.5, 1.0]), 2)
    assert validate_counts(np.array([1.0, 2.0]), 2).dtype == np.int64


def test_support_family_buckets_items_by_training_count_by_hand():
    counts = np.array([0, 1, 3, 4, 0, 2, 9, 3], dtype=np.int64)
    history = np.array([1, 2], dtype=np.int64)
    fams = {f.name: f for f in slice_families(counts, history, EvalConfig(support_thresholds=(1, 4)))}
    support = fams["support"]
    assert support.on == "item" and support.labels == ("n<1", "n1-3", "n>=4")
    # worked out by hand: 0 -> n<1 (cold), 1..3 -> few-shot, >= 4 -> n>=4
    assert support.codes.tolist() == [0, 1, 1, 2, 0, 1, 2, 1]
    assert support.key(1) == "support/n1-3"
    assert list(fams) == ["overall", "popularity", "decile", "cold", "support", "activity"]


def test_support_family_is_off_by_default_and_thresholds_are_checked():
    counts = np.array([0, 1, 5])
    assert "support" not in {f.name for f in slice_families(counts, np.array([1]), EvalConfig())}
    with pytest.raises(ValueError, match=r"support_thresholds must be strictly ascending positive integers, got \[4, 1\]"):
        EvalConfig(support_thresholds=(4, 1))
    with pytest.raises(ValueError, match="activity_thresholds is empty"):
        EvalConfig(activity_thresholds=())
