"""An item index published as N shards by contiguous item range; search fans out and merges the top k.

    index = ShardedItemIndex.build(vectors, item_ids, spec, model_version, num_shards=4, queries=q)
    save_sharded(index, directory)            # shard-00000/ ... each a normal saved ItemIndex, manifest last
    index = load_any(directory)               # ItemIndex or ShardedItemIndex, whichever was saved
    scores, rows = index.search(queries, k, exclude)   # same API and semantics as ItemIndex.search

Why: a catalogue whose index does not fit one process (issue 14: 30M items) can be built, published and
loaded shard by shard, and serving / eval open it with the same call as a single index (``load_any``).

Shards: shard s holds catalogue rows [start_s, start_s + count_s) as its local rows 0..count_s-1 (a normal
``ItemIndex``); ``shard_bounds`` splits n rows into near-equal contiguous ranges. ``build`` trains ONE index
(``indexing.sharded.train_empty`` on the whole catalogue's sample) and adds each range to a copy of it, so all
shards share the coarse quantizer (and PQ codebooks) and one search effort; tuning then chooses nprobe /
ef_search for the merged search (``tune``) on the query set, like ``ItemIndex.build``.

Search (``search``): per-query exclusions (global rows) are split into each shard's local rows; every shard is
searched for k; local rows become global rows; the S * k candidates per query are ordered by (score desc,
global row asc) and the first k kept. Equality with a single index on the same vectors:
  * exact (Flat) shards: every item of the global top k (under that order) is in its own shard's top k
    (a shard's Flat search resolves ties by the lowest row), so the merge equals the single Flat index
    exactly, ties and exclusions included.
  * IVF shards sharing the trained quantizer at the same nprobe: each shard probes the same lists the single
    index probes, so the merged candidates are the single index's candidates and the top k is the same
    (ties ordered by row in both).

Saved layout (``save_sharded``)::

    <dir>/shard-00000/ ...                   a saved ItemIndex (``indexing.store.save_index``, own manifest)
    <dir>/manifest.json                      written last: kind "sharded_item_index", count, dim, factory,
                                             model_version, spec, search_params, tuning, quantizer, recall, and
                                             "shards": [{path, start, count, manifest_sha256, index_sha256,
                                             index_bytes}] -- each shard's own manifest holds the sha256 of
                                             its files, and the top manifest the sha256 of that manifest

``load_sharded`` checks every shard manifest's sha256 against the top manifest before loading the shard
(whose ``load_index`` then verifies its files), and that ranges, counts and dims add up.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from core import artifacts
from core.lifecycle import current_dir
from core.exclusions import Exclusions, as_exclusions
from core.strict import from_dict, to_dict
from indexing import faiss_index as fi
from indexing import tuning as tn
from indexing.arrays import as_float32_matrix
from indexing.item_index import DEFAULT_BATCH, ItemIndex, rows_to_ids
from indexing.recall import exact_top_k, per_query_recall, recall_against_exact
from indexing.sharded import train_empty_with_report
from indexing.spec import IndexSpec
from indexing.store import KIND as SINGLE_KIND
from indexing.store import load_index, publish_index, save_index

KIND = "sharded_item_index"
SHARD_DIR = "shard-{:05d}"


def shard_bounds(n_items: int, num_shards: int) -> list[tuple[int, int]]:
    """[(start, stop)] of ``num_shards`` contiguous, near-equal row ranges covering 0..n_items-1."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    if num_shards > n_items:
        raise ValueError(f"cannot split {n_items} items into {num_shards} non-empty shards; use at most "
                         f"{n_items} shards")
    edges = [n_items * s // num_shards for s in range(num_shards + 1)]
    return list(zip(edges[:-1], edges[1:]))


class ShardedItemIndex:
    """N ``ItemIndex`` shards over contiguous row ranges, searched as one; see the module docstring.

    The search API and the attributes serving and eval read (item_ids, dim, ntotal, factory, model_version,
    spec, search_params, is_exact, on_gpu, recall, tuning, ids_of, search) are those of ``ItemIndex``.
    """

    def __init__(self, shards: Sequence[ItemIndex], *, recall: dict | None = None, tuning: dict | None = None):
        shards = list(shards)
        if not shards:
            raise ValueError("a sharded index needs at least one shard, got 0")
        for i, shard in enumerate(shards):
            if not isinstance(shard, ItemIndex):
                raise TypeError(f"shard {i} must be an ItemIndex, got {type(shard).__name__}")
            if shard.ntotal == 0:
                raise ValueError(f"shard {i} is empty; every shard must hold at least one item")
        first = shards[0]
        for i, shard in enumerate(shards[1:], 1):
            mismatch = [name for name in ("dim", "model_version", "factory") if getattr(shard, name) != getattr(first, name)]
            if mismatch:
                raise ValueError(f"shard {i} differs from shard 0 in {mismatch} "
                                 f"({[getattr(shard, m) for m in mismatch]} vs {[getattr(first, m) for m in mismatch]}); "
                                 "all shards must come from one build of one model")
        self._shards = shards
        counts = np.array([s.ntotal for s in shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._item_ids = np.concatenate([s.item_ids for s in shards])
        self.recall = recall
        self.tuning = tuning

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(cls, vectors, item_ids, spec: IndexSpec | None, model_version: str, num_shards: int, *,
              queries=None, query_source: str = "queries") -> "ShardedItemIndex":
        """Train once on the whole catalogue's sample, add each contiguous range to its own copy, then tune the
        merged search and measure its recall on ``queries`` exactly as ``ItemIndex.build`` does."""
        spec = spec or IndexSpec()
        vectors = as_float32_matrix(vectors, "vectors")
        n, dim = vectors.shape
        if n == 0:
            raise ValueError("cannot build an index over 0 vectors")
        item_ids = np.asarray(item_ids, dtype=object)
        if len(item_ids) != n:
            raise ValueError(f"item_ids has {len(item_ids)} entries for {n} vectors; pass one id per row")
        bounds = shard_bounds(n, num_shards)
        factory = spec.resolve_factory(n, dim)
        if queries is not None:
            queries = as_float32_matrix(queries, "queries", dim)
            if len(queries) == 0:
                raise ValueError("build got an empty query set (0 rows); pass query vectors or queries=None to "
                                 "fall back to item vectors")
        # one training for every shard; its IVF quantizer chosen among spec.quantizer_restarts on the tuning
        # part of the query set, exactly as ItemIndex.build chooses it (indexing.quantizer)
        trained, chosen = train_empty_with_report(vectors, dataclasses.replace(spec, factory=factory), n_items=n,
                                                  queries=queries, query_source=query_source)
        shards = []
        for start, stop in bounds:
            index = fi.deserialize(trained, "trained index")
            index.add(vectors[start:stop])
            fi.zero_block_padding(index)
            shards.append(ItemIndex(index, item_ids[start:stop], spec, model_version, factory, search_params={},
                                    quantizer=chosen))
        built = cls(shards)
        built.measure_recall(vectors, queries, query_source=query_source, tune_first=True)
        return built

    # ---------------------------------------------------------------- properties
    @property
    def shards(self) -> list[ItemIndex]:
        return list(self._shards)

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """[(start, stop)] global rows of each shard."""
        return [(int(a), int(b)) for a, b in zip(self._starts[:-1], self._starts[1:])]

    @property
    def item_ids(self) -> np.ndarray:
        return self._item_ids

    @property
    def dim(self) -> int:
        return self._shards[0].dim

    @property
    def ntotal(self) -> int:
        return int(self._starts[-1])

    @property
    def factory(self) -> str:
        return self._shards[0].factory

    @property
    def model_version(self) -> str:
        return self._shards[0].model_version

    @property
    def spec(self) -> IndexSpec:
        return self._shards[0].spec

    @property
    def quantizer(self) -> dict | None:
        """How the shared IVF coarse quantizer was chosen (``indexing.quantizer``), or None."""
        return self._shards[0].quantizer

    @property
    def is_exact(self) -> bool:
        return all(s.is_exact for s in self._shards)

    @property
    def on_gpu(self) -> bool:
        return any(s.on_gpu for s in self._shards)

    @property
    def search_params(self) -> dict:
        """The nprobe / ef_search in force (the same on every shard)."""
        return self._shards[0].search_params

    def ids_of(self, rows) -> np.ndarray:
        """Item ids for global rows (int64 any shape; -1 -> None), as an object array of the same shape."""
        return rows_to_ids(self._item_ids, rows)

    def __repr__(self) -> str:
        return (f"ShardedItemIndex(shards={self.num_shards}, factory={self.factory!r}, ntotal={self.ntotal}, "
                f"dim={self.dim}, params={self.search_params}, model_version={self.model_version!r})")

    # ---------------------------------------------------------------- search
    def _split_exclusions(self, exclude, m: int) -> list:
        """Global exclusions (anything ``core.exclusions.as_exclusions`` takes) as each shard's local ones."""
        if exclude is None:
            return [None] * self.num_shards
        excl = as_exclusions(exclude, m, self.ntotal, what="exclude")  # validates; CSR sorted by (query, row)
        q = np.repeat(np.arange(m, dtype=np.int64), excl.counts)
        rows = excl.indices
        out = []
        for start, stop in self.bounds:
            inside = (rows >= start) & (rows < stop)
            if not inside.any():
                out.append(None)
                continue
            indptr = np.concatenate([[0], np.cumsum(np.bincount(q[inside], minlength=m))]).astype(np.int64)
            out.append(Exclusions(indptr, rows[inside] - start, stop - start))
        return out

    def search(self, queries, k: int, exclude: Sequence | None = None, *,
               batch_size: int = DEFAULT_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """Top-k global rows per query, as ``ItemIndex.search`` (exclusions are global rows)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        k = int(k)
        queries = as_float32_matrix(queries, "queries", self.dim)
        m = len(queries)
        per_shard = self._split_exclusions(exclude, m)
        all_scores, all_rows = [], []
        for (start, _), shard, excl in zip(self.bounds, self._shards, per_shard):
            scores, rows = shard.search(queries, min(k, shard.ntotal), excl, batch_size=batch_size)
            all_scores.append(scores)
            all_rows.append(np.where(rows >= 0, rows + start, -1))
        scores = np.concatenate(all_scores, axis=1)
        rows = np.concatenate(all_rows, axis=1)
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores.astype(np.float64)), axis=-1)
        keep = order[:, :k]
        out_scores = np.full((m, k), -np.inf, dtype=np.float32)
        out_rows = np.full((m, k), -1, dtype=np.int64)
        width = keep.shape[1]
        out_scores[:, :width] = np.take_along_axis(scores, keep, axis=1)
        out_rows[:, :width] = np.take_along_axis(rows, keep, axis=1)
        out_scores[out_rows < 0] = -np.inf
        return out_scores, out_rows

    # ---------------------------------------------------------------- search effort, tuning, recall
    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> dict:
        """Change the search effort on every shard. Clears ``.recall`` and ``.tuning``: re-measure."""
        for shard in self._shards:
            params = shard.set_search_params(nprobe, ef_search)
        self.recall = None
        self.tuning = None
        return params

    def _check_vectors(self, vectors) -> np.ndarray:
        vectors = as_float32_matrix(vectors, "vectors", self.dim)
        if len(vectors) != self.ntotal:
            raise ValueError(f"vectors has {len(vectors)} rows but the sharded index holds {self.ntotal}; pass "
                             "exactly the vectors it was built from, in global row order")
        return vectors

    def tune(self, vectors, queries, target_recall: float | None = None, *, query_source: str = "queries") -> dict | None:
        """The smallest nprobe / ef_search on ``indexing.tuning.ladder`` whose merged-search recall lower bound
        (mean - Z standard errors over ``queries``) reaches the target (default ``spec.target_recall``); set
        on every shard and returned (also in ``.tuning``). None when the shards have no knob (Flat)."""
        target = target_recall if target_recall is not None else self.spec.target_recall
        if target is None:
            raise ValueError("no recall target: pass target_recall=... or build with IndexSpec.target_recall set")
        vectors = self._check_vectors(vectors)
        queries = as_float32_matrix(queries, "queries", self.dim)
        if len(queries) == 0:
            raise ValueError("tune needs at least one query, got 0")
        k = min(self.spec.recall_k, self.ntotal)
        found = tn.knob(self._shards[0].faiss_index, k)
        if found is None:
            return None
        param, values = found
        exact_scores, _ = exact_top_k(vectors, queries, k)
        curve, chosen = [], None
        for value in values:
            self.set_search_params(**{param: value})
            per_query = per_query_recall(self.search(queries, k)[1], vectors, queries, exact_scores, k)
            mean = float(per_query.mean())
            se = float(per_query.std(ddof=1) / math.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
            curve.append((value, round(mean, 6)))
            chosen = (value, mean, mean - tn.Z * se)
            if mean - tn.Z * se >= target:
                break
        value, mean, bound = chosen
        self.set_search_params(**{param: value})
        self.tuning = tn.TuningResult(param=param, value=value, target_recall=target, reached=bound >= target,
                                      recall=mean, recall_lower_bound=bound, margin_se=tn.Z, k=k,
                                      num_queries=len(queries), query_source=query_source,
                                      curve=tuple(curve)).to_dict()
        return self.tuning

    def measure_recall(self, vectors, queries=None, k: int | None = None, *, query_source: str = "queries",
                       tune_first: bool = False) -> dict:
        """recall@k of the merged search against exact search over all ``vectors`` (global row order); stored
        in ``.recall``. Queries as for ``ItemIndex.measure_recall``; with ``tune_first`` (and a recall target)
        the tuning part of them tunes first and recall is measured on the disjoint rest. Each shard's own
        recall (on its rows, same queries) is stored on the shard, which ``save_sharded`` needs."""
        vectors = self._check_vectors(vectors)
        spec = self.spec
        if queries is not None:
            queries = as_float32_matrix(queries, "queries", self.dim)
            if len(queries) == 0:
                raise ValueError("measure_recall got an empty query set (0 rows); pass query vectors or "
                                 "queries=None to fall back to item vectors")
        tune_first = tune_first and spec.target_recall is not None and spec.nprobe is None and spec.ef_search is None
        if queries is None:
            tune_q, tune_source, queries, query_source = tn.item_queries(vectors, spec)
        else:
            tune_q, tune_source = None, query_source
            if tune_first:
                tune_q, queries = tn.split_queries(queries, spec)
        tuning = self.tune(vectors, tune_q, query_source=tune_source) if tune_first else self.tuning
        k = min(k or spec.recall_k, self.ntotal)
        for (start, stop), shard in zip(self.bounds, self._shards):
            shard.measure_recall(vectors[start:stop], queries, min(k, shard.ntotal), query_source=query_source)
        self.tuning = tuning
        self.recall = {"recall": recall_against_exact(self, vectors, queries, k), "k": k,
                       "num_queries": len(queries), "query_source": query_source,
                       "search_params": self.search_params}
        return self.recall


# -------------------------------------------------------------------- save / load
def save_sharded(index: ShardedItemIndex, directory, extra_manifest: dict | None = None) -> dict:
    """Write every shard (``save_index``) and then the top manifest (module docstring); returns it."""
    if index.recall is None:
        raise ValueError("this sharded index has no measured recall; call index.measure_recall(vectors) before "
                         "saving")
    directory = Path(directory)
    if (directory / artifacts.MANIFEST).exists():
        raise FileExistsError(f"{directory} already holds a saved index; versions are immutable")
    fields = dict(extra_manifest or {})
    reserved = {"kind", "factory", "metric", "dim", "count", "model_version", "spec", "search_params",
                "tuning", "quantizer", "recall", "faiss_version", "files", "shards", "num_shards"} & set(fields)
    if reserved:
        raise ValueError(f"extra_manifest may not override {sorted(reserved)}")
    directory.mkdir(parents=True, exist_ok=True)
    listed = []
    for s, ((start, stop), shard) in enumerate(zip(index.bounds, index.shards)):
        path = SHARD_DIR.format(s)
        manifest = save_index(shard, directory / path, {"shard": s, "start": start})
        listed.append({"path": path, "start": start, "count": stop - start,
                       "manifest_sha256": artifacts.sha256_file(directory / path / artifacts.MANIFEST),
                       "index_sha256": manifest["files"]["index.faiss"]["sha256"],
                       "index_bytes": manifest["files"]["index.faiss"]["bytes"]})
    fields.update({"kind": KIND, "factory": index.factory, "metric": index.spec.metric, "dim": index.dim,
                   "count": index.ntotal, "num_shards": index.num_shards, "model_version": index.model_version,
                   "spec": to_dict(index.spec), "search_params": index.search_params, "tuning": index.tuning,
                   "quantizer": index.quantizer, "recall": index.recall, "faiss_version": faiss.__version__,
                   "shards": listed, "files": {}})
    artifacts.atomic_write_json(directory / artifacts.MANIFEST, fields)
    return fields


def publish_sharded(index_root, index: ShardedItemIndex, version: str, keep: int = 3,
                    extra_manifest: dict | None = None) -> Path:
    """``indexing.store.publish_index`` for a sharded index: staged, manifest last, promoted, ``current``
    flipped, old versions pruned; ``load_current_any`` (serving, eval) then opens it."""
    return publish_index(index_root, index, version, keep, extra_manifest, save=save_sharded)


def load_sharded(directory, spec_overrides: dict | None = None) -> ShardedItemIndex:
    """Verify and load a ``save_sharded`` directory; ``spec_overrides`` as for ``load_index`` (every shard)."""
    directory = Path(directory)
    manifest = artifacts.read_manifest(directory)
    if manifest.get("kind") != KIND:
        raise ValueError(f"{directory} holds a {manifest.get('kind')!r} artifact, not a sharded item index")
    shards, expected_start = [], 0
    for entry in manifest["shards"]:
        path = directory / entry["path"]
        if not (path / artifacts.MANIFEST).is_file():
            raise ValueError(f"{path}: shard listed in {directory / artifacts.MANIFEST} is missing; the sharded "
                             "index is incomplete, rebuild it or roll back")
        digest = artifacts.sha256_file(path / artifacts.MANIFEST)
        if digest != entry["manifest_sha256"]:
            raise ValueError(f"{path / artifacts.MANIFEST}: sha256 {digest[:12]}… does not match the sharded "
                             f"manifest {entry['manifest_sha256'][:12]}…; the shard was replaced or modified, "
                             "rebuild it or roll back")
        if entry["start"] != expected_start:
            raise ValueError(f"{directory}: shard {entry['path']} starts at row {entry['start']}, expected "
                             f"{expected_start}; shards must be contiguous ranges in order")
        shard = load_index(path, spec_overrides)
        if shard.ntotal != entry["count"]:
            raise ValueError(f"{path}: holds {shard.ntotal} items, the sharded manifest says {entry['count']}")
        shards.append(shard)
        expected_start += entry["count"]
    if expected_start != manifest["count"]:
        raise ValueError(f"{directory}: shards hold {expected_start} items, the manifest says {manifest['count']}")
    params_changed = any(key in (spec_overrides or {}) for key in ("nprobe", "ef_search"))
    loaded = ShardedItemIndex(shards, recall=None if params_changed else manifest.get("recall"),
                              tuning=None if params_changed else manifest.get("tuning"))
    from_dict(IndexSpec, manifest["spec"], "spec")  # the saved spec is still a valid IndexSpec
    return loaded


def load_any(directory, spec_overrides: dict | None = None) -> ItemIndex | ShardedItemIndex:
    """Open a saved index, single (``indexing.store.save_index``) or sharded (``save_sharded``), verified."""
    kind = artifacts.read_manifest(directory).get("kind")
    if kind == KIND:
        return load_sharded(directory, spec_overrides)
    if kind == SINGLE_KIND:
        return load_index(directory, spec_overrides)
    raise ValueError(f"{directory} holds a {kind!r} artifact, not an item index ({SINGLE_KIND!r} or {KIND!r})")


def load_current_any(index_root, spec_overrides: dict | None = None) -> ItemIndex | ShardedItemIndex:
    """``load_any`` of the version ``index_root/current`` points to."""
    return load_any(current_dir(index_root), spec_overrides)
