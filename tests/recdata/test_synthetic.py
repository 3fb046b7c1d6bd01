import numpy as np
import pandas as pd
import pytest

from recdata.synthetic import SyntheticConfig, generate
from core.strict import from_dict

SMALL = SyntheticConfig(num_users=2_000, num_items=1_000, num_interactions=30_000, seed=3)


def mutual_information(a, b) -> float:
    """Plug-in MI (nats) of two categorical columns: the slow obvious reference."""
    table = pd.crosstab(pd.Series(np.asarray(a)), pd.Series(np.asarray(b))).to_numpy().astype(float)
    p = table / table.sum()
    outer = p.sum(1, keepdims=True) @ p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / outer[nz])).sum())


def counts_by_rank(ds) -> np.ndarray:
    rows = pd.Index(ds.items["item_id"]).get_indexer(ds.interactions["item_id"])
    counts = np.bincount(rows, minlength=ds.num_items)
    out = np.zeros(ds.num_items)
    out[ds.extra["item_popularity_rank"] - 1] = counts
    return out


def fitted_exponent(ds, lo: int, hi: int) -> float:
    """Least-squares slope of log(count) on log(rank) over ranks lo..hi (1-based, inclusive)."""
    c = counts_by_rank(ds)[lo - 1:hi]
    r = np.arange(lo, hi + 1)
    return -np.polyfit(np.log(r), np.log(np.maximum(c, 0.5)), 1)[0]


def test_deterministic_by_seed():
    a, b = generate(SMALL), generate(SMALL)
    for name in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    c = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not c.interactions["item_id"].equals(a.interactions["item_id"])


def test_contract_sizes_and_time_order():
    ds = generate(SMALL).validate()
    inter = ds.interactions
    assert ds.num_items == 1_000 and ds.num_users == 2_000
    assert len(inter) == 30_000 - ds.extra["dropped_repeats"] and ds.extra["dropped_repeats"] < 300   # < 1%
    assert not inter.duplicated(["user_id", "item_id"]).any()                  # no repeats by default
    assert inter["timestamp"].is_monotonic_increasing                          # source order = time order
    assert inter.groupby("user_id").size().min() >= SMALL.min_history
    assert inter["timestamp"].min() >= SMALL.start_time
    assert inter["timestamp"].max() < SMALL.start_time + SMALL.duration_days * 86_400
    assert ds.items["tags"].map(len).between(1, 4).all()
    assert ds.items["tags"].map(lambda t: len(set(t)) == len(t)).all()
    assert (ds.items["price"] > 0).all()
    assert set(ds.extra["feature_groups"]) == {"g0", "g1", "g2"}


@pytest.mark.parametrize("s", [0.8, 1.2])
def test_popularity_exponent_with_repeats(s):
    # Draws follow p ∝ rank^-s exactly; tolerance ±0.03 (seen: ≤ 0.013 over seeds 0-2 at this size).
    ds = generate(SyntheticConfig(num_users=20_000, num_items=5_000, num_interactions=200_000,
                                  popularity_exponent=s, allow_repeats=True, seed=1))
    assert abs(fitted_exponent(ds, 1, 1000) - s) < 0.03


@pytest.mark.parametrize("s", [0.8, 1.0, 1.2])
def test_popularity_exponent_without_repeats(s):
    # One event per (user, item) saturates the head (a user takes a head item once), so the exponent
    # is checked beyond it, on ranks 300..3000; tolerance ±0.06 (seen: ≤ 0.011 at this size).
    ds = generate(SyntheticConfig(num_users=50_000, num_items=20_000, num_interactions=500_000,
                                  popularity_exponent=s, seed=1))
    assert abs(fitted_exponent(ds, 300, 3000) - s) < 0.06
    assert fitted_exponent(ds, 1, 100) < s                               # the saturated head is flatter


