"""Thin helpers around raw FAISS CPU indices: create, train, tune, (de)serialise, list ids.

Shared by ``ItemIndex`` (single-process build and search) and ``indexing.sharded`` (the Beam
rebuild). Every index here uses ``METRIC_INNER_PRODUCT`` and stores ids = catalogue rows (int64).
Errors FAISS raises as ``RuntimeError`` with C++ locations are turned into ``ValueError``s that
say what was asked for and how to fix it.
"""
from __future__ import annotations

import faiss
import numpy as np

from indexing import projection
from indexing.spec import DEFAULT_EF_SEARCH, DEFAULT_K_FACTOR, IndexSpec, default_nprobe


def _faiss_reason(exc: Exception) -> str:
    """The human part of a FAISS RuntimeError ("Error in ... at file:line: <reason>")."""
    text = str(exc).strip()
    return text.split(": ", 2)[-1] if text.startswith("Error in") else text


def new_index(factory: str, dim: int, spec: IndexSpec) -> faiss.Index:
    """An empty (untrained) inner-product index for ``factory``, with the spec's seeds / build knobs.

    ``"QProj{k},rest"`` (``indexing.projection``) wraps the FAISS index ``rest`` on k dims in an un-biased
    linear projection d -> k that is still unset: ``indexing.quantizer.train_best`` fits it from the queries."""
    index = projection.new_projected_index(factory, int(dim), _faiss_factory)
    if index is None:
        index = _faiss_factory(int(dim), factory)
    _set_build_knobs(index, spec)
    return index


def _faiss_factory(dim: int, factory: str) -> faiss.Index:
    try:
        return faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(
            f"FAISS cannot build index factory {factory!r} for dim={dim}: {_faiss_reason(exc)}. "
            "Use a valid factory string (e.g. 'Flat', 'IVF1024,Flat', 'HNSW32,Flat', 'IVF4096,PQ16' with "
            "16 dividing dim) or 'auto'"
        ) from None


def _set_build_knobs(index: faiss.Index, spec: IndexSpec) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = spec.seed
        ivf_down = faiss.downcast_index(ivf)
        if hasattr(ivf_down, "pq"):
            ivf_down.pq.cp.seed = spec.seed
        if hasattr(ivf_down, "do_polysemous_training"):
            # Polysemous codes are only used with polysemous_ht search, which we never set; training them
            # is a slow annealing (a minute even for 6k vectors), so skip it.
            ivf_down.do_polysemous_training = False
    refine = refine_of(index)
    if refine is not None:
        rdown = faiss.downcast_index(refine.refine_index)
        if hasattr(rdown, "do_polysemous_training"):
            rdown.do_polysemous_training = False  # as above: a refine PQ only re-scores, never polysemous search
    if hasattr(index, "hnsw"):
        index.hnsw.efConstruction = spec.ef_construction


def train_sample(n: int, spec: IndexSpec) -> np.ndarray:
    """Sorted rows (int64) of the seeded training sample: all rows when n <= train_size."""
    if n <= spec.train_size:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(spec.seed)
    return np.sort(rng.choice(n, size=spec.train_size, replace=False)).astype(np.int64)


def train(index: faiss.Index, vectors: np.ndarray, spec: IndexSpec) -> None:
    """Train ``index`` (no-op if it needs none) on a seeded sample of ``vectors`` float32 (n, d)."""
    train_rows(index, vectors, train_sample(len(vectors), spec))


def train_rows(index: faiss.Index, vectors: np.ndarray, rows: np.ndarray) -> None:
    """Train ``index`` (no-op if it needs none) on ``vectors[rows]``."""
    if index.is_trained:
        return
    transform = projection.projection_of(index)
    if transform is not None and not transform.is_trained:
        raise ValueError("a QProj index's projection is learned from the queries before training: build it through "
                         "indexing.quantizer.train_best (ItemIndex.build / train_empty), not train_rows alone")
    sample = vectors[rows]
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and len(sample) < ivf.nlist:
        raise ValueError(
            f"cannot train {ivf.nlist} IVF lists on {len(sample)} vectors (need at least one per list, "
            f"ideally 39); use a smaller nlist, a larger train_size, or factory 'Flat' for so few items"
        )
    try:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    except RuntimeError as exc:
        raise ValueError(f"training the index failed on {len(sample)} vectors: {_faiss_reason(exc)}") from None


def refine_of(index: faiss.Index):
    """The downcast IndexRefine when ``index`` is one (a base index + re-ranking data), else None."""
    down = faiss.downcast_index(index)
    return down if isinstance(down, faiss.IndexRefine) else None


def apply_search_params(index: faiss.Index, nprobe: int | None = None, ef_search: int | None = None,
                        k_factor: int | None = None) -> dict:
    """Set nprobe (IVF) / efSearch (HNSW) / k_factor (refine) on a CPU index; None = the default.

    Returns the values actually applied, e.g. {"nprobe": 64} (nprobe is capped at nlist).
    """
    space = faiss.ParameterSpace()
    applied = {}
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        value = min(nprobe if nprobe is not None else default_nprobe(ivf.nlist), ivf.nlist)
        space.set_index_parameter(index, "nprobe", value)
        applied["nprobe"] = value
    if has_hnsw(index):
        value = ef_search if ef_search is not None else DEFAULT_EF_SEARCH
        space.set_index_parameter(index, "efSearch", value)
        applied["ef_search"] = value
    refine = refine_of(index)
    if refine is not None:
        value = k_factor if k_factor is not None else DEFAULT_K_FACTOR
        refine.k_factor = float(value)
        applied["k_factor"] = int(value)
    return applied


