"""``EvalConfig``: every knob of an offline evaluation, as one frozen dataclass.

Built from YAML/JSON with ``EvalConfig.from_dict`` (unknown keys rejected, see ``core.strict``)
and saved verbatim next to every result, so a ``metrics.json`` says exactly how it was computed::

    eval:
      ks: [10, 50, 100]
      head_share: 0.2          # head = top 20% of catalogue items by training count
      torso_share: 0.0         # 0 = no torso tier; e.g. 0.3 makes head 20% / torso 30% / tail 50%
      activity_thresholds: [10]  # users with < 10 training items are "short history"
      support_thresholds: []     # e.g. [1, 4]: items with 0 / 1-3 / >= 4 training events (cold, few-shot)
      bootstrap_samples: 1000
      baselines: [popularity, random, als, bpr, ease]   # reference rows graded next to the model
      ease_lambdas: [10, 30, 100, 300, 1000, 3000]   # EASE's L2 grid, tuned on validation
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from core.strict import from_dict, to_dict

ExcludedTargets = Literal["drop", "keep", "error"]
# reference systems eval.baselines can grade, in the order their rows are reported
BASELINES = ("popularity", "random", "als", "bpr", "ease")


@dataclass(frozen=True)
class EvalConfig:
    """How to score rankings and slice the test set.

    ks                  cut-offs K for Recall/HitRate/NDCG/coverage/mean popularity (ascending, unique).
                        Rankings are computed to max(ks); MRR is truncated there (key ``mrr@{max(ks)}``).
    head_share          fraction of catalogue items (by training count) that may be "head".
    torso_share         fraction after the head that may be "torso" (0 = no torso tier).
    deciles             also slice by item popularity decile (d01 = most popular 10% of items).
    activity_thresholds user-history-length cut points: (10,) -> "hist<10", "hist>=10".
    support_thresholds  item training-count cut points for the "support" family (slices that lack
                        supervision): (1, 4) -> "n<1" (cold), "n1-3" (few-shot), "n>=4"; () = off.
    bootstrap_samples   resamples of test queries for the CIs (0 = point estimates only).
    confidence          CI level (0.95 = 2.5th..97.5th percentile).
    seed                seeds the bootstrap (and nothing else here).
    query_block         queries scored at once by the exact search and by ``index.search`` calls.
    item_block          items per score tile in the exact search; one tile is
                        query_block * item_block float32 (4096 * 16384 * 4 B = 256 MiB).
    excluded_targets    test cases whose target is among the query's excluded (training) items can
                        never be retrieved: "drop" them (counted in the result), "keep" them as
                        certain misses, or raise ("error").
    baselines           the reference systems graded next to the model (``eval.baselines``), any of
                        "popularity", "random", "als" (implicit ALS, 32 factors), "bpr" (implicit
                        BPR, 32 factors), "ease" (Steck's closed-form item-item model); () = none.
    ease_lambdas        EASE's L2 (lambda) grid; the value with the best validation ndcg@max(ks) is used
                        (``eval.baselines.tune_ease``); one value = no tuning.
    """

    ks: tuple[int, ...] = (10, 50, 100)
    head_share: float = 0.2
    torso_share: float = 0.0
    deciles: bool = True
    activity_thresholds: tuple[int, ...] = (10,)
    support_thresholds: tuple[int, ...] = ()
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    query_block: int = 4096
    item_block: int = 16384
    excluded_targets: ExcludedTargets = "drop"
    baselines: tuple[str, ...] = BASELINES
    ease_lambdas: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)

    def __post_init__(self):
        ks = tuple(self.ks)
        if not ks:
            raise ValueError("EvalConfig.ks is empty; give at least one cut-off, e.g. ks=(10, 50, 100)")
        if any(not isinstance(k, int) or isinstance(k, bool) or k <= 0 for k in ks):
            raise ValueError(f"EvalConfig.ks must be positive integers, got {list(ks)}")
        if list(ks) != sorted(set(ks)):
            raise ValueError(
                f"EvalConfig.ks must be strictly ascending without repeats, got {list(ks)}; "
                f"use {sorted(set(ks))}"
            )
        object.__setattr__(self, "ks", ks)
        if not 0.0 < self.head_share < 1.0:
            raise ValueError(f"EvalConfig.head_share must be in (0, 1), got {self.head_share!r}")
        if not 0.0 <= self.torso_share < 1.0 - self.head_share:
            raise ValueError(
                f"EvalConfig.torso_share must be in [0, 1 - head_share) = [0, {1.0 - self.head_share:g}), "
                f"got {self.torso_share!r}; the tail must keep some items"
            )
        for key in ("activity_thresholds", "support_thresholds"):
            th = tuple(getattr(self, key))
            if any(not isinstance(t, int) or isinstance(t, bool) or t <= 0 for t in th) \
                    or list(th) != sorted(set(th)):
                raise ValueError(f"EvalConfig.{key} must be strictly ascending positive integers, got {list(th)}")
            object.__setattr__(self, key, th)
        if not self.activity_thresholds:
            raise ValueError("EvalConfig.activity_thresholds is empty; give at least one cut point, e.g. [10]")
        if self.bootstrap_samples < 0:
            raise ValueError(f"EvalConfig.bootstrap_samples must be >= 0 (0 = no CIs), got {self.bootstrap_samples}")
        if not 0.0 < self.confidence < 1.0 or math.isnan(self.confidence):
            raise ValueError(f"EvalConfig.confidence must be in (0, 1), got {self.confidence!r}")
        for key in ("query_block", "item_block"):
            if getattr(self, key) <= 0:
                raise ValueError(f"EvalConfig.{key} must be > 0, got {getattr(self, key)!r}")
        if self.excluded_targets not in ("drop", "keep", "error"):
            raise ValueError(
                f"EvalConfig.excluded_targets must be 'drop', 'keep' or 'error', got {self.excluded_targets!r}"
            )
        names = (self.baselines,) if isinstance(self.baselines, str) else tuple(self.baselines)
        if any(b not in BASELINES for b in names) or len(set(names)) != len(names) \
                or isinstance(self.baselines, str):
            raise ValueError(
                f"EvalConfig.baselines must be a list of distinct names among {list(BASELINES)}, got "
                f"{self.baselines if isinstance(self.baselines, str) else list(names)!r}; e.g. baselines: [popularity, als, bpr], or [] for none"
            )
        object.__setattr__(self, "baselines", names)
        grid = (self.ease_lambdas,) if isinstance(self.ease_lambdas, (int, float)) else tuple(self.ease_lambdas)
        if not grid or isinstance(self.ease_lambdas, (int, float, str)) or any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0
                for x in grid) or len(set(grid)) != len(grid):
            raise ValueError(
                f"EvalConfig.ease_lambdas must be a non-empty list of distinct numbers > 0, got {self.ease_lambdas!r}; "
                "e.g. ease_lambdas: [100, 300, 1000]")
        object.__setattr__(self, "ease_lambdas", tuple(sorted(float(x) for x in grid)))

    @property
    def max_k(self) -> int:
        """Depth of every ranking the suite computes or requires."""
        return self.ks[-1]

    @classmethod
    def from_dict(cls, data: dict | None) -> "EvalConfig":
        """Build from plain data (YAML/JSON); unknown keys raise ``ValueError``."""
        return from_dict(cls, data)

    def to_dict(self) -> dict:
        return to_dict(self)
