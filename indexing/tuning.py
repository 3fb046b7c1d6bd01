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
from indexing.spec import IndexSpec

# Standard errors subtracted from the mean tuning recall before comparing it with the target.
Z = 3.0
# Re-ranking depths tried for refine indices (k * k_factor candidates are re-scored).
K_FACTORS = (1, 2, 4, 8, 16, 32, 64)
# Cost model to choose (nprobe, k_factor) for refine indices: bytes of base codes scanned per query
# (nprobe / nlist * ntotal * code_size) + REFINE_BYTE_COST * bytes of refine codes read (k * k_factor *
# refine code size). Re-ranking reads scattered codes (a cache miss each, then a decode) where the base
# scan streams fast-scan codes through SIMD lookups, hence the weight; bench_index checks the choice
# against measured QPS.
REFINE_BYTE_COST = 8.0
# Refine tuning stops raising nprobe at one k_factor once the target is out of reach of its curve
# (``out_of_reach``) at PLATEAU_STEPS consecutive ladder values; a curve gaining less than
# PLATEAU_GAIN_PER_DOUBLING recall per doubling of nprobe counts as flat whatever the gap (see ``plateaued``).
PLATEAU_GAIN_PER_DOUBLING = 0.001
PLATEAU_STEPS = 2


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
    k_factor: int | None = None  # refine indices: the re-ranking depth chosen with ``value`` (nprobe)
    grid: tuple = ()           # refine indices: (k_factor, nprobe needed or None, its recall, modelled cost)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["curve"] = [list(p) for p in self.curve]
        out["grid"] = [list(p) for p in self.grid]
        return out


# query_source values recorded in the manifest (tuning and recall dicts):
#   a caller's label (e.g. "query_tower_valid_users")  queries = the vectors the index will serve
#   ITEM_HELD_OUT / ITEM_SAMPLE / ITEM_ALL              fallback: item vectors used as queries (no query set given)
ITEM_HELD_OUT = "item_vectors_held_out"
ITEM_SAMPLE = "item_vectors_sample"
ITEM_ALL = "item_vectors_all"


