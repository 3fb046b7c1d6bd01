import numpy as np
import pytest

from recdata.schema import FeatureSpec
from recdata.synthetic import SyntheticConfig, generate
from towers.feature_masking import (FeatureCorrelation, TwoViewAugmenter, cfm_group_table, discrete_codes,
                                    feature_correlation, mutual_information)
from towers.inputs import item_features_batch
from towers.tf_env import tf


@pytest.fixture(scope="module")
def synthetic():
    data = generate(SyntheticConfig(num_users=400, num_items=600, num_interactions=6000, seed=3))
    columns = item_features_batch(data.items, data.item_features)
    row = {item: i for i, item in enumerate(data.items["item_id"])}
    counts = np.bincount(data.interactions["item_id"].map(row).to_numpy(), minlength=len(data.items))
    names = ("item_id",) + tuple(s.name for s in data.item_features)
    return data, columns, names, feature_correlation(columns, data.item_features, names, counts)


def test_mutual_information_by_hand():
    a = np.array([0, 0, 1, 1])
    assert mutual_information(a, a, permutations=0) == pytest.approx(np.log(2))
    # b independent of a in the sample: joint = product of marginals → 0
    assert mutual_information(a, np.array([0, 1, 0, 1]), permutations=0) == pytest.approx(0.0, abs=1e-12)
    # p(a,b) = [[.5, 0], [.25, .25]], p(a) = [.5, .5], p(b) = [.75, .25]:
    # MI = .5 log(.5/(.5·.75)) + .25 log(.25/(.5·.75)) + .25 log(.25/(.5·.25)) = 0.21576
    a, b = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])
    want = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
    assert want == pytest.approx(0.21576, abs=1e-5)
    assert mutual_information(a, b, permutations=0) == pytest.approx(want)
    # weights: the same table from two rows with weights 2 and 2 as from four rows
    assert mutual_information(np.array([0, 1]), np.array([0, 1]), np.array([2.0, 2.0]), permutations=0) == \
        pytest.approx(np.log(2))


def test_discrete_codes_per_kind():
    np.testing.assert_array_equal(discrete_codes(np.array([["x", "y"], ["", ""], ["x", ""]], object),
                                                 "multi_categorical"), [0, 1, 0])
    np.testing.assert_array_equal(discrete_codes(np.array(["Red fox", "red hen", ""], object), "text"), [0, 0, 1])
    codes = discrete_codes(np.array([1.0, np.nan, 2.0, 3.0], np.float32), "numeric")
    assert codes[1] == 10 and codes[0] < codes[2] < codes[3]


def test_mi_table_finds_the_planted_feature_groups(synthetic):
    data, _, names, corr = synthetic
    side = [n for n in names if n != "item_id"]
    for group in data.extra["feature_groups"].values():
        for feature in group:
            mates = set(group) - {feature}
            assert set(corr.top_correlated(feature, len(mates), among=side)) == mates, (feature, corr.mi)
    # the chance-corrected MI of the id (unique per item) with anything is ~0
    assert corr.mi[0, 1:].max() < 0.05
    assert np.allclose(corr.mi, corr.mi.T)


def test_cfm_masks_the_seed_group_together_and_views_are_complementary(synthetic):
    data, _, names, corr = synthetic
    groups = data.extra["feature_groups"]
    group_of = {f: g for g, fs in groups.items() for f in fs}
    aug = TwoViewAugmenter(names, data.item_features, "cfm", corr, cfm_k=6, mask_ids=False)
    seen_seeds = set()
    for s in range(60):
        keep1, keep2 = (m.numpy() for m in aug.masks(tf.constant(5), tf.constant([7, s], tf.int64)))
        assert (keep1 == keep1[0]).all() and (keep2 == keep2[0]).all()  # one seed per batch
        assert keep1[0, 0] == keep2[0, 0] == 1  # the id is kept in both views (mask_ids False)
        np.testing.assert_array_equal(keep1[0, 1:] + keep2[0, 1:], 1)  # complementary
        masked = {n for n, k in zip(names, keep1[0]) if k == 0}
        assert len(masked) == 4  # seed + ⌊6/2⌋
        planted = [set(groups[g]) for g in {group_of[n] for n in masked}]
        # the masked group is one planted group (its 4 members), or a 3-group plus one more
        assert any(p <= masked for p in planted), masked
        seen_seeds.add(frozenset(masked))
    assert len(seen_seeds) >= 3  # seeds vary across batches


