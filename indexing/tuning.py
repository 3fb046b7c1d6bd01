"""Build-time search-effort tuning: the smallest nprobe (IVF) / efSearch (HNSW) that reaches a target recall.

Approximate indices trade recall for speed through one knob, and the recall a given knob value reaches
depends on the vectors (at 1M items, IVF4096 nprobe 32 gave recall@100 0.98 on clustered synthetic vectors
but 0.895 on real item-tower vectors). So instead of a fixed default, every build measures:

  1. exact top-k (``indexing.recall.exact_top_k``) for the tuning queries;
  2. for knob values on ``ladder(...)`` (1..7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...: steps of a
     quarter of a power of two), in increasing order, the per-query recall@k of the raw FAISS search;
  3. picks the first value whose recall lower bound, mean - Z * standard error over the queries, is
     >= ``target``. The margin is what lets a *different* query sample -- the held-out recall check in the
     manifest, the Beam rebuild's validation gate -- still clear ``target``: the difference of two
     independent sample means has sqrt(2) standard errors, so Z = 3 leaves a ~2% chance (one-sided
     normal, z = 3 / sqrt(2)) that an equally sized other sample lands below the target when the tuning
     sample sat exactly on the bound. (Z = 2 was tried first: on 1M synthetic vectors, IVF8192 tuned to a
     bound of 0.9516 measured 0.9525 on the held-out sample -- too close to a 0.95 gate.)

Recall is non-decreasing in nprobe for IVF-Flat (more lists probed = a superset of candidates), and close to
it for IVF-PQ / refine / HNSW, so "the first value on the ladder" is the smallest one that reaches the target.
Everything is deterministic: fixed queries, fixed ladder, exact search as the reference, no timing involved.
(FAISS's ``ParameterSpace.explore`` was not used: it prunes its search with wall-clock timings, so its
answer changes from run to run on a loaded machine.)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from indexing import faiss_index as fi
from indexing.recall import exact_top_k, per_query_recall

# Standard errors subtracted from the mean tuning recall before comparing it with the target.
Z = 3.0


@dataclass(frozen=True)
class TuningResult:
    """What ``tune`` measured. ``curve`` = [(value, mean recall)] for every value tried, in order."""

    param: str                 # "nprobe" or "ef_search" (IndexSpec field names)
    value: int                 # the chosen value
    target_recall: float
    reached: bool              # False: even the largest value tried stayed below the target (value = largest)
    recall: float              # mean recall@k of the chosen value on the tuning queries
    recall_lower_bound: float  # recall - margin_se * standard error
    margin_se: float           # Z used
    k: int
    num_queries: int
    query_source: str
    curve: tuple

    def to_dict(self) -> dict:
        out = asdict(self)
        out["curve"] = [list(p) for p in self.curve]
        return out


def ladder(low: int, high: int) -> list[int]:
    """Increasing ints in [low, high]: 1..7, then steps of a quarter of a power of two (8, 10, 12, 14, 16, 20,
    24, 28, 32, 40, 48, 56, 64, 80, ...); ``low`` and ``high`` themselves are always included."""
    if low < 1 or high < low:
        raise ValueError(f"need 1 <= low <= high, got low={low}, high={high}")
    values = set(range(1, 8))
    p = 8
    while p <= high:
        values.update(int(p * s) for s in (1, 1.25, 1.5, 1.75))
        p *= 2
    return sorted(v for v in values | {low, high} if low <= v <= high)


def knob(index: faiss.Index, k: int) -> tuple[str, list[int]] | None:
    """The tunable knob of a CPU index and the values to try: ("nprobe", [1..nlist]) for IVF (also under a
    pre-transform or refine wrapper), ("ef_search", [k..]) for HNSW, None for indices without one (Flat, PQ)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return "nprobe", ladder(1, int(ivf.nlist))
    if fi.has_hnsw(index):
        # FAISS searches with max(efSearch, k), so values below k are all the same search.
        high = max(k, min(int(index.ntotal), 16 * max(k, 64)))
        return "ef_search", ladder(k, high)
    return None


def tune(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int, target: float,
         query_source: str) -> TuningResult | None:
    """Set ``index``'s knob to the smallest ladder value reaching ``target`` (see the module docstring).

    index: CPU FAISS index holding ``vectors`` float32 (n, d) as ids 0..n-1; queries float32 (m, d); k: the
    recall@k depth. Returns None (and changes nothing) when the index has no knob. Leaves the chosen value set.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target!r}")
    found = knob(index, k)
    if found is None:
        return None
    param, values = found
    k = min(k, len(vectors))
    exact_scores, _ = exact_top_k(vectors, queries, k)
    curve, chosen = [], None
    for value in values:
        fi.apply_search_params(index, **{param: value})
        _, rows = index.search(queries, k)
        per_query = per_query_recall(rows, vectors, queries, exact_scores, k)
        mean = float(per_query.mean())
        se = float(per_query.std(ddof=1) / math.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
        curve.append((value, round(mean, 6)))
        chosen = (value, mean, mean - Z * se)
        if mean - Z * se >= target:
            break
    value, mean, bound = chosen
    return TuningResult(param=param, value=value, target_recall=target, reached=bound >= target, recall=mean,
                        recall_lower_bound=bound, margin_se=Z, k=k, num_queries=len(queries), query_source=query_source,
                        curve=tuple(curve))