def sample_rows(n: int, size: int, seed) -> np.ndarray:
    """Sorted rows int64 of a seeded sample of min(size, n) distinct rows out of 0..n-1."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False)).astype(np.int64)


def split_queries(queries: np.ndarray, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
    """(tuning queries, recall-check queries) out of a given query set, disjoint whenever it has >= 2 rows.

    A seeded permutation (spec.seed, 2) of the rows; the first ``spec.tune_queries`` tune, the next
    ``spec.recall_queries`` check. When there are fewer than tune_queries + recall_queries rows they are split
    in proportion (at least one row each). One row is used for both.
    """
    m = len(queries)
    if m == 0:
        raise ValueError("the query set is empty; pass at least one query vector or queries=None (item vectors "
                         "are then used as queries)")
    if m == 1:
        return queries, queries
    want_tune, want_check = spec.tune_queries, spec.recall_queries
    if m >= want_tune + want_check:
        n_tune, n_check = want_tune, want_check
    else:
        n_tune = min(m - 1, max(1, round(m * want_tune / (want_tune + want_check))))
        n_check = m - n_tune
    order = np.random.default_rng([spec.seed, 2]).permutation(m)
    return queries[np.sort(order[:n_tune])], queries[np.sort(order[n_tune:n_tune + n_check])]


def item_queries(vectors: np.ndarray, spec: IndexSpec) -> tuple[np.ndarray, str, np.ndarray, str]:
    """The fallback when no query set exists: (tuning queries, their source, check queries, their source),
    item vectors sampled with seed (spec.seed, 1) from the rows *not* in the recall-check sample (spec.seed),
    so the recall reported after tuning is measured on held-out queries."""
    n = len(vectors)
    check_rows = sample_rows(n, spec.recall_queries, spec.seed)
    held_out = np.setdiff1d(np.arange(n, dtype=np.int64), check_rows)
    if len(held_out) >= 2:
        tune_q = vectors[held_out[sample_rows(len(held_out), spec.tune_queries, [spec.seed, 1])]]
        tune_source = ITEM_HELD_OUT
    else:  # too few items to hold any out: tune on all of them
        tune_q, tune_source = vectors, ITEM_ALL
    return tune_q, tune_source, vectors[check_rows], ITEM_SAMPLE


def tuning_queries(vectors: np.ndarray, spec: IndexSpec, queries: np.ndarray | None,
                   query_source: str) -> tuple[np.ndarray, str]:
    """The queries a build tunes on (and chooses its quantizer with): the tuning part of ``split_queries`` of
    the given query set, else the held-out item vectors of ``item_queries``; with their source label."""
    if queries is not None:
        return split_queries(queries, spec)[0], query_source
    tune_q, source, _, _ = item_queries(vectors, spec)
    return tune_q, source


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


def _search_recall(index, vectors, queries, exact_scores, k) -> tuple[float, float]:
    _, rows = index.search(queries, k)
    per_query = per_query_recall(rows, vectors, queries, exact_scores, k)
    mean = float(per_query.mean())
    se = float(per_query.std(ddof=1) / math.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
    return mean, mean - Z * se


def tune(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int, target: float,
         query_source: str, k_factor: int | None = None) -> TuningResult | None:
    """Set ``index``'s knob to the smallest ladder value reaching ``target`` (see the module docstring).

    index: CPU FAISS index holding ``vectors`` float32 (n, d) as ids 0..n-1; queries float32 (m, d); k: the
    recall@k depth. Returns None (and changes nothing) when the index has no knob. Leaves the chosen value set.
    Refine indices (IVF base + re-ranking): nprobe is tuned for each k_factor in K_FACTORS (or only the given
    ``k_factor``) and the pair with the lowest modelled cost (REFINE_BYTE_COST) reaching the target is kept.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target!r}")
    found = knob(index, k)
    if found is None:
        return None
    param, values = found
    k = min(k, len(vectors))
    exact_scores, _ = exact_top_k(vectors, queries, k)
    refine = fi.refine_of(index)
    if refine is not None and param == "nprobe":
        return _tune_refine(index, refine, vectors, queries, exact_scores, k, target, query_source, values,
                            (k_factor,) if k_factor is not None else K_FACTORS)
    curve, chosen = [], None
    for value in values:
        fi.apply_search_params(index, **{param: value})
        mean, bound = _search_recall(index, vectors, queries, exact_scores, k)
        curve.append((value, round(mean, 6)))
        chosen = (value, mean, bound)
        if bound >= target:
            break
    value, mean, bound = chosen
    return TuningResult(param=param, value=value, target_recall=target, reached=bound >= target, recall=mean,
                        recall_lower_bound=bound, margin_se=Z, k=k, num_queries=len(queries), query_source=query_source,
                        curve=tuple(curve))


def out_of_reach(points, target: float, largest: int) -> bool:
    """Whether the nprobe curve measured so far at one k_factor says that probing more lists will not reach
    ``target`` (mean recall lower bound) by nprobe ``largest`` (the largest value the tuning would still try).

    points: [(nprobe, mean recall, lower bound)] in increasing nprobe. The gain is measured over the last
    *doubling* of nprobe (the last point against the largest measured nprobe <= half of it, per doubling =
    divided by log2 of their ratio), not per ladder step: the ladder's steps shrink from x2 (1 -> 2) to x1.14
    (56 -> 64), so a per-step threshold calls a curve that still gains 0.02 per doubling "flat" at nprobe ~50
    (what stopped refine tuning at nprobe 48 on trained-tower vectors, indexc's notes). The curve is then
    extrapolated linearly in log2(nprobe): out of reach when the gain per doubling is below
    PLATEAU_GAIN_PER_DOUBLING, or when the doublings needed to close the gap (target - lower bound) at that rate
    exceed the doublings left up to ``largest``. Recall curves are concave in log(nprobe) where tuning is
    decided (gains per doubling shrink as recall nears its ceiling: too little re-ranking caps it below the
    IVF candidate recall, which itself tends to 1), so the extrapolation over-estimates what is left to gain
    and "out of reach" is a conservative stop; it is also what separates a curve that is flat because
    re-ranking is saturated (gain ~0, or a creep far too slow for the gap) from one still climbing slowly
    towards a close target. No decision before a first doubling has been measured.
    """
    value, mean, bound = points[-1]
    base = [p for p in points[:-1] if 2 * p[0] <= value]
    if not base:
        return False
    low, low_mean, _ = max(base)
    rate = (mean - low_mean) / math.log2(value / low)
    if rate < PLATEAU_GAIN_PER_DOUBLING:
        return True
    return (target - bound) / rate > math.log2(max(largest, value) / value)


