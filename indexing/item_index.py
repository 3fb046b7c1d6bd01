"""``ItemIndex``: top-k items by inner product, addressed by catalogue row, with per-query exclusions.

A FAISS CPU index (optionally cloned to GPU, see ``indexing.gpu``) whose ids are the catalogue rows
0..n-1 of the vectors artifact, plus ``item_ids`` (row -> item id string), the ``IndexSpec`` it was
built with, the model version of the vectors, and the recall measured after building.

Search semantics (``search(queries, k, exclude)``):
  * scores float32 (m, k) are inner products (cosine for the normalised vectors the towers emit), rows
    int64 (m, k), best first; where fewer than k items remain, rows are -1 and scores -inf.
  * excluded rows never appear. Each query is searched for k + (its number of exclusions) candidates
    (+1 for Flat, to see whether a tie continues past the k-th), which is enough for any index; queries
    are sorted by exclusion count and searched in blocks, so one heavy user does not widen everyone's
    search, and blocks are sized to hold at most MAX_BLOCK_CANDIDATES candidates in memory.
  * ties: equal scores are ordered by ascending row. For the exact Flat index this also decides which
    tied items make the top-k (the lowest rows), so Flat results equal a brute-force
    ``lexsort((row, -score))`` exactly: when the k-th kept score equals the lowest score FAISS returned,
    the search is widened (k doubled) until the tie is resolved.
  * approximate indices (IVF, HNSW, PQ) return what their probes reach; IVF pads with -1 when the probed
    lists hold fewer than k items.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import faiss
import numpy as np

from indexing import faiss_index as fi
from indexing import quantizer as qz
from indexing import tuning as tn
from core.exclusions import Exclusions, as_exclusions
from indexing.arrays import as_float32_matrix, as_item_ids
from indexing.gpu import GPU_MAX_K, GpuIndex, maybe_to_gpu
from indexing.recall import recall_against_exact
from indexing.spec import IndexSpec
from indexing.tuning import sample_rows  # noqa: F401  (re-exported: callers sample rows like the index does)

# Bound on candidates held per search block (queries x k_eff); ~12 bytes each.
MAX_BLOCK_CANDIDATES = 1 << 24
DEFAULT_BATCH = 4096


class ItemIndex:
    """Item vectors searchable by inner product; see the module docstring for the semantics.

    Search effort: an explicit ``spec.nprobe`` / ``spec.ef_search`` wins; else ``search_params`` (the values a
    saved index was tuned to); else the spec defaults, and -- when ``spec.target_recall`` is set -- the index
    is *pending tuning*: the next ``measure_recall(vectors, queries)`` (which ``build`` calls, and so does the
    Beam rebuild's validation after ``from_faiss``) first runs ``tune``.

    Queries: recall is only meaningful on the queries the index will serve. Two-tower queries are query-tower
    vectors, not item vectors (issue 15: at 300k items, IVF2048 nprobe 8 gave recall@100 0.745 on item-vector
    queries but 0.956 on query-tower queries; other vectors go the other way). So ``build`` /
    ``measure_recall`` take ``queries=`` (query-tower vectors of held-out users) and split them, seeded, into a
    tuning part and a disjoint recall-check part (``indexing.tuning.split_queries``). Only when no query set is
    given do they fall back to item vectors as queries; ``tuning["query_source"]`` and
    ``recall["query_source"]`` (both saved in the manifest) say which was used, and ``tuning["curve"]`` is the
    measured recall per knob value.
    """

    def __init__(self, cpu_index: faiss.Index, item_ids, spec: IndexSpec, model_version: str, factory: str,
                 recall: dict | None = None, *, search_params: dict | None = None, tuning: dict | None = None,
                 quantizer: dict | None = None):
        if cpu_index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("ItemIndex needs an inner-product FAISS index (METRIC_INNER_PRODUCT)")
        if not isinstance(model_version, str):
            raise TypeError(f"model_version must be a str, got {type(model_version).__name__}")
        self._cpu = cpu_index
        self._item_ids = as_item_ids(item_ids, cpu_index.ntotal)
        self._spec = spec
        self._model_version = model_version
        self._factory = factory
        self._exact = fi.is_exact(cpu_index)
        saved = search_params or {}
        self._params = fi.apply_search_params(
            cpu_index, spec.nprobe if spec.nprobe is not None else saved.get("nprobe"),
            spec.ef_search if spec.ef_search is not None else saved.get("ef_search"),
            spec.k_factor if spec.k_factor is not None else saved.get("k_factor"))
        self._gpu: GpuIndex | None = maybe_to_gpu(cpu_index, spec, self._params)
        self.recall = recall
        self.tuning = tuning
        self.quantizer = quantizer  # how the IVF coarse quantizer was chosen (indexing.quantizer), or None
        knob = tn.knob(cpu_index, spec.recall_k)
        self._tune_pending = (search_params is None and spec.target_recall is not None and knob is not None
                              and getattr(spec, knob[0]) is None)

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(cls, vectors, item_ids, spec: IndexSpec | None, model_version: str, *, queries=None,
              query_source: str = "queries") -> "ItemIndex":
        """Train (on a seeded sample of ``spec.train_size``), add all rows, tune and measure recall.

        vectors float32 (n, d), L2-normalised, row i = item_ids[i]; ids in the index are rows 0..n-1.
        queries float32 (m, d) or None: the query vectors the index will serve (e.g. the query tower on
        validation users), split into tuning and recall-check parts; None = item vectors as queries.
        query_source: the label recorded for ``queries`` in ``tuning`` / ``recall`` (and so the manifest).
        """
        spec = spec or IndexSpec()
        vectors = as_float32_matrix(vectors, "vectors")
        n, dim = vectors.shape
        if n == 0:
            raise ValueError("cannot build an index over 0 vectors")
        factory = spec.resolve_factory(n, dim)
        if queries is not None:
            queries = as_float32_matrix(queries, "queries", dim)
            if len(queries) == 0:
                raise ValueError("build got an empty query set (0 rows); pass query vectors or queries=None to "
                                 "fall back to item vectors")
        tune_q, tune_source = tn.tuning_queries(vectors, spec, queries, query_source)
        index, chosen = qz.train_best(factory, vectors, spec, tune_q, tune_source)
        index.add(vectors)
        fi.zero_block_padding(index)
        built = cls(index, item_ids, spec, model_version, factory, quantizer=chosen)
        built.measure_recall(vectors, queries, query_source=query_source)
        return built

    @classmethod
    def from_faiss(cls, index: faiss.Index, item_ids, spec: IndexSpec, model_version: str,
                   factory: str | None = None, recall: dict | None = None, *,
                   quantizer: dict | None = None) -> "ItemIndex":
        """Wrap an already-filled CPU index (e.g. from ``merge_shards``); its ids must be rows.

        ``factory`` defaults to ``spec.resolve_factory(ntotal, d)``, i.e. what ``build`` would have chosen.
        """
        factory = factory or spec.resolve_factory(int(index.ntotal), int(index.d))
        return cls(index, item_ids, spec, model_version, factory, recall, quantizer=quantizer)

    @property
    def tune_pending(self) -> bool:
        """True until ``tune`` has run on an index whose spec asks for tuning (see the class docstring)."""
        return self._tune_pending

    def _check_vectors(self, vectors) -> np.ndarray:
        vectors = as_float32_matrix(vectors, "vectors", self.dim)
        if len(vectors) != self.ntotal:
            raise ValueError(f"vectors has {len(vectors)} rows but the index holds {self.ntotal}; pass exactly the "
                             "vectors the index was built from, in row order")
        return vectors

    def tune(self, vectors, queries=None, target_recall: float | None = None, *,
             query_source: str = "queries") -> dict | None:
        """Set nprobe / ef_search to the smallest value reaching ``target_recall`` (default
        ``spec.target_recall``) on ``queries`` (see ``indexing.tuning``); stored in ``.tuning``.

        vectors float32 (n, d): the rows this index holds. queries float32 (m, d): all of them are tuned on
        (labelled ``query_source``); None = the fallback, ``spec.tune_queries`` item vectors held out from the
        item recall-check sample (``indexing.tuning.item_queries``). Returns None for indices without a knob
        (Flat, plain PQ). Clears ``.recall``.
        """
        target = target_recall if target_recall is not None else self._spec.target_recall
        if target is None:
            raise ValueError("no recall target: pass target_recall=... or build with IndexSpec.target_recall set")
        vectors = self._check_vectors(vectors)
        if queries is None:
            queries, query_source, _, _ = tn.item_queries(vectors, self._spec)
        queries = as_float32_matrix(queries, "queries", self.dim)
        if len(queries) == 0:
            raise ValueError("tune needs at least one query, got 0")
        result = tn.tune(self._cpu, vectors, queries, self._spec.recall_k, target, query_source,
                         k_factor=self._spec.k_factor)
        self._tune_pending = False
        if result is None:
            # nothing to tune; put the knobs tune() may have touched back
            fi.apply_search_params(self._cpu, self._params.get("nprobe"), self._params.get("ef_search"),
                                   self._params.get("k_factor"))
            return None
        params = {**self._params, result.param: result.value}
        if result.k_factor is not None:
            params["k_factor"] = result.k_factor
        self._params = fi.apply_search_params(self._cpu, params.get("nprobe"), params.get("ef_search"),
                                              params.get("k_factor"))
        if self._gpu is not None:
            self._gpu.set_search_params(self._params)
        self.tuning = result.to_dict()
        self.recall = None
        return self.tuning

    def measure_recall(self, vectors, queries=None, k: int | None = None, *, query_source: str = "queries") -> dict:
        """recall@k against exact search over ``vectors`` (the rows this index holds); stored in ``.recall``.

        queries float32 (m, d): the query vectors the index serves, labelled ``query_source``. When the index
        is pending tuning they are split (``indexing.tuning.split_queries``): ``tune`` runs on one part and
        recall is measured on the other, disjoint part. When it is not, recall is measured on all of them.
        queries None = the fallback: ``spec.recall_queries`` item vectors sampled with ``spec.seed`` (and, when
        pending, tuning on other held-out item vectors first); ``query_source`` then says "item_vectors_...".
        """
        vectors = self._check_vectors(vectors)
        if queries is not None:
            queries = as_float32_matrix(queries, "queries", self.dim)
            if len(queries) == 0:
                raise ValueError("measure_recall got an empty query set (0 rows); pass query vectors or "
                                 "queries=None to fall back to item vectors")
        if queries is None:
            tune_q, tune_source, queries, query_source = tn.item_queries(vectors, self._spec)
        else:
            tune_q, tune_source = None, query_source
            if self._tune_pending:
                tune_q, queries = tn.split_queries(queries, self._spec)
        if self._tune_pending:
            self.tune(vectors, tune_q, query_source=tune_source)
        k = min(k or self._spec.recall_k, self.ntotal)
        value = recall_against_exact(self, vectors, queries, k)
        self.recall = {"recall": value, "k": k, "num_queries": len(queries), "query_source": query_source,
                       "search_params": dict(self._params)}
        return self.recall

    # ---------------------------------------------------------------- properties
    @property
    def item_ids(self) -> np.ndarray:
        return self._item_ids

    @property
    def dim(self) -> int:
        return int(self._cpu.d)

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def factory(self) -> str:
        return self._factory

    @property
    def model_version(self) -> str:
        return self._model_version

    @property
    def spec(self) -> IndexSpec:
        return self._spec

    @property
    def is_exact(self) -> bool:
        return self._exact

    @property
    def search_params(self) -> dict:
        """The nprobe / ef_search / k_factor actually in force, e.g. {"nprobe": 64}."""
        return dict(self._params)

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    @property
    def faiss_index(self) -> faiss.Index:
        """The CPU FAISS index (what is saved)."""
        return self._cpu

    def ids_of(self, rows) -> np.ndarray:
        """Item ids for rows (int64 any shape; -1 -> None), as an object array of the same shape."""
        return rows_to_ids(self._item_ids, rows)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None,
                          k_factor: int | None = None) -> dict:
        """Change search effort (None keeps the current value). Clears ``.recall``: re-measure it."""
        spec = dataclasses.replace(self._spec, nprobe=nprobe if nprobe is not None else self._spec.nprobe,
                                   ef_search=ef_search if ef_search is not None else self._spec.ef_search,
                                   k_factor=k_factor if k_factor is not None else self._spec.k_factor)
        self._params = fi.apply_search_params(
            self._cpu, spec.nprobe if spec.nprobe is not None else self._params.get("nprobe"),
            spec.ef_search if spec.ef_search is not None else self._params.get("ef_search"),
            spec.k_factor if spec.k_factor is not None else self._params.get("k_factor"))
        self._spec = spec
        if self._gpu is not None:
            self._gpu.set_search_params(self._params)
        self.recall = None
        self.tuning = None
        self._tune_pending = False
        return dict(self._params)

    @property
    def bytes_per_item(self) -> dict:
        """Memory per item by part (``indexing.faiss_index.bytes_per_item``: codes + ids + refine)."""
        return fi.bytes_per_item(self._cpu)

    def __repr__(self) -> str:
        return (f"ItemIndex(factory={self._factory!r}, ntotal={self.ntotal}, dim={self.dim}, "
                f"params={self._params}, gpu={self.on_gpu}, model_version={self._model_version!r})")

    # ---------------------------------------------------------------- search
    def search(self, queries, k: int, exclude: Sequence | None = None, *,
               batch_size: int = DEFAULT_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query. queries float32 (m, d); exclude: per-query int row arrays or a CSR
        matrix (m, n), or None. Returns (scores float32 (m, k), rows int64 (m, k)), see module docstring.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        k = int(k)
        queries = as_float32_matrix(queries, "queries", self.dim)
        m = len(queries)
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        rows = np.full((m, k), -1, dtype=np.int64)
        if m == 0 or self.ntotal == 0:
            return scores, rows
        excl = as_exclusions(exclude, m, self.ntotal, what="exclude")
        order = np.argsort(excl.counts, kind="stable")
        start = 0
        while start < m:
            widest = k + 1 + int(excl.counts[order[min(start + batch_size, m) - 1]])
            size = max(1, min(batch_size, MAX_BLOCK_CANDIDATES // widest))
            block = order[start:start + size]
            # +1 for exact indices: one candidate past the k-th shows whether a tie continues beyond it.
            k_eff = min(self.ntotal, k + int(excl.counts[block].max()) + int(self._exact))
            self._search_block(queries, block, k, k_eff, excl, scores, rows)
            start += size
        return scores, rows

    def _raw_search(self, queries: np.ndarray, k_eff: int) -> tuple[np.ndarray, np.ndarray]:
        if self._gpu is not None and k_eff <= GPU_MAX_K:
            return self._gpu.search(queries, k_eff)
        return self._cpu.search(queries, k_eff)

    def _search_block(self, queries, block, k, k_eff, excl: Exclusions, scores_out, rows_out) -> None:
        pending = block
        while len(pending):
            raw_scores, raw_rows = self._raw_search(queries[pending], k_eff)
            missing = raw_rows < 0  # FAISS pads the tail of a row with -1 when it runs out of items
            raw_scores = np.where(missing, -np.inf, raw_scores).astype(np.float32, copy=False)
            raw_rows = np.where(missing, -1, raw_rows)
            _order_ties_by_row(raw_scores, raw_rows, missing)
            scores_out[pending] = -np.inf
            rows_out[pending] = -1
            if excl.nnz:
                valid = ~missing & ~excl.contains(pending[:, None], raw_rows)
                rank = np.cumsum(valid, axis=1) - 1
                qi, col = np.nonzero(valid & (rank < k))
                scores_out[pending[qi], rank[qi, col]] = raw_scores[qi, col]
                rows_out[pending[qi], rank[qi, col]] = raw_rows[qi, col]
                kept = valid.sum(axis=1)
            else:  # fast path: nothing to drop, the first k columns are the answer
                c = min(k, k_eff)
                scores_out[pending, :c] = raw_scores[:, :c]
                rows_out[pending, :c] = raw_rows[:, :c]
                kept = (~missing).sum(axis=1)
            # Done when FAISS ran out of items, or the k-th kept item beats everything not returned.
            exhausted = missing.any(axis=1) | (k_eff >= self.ntotal)
            enough = kept >= k
            if self._exact:
                enough &= scores_out[pending, k - 1] > raw_scores[:, -1]
            pending = pending[~(exhausted | enough)]
            k_eff = min(self.ntotal, 2 * k_eff)


def rows_to_ids(item_ids: np.ndarray, rows) -> np.ndarray:
    """``item_ids`` at ``rows`` (int64, any shape; -1 = no result -> None), as an object array of that shape."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(rows.shape, None, dtype=object)
    found = rows >= 0
    out[found] = item_ids[rows[found]]
    return out


def _order_ties_by_row(scores: np.ndarray, rows: np.ndarray, missing: np.ndarray) -> None:
    """In place: within runs of equal scores (FAISS returns them in no fixed order) sort by ascending row."""
    tied = (scores[:, 1:] == scores[:, :-1]) & ~missing[:, 1:]
    which = np.flatnonzero(tied.any(axis=1))
    if len(which):
        sub_scores, sub_rows = scores[which], rows[which]
        order = np.lexsort((np.where(sub_rows < 0, np.iinfo(np.int64).max, sub_rows), -sub_scores), axis=-1)
        scores[which] = np.take_along_axis(sub_scores, order, axis=1)
        rows[which] = np.take_along_axis(sub_rows, order, axis=1)