def test_cfm_group_table_caps_the_group_and_checks_names():
    corr = FeatureCorrelation(("a", "b", "c"), np.array([[1, .5, .1], [.5, 1, .2], [.1, .2, 1.]]))
    table = cfm_group_table(corr, ("a", "b", "c"), ("a", "b", "c"), k=10)  # ⌊10/2⌋ capped to F_m − 2 = 1
    np.testing.assert_array_equal(table, [[1, 1, 0], [1, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match=r"the MI table has no feature\(s\) \['d'\]"):
        cfm_group_table(corr, ("a", "d"), ("a", "d"), k=2)


def test_rfm_views_are_complementary_random_halves():
    names = ("item_id", "a", "b", "c", "d", "e")
    aug = TwoViewAugmenter(names, (), "rfm", mask_ids=False)
    keep1, keep2 = (m.numpy() for m in aug.masks(tf.constant(64), tf.constant([1, 2], tf.int64)))
    assert keep1.shape == (64, 6)
    np.testing.assert_array_equal(keep1[:, 0], 1)  # the id is kept in both views (mask_ids False)
    np.testing.assert_array_equal(keep2[:, 0], 1)
    np.testing.assert_array_equal(keep1[:, 1:] + keep2[:, 1:], 1)
    np.testing.assert_array_equal((keep1[:, 1:] == 0).sum(axis=1), 2)  # ⌊5/2⌋ masked in view 1
    assert len({tuple(r) for r in keep1}) > 5  # per-example splits
    # every feature is masked sometimes
    assert (keep1[:, 1:] == 0).any(axis=0).all()
    with_ids = TwoViewAugmenter(names, (), "rfm", mask_ids=True)
    k1, k2 = (m.numpy() for m in with_ids.masks(tf.constant(64), tf.constant([1, 2], tf.int64)))
    np.testing.assert_array_equal(k1 + k2, 1)  # the id is maskable too: complementary on all 6 columns
    np.testing.assert_array_equal((k1 == 0).sum(axis=1), 3)  # ⌊6/2⌋ masked in view 1


def test_value_and_sequence_dropout():
    specs = (FeatureSpec("tags", "multi_categorical"), FeatureSpec("title", "text"))
    aug = TwoViewAugmenter(("item_id", "tags", "title", "history"), specs, "rfm", value_dropout=0.5,
                           sequence_dropout=0.5)
    n = 400
    inputs = {"tags": tf.constant([["t1", "t2", ""]] * n), "title": tf.constant(["a b c d"] * n),
              "history": tf.constant([["x", "y", "z", "w"]] * n), "history_timestamps": tf.ones([n, 4], tf.int64)}
    out = aug.drop_values(inputs, tf.constant([0, 1], tf.int64))
    tags = out["tags"].numpy()
    assert (tags[:, 2] == b"").all()
    assert 0.4 < (tags[:, :2] == b"").mean() < 0.6
    words = np.array([len(t.split()) for t in out["title"].numpy()])
    assert 1.7 < words.mean() < 2.3 and set(b" ".join(out["title"].numpy()).split()) <= {b"a", b"b", b"c", b"d"}
    dropped = out["history"].numpy() == b""
    assert 0.4 < dropped.mean() < 0.6
    np.testing.assert_array_equal(out["history_timestamps"].numpy() == 0, dropped)
    again = aug.drop_values(inputs, tf.constant([0, 1], tf.int64))["tags"].numpy()
    np.testing.assert_array_equal(again, tags)  # stateless: same seed, same drops


def test_cfm_without_a_table_is_refused():
    with pytest.raises(ValueError, match=r"mode 'cfm' needs the mutual-information table"):
        TwoViewAugmenter(("a", "b"), (), "cfm")
    with pytest.raises(ValueError, match=r"mode must be 'rfm' or 'cfm', got 'off'"):
        TwoViewAugmenter(("a", "b"), (), "off")