def bytes_per_item(index: faiss.Index) -> dict:
    """Memory an index holds per item, by part (bytes): for IVF ``codes`` (code_size) + ``ids`` (8, the int64
    row stored next to each code in the inverted lists); for a refine index plus ``refine`` (the re-ranking
    code: 4*d for Flat, d for SQ8, d/2 for SQ4, m for PQm); for Flat / HNSW ``codes`` (4*d; HNSW also its graph
    links, 2*M*4 bytes at level 0). ``total`` adds them; ``fixed_bytes`` (centroids, codebooks, scalar quantizer
    ranges, a QProj projection matrix) is per index."""
    out = {"codes": 0, "ids": 0, "refine": 0, "fixed_bytes": 0}
    transform = projection.projection_of(index)
    if transform is not None:
        out["fixed_bytes"] += int(transform.d_in) * int(transform.d_out) * 4
        index = faiss.downcast_index(faiss.downcast_index(index).index)
    refine = refine_of(index)
    base = refine.base_index if refine is not None else index
    if refine is not None:
        out["refine"] = int(faiss.downcast_index(refine.refine_index).code_size) if hasattr(
            faiss.downcast_index(refine.refine_index), "code_size") else 4 * int(index.d)
    ivf = faiss.try_extract_index_ivf(base)
    if ivf is not None:
        out["codes"] = int(ivf.code_size)
        out["ids"] = 8
        out["fixed_bytes"] += int(ivf.nlist) * int(ivf.d) * 4
        down = faiss.downcast_index(ivf)
        if hasattr(down, "pq"):
            out["fixed_bytes"] += int(down.pq.M) * int(down.pq.ksub) * int(down.pq.dsub) * 4
        if hasattr(down, "sq"):
            out["fixed_bytes"] += int(down.sq.trained.size()) * 4
    else:
        down = faiss.downcast_index(base)
        out["codes"] = int(getattr(down, "code_size", 4 * int(index.d)))
        if hasattr(down, "hnsw"):
            out["graph"] = int(down.hnsw.nb_neighbors(0)) * 4  # level-0 links (int32)
    out["total"] = out["codes"] + out["ids"] + out["refine"] + out.get("graph", 0)
    return out


def zero_block_padding(index: faiss.Index) -> None:
    """Fast-scan IVF indices ("...x4fs") store each list's codes in blocks of 32; the unused tail of a list's
    last block is whatever memory held (a single add and a merge of shards leave different bytes there,
    although searches agree). Set those slots to the all-zero code, in place, so that equal contents
    serialise to equal bytes (the sharded == single build check). No-op for other indices.
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return
    invlists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(invlists, faiss.BlockInvertedLists):
        return
    packer = invlists.packer
    zero = np.zeros(packer.code_size, dtype=np.uint8)
    for list_no in range(invlists.nlist):
        size = invlists.list_size(list_no)
        for offset in range(size, size + (-size) % packer.nvec):
            packer.pack_1_c(faiss.swig_ptr(zero), offset, invlists.get_codes(list_no))


def has_hnsw(index: faiss.Index) -> bool:
    return hasattr(faiss.downcast_index(index), "hnsw")


def is_exact(index: faiss.Index) -> bool:
    """True for brute-force float32 indices, whose results equal exact top-k."""
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        index = faiss.downcast_index(index.index)
    return type(index) in (faiss.IndexFlat, faiss.IndexFlatIP)


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def deserialize(blob: bytes, what: str = "index") -> faiss.Index:
    """A CPU index from ``serialize`` bytes; ValueError if the bytes are not a FAISS index."""
    try:
        return faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    except RuntimeError as exc:
        raise ValueError(f"{what} is not a readable FAISS index ({len(blob)} bytes): {_faiss_reason(exc)}") from None


def ivf_ids(index: faiss.Index) -> np.ndarray:
    """All ids stored in an IVF index's inverted lists, int64 (ntotal,), list by list."""
    invlists = faiss.extract_index_ivf(index).invlists
    chunks = []
    for list_no in range(invlists.nlist):
        size = invlists.list_size(list_no)
        if size:
            chunks.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
    return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, dtype=np.int64)


def check_rows_are_permutation(rows: np.ndarray, where: str) -> None:
    """Raise ValueError unless ``rows`` holds each of 0..len(rows)-1 exactly once."""
    n = len(rows)
    counts = np.bincount(rows[(rows >= 0) & (rows < n)], minlength=n) if n else np.zeros(0, np.int64)
    bad = rows[(rows < 0) | (rows >= n)]
    duplicated = np.flatnonzero(counts > 1)
    missing = np.flatnonzero(counts == 0)
    if len(bad) or len(duplicated) or len(missing):
        raise ValueError(
            f"{where}: ids must be the catalogue rows 0..{n - 1}, each once; got {len(duplicated)} duplicated "
            f"(e.g. {duplicated[:5].tolist()}), {len(missing)} missing (e.g. {missing[:5].tolist()}), "
            f"{len(bad)} out of range (e.g. {bad[:5].tolist()}). A shard was added twice or left out"
        )
