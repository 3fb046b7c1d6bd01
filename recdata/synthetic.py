"""Synthetic retrieval data with known structure: Zipf popularity, latent tastes, planted feature groups.

Generative model (everything vectorised with numpy; deterministic given ``SyntheticConfig.seed``):

* Items. Each item gets a popularity rank r (a random permutation of 1..M) and probability
  p ∝ r^-s (s = ``popularity_exponent``), and a taste cluster c ∈ [0, K) drawn uniformly.
* Feature groups. Group g has one latent categorical per item, z_g ∈ [0, ``group_cardinality``).
  Its observed features ``g{g}_attr{j}`` (j < ``features_per_group``) are functions of z_g at
  decreasing resolution (attr0 a relabelling of z_g, attr1 merges pairs of latent values, attr2
  quadruples, ...) whose value is replaced by a uniform random one with probability
  ``feature_noise``. Within a group the features share a lot of information; across groups they
  are independent (mutual information ≈ 0). Group 0 also drives the multi-valued ``tags`` feature
  (each latent value owns 3 characteristic tags; each of an item's 1–4 tags is characteristic with
  probability 1 - feature_noise) and group 1 (or 0 if there is one group) drives the numeric ``price``
  (log-normal around a per-latent mean). The ground truth is in ``Dataset.extra["feature_groups"]``.
* Flavours. "standard": the latents are independent of the taste clusters, so item features carry
  no preference signal (collaborative signal only). "long-tail": group 0's latent IS the taste
  cluster, so every item, including tail items with few interactions, shows its cluster in its
  features (``extra["taste_group"] = "g0"``).
* Users. Each user has a taste cluster drawn with probability ∝ the cluster's popularity mass (so
  the marginal item popularity stays p), a history length ``min_history`` + a log-normal share of the
  rest of ``num_interactions``, and features ``taste_hint`` (the cluster, replaced at random with
  probability ``user_feature_noise``), ``age`` (numeric, independent) and ``country`` (independent).
* Interactions. Each event is, with probability ``taste_strength``, an item of the user's cluster
  drawn ∝ p within the cluster, otherwise an item drawn ∝ p from the whole catalogue. Without
  ``allow_repeats`` a (user, item) pair occurs once: repeats are redrawn as first drawn (up to 48
  rounds: rejection sampling, i.e. sampling without replacement), then from the whole catalogue (16
  rounds, for users who exhausted their cluster); pairs still repeated are dropped and counted in
  ``extra["dropped_repeats"]``. Users who exhaust the head of their cluster therefore show a lower
  share of in-cluster events than ``taste_strength`` on small catalogues. This caps how often
  one user can consume a head item, so the realised head is flatter than r^-s when heavy users
  meet a steep head (as in real logs).
* Timestamps. Each user starts at a uniform time in the first 80% of ``duration_days`` and their
  events are sorted uniform times between that start and the end (int64 seconds from ``start_time``).
  The table is in global time order (source order = time order, users interleaved).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recdata.schema import Dataset, FeatureSpec
from core.strict import to_dict

Flavour = Literal["standard", "long-tail"]


@dataclass(frozen=True)
class SyntheticConfig:
    num_users: int = 20_000
    num_items: int = 10_000
    num_interactions: int = 400_000      # target; without repeats a few may be dropped (see extra)
    popularity_exponent: float = 1.0     # Zipf s: the item of popularity rank r is drawn ∝ r^-s
    num_clusters: int = 32               # latent taste clusters
    taste_strength: float = 0.7          # share of events drawn from the user's taste cluster
    num_feature_groups: int = 3
    features_per_group: int = 3
    group_cardinality: int = 32          # values of each group's latent categorical (long-tail g0: num_clusters)
    feature_noise: float = 0.1           # chance an observed item feature value is random
    user_feature_noise: float = 0.5      # chance taste_hint is random
    num_tags: int = 256
    flavour: Flavour = "standard"
    min_history: int = 3                 # every user has at least this many events (before dropped repeats)
    allow_repeats: bool = False
    start_time: int = 1_577_836_800      # 2020-01-01T00:00:00Z
    duration_days: float = 365.0
    seed: int = 0

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise ValueError(f"SyntheticConfig: {what}")
        need(self.num_users >= 1 and self.num_items >= 2, f"num_users >= 1 and num_items >= 2 required, got "
             f"num_users={self.num_users}, num_items={self.num_items}")
        need(self.min_history >= 1, f"min_history must be >= 1, got {self.min_history}")
        need(self.num_interactions >= self.num_users * self.min_history,
             f"num_interactions={self.num_interactions} is below num_users * min_history = "
             f"{self.num_users * self.min_history}; raise num_interactions or lower num_users/min_history")
        need(self.allow_repeats or self.min_history <= self.num_items,
             f"min_history={self.min_history} exceeds num_items={self.num_items} without repeats")
        need(self.popularity_exponent >= 0, f"popularity_exponent must be >= 0, got {self.popularity_exponent}")
        need(self.num_clusters >= 1, f"num_clusters must be >= 1, got {self.num_clusters}")
        need(0 <= self.taste_strength <= 1, f"taste_strength must be in [0, 1], got {self.taste_strength}")
        need(0 <= self.feature_noise <= 1, f"feature_noise must be in [0, 1], got {self.feature_noise}")
        need(0 <= self.user_feature_noise <= 1,
             f"user_feature_noise must be in [0, 1], got {self.user_feature_noise}")
        need(self.num_feature_groups >= 1 and self.features_per_group >= 1,
             "num_feature_groups and features_per_group must be >= 1")
        need(self.group_cardinality >= 2, f"group_cardinality must be >= 2, got {self.group_cardinality}")
        need(self.num_tags >= 4, f"num_tags must be >= 4, got {self.num_tags}")
        need(self.duration_days > 0, f"duration_days must be > 0, got {self.duration_days}")


ITEM_NUMERIC = "price"
ITEM_MULTI = "tags"
USER_FEATURES = (FeatureSpec("taste_hint", "categorical"), FeatureSpec("age", "numeric"),
                 FeatureSpec("country", "categorical"))
_TAGS_PER_LATENT = 3
_MAX_TAGS = 4
_TASTE_ROUNDS = 48        # redraws of repeated pairs as first drawn (rejection = sampling without replacement)
_CATALOGUE_ROUNDS = 16    # then from the whole catalogue
_NUM_COUNTRIES = 20


def item_feature_specs(cfg: SyntheticConfig) -> tuple[FeatureSpec, ...]:
    """The item features ``generate`` produces for ``cfg``, in column order."""
    cat = [FeatureSpec(f"g{g}_attr{j}", "categorical")
           for g in range(cfg.num_feature_groups) for j in range(cfg.features_per_group)]
    return (*cat, FeatureSpec(ITEM_MULTI, "multi_categorical"), FeatureSpec(ITEM_NUMERIC, "numeric"))


def generate(cfg: SyntheticConfig) -> Dataset:
    """Draw a ``Dataset`` from ``cfg`` (see the module docstring for the model).

    The result satisfies the data contract by construction; ``Dataset.validate`` is left to the caller
    (``recdata.loading.load_dataset`` runs it) because on 10M rows it costs as much as generating.
    """
    rng = np.random.default_rng(cfg.seed)
    n_items, n_users, k = cfg.num_items, cfg.num_users, cfg.num_clusters

    # items: popularity and taste clusters
    rank = rng.permutation(n_items).astype(np.int64) + 1
    prob = rank.astype(np.float64) ** -cfg.popularity_exponent
    prob /= prob.sum()
    item_cluster = rng.integers(0, k, n_items).astype(np.int32)
    items, groups, latents = _item_table(cfg, rng, item_cluster)

    # users: taste ∝ cluster mass, history lengths, features
    cluster_mass = np.bincount(item_cluster, weights=prob, minlength=k)
    user_cluster = rng.choice(k, size=n_users, p=cluster_mass / cluster_mass.sum()).astype(np.int32)
    lengths = _history_lengths(cfg, rng)
    users = _user_table(cfg, rng, user_cluster)

    # events, user-major: rows of user u are contiguous
    row_user = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    sampler = _ItemSampler(prob, item_cluster, k)
    from_taste = rng.random(row_user.size) < cfg.taste_strength
    row_item = sampler.draw(rng, user_cluster[row_user], from_taste)
    dropped = 0
    if not cfg.allow_repeats:
        keep = _redraw_repeats(rng, sampler, row_user, row_item, user_cluster, from_taste, n_items)
        dropped = int((~keep).sum())
        row_user, row_item = row_user[keep], row_item[keep]
    ts = _timestamps(cfg, rng, row_user, n_users)

    # global time order; ties keep user-major order, so within a user times stay in generated order
    order = _stable_argsort(ts - cfg.start_time, int(cfg.duration_days * 86_400) + 1)
    interactions = pd.DataFrame({
        "user_id": _take(users["user_id"], row_user[order]),
        "item_id": _take(items["item_id"], row_item[order]),
        "timestamp": ts[order],
    })
    extra = {
        "generator": "recdata.synthetic",
        "config": to_dict(cfg),
        "feature_groups": groups,
        "taste_group": "g0" if cfg.flavour == "long-tail" else None,
        "item_cluster": item_cluster,
        "user_cluster": user_cluster,
        "item_popularity_rank": rank,
        "item_probability": prob,
        "item_group_latents": latents,
        "dropped_repeats": dropped,
    }
    return Dataset(name=f"synthetic-{cfg.flavour}", interactions=interactions, items=items, users=users,
                   item_features=item_feature_specs(cfg), user_features=USER_FEATURES,
                   source=f"synthetic seed={cfg.seed}", extra=extra)


# ------------------------------------------------------------------------------------------ items
def _item_table(cfg: SyntheticConfig, rng: np.random.Generator, item_cluster: np.ndarray):
    n = cfg.num_items
    cols: dict[str, object] = {"item_id": _ids("i", n)}
    groups: dict[str, list[str]] = {}
    latents = np.empty((cfg.num_feature_groups, n), dtype=np.int32)
    for g in range(cfg.num_feature_groups):
        if g == 0 and cfg.flavour == "long-tail":
            z, card = item_cluster, cfg.num_clusters
        else:
            card = cfg.group_cardinality
            z = rng.integers(0, card, n).astype(np.int32)
        latents[g] = z
        names = []
        for j in range(cfg.features_per_group):
            values = max(2, card >> j)                            # resolution halves with j
            mapping = rng.permutation(np.arange(card) % values)   # balanced many-to-one function
            obs = mapping[z]
            noisy = rng.random(n) < cfg.feature_noise
            obs[noisy] = rng.integers(0, values, int(noisy.sum()))
            name = f"g{g}_attr{j}"
            cols[name] = _take(_labels(f"g{g}a{j}-", values), obs)
            names.append(name)
        groups[f"g{g}"] = names
    cols[ITEM_MULTI] = _tags(cfg, rng, latents[0])
    groups["g0"].append(ITEM_MULTI)
    price_group = min(1, cfg.num_feature_groups - 1)
    card = int(latents[price_group].max()) + 1
    log_mean = rng.normal(3.0, 1.0, card)
    cols[ITEM_NUMERIC] = np.round(np.exp(log_mean[latents[price_group]] + rng.normal(0.0, 0.25, n)), 2)
    groups[f"g{price_group}"].append(ITEM_NUMERIC)
    return pd.DataFrame(cols), groups, latents


def _tags(cfg: SyntheticConfig, rng: np.random.Generator, z: np.ndarray) -> pd.Series:
    """1..4 distinct tags per item: characteristic tags of latent z (3 per value) or random ones."""
    n = z.size
    counts = rng.integers(1, _MAX_TAGS + 1, n)
    owner = np.repeat(np.arange(n, dtype=np.int64), counts)
    own_tag = (z[owner].astype(np.int64) * _TAGS_PER_LATENT
               + rng.integers(0, _TAGS_PER_LATENT, owner.size)) % cfg.num_tags
    random_tag = rng.integers(0, cfg.num_tags, owner.size)
    tag = np.where(rng.random(owner.size) < cfg.feature_noise, random_tag, own_tag)
    key = np.sort(owner * cfg.num_tags + tag)
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]   # distinct (item, tag) pairs, by item
    owner, tag = key // cfg.num_tags, key % cfg.num_tags
    ends = np.cumsum(np.bincount(owner, minlength=n)).tolist()
    flat = _labels("tag", cfg.num_tags).to_numpy(dtype=object)[tag].tolist()
    return pd.Series([flat[a:b] for a, b in zip([0, *ends[:-1]], ends)], dtype=object)


# ------------------------------------------------------------------------------------------ users
def _history_lengths(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    rest = cfg.num_interactions - cfg.num_users * cfg.min_history
    activity = rng.lognormal(0.0, 1.0, cfg.num_users)
    lengths = cfg.min_history + rng.multinomial(rest, activity / activity.sum())
    if not cfg.allow_repeats:  # a user cannot hold more distinct items than the catalogue
        lengths = np.minimum(lengths, cfg.num_items)
    return lengths.astype(np.int64)


def _user_table(cfg: SyntheticConfig, rng: np.random.Generator, user_cluster: np.ndarray) -> pd.DataFrame:
    n = cfg.num_users
    hint = user_cluster.copy()
    noisy = rng.random(n) < cfg.user_feature_noise
    hint[noisy] = rng.integers(0, cfg.num_clusters, int(noisy.sum()))
    country_p = 1.0 / np.arange(1, _NUM_COUNTRIES + 1)
    country = rng.choice(_NUM_COUNTRIES, size=n, p=country_p / country_p.sum())
    return pd.DataFrame({
        "user_id": _ids("u", n),
        "taste_hint": _take(_labels("taste", cfg.num_clusters), hint),
        "age": np.round(rng.uniform(18.0, 70.0, n)),
        "country": _take(_labels("c", _NUM_COUNTRIES), country),
    })


# ------------------------------------------------------------------------------------ interactions
class _ItemSampler:
    """Draw item rows ∝ p from the whole catalogue or from one taste cluster.

    Inverse-CDF lookups on the cumulative probabilities of the items grouped by cluster. Random
    ``searchsorted`` queries into a 1M-entry array are cache-bound (~1 µs each), so queries are
    generated already sorted within each (cluster | whole catalogue) group, looked up in one pass,
    and handed to that group's rows in a random order (a permutation plus a radix sort).
    """

    def __init__(self, prob: np.ndarray, item_cluster: np.ndarray, k: int):
        self.k = k
        self.order = np.argsort(item_cluster, kind="stable")             # items grouped by cluster
        self.cum = np.cumsum(prob[self.order])
        mass = np.bincount(item_cluster, weights=prob, minlength=k)
        size = np.bincount(item_cluster, minlength=k)
        # group k = "whole catalogue": any uniform point of [0, total) is an item drawn ∝ p
        self.lo = np.append(np.cumsum(mass) - mass, 0.0)
        self.width = np.append(mass, self.cum[-1])
        self.first = np.append(np.cumsum(size) - size, 0)                 # item-position bounds per group
        self.last = np.append(np.cumsum(size) - 1, prob.size - 1)
        self.key_dtype = np.int16 if k < np.iinfo(np.int16).max else np.int32   # int16 → radix sort

    def draw(self, rng: np.random.Generator, cluster: np.ndarray, from_taste: np.ndarray) -> np.ndarray:
        """Item rows (int64) for events of users in ``cluster``; ``from_taste`` False → whole catalogue."""
        n = cluster.size
        group = np.where(from_taste, cluster, self.k).astype(self.key_dtype)
        # rows of each group in random order: permute, then stable radix sort by group
        perm = rng.permutation(n)
        rows = perm[np.argsort(group[perm], kind="stable")]
        # matching sorted uniforms: group g occupies [g, g + 1) in v
        v = np.sort(group.astype(np.float64) + rng.random(n))
        g = v.astype(np.int64)
        target = self.lo[g] + (v - g) * self.width[g]
        pos = np.searchsorted(self.cum, target, side="right")
        pos = np.clip(pos, self.first[g], self.last[g])   # float round-off at a group's edges
        out = np.empty(n, dtype=np.int64)
        out[rows] = self.order[pos]
        return out


def _redraw_repeats(rng, sampler: _ItemSampler, row_user, row_item, user_cluster, from_taste,
                    n_items: int) -> np.ndarray:
    """Redraw later occurrences of a (user, item) pair in place; returns the rows to keep."""
    key = row_user * n_items + row_item
    order = _stable_argsort(key, int(n_items) * int(row_user[-1] + 1))
    sk = key[order]
    repeat = np.zeros(key.size, dtype=bool)
    repeat[order[1:]] = sk[1:] == sk[:-1]
    accepted = sk[np.concatenate([[True], sk[1:] != sk[:-1]])]   # sorted distinct keys
    added: list[np.ndarray] = []                                  # sorted keys accepted by each redraw
    for round_ in range(_TASTE_ROUNDS + _CATALOGUE_ROUNDS):
        rows = np.flatnonzero(repeat)
        if rows.size == 0:
            break
        # the last rounds draw from the whole catalogue: a heavy user may have exhausted their cluster
        taste = from_taste[rows] if round_ < _TASTE_ROUNDS else np.zeros(rows.size, dtype=bool)
        new_item = sampler.draw(rng, user_cluster[row_user[rows]], taste)
        new_key = row_user[rows] * n_items + new_item
        by_key = np.argsort(new_key, kind="stable")
        sorted_new = new_key[by_key]
        ok = np.zeros(rows.size, dtype=bool)
        ok[by_key] = np.concatenate([[True], sorted_new[1:] != sorted_new[:-1]])  # first among the redraws
        ok &= ~_contains(accepted, new_key)
        for chunk in added:
            ok &= ~_contains(chunk, new_key)
        row_item[rows[ok]] = new_item[ok]
        repeat[rows[ok]] = False
        added.append(np.sort(new_key[ok]))
    return ~repeat


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.size, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def _timestamps(cfg: SyntheticConfig, rng: np.random.Generator, row_user: np.ndarray, n_users: int):
    """Sorted uniform times per user (user-major rows) as int64 seconds."""
    total = cfg.duration_days * 86_400.0
    start = rng.uniform(0.0, 0.8 * total, n_users)
    counts = np.bincount(row_user, minlength=n_users)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gaps = rng.exponential(1.0, row_user.size)
    cs = np.cumsum(gaps)
    before = np.where(first > 0, cs[np.maximum(first - 1, 0)], 0.0)
    within = cs - before[row_user]                        # cumulative gaps inside each user's block
    last = within[np.maximum(first + counts - 1, 0)]      # per user (garbage for users with no rows)
    denom = last + rng.exponential(1.0, n_users)          # n+1 spacings → sorted uniforms
    frac = within / denom[row_user]
    seconds = start[row_user] + frac * (total - start[row_user])
    return cfg.start_time + np.floor(seconds).astype(np.int64)


# ---------------------------------------------------------------------------------------- helpers
def _ids(prefix: str, n: int) -> pd.Series:
    return pd.Series(np.arange(n)).astype(str).radd(prefix).astype("str")


def _stable_argsort(key: np.ndarray, bound: int) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` for int64 keys in [0, bound).

    When key and row index fit together in 63 bits they are packed into one int64 and sorted with
    ``np.sort`` (several times faster than an indirect argsort on 10M rows).
    """
    n = key.size
    row_bits = max(1, int(n - 1).bit_length())
    if int(max(bound - 1, 1)).bit_length() + row_bits > 63:
        return np.argsort(key, kind="stable")
    packed = np.sort((key.astype(np.int64) << row_bits) | np.arange(n, dtype=np.int64))
    return packed & ((1 << row_bits) - 1)


def _take(ids: pd.Series, rows: np.ndarray) -> pd.Series:
    """``ids[rows]`` as a str Series, gathered by Arrow (no per-row Python string objects)."""
    return pd.Series(pc.take(pa.array(ids), pa.array(rows)), dtype=ids.dtype)


def _labels(prefix: str, n: int) -> pd.Series:
    return pd.Series([f"{prefix}{i}" for i in range(n)], dtype="str")
