"""``QProj{k},...`` indices: a non-centred orthonormal projection onto the k directions that matter to the queries.

A factory string ``"QProj53,IVF4096,SQ6"`` builds ``IndexPreTransform(LinearTransform(d -> 53, no bias),
IVF4096,SQ6 on 53 dims)``: every item and query vector is multiplied by the same (53, d) matrix A with
orthonormal rows, and the index scores (A q) . (A x) = q . (A^T A x): the inner product restricted to the
kept subspace, exactly (no bias term). FAISS's own ``PCA{k}`` centres (it maps x -> A (x - m)), which adds a
per-item term -(A m) . (A x) to every score; on trained-tower vectors (item mean norm 0.58) that cost recall
0.65 where the uncentred re-ranking code reached 0.92 (docs/notes/indexc.md), hence this transform.

Which directions: the top-k eigenvectors of the **query second moment** Q = E[q q^T] (no centring), estimated
from the query set the build is given (query-tower vectors of validation users, the same queries the
quantizer and nprobe are tuned on). The score error of dropping a unit direction u is q.u x.u; its size over
the queries is governed by u^T Q u, so the directions carrying the most query energy are the ones to keep.
Measured on 200k trained-tower vectors with perfect candidates (docs/notes/compress48.md): keeping 53 of 64
dims loses 1.5% of recall@100 with Q's eigenvectors, 3.6% with the items' own (centred or not) principal
directions -- the queries point into the items' low-variance directions. Without a query set the item second
moment E[x x^T] of the training sample is used instead, and the build report says so (``source``).

``fit`` sets the matrix on an untrained ``QProj`` index; ``indexing.quantizer.train_best`` calls it before
training the rest, so every build path (``ItemIndex.build``, ``indexing.sharded.train_empty``, the Beam
rebuild) learns it from the queries it already receives. The transform is stored inside the FAISS index
(``write_index`` serialises a ``LinearTransform``), so a saved index loads and searches identically.
"""
from __future__ import annotations

import faiss
import numpy as np

from indexing.spec import split_projection

# query_source labels that are item vectors standing in for queries (indexing.tuning's fallback): their
# second moment is the item second moment, so the projection is labelled as such.
ITEM_SOURCE_PREFIX = "item_vectors"
SOURCE_QUERIES = "query_second_moment"
SOURCE_ITEMS = "item_second_moment"


def new_projected_index(factory: str, dim: int, make_inner) -> faiss.Index | None:
    """``IndexPreTransform(untrained LinearTransform(dim -> k, no bias), make_inner(k, rest))`` for a
    ``QProj{k},rest`` factory, else None. ``make_inner(d, factory)`` builds the FAISS index of the rest."""
    keep, rest = split_projection(factory)
    if keep is None:
        return None
    if keep > dim:
        raise ValueError(f"factory {factory!r} keeps {keep} projected dims but the vectors have only {dim}; use "
                         f"QProj{{k}} with 1 <= k <= {dim}")
    inner = make_inner(keep, rest)
    transform = faiss.LinearTransform(int(dim), int(keep), False)
    index = faiss.IndexPreTransform(transform, inner)
    # the Python objects must outlive the C++ index that points at them
    index.referenced_objects = [transform, inner]
    return index


def projection_of(index: faiss.Index):
    """The downcast ``LinearTransform`` of a QProj index (an IndexPreTransform whose only transform is an
    un-biased LinearTransform), else None."""
    down = faiss.downcast_index(index)
    if not isinstance(down, faiss.IndexPreTransform) or down.chain.size() != 1:
        return None
    transform = faiss.downcast_VectorTransform(down.chain.at(0))
    if type(transform) is not faiss.LinearTransform or transform.have_bias:
        return None
    return transform


def matrix(index: faiss.Index) -> np.ndarray:
    """The (k, d) projection matrix of a QProj index."""
    transform = projection_of(index)
    if transform is None:
        raise ValueError("not a QProj index (an IndexPreTransform with one un-biased LinearTransform)")
    return faiss.vector_to_array(transform.A).reshape(transform.d_out, transform.d_in)


def set_matrix(index: faiss.Index, rows: np.ndarray) -> None:
    """Set the (k, d) matrix of an (untrained) QProj index, e.g. to share one fitted projection between
    quantizer restarts."""
    transform = projection_of(index)
    if transform is None:
        raise ValueError("not a QProj index (an IndexPreTransform with one un-biased LinearTransform)")
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.shape != (transform.d_out, transform.d_in):
        raise ValueError(f"QProj matrix must have shape ({transform.d_out}, {transform.d_in}), got {rows.shape}")
    faiss.copy_array_to_vector(rows.ravel(), transform.A)
    transform.is_trained = True


def second_moment_basis(vectors: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-``keep`` eigenvectors of E[v v^T] as rows (keep, d) float32, all eigenvalues descending) of
    ``vectors`` (m, d), uncentred, in float64. Signs fixed (largest-magnitude entry positive) so the same
    input always gives the same matrix."""
    v = np.asarray(vectors, dtype=np.float64)
    moment = v.T @ v / len(v)
    values, vecs = np.linalg.eigh((moment + moment.T) / 2)
    order = np.argsort(-values, kind="stable")
    values, vecs = values[order], vecs[:, order]
    flip = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(flip == 0, 1.0, flip)
    return np.ascontiguousarray(vecs[:, :keep].T, dtype=np.float32), values


def fit(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray | None, query_source: str) -> dict | None:
    """Set the projection of an untrained QProj ``index`` (no-op, None, for other indices) from ``queries``
    (m, d) -- or, when there are none or they are item vectors (``query_source`` "item_vectors_..."), from
    ``vectors`` (the training sample). Returns the build record: source, how many vectors, the dims kept, and
    the share of the second moment's trace the kept directions hold."""
    transform = projection_of(index)
    if transform is None:
        return None
    dim, keep = int(transform.d_in), int(transform.d_out)
    from_queries = queries is not None and len(queries) > 0 and not str(query_source).startswith(ITEM_SOURCE_PREFIX)
    basis_of = queries if from_queries else vectors
    if basis_of is None or len(basis_of) == 0:
        raise ValueError("a QProj index needs vectors to learn its projection from: got no queries and no "
                         "training vectors")
    basis_of = np.asarray(basis_of)
    if basis_of.ndim != 2 or basis_of.shape[1] != dim:
        raise ValueError(f"QProj projection: expected vectors of shape (m, {dim}), got {basis_of.shape}")
    if len(basis_of) < keep:
        raise ValueError(f"QProj{keep} needs at least {keep} vectors to learn {keep} directions from, got "
                         f"{len(basis_of)}; pass more queries or keep fewer dims")
    rows, values = second_moment_basis(basis_of, keep)
    set_matrix(index, rows)
    total = float(values.sum())
    return {"kind": "uncentred orthonormal projection (no bias)",
            "source": SOURCE_QUERIES if from_queries else SOURCE_ITEMS,
            "query_source": query_source if from_queries else None,
            "num_vectors": int(len(basis_of)), "dims_in": dim, "dims_kept": keep,
            "kept_energy": round(float(values[:keep].sum()) / total, 6) if total > 0 else None}