def test_planted_groups_have_high_mutual_information():
    ds = generate(SyntheticConfig(num_users=500, num_items=20_000, num_interactions=2_000, seed=5))
    groups = ds.extra["feature_groups"]
    items = ds.items
    within = [mutual_information(items[f"g{g}_attr0"], items[f"g{g}_attr{j}"]) for g in range(3) for j in (1, 2)]
    across = [mutual_information(items[f"g{g}_attr{i}"], items[f"g{h}_attr{j}"])
              for g in range(3) for h in range(g + 1, 3) for i in range(3) for j in range(3)]
    # finite-sample bias of the plug-in estimate here is about (32-1)^2 / (2 * 20000) ≈ 0.024 nats
    assert min(within) > 0.5, within
    assert max(across) < 0.05, across
    assert groups["g0"][-1] == "tags" and "price" in groups["g1"]
    first_tag = items["tags"].map(lambda t: t[0])
    assert mutual_information(first_tag, items["g0_attr0"]) > 5 * mutual_information(first_tag, items["g1_attr0"])


def test_flavours_differ_in_what_features_reveal():
    base = dict(num_users=2_000, num_items=20_000, num_interactions=20_000, seed=2)
    cluster_std = generate(SyntheticConfig(**base)).extra["item_cluster"]
    std = generate(SyntheticConfig(**base))
    lt = generate(SyntheticConfig(**base, flavour="long-tail"))
    assert lt.extra["taste_group"] == "g0" and std.extra["taste_group"] is None
    mi_lt = mutual_information(lt.items["g0_attr0"], lt.extra["item_cluster"])
    mi_std = mutual_information(std.items["g0_attr0"], std.extra["item_cluster"])
    assert mi_lt > 2.0 and mi_std < 0.1, (mi_lt, mi_std)
    assert np.array_equal(cluster_std, std.extra["item_cluster"])
    # tail items: few interactions, yet their features reveal the taste cluster as well as the head's do
    counts = counts_by_rank(lt)
    rank = lt.extra["item_popularity_rank"]
    tail = rank > 0.8 * lt.num_items
    assert counts[int(0.8 * lt.num_items):].mean() < 0.5
    mi_tail = mutual_information(lt.items.loc[tail, "g0_attr0"], lt.extra["item_cluster"][tail])
    assert mi_tail > 2.0


def in_cluster_share(ds) -> float:
    user_cluster = pd.Series(ds.extra["user_cluster"], index=ds.users["user_id"])
    item_cluster = pd.Series(ds.extra["item_cluster"], index=ds.items["item_id"])
    return float((user_cluster.loc[ds.interactions["user_id"]].to_numpy()
                  == item_cluster.loc[ds.interactions["item_id"]].to_numpy()).mean())


def test_users_follow_their_taste():
    ds = generate(SyntheticConfig(**{**SMALL.__dict__, "allow_repeats": True}))
    # with repeats: P(same cluster) = taste + (1 - taste) * sum_c mass_c^2 (users' clusters ∝ mass)
    mass = np.bincount(ds.extra["item_cluster"], weights=ds.extra["item_probability"])
    expected = 0.7 + 0.3 * float((mass ** 2).sum())
    assert abs(in_cluster_share(ds) - expected) < 0.015               # binomial sd at 30k events ≈ 0.003
    # without repeats users exhaust the head of their 31-item cluster, so the share drops, but stays
    # far above what popularity alone gives (sum_c mass_c^2)
    no_repeats = in_cluster_share(generate(SMALL))
    assert 0.55 < no_repeats < expected and float((mass ** 2).sum()) < 0.1
    hint = ds.users["taste_hint"].str.removeprefix("taste").astype(int).to_numpy()
    agree = (hint == ds.extra["user_cluster"]).mean()
    assert 0.5 <= agree < 0.6                                           # user_feature_noise 0.5 (+ 0.5/32 by chance)


def test_config_errors():
    with pytest.raises(ValueError, match=r"num_interactions=10 is below num_users \* min_history = 300"):
        SyntheticConfig(num_users=100, num_interactions=10)
    with pytest.raises(ValueError, match=r"taste_strength must be in \[0, 1\], got 1.5"):
        SyntheticConfig(taste_strength=1.5)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['num_item'\]"):
        from_dict(SyntheticConfig, {"num_item": 5})
    with pytest.raises(ValueError, match=r"'flat' is not one of \['standard', 'long-tail'\]"):
        from_dict(SyntheticConfig, {"flavour": "flat"})
