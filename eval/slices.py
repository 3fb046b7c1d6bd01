"""Slices of the test set: by the target item's training popularity and by the user's activity.

A ``SliceFamily`` labels every test case with exactly one of its slices, so each family partitions
the test set. Item families label catalogue rows and a case takes its target's label; query
families label query rows and a case takes its query's label.

  overall     all
  popularity  head / (torso) / tail     by training count of the target item
  decile      d01 .. d10                d01 = most popular 10% of items
  cold        warm / cold               cold = zero training interactions
  activity    hist<T1 / histT1-(T2-1) / ... / hist>=Tn   by the user's training history length
  support     n<T1 / nT1-(T2-1) / ... / n>=Tn            by the target item's training count (only when
              ``EvalConfig.support_thresholds`` is set; (1, 4) gives cold n<1, few-shot n1-3, n>=4)

Tie rule (deterministic, independent of catalogue order): items are ranked by training count,
descending, and every item takes the *last* position of its tie group,
``rank(i) = #{j : count_j >= count_i}`` (1-based). An item is head iff rank <= floor(head_share * n);
torso iff not head and rank <= floor((head_share + torso_share) * n); tail otherwise. Decile =
ceil(10 * rank / n) (1..10). So a tie group straddling a boundary falls entirely into the less
popular slice: head never holds more than head_share of the catalogue, and cold items (count 0,
whose group always ends at position n) are always tail and always d10. Because labels depend only
on counts, two runs whose catalogues list the same items in different orders get the same slices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from eval.config import EvalConfig

FAMILY_ORDER = ("overall", "popularity", "decile", "cold", "support", "activity")


@dataclass(frozen=True)
class SliceFamily:
    """One partition of the test cases.

    name    family name ("popularity", ...)
    labels  slice names; ``codes`` index into it
    on      "item": ``codes`` is int16 (num_items,) per catalogue row (case -> its target's code);
            "query": ``codes`` is int16 (num_queries,) per query row (case -> its query's code)
    """

    name: str
    labels: tuple[str, ...]
    on: Literal["item", "query"]
    codes: np.ndarray

    def case_codes(self, queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """int16 (c,): the slice code of each test case."""
        return self.codes[targets] if self.on == "item" else self.codes[queries]

    def key(self, code: int) -> str:
        """Stable slice key ``"<family>/<label>"`` used in JSON and tables."""
        return f"{self.name}/{self.labels[code]}"


def popularity_rank(train_counts: np.ndarray) -> np.ndarray:
    """int64 (n,): 1-based position of the last item of each item's tie group, ``#{j: c_j >= c_i}``."""
    counts = np.asarray(train_counts)
    ordered = np.sort(counts)  # ascending
    return (len(counts) - np.searchsorted(ordered, counts, side="left")).astype(np.int64)


def _share_cut(share: float, n: int) -> int:
    return int(math.floor(share * n + 1e-9))


def popularity_tiers(train_counts: np.ndarray, head_share: float, torso_share: float = 0.0
                     ) -> tuple[tuple[str, ...], np.ndarray]:
    """(labels, int16 codes (n,)) for head / [torso] / tail by the module's tie rule."""
    rank = popularity_rank(train_counts)
    n = len(rank)
    head_cut = _share_cut(head_share, n)
    if torso_share > 0:
        torso_cut = _share_cut(head_share + torso_share, n)
        codes = np.where(rank <= head_cut, 0, np.where(rank <= torso_cut, 1, 2)).astype(np.int16)
        return ("head", "torso", "tail"), codes
    return ("head", "tail"), np.where(rank <= head_cut, 0, 1).astype(np.int16)


def popularity_deciles(train_counts: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """(("d01", ..., "d10"), int16 codes (n,) in 0..9); d01 = most popular tenth by the tie rule."""
    rank = popularity_rank(train_counts)
    n = len(rank)
    decile = (10 * rank + n - 1) // n  # ceil(10 * rank / n), 1..10
    return tuple(f"d{i:02d}" for i in range(1, 11)), (decile - 1).astype(np.int16)


def count_buckets(values: np.ndarray, thresholds: tuple[int, ...], prefix: str
                  ) -> tuple[tuple[str, ...], np.ndarray]:
    """(labels, int16 codes) bucketing non-negative counts at ascending cut points:
    (10,) -> "<prefix><10", "<prefix>>=10"; (1, 4) -> "<prefix><1", "<prefix>1-3", "<prefix>>=4"."""
    th = list(thresholds)
    labels = [f"{prefix}<{th[0]}"]
    labels += [f"{prefix}{lo}-{hi - 1}" for lo, hi in zip(th[:-1], th[1:])]
    labels.append(f"{prefix}>={th[-1]}")
    codes = np.searchsorted(np.asarray(th), np.asarray(values), side="right").astype(np.int16)
    return tuple(labels), codes


def activity_buckets(history_lengths: np.ndarray, thresholds: tuple[int, ...]
                     ) -> tuple[tuple[str, ...], np.ndarray]:
    """(labels, int16 codes (m,)) bucketing query rows by training history length."""
    return count_buckets(history_lengths, thresholds, "hist")


def validate_counts(train_counts, num_items: int) -> np.ndarray:
    """Check the item popularity array: int (num_items,), >= 0. Returns it as int64."""
    counts = np.asarray(train_counts)
    if counts.shape != (num_items,):
        raise ValueError(
            f"train_counts must have one count per catalogue item, shape ({num_items},), got {counts.shape}; "
            "count training interactions per item row (np.bincount(train_item_rows, minlength=n))"
        )
    if not np.issubdtype(counts.dtype, np.integer):
        if np.issubdtype(counts.dtype, np.floating) and np.all(np.isfinite(counts)) and np.all(counts % 1 == 0):
            counts = counts.astype(np.int64)
        else:
            raise TypeError(f"train_counts must be integer interaction counts, got dtype {counts.dtype}")
    if counts.size and counts.min() < 0:
        raise ValueError(f"train_counts must be >= 0, got minimum {int(counts.min())}")
    return counts.astype(np.int64, copy=False)


def slice_families(train_counts: np.ndarray, history_lengths: np.ndarray, config: EvalConfig
                   ) -> tuple[SliceFamily, ...]:
    """Every slice family the config asks for, in ``FAMILY_ORDER``.

    train_counts     int64 (n,) training interactions per item row
    history_lengths  int64 (m,) training history length per query row
    """
    counts = np.asarray(train_counts)
    families = [SliceFamily("overall", ("all",), "query", np.zeros(len(history_lengths), np.int16))]
    labels, codes = popularity_tiers(counts, config.head_share, config.torso_share)
    families.append(SliceFamily("popularity", labels, "item", codes))
    if config.deciles:
        labels, codes = popularity_deciles(counts)
        families.append(SliceFamily("decile", labels, "item", codes))
    families.append(SliceFamily("cold", ("warm", "cold"), "item", (counts == 0).astype(np.int16)))
    if config.support_thresholds:
        labels, codes = count_buckets(counts, config.support_thresholds, "n")
        families.append(SliceFamily("support", labels, "item", codes))
    labels, codes = activity_buckets(history_lengths, config.activity_thresholds)
    families.append(SliceFamily("activity", labels, "query", codes))
    return tuple(families)