def plateaued(points, target: float, largest: int) -> bool:
    """Refine tuning's stop rule for one k_factor: ``out_of_reach`` at each of the last PLATEAU_STEPS points
    (one noisy point never stops it). Bounded: each ladder value is tried at most once, up to ``largest``."""
    return len(points) >= PLATEAU_STEPS and all(
        out_of_reach(points[:len(points) - j], target, largest) for j in range(PLATEAU_STEPS))


def refine_k_factors(k_factors, k: int, n: int) -> list[int]:
    """The k_factors worth trying for an index of ``n`` items: not re-ranking more than 4x the catalogue (the
    first one is always kept)."""
    return [kf for i, kf in enumerate(k_factors) if i == 0 or kf * k <= max(n, k) * 4]


def tune_refine_grid(recall_at, values, k_factors, k: int, target: float, per_probe: float, refine_bytes: float,
                     query_source: str, num_queries: int) -> TuningResult:
    """(nprobe, k_factor) for a refine index: for each k_factor (increasing) the smallest nprobe on ``values``
    whose lower bound reaches ``target``, stopping early on ``plateaued``; the pair with the lowest modelled cost
    (nprobe * per_probe + REFINE_BYTE_COST * k * k_factor * refine_bytes) is kept; when no pair reaches the
    target, the best pair measured (``reached`` False). ``recall_at(k_factor, nprobe)`` -> (mean, lower bound).
    Shared by the in-memory tuning (``tune``) and the sharded rebuild's merged-search tuning."""
    curve, grid, best, last = [], [], None, None
    limit = len(values)  # recall grows with k_factor, so a larger k_factor never needs a larger nprobe
    for kf in k_factors:
        reached, points = None, []
        for i, value in enumerate(values[:limit]):
            mean, bound = recall_at(kf, value)
            curve.append((kf, value, round(mean, 6)))
            if last is None or mean > last[2]:
                last = (value, kf, mean, bound)  # unreached target: fall back to the best pair measured
            if bound >= target:
                reached = (value, kf, mean, bound)
                limit = i + 1
                break
            # with too little re-ranking, recall plateaus (and can even fall) as nprobe grows: more probed
            # candidates compete for the same k * k_factor slots. Stop there instead of probing every list.
            points.append((value, mean, bound))
            if plateaued(points, target, values[limit - 1]):
                break
        if reached is None:
            grid.append((kf, None, round(max(r for f, _, r in curve if f == kf), 6), None))
            continue
        cost = reached[0] * per_probe + REFINE_BYTE_COST * k * kf * refine_bytes
        grid.append((kf, reached[0], round(reached[2], 6), round(cost)))
        if best is None or cost < best[0]:
            best = (cost, reached)
        if reached[0] == values[0]:
            break  # nprobe already minimal: larger k_factors only cost more
    value, kf, mean, bound = best[1] if best is not None else last
    return TuningResult(param="nprobe", value=value, target_recall=target, reached=best is not None, recall=mean,
                        recall_lower_bound=bound, margin_se=Z, k=k, num_queries=num_queries,
                        query_source=query_source, curve=tuple(curve), k_factor=kf, grid=tuple(grid))


def _tune_refine(index, refine, vectors, queries, exact_scores, k, target, query_source, values,
                 k_factors) -> TuningResult:
    ivf = faiss.extract_index_ivf(index)
    per_probe = int(index.ntotal) / int(ivf.nlist) * int(ivf.code_size)

    def recall_at(kf, value):
        fi.apply_search_params(index, nprobe=value, k_factor=kf)
        return _search_recall(index, vectors, queries, exact_scores, k)

    result = tune_refine_grid(recall_at, values, refine_k_factors(k_factors, k, int(index.ntotal)), k, target,
                              per_probe, fi.bytes_per_item(index)["refine"], query_source, len(queries))
    fi.apply_search_params(index, nprobe=result.value, k_factor=result.k_factor)
    return result
