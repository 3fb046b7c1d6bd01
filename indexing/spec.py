"""What index to build: the typed ``IndexSpec`` and the ``auto`` factory rule.

``IndexSpec.factory`` is either a FAISS factory string ("Flat", "IVF4096,Flat", "HNSW32,Flat",
"IVF4096,PQ32", ...) used verbatim, or ``"auto"``, resolved by ``choose_factory(n, dim, budget)``:

  n <= FLAT_MAX_ITEMS and flat vectors fit the budget      -> "Flat"           (exact)
  IVF-Flat (n * (4*dim + 8) bytes) fits the budget          -> "IVF{nlist},Flat"
  else the first compressed index that fits (``compressed_factories``; bytes per item = codes + 8-byte ids +
  refine codes, ``indexing.faiss_index.bytes_per_item``):
    dim/4 + 8 + dim bytes                                    -> "IVF{nlist},PQ{dim/2}x4fs,Refine(SQ8)"
                                                                (k_factor tuned with nprobe)
    ceil(6k/8) + 8 bytes, k = floor(5*dim/6)                 -> "QProj{k},IVF{nlist},SQ6"
  otherwise                                                 -> "IVF{nlist},PQ{m}" with the largest m
                                                               dividing dim whose codes fit the budget
  (at dim 64: IVF-Flat 264 B/item, the SQ8-refined index 88, QProj53,...,SQ6 40 + 8 = 48.)
  The 48 B index (``indexing.projection``) projects items and queries, without centring, onto the k directions
  holding the most query energy (eigenvectors of E[q q^T] over the build's tuning queries) and stores 6-bit
  residual codes of those k dims in the IVF lists: on 1M trained-tower vectors with query-tower queries
  (docs/notes/compress48.md) it reached recall@100 0.953 on test users (tuned nprobe 96; IVF-Flat: 0.956 there).
  The 48 B index it replaces, PQ{dim/4}x4fs re-ranked from a 4-bit SQ copy, reached 0.849 there and cannot
  reach 0.95 (4-bit re-ranking caps recall near 0.90 even with perfect candidates, docs/notes/indexc.md).

Search effort is not fixed: with ``target_recall`` set (default 0.95) every build tunes nprobe / efSearch to
the smallest value reaching it on the query set the build is given -- query-tower vectors of held-out
users, falling back to held-out item vectors only when there is none (``indexing.tuning``) -- because the recall a given
nprobe reaches depends on the vectors (IVF4096 nprobe 32 at 1M: recall@100 0.98 on clustered synthetic
vectors, 0.895 on real item-tower vectors).

Why (``python -m bench.bench_index``, 2 shared cores, timings interleaved in rounds, side by side in one run):
  * exact Flat: 2132 / 517 / 159 / 26 batched QPS at 10k / 30k / 100k / 1M items, 0.2 / 0.8 / 6.7 / 37 ms
    for one query (session 1). Up to FLAT_MAX_ITEMS = 100k a query stays in single-digit milliseconds and
    results are exact (no recall caveat, no training, bit-reproducible), so Flat is the default there.
  * 1M x 64 synthetic (load ~9-10): IVF4096,Flat tuned to nprobe 16 -> recall@100 0.953 on fresh queries,
    2035 QPS = 119x exact Flat, 1.36x hnswlib's QPS at equal recall (hnswlib frontier over M 16 / 32,
    efC 80); the whole IVF4096 sweep ran at 1.25-1.53x hnswlib from recall 0.953 to 0.990. IVF8192,Flat was
    no faster at equal recall (1.18-1.27x hnswlib) and takes 1.5x longer to train. IVF-PQ fast-scan
    (PQ32x4fs) + exact re-ranking reached only recall 0.36 / 0.69 / 0.82 at k_factor 1 / 4 / 8 (PQ too coarse
    for the tightly packed top-100 of clustered vectors); IVF-SQ8 was slower than IVF-Flat at equal recall.
  * 1M x 64 real item-tower vectors (bench_beam's 1M synthetic items through the exported, untrained item
    tower; item-vector queries; load ~8): nprobe tunes to 80 (held-out recall@100 0.965), 993 QPS = 32x
    exact Flat, but only 0.46x hnswlib (M 16) at equal recall: recall grows much more slowly with nprobe on
    these vectors (0.90 at nprobe 32, 0.956 at 64) than on the synthetic ones. The ">= hnswlib QPS" target
    is met on synthetic vectors and NOT on these.
  * HNSW32 (FAISS) was no faster than IVF at equal recall in session 1, needs 2x the memory and cannot be
    merged shard by shard in the nightly Beam rebuild, so auto never picks it. The flat coarse quantizer is
    23% of a 500-query IVF4096 nprobe 16 search (113 of 501 ms, load 9.6); an HNSW quantizer with its
    efSearch at 4x nprobe matched the flat quantizer's recall (0.9714 vs 0.9720 at nprobe 24) but its speed-up
    was not measured side by side, so it is not the default.
Override any of it with a factory string; every built index records its measured recall in its manifest.

This module is pure Python (no FAISS import) so configs can be validated anywhere.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

# Up to this many items the exact Flat index is the default (see the module docstring).
FLAT_MAX_ITEMS = 100_000
# nlist = ~4*sqrt(n) rounded to a power of two, clamped to [MIN_NLIST, MAX_NLIST] and to n / 39
# (FAISS wants at least 39 training points per centroid).
MIN_NLIST = 16
MAX_NLIST = 65_536
MIN_POINTS_PER_CENTROID = 39
# Bytes IVF stores per vector besides its code: the int64 id.
IVF_ID_BYTES = 8
DEFAULT_MEMORY_BUDGET_BYTES = 8 * 2**30
# Default search effort when the spec leaves it unset: nprobe = round(sqrt(nlist) / 2) (16 for 1024 lists,
# 32 for 4096: recall@100 0.97 / 0.98 in the benchmark); HNSW efSearch = DEFAULT_EF_SEARCH (FAISS always
# uses max(efSearch, k)).
DEFAULT_EF_SEARCH = 128
# Re-ranking depth of refine indices ("...,Refine(SQ8)", "...,RFlat") when the spec leaves k_factor unset and
# tuning is off: the base index returns k * k_factor candidates, re-scored with the refine codes.
DEFAULT_K_FACTOR = 4

GpuMode = Literal["auto", "never", "always"]


@dataclass(frozen=True)
class IndexSpec:
    """How to build and search an item index.

    factory        "auto" or a FAISS factory string.
    metric         "ip" only: inner product on L2-normalised vectors (= cosine similarity).
    nprobe         IVF lists probed per query; None = default_nprobe(nlist) = round(sqrt(nlist) / 2).
    ef_search      HNSW search beam; None = DEFAULT_EF_SEARCH.
    k_factor       re-ranking depth of a refine index (IndexRefine: "IVF...,PQ...x4fs,Refine(SQ8)", "...,RFlat"):
                   the base returns k * k_factor candidates, re-scored from the refine data; None = tuned
                   together with nprobe (the pair with the lowest modelled cost reaching target_recall,
                   ``indexing.tuning``), or DEFAULT_K_FACTOR when tuning is off. Ignored by other indices.
    ef_construction HNSW build beam (FAISS's own default is 40).
    gpu            "auto" (use a GPU when FAISS sees one and the index type supports it), "never", "always".
    gpu_float16    store vectors / lists as float16 on the GPU (half the memory, tiny score error).
    gpu_shard      with several GPUs, shard the index across them instead of replicating it.
    train_size     vectors sampled (seeded) to train IVF / PQ.
    seed           seeds the training sample, k-means and the recall query sample.
    memory_budget_bytes  host memory the index may use; drives the "auto" choice.
    recall_k, recall_queries  size of the recall check run after every build (reported in the manifest).
    target_recall  when nprobe (IVF) / ef_search (HNSW) is left None, the build tunes it: the smallest value
                   whose recall@recall_k on ``tune_queries`` queries reaches this target with a 3-standard-error
                   margin (``indexing.tuning``). The queries are the query set the build is given (query-tower
                   vectors of held-out users), else held-out item vectors; the manifest says which
                   (``query_source``). None = no tuning, use the fixed defaults (default_nprobe,
                   DEFAULT_EF_SEARCH). An explicit nprobe / ef_search is never tuned.
    tune_queries   queries tuned on (seeded, disjoint from the ``recall_queries`` recall-check queries when the
                   query set / catalogue allows).
    quantizer_restarts  IVF coarse quantizers trained (fixed seeds, own training samples); the
                   one needing the smallest nprobe for target_recall on the tuning queries is kept
                   (``indexing.quantizer``). 1 = train once.
    """

    factory: str = "auto"
    metric: str = "ip"
    nprobe: int | None = None
    ef_search: int | None = None
    k_factor: int | None = None
    ef_construction: int = 80
    gpu: GpuMode = "auto"
    gpu_float16: bool = False
    gpu_shard: bool = False
    train_size: int = 200_000
    seed: int = 0
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    recall_k: int = 100
    recall_queries: int = 1000
    target_recall: float | None = 0.95
    tune_queries: int = 1000
    quantizer_restarts: int = 3

    def __post_init__(self):
        if not isinstance(self.factory, str) or not self.factory.strip():
            raise ValueError(f"IndexSpec.factory must be 'auto' or a FAISS factory string, got {self.factory!r}")
        if self.metric != "ip":
            raise ValueError(
                f"IndexSpec.metric={self.metric!r} is not supported; only 'ip' (inner product on "
                "L2-normalised vectors, i.e. cosine) is, because the towers emit normalised embeddings"
            )
        if self.gpu not in ("auto", "never", "always"):
            raise ValueError(f"IndexSpec.gpu must be 'auto', 'never' or 'always', got {self.gpu!r}")
        for name in ("nprobe", "ef_search", "k_factor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"IndexSpec.{name} must be a positive int or None (= default), got {value!r}")
        if self.target_recall is not None and (
                isinstance(self.target_recall, bool) or not isinstance(self.target_recall, (int, float))
                or not 0.0 < self.target_recall <= 1.0):
            raise ValueError(f"IndexSpec.target_recall must be a number in (0, 1] or None (= no tuning), got "
                             f"{self.target_recall!r}")
        for name in ("ef_construction", "train_size", "memory_budget_bytes", "recall_k", "recall_queries",
                     "tune_queries", "quantizer_restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"IndexSpec.{name} must be a positive int, got {value!r}")

    def resolve_factory(self, n_items: int, dim: int) -> str:
        """The factory string to build for ``n_items`` vectors of ``dim`` dims."""
        if self.factory == "auto":
            return choose_factory(n_items, dim, self.memory_budget_bytes)
        return self.factory


def choose_nlist(n_items: int) -> int:
    """IVF list count: ~4*sqrt(n) as a power of two, clamped to [16, 65536] and to n / 39."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    target = 4.0 * math.sqrt(n_items)
    nlist = 2 ** round(math.log2(target))
    nlist = min(max(nlist, MIN_NLIST), MAX_NLIST)
    return max(1, min(nlist, n_items // MIN_POINTS_PER_CENTROID))


def choose_pq_m(dim: int, n_items: int, budget_bytes: int) -> int:
    """Largest PQ sub-quantizer count m (8-bit codes) dividing ``dim``, with dim/m >= 2, whose codes fit.

    IVF-PQ stores m + 8 bytes per vector. Raises ValueError when even the smallest m does not fit.
    """
    candidates = [m for m in range(dim // 2, 0, -1) if dim % m == 0] or [1]
    for m in candidates:
        if n_items * (m + IVF_ID_BYTES) <= budget_bytes:
            return m
    smallest = candidates[-1]
    raise ValueError(
        f"{n_items} items do not fit a memory budget of {budget_bytes} bytes even as IVF-PQ with m={smallest} "
        f"({n_items * (smallest + IVF_ID_BYTES)} bytes needed); raise IndexSpec.memory_budget_bytes"
    )


def choose_factory(n_items: int, dim: int, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> str:
    """The ``auto`` rule (see the module docstring). Returns a FAISS factory string."""
    if not isinstance(n_items, int) or n_items < 1:
        raise ValueError(f"n_items must be a positive int, got {n_items!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    flat_bytes = n_items * dim * 4
    if n_items <= FLAT_MAX_ITEMS and flat_bytes <= memory_budget_bytes:
        return "Flat"
    nlist = choose_nlist(n_items)
    if n_items * (dim * 4 + IVF_ID_BYTES) <= memory_budget_bytes:
        return f"IVF{nlist},Flat"
    for factory, per_item in compressed_factories(dim, nlist):
        if n_items * per_item <= memory_budget_bytes:
            return factory
    return f"IVF{nlist},PQ{choose_pq_m(dim, n_items, memory_budget_bytes)}"


def compressed_factories(dim: int, nlist: int) -> list[tuple[str, int]]:
    """The compressed indices ``auto`` considers, most accurate first, with their bytes per item: PQ{dim/2}x4fs
    (fast-scan 4-bit codes, dim/4 B) re-ranked from an 8-bit scalar-quantised copy (dim B) + the 8-byte id; then
    QProj{k},IVF{nlist},SQ6 (``indexing.projection``): k = floor(5*dim/6) projected dims, 6-bit codes ceil(6k/8) B
    + the 8-byte id (48 B at dim 64), no re-ranking code. Dimensions not divisible by 4 get none."""
    if dim % 4:
        return []
    keep = 5 * dim // 6
    return [(f"IVF{nlist},PQ{dim // 2}x4fs,Refine(SQ8)", dim // 4 + IVF_ID_BYTES + dim),
            (f"QProj{keep},IVF{nlist},SQ6", -(-6 * keep // 8) + IVF_ID_BYTES)]


_QPROJ = re.compile(r"^QProj(\d+),(.+)$")
_IVF = re.compile(r"(?:^|,)IVF(\d+)")
_HNSW = re.compile(r"(?:^|,)HNSW(\d+)")


def split_projection(factory: str) -> tuple[int | None, str]:
    """(k, rest) for a ``"QProj{k},rest"`` factory (``indexing.projection``: an uncentred orthonormal projection
    onto k dims learned from the queries, then the FAISS index ``rest`` on k dims), else (None, factory)."""
    if not factory.startswith("QProj"):
        return None, factory
    match = _QPROJ.match(factory)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"factory {factory!r}: a projection is written 'QProj<k>,<FAISS factory>' with k >= 1 "
                         "the dims kept, e.g. 'QProj53,IVF4096,SQ6'")
    return int(match.group(1)), match.group(2)


def factory_nlist(factory: str) -> int | None:
    """nlist of an IVF factory string ("IVF4096,Flat" -> 4096), else None."""
    match = _IVF.search(factory)
    return int(match.group(1)) if match else None


def is_hnsw_factory(factory: str) -> bool:
    return bool(_HNSW.search(factory)) and factory_nlist(factory) is None


def default_nprobe(nlist: int) -> int:
    """IVF lists probed when the spec leaves nprobe unset and tuning is off (target_recall None), and the
    value an index is wrapped with until tuning runs: round(sqrt(nlist) / 2), at least 1.

    Probing a fixed fraction of lists over-spends on big indices: in the benchmark 16 of 1024 lists
    (100k items) and 32 of 4096 (1M items) both reached recall@100 >= 0.95, i.e. ~sqrt(nlist)/2.
    """
    return max(1, round(math.sqrt(nlist) / 2))
