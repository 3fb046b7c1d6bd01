"""Two augmented views of a tower's inputs for the SSL regulariser (Yao et al., arXiv 2007.12865).

A tower's features are the columns of its ``feature_mask`` (``tower.feature_names``, e.g.
("item_id", "genres", "year", ...)); a masked feature is multiplied by 0 in ``towers.head``,
i.e. it takes the zero (default) embedding. Each view is (raw inputs, keep mask float32 [B, F]).

1. Feature masking (complementary: a maskable feature is kept in exactly one of the two views)
   rfm  per example, a uniformly random ⌊F_m/2⌋ of the F_m maskable features is masked in view 1
        and the other ⌈F_m/2⌉ in view 2.
   cfm  per batch, a seed feature s drawn uniformly from the maskable ones; the group
        G(s) = {s} ∪ the top-⌊k/2⌋ maskable features by mutual information with s (ties: feature
        order; at most F_m − 1 features so both views keep something) is masked in view 1, the
        complement in view 2. The MI table comes from training data (``mutual_information_table``).
   Features not maskable (the ids with ``mask_ids`` false) stay in both views. With F_m < 2
   there is nothing to split and both views keep every feature.
2. Value dropout, per view independently: each value of a multi_categorical feature (→ "") and
   each whitespace-separated word of a text feature is dropped with probability ``value_dropout``;
   with ``sequence_dropout`` > 0 each history element (→ "", its timestamp → 0) likewise.

Mutual information (nats) is computed on discretised columns: ids / categorical values as they
are ("" = missing is a value), multi_categorical by their FIRST value, text by its first word,
numeric by 10 quantile buckets (NaN its own bucket). Rows are weighted (e.g. by training
interactions), so the table describes the training distribution. The diagonal holds the
entropies; a feature absent from the data (e.g. "history") has MI 0 with everything.

All random draws are stateless from an int64 [2] seed (``towers.negatives.step_seed``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from recdata.schema import FeatureSpec
from towers.tf_env import tf

NUMERIC_MI_BUCKETS = 10
ID_FEATURES = ("item_id", "user_id")


# ----------------------------------------------------------------------------------------------
# mutual information (NumPy, before training)


def discrete_codes(values: np.ndarray, kind: str) -> np.ndarray:
    """One raw feature column (tower-input layout, see ``towers.inputs``) → int64 codes (N,).

    kind: "id" | "categorical" | "multi_categorical" (first value) | "text" (first word, lower
    case) | "numeric" (quantile bucket, NaN its own code).
    """
    values = np.asarray(values)
    if kind == "numeric":
        x = values.astype(np.float64)
        finite = np.isfinite(x)
        codes = np.full(len(x), NUMERIC_MI_BUCKETS, dtype=np.int64)
        if finite.any():
            edges = np.unique(np.quantile(x[finite], np.linspace(0, 1, NUMERIC_MI_BUCKETS + 1)[1:-1]))
            codes[finite] = np.searchsorted(edges, x[finite], side="right")
        return codes
    if kind == "multi_categorical":
        column = values[:, 0] if values.ndim == 2 and values.shape[1] else np.full(len(values), "", dtype=object)
    elif kind == "text":
        column = np.array([(str(v).lower().split() or [""])[0] for v in values], dtype=object)
    elif kind in ("id", "categorical"):
        column = values
    else:
        raise ValueError(f"unsupported feature kind {kind!r} for mutual information; expected id, categorical, "
                         "multi_categorical, text or numeric")
    codes, _ = pd.factorize(pd.Series(column, dtype=object), use_na_sentinel=False)
    return codes.astype(np.int64)


def _plug_in_mi(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    total = w.sum()
    nb = int(b.max()) + 1 if len(b) else 1
    joint_keys, joint_index = np.unique(a * nb + b, return_inverse=True)
    p_ab = np.bincount(joint_index, weights=w) / total
    p_a = np.bincount(a, weights=w) / total
    p_b = np.bincount(b, weights=w) / total
    ka, kb = joint_keys // nb, joint_keys % nb
    nz = p_ab > 0
    return float(np.sum(p_ab[nz] * np.log(p_ab[nz] / (p_a[ka[nz]] * p_b[kb[nz]]))))


def mutual_information(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None,
                       permutations: int = 3, seed: int = 0) -> float:
    """I(A; B) in nats of two int64 code columns (N,), rows weighted by ``weights`` (N,) >= 0.

    Plug-in estimate minus its mean over ``permutations`` random pairings of the rows (the MI
    that chance alone gives at this sample size and cardinality), clipped at 0: without the
    correction a 256-valued feature looks correlated with everything on a few hundred items.
    ``permutations`` = 0 gives the plug-in estimate.
    """
    w = np.ones(len(a)) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = w > 0
    a, b, w = a[keep], b[keep], w[keep]
    if w.sum() <= 0:
        return 0.0
    estimate = _plug_in_mi(a, b, w)
    if permutations:
        rng = np.random.default_rng(seed)
        estimate -= np.mean([_plug_in_mi(a, b[rng.permutation(len(b))], w) for _ in range(permutations)])
    return float(max(estimate, 0.0))


@dataclass(frozen=True)
class FeatureCorrelation:
    """Mutual information between every pair of a tower's features.

    names  the tower's feature names, in ``feature_mask`` column order
    mi     float64 [F, F], symmetric, nats; mi[i, i] = entropy of feature i
    """

    names: tuple
    mi: np.ndarray

    def top_correlated(self, seed: str, count: int, among: Sequence[str] | None = None) -> list:
        """The ``count`` features (names, ``among`` only, never ``seed``) of highest MI with ``seed``."""
        i = self.names.index(seed)
        candidates = [j for j, n in enumerate(self.names) if n != seed and (among is None or n in among)]
        ranked = sorted(candidates, key=lambda j: (-self.mi[i, j], j))  # stable: ties by feature order
        return [self.names[j] for j in ranked[:count]]


def mutual_information_table(columns: Mapping[str, np.ndarray], kinds: Mapping[str, str],
                             names: Sequence[str], weights: np.ndarray | None = None,
                             max_rows: int = 200_000, seed: int = 0) -> FeatureCorrelation:
    """MI table over ``names`` from raw columns {name: array (N, ...)}; ``kinds[name]`` per column.

    Names with no column (e.g. "history") get MI 0 with every feature. Rows of zero weight are
    left out; more than ``max_rows`` rows are subsampled (seeded).
    """
    present = [n for n in names if n in columns]
    lengths = {n: len(columns[n]) for n in present}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"feature columns must have the same number of rows, got {lengths}")
    if weights is not None and present and len(weights) != next(iter(lengths.values())):
        raise ValueError(f"weights has {len(weights)} rows but the feature columns have {next(iter(lengths.values()))}")
    codes = {n: discrete_codes(columns[n], kinds[n]) for n in present}
    rows = np.arange(next(iter(lengths.values()), 0))
    if weights is not None:
        rows = rows[np.asarray(weights) > 0]
    if len(rows) > max_rows:  # deterministic subsample: MI needs far fewer rows than a big catalogue
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    codes = {n: c[rows] for n, c in codes.items()}
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[rows]
    index = {n: i for i, n in enumerate(names)}
    mi = np.zeros((len(names), len(names)))
    for x, a in enumerate(present):
        mi[index[a], index[a]] = mutual_information(codes[a], codes[a], w, permutations=0)  # entropy
        for b in present[x + 1:]:
            mi[index[a], index[b]] = mi[index[b], index[a]] = mutual_information(codes[a], codes[b], w, seed=seed)
    return FeatureCorrelation(tuple(names), mi)


def tower_feature_kinds(specs: Sequence[FeatureSpec]) -> dict:
    """{feature name: kind} of a tower's FeatureSpecs plus its id columns ("id")."""
    return {**{n: "id" for n in ID_FEATURES}, **{s.name: s.kind for s in specs}}


def feature_correlation(columns: Mapping[str, np.ndarray], specs: Sequence[FeatureSpec], names: Sequence[str],
                        train_counts: np.ndarray) -> FeatureCorrelation:
    """A tower's MI table from TRAINING data: the table's columns (item catalogue via
    ``towers.inputs.item_features_batch``, users via ``user_features_batch``) restricted to the rows
    with at least one training interaction (``train_counts`` (N,) per row), each row counted once.
    (The SSL item batch is drawn uniformly over items; weighting by popularity would shrink the
    effective sample to a few head rows.)"""
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("train_counts sums to 0: the MI table needs training interactions")
    return mutual_information_table(columns, tower_feature_kinds(specs), names, weights=(counts > 0).astype(float))


# ----------------------------------------------------------------------------------------------
# views (TensorFlow, inside the train step)


def cfm_group_table(correlation: FeatureCorrelation, names: Sequence[str], maskable: Sequence[str],
                    k: int) -> np.ndarray:
    """float32 [F, F]: row s = 1 on the features of G(s) (seed s + its top-⌊k/2⌋ maskable features by
    MI, at most F_m − 1 in all). ``k`` = 0 means F_m. Rows of non-maskable features are 0."""
    missing = [n for n in names if n not in correlation.names]
    if missing:
        raise ValueError(f"the MI table has no feature(s) {missing}; it covers {list(correlation.names)}; "
                         "compute it for the tower's feature_names")
    k = k or len(maskable)
    size = min(k // 2, max(len(maskable) - 2, 0))  # the group holds seed + size ≤ F_m − 1 features
    table = np.zeros((len(names), len(names)), np.float32)
    for s, seed in enumerate(names):
        if seed in maskable and len(maskable) >= 2:
            for name in [seed] + correlation.top_correlated(seed, size, among=maskable):
                table[s, names.index(name)] = 1.0
    return table


class TwoViewAugmenter:
    """Builds two augmented views of one tower's raw inputs (see module docstring).

    names             the tower's feature names (``feature_mask`` columns)
    specs             its FeatureSpecs (to find multi_categorical / text inputs)
    mode              "rfm" | "cfm"
    correlation       FeatureCorrelation covering ``names`` (cfm only)
    cfm_k             k of CFM (0 = number of maskable features)
    mask_ids          ids ("item_id" / "user_id") are maskable
    value_dropout     per-value drop rate of multi_categorical / text inputs
    sequence_dropout  per-element drop rate of "history" (query tower inputs)
    """

    def __init__(self, names: Sequence[str], specs: Sequence[FeatureSpec], mode: str,
                 correlation: FeatureCorrelation | None = None, cfm_k: int = 0, mask_ids: bool = True,
                 value_dropout: float = 0.0, sequence_dropout: float = 0.0):
        if mode not in ("rfm", "cfm"):
            raise ValueError(f"mode must be 'rfm' or 'cfm', got {mode!r}")
        self.names = tuple(names)
        self.maskable = tuple(n for n in self.names if mask_ids or n not in ID_FEATURES)
        self.mode = mode
        self.value_dropout = float(value_dropout)
        self.sequence_dropout = float(sequence_dropout)
        self.multi_valued = tuple(s.name for s in specs if s.kind == "multi_categorical" and s.name in self.names)
        self.texts = tuple(s.name for s in specs if s.kind == "text" and s.name in self.names)
        self._maskable_columns = [self.names.index(n) for n in self.maskable]
        self.group_table = None
        if mode == "cfm":
            if correlation is None:
                raise ValueError("mode 'cfm' needs the mutual-information table (correlation=FeatureCorrelation); "
                                 "build it with towers.feature_masking.feature_correlation / mutual_information_table")
            self.group_table = tf.constant(cfm_group_table(correlation, self.names, self.maskable, cfm_k))

    def in_one_view(self, name: str) -> bool:
        """True when every example keeps feature ``name`` in exactly one of its two views
        (``masks`` are complementary on the maskable features when there are at least two)."""
        return name in self.maskable and len(self.maskable) >= 2

    # -- masks ---------------------------------------------------------------------------------

    def _scatter_columns(self, maskable_keep: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """[B, F_m] keep values of the maskable columns → [B, F] with 1 in the other columns."""
        ones = tf.ones(tf.stack([batch, 1]), tf.float32)
        padded = tf.concat([maskable_keep, ones], axis=1)  # column F_m = "always kept"
        where = [self._maskable_columns.index(i) if i in self._maskable_columns else len(self._maskable_columns)
                 for i in range(len(self.names))]
        return tf.gather(padded, where, axis=1)

    def masks(self, batch: tf.Tensor, seed: tf.Tensor):
        """(keep1, keep2), float32 [B, F] each: complementary on maskable features, 1 elsewhere."""
        f_m = len(self.maskable)
        if f_m < 2:
            ones = tf.ones(tf.stack([batch, len(self.names)]), tf.float32)
            return ones, ones
        if self.mode == "rfm":
            u = tf.random.stateless_uniform(tf.stack([batch, f_m]), seed=seed)
            ranks = tf.argsort(tf.argsort(u, axis=1), axis=1)
            masked_in_1 = tf.cast(ranks < f_m // 2, tf.float32)  # ⌊F_m/2⌋ random features per example
        else:
            pick = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=f_m, dtype=tf.int32)
            seed_column = tf.gather(tf.constant(self._maskable_columns, tf.int32), pick)
            group = tf.gather(tf.gather(self.group_table, seed_column), self._maskable_columns)
            masked_in_1 = tf.tile(group[tf.newaxis, :], tf.stack([batch, 1]))
        return self._scatter_columns(1.0 - masked_in_1, batch), self._scatter_columns(masked_in_1, batch)

    # -- value dropout -------------------------------------------------------------------------

    def drop_values(self, inputs: dict, seed: tf.Tensor) -> dict:
        """Copy of ``inputs`` with multi-valued / text values and history elements dropped."""
        out = dict(inputs)
        seeds = tf.random.experimental.stateless_split(seed, num=len(self.multi_valued) + len(self.texts) + 1)
        i = 0
        if self.value_dropout > 0:
            for name in self.multi_valued:
                values = inputs[name]
                drop = tf.random.stateless_uniform(tf.shape(values), seed=seeds[i]) < self.value_dropout
                out[name] = tf.where(drop, tf.constant("", values.dtype), values)
                i += 1
            for name in self.texts:
                words = tf.strings.split(inputs[name])
                keep = tf.random.stateless_uniform(tf.shape(words.flat_values), seed=seeds[i]) >= self.value_dropout
                out[name] = tf.strings.reduce_join(tf.ragged.boolean_mask(words, words.with_flat_values(keep)),
                                                   axis=1, separator=" ")
                i += 1
        if self.sequence_dropout > 0 and "history" in inputs:
            history = inputs["history"]
            drop = tf.random.stateless_uniform(tf.shape(history), seed=seeds[-1]) < self.sequence_dropout
            out["history"] = tf.where(drop, tf.constant("", history.dtype), history)
            if "history_timestamps" in inputs:
                ts = inputs["history_timestamps"]
                out["history_timestamps"] = tf.where(drop, tf.zeros_like(ts), ts)
        return out

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: skip AST conversion
    def views(self, inputs: dict, seed: tf.Tensor):
        """((inputs1, keep1), (inputs2, keep2)) for a batch of raw inputs; ``seed`` int64 [2]."""
        first = next(iter(inputs.values()))
        batch = tf.shape(first)[0]
        s = tf.random.experimental.stateless_split(seed, num=3)
        keep1, keep2 = self.masks(batch, s[0])
        return (self.drop_values(inputs, s[1]), keep1), (self.drop_values(inputs, s[2]), keep2)
