"""The publish gate: every path that publishes an index (the nightly rebuild, ``twotower index``) runs
``check_publishable`` on the built index and the vectors it was built from, and publishes nothing when it
raises.

Checks (all of them are run and every failure is listed in one ``IndexValidationError``):
  count        index rows == vectors rows == item ids (== catalogue rows minus dead letters when known)
  finite       no NaN/inf component
  zero         no all-zero vector (it scores 0 against every query)
  norms        unit L2 norm (|norm - 1| <= NORM_TOLERANCE) when the tower normalises its output (every
               tower of this project does, ``towers.export``); otherwise a finite norm whose square fits in
               float32 (3e38-sized vectors overflow every inner product to inf)
  degenerate   not every vector the same (a collapsed tower: all scores tie, retrieval is arbitrary)
  dimension    index == vectors artifact == vectors
  model        index == vectors artifact (== the run's model when known)
  recall       recall@k vs exact search on seeded sample queries >= recall_floor
"""
from __future__ import annotations

import numpy as np

from core.guard import ModelVersionMismatch, require_same_model
from indexing.item_index import ItemIndex

NORM_TOLERANCE = 1e-3
DEFAULT_RECALL_FLOOR = 0.95
FLOAT32_SAFE_NORM = float(np.sqrt(np.finfo(np.float32).max))  # |x|^2 beyond this overflows float32


class IndexValidationError(ValueError):
    """The built index failed a pre-publish check; nothing was published."""


def check_publishable(index: ItemIndex, vectors: np.ndarray, item_ids: np.ndarray, vectors_manifest: dict,
                      expected_model_version: str | None, recall_floor: float = DEFAULT_RECALL_FLOOR,
                      catalogue_rows: int | None = None, *, unit_norm: bool = True,
                      queries: np.ndarray | None = None, query_source: str = "queries") -> dict:
    """Pre-publish checks (module docstring); returns the measured recall dict, raises ``IndexValidationError``.

    vectors float32 (n, d) and item_ids (n,): what the index was built from, in row order.
    vectors_manifest: the vectors artifact's manifest (count, dim, model_version).
    expected_model_version: the run's model (None when unknown).
    catalogue_rows: rows of the items table minus dead letters, when known (embedded in this run).
    unit_norm: the tower L2-normalises its output, so every vector must have norm 1.
    queries float32 (m, d): the query set recall is checked on (query-tower vectors of validation users);
    None = item vectors as queries.
    """
    if not 0.0 <= recall_floor <= 1.0:
        raise ValueError(f"recall_floor must be in [0, 1], got {recall_floor}")
    vectors = np.asarray(vectors)
    item_ids = np.asarray(item_ids, dtype=object)
    problems = []
    n = len(item_ids)
    if index.ntotal != n or vectors_manifest["count"] != n or len(vectors) != n or (
            catalogue_rows is not None and catalogue_rows != n):
        problems.append(f"item count: index holds {index.ntotal}, vectors artifact {vectors_manifest['count']}, "
                        f"item ids {n}" + (f", vectors {len(vectors)}" if len(vectors) != n else "")
                        + (f", catalogue {catalogue_rows}" if catalogue_rows is not None else ""))
    if vectors.ndim != 2 or len(vectors) == 0:
        problems.append(f"vectors must be a non-empty (n, d) matrix, got shape {vectors.shape}")
        raise IndexValidationError(_message(problems))
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0).astype(np.float64), axis=1)
    ids = item_ids if len(item_ids) == len(vectors) else np.array([f"row {i}" for i in range(len(vectors))],
                                                                 dtype=object)
    checks = [(~finite, "contain NaN/inf"), (finite & (norms == 0), "are all zeros")]
    if unit_norm:
        checks.append((finite & (norms > 0) & (np.abs(norms - 1) > NORM_TOLERANCE),
                       f"are not L2-normalised (|norm - 1| > {NORM_TOLERANCE}; the tower normalises its output)"))
    else:
        checks.append((finite & (norms > FLOAT32_SAFE_NORM),
                       f"have norms above {FLOAT32_SAFE_NORM:.3g} (inner products overflow float32)"))
    for mask, what in checks:
        if mask.any():
            worst = ""
            if "norm" in what:
                worst = f"; norms range {norms[mask].min():.4g}..{norms[mask].max():.4g}"
            problems.append(f"{int(mask.sum())} of {len(vectors)} vectors {what} (e.g. items "
                            f"{ids[mask][:3].tolist()}{worst})")
    if len(vectors) > 1 and finite.all() and (vectors == vectors[0]).all():
        problems.append(f"all {len(vectors)} vectors are identical (a collapsed tower: every item gets the same "
                        "score); retrain or re-export the model")
    if index.dim != vectors_manifest["dim"] or vectors.shape[1] != index.dim:
        problems.append(f"dimension: index {index.dim}, vectors artifact {vectors_manifest['dim']}, "
                        f"vectors {vectors.shape[1]}")
    problems.extend(model_problems(vectors_manifest, index.model_version, expected_model_version))
    recall = None
    if not problems:
        recall = index.measure_recall(vectors, queries, query_source=query_source)
        problem = recall_problem(recall, recall_floor, index.factory)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise IndexValidationError(_message(problems))
    return recall


def _message(problems: list[str]) -> str:
    return "index validation failed, nothing was published:\n  - " + "\n  - ".join(problems)


class VectorChecks:
    """The vector checks of ``check_publishable`` (finite, zero, norms, all identical) accumulated block by
    block, for a rebuild that never holds every vector (``beam_jobs.sharded_rebuild``); same messages.

        checks = VectorChecks(unit_norm=True)
        for ids, block in blocks: checks.add(block, ids)      # ids: anything indexable by a bool mask
        problems = checks.problems()
    """

    def __init__(self, unit_norm: bool = True):
        self.unit_norm = unit_norm
        self.count = 0
        self.dim: int | None = None
        self._first: np.ndarray | None = None
        self._all_same = True
        self._all_finite = True
        # per check: [count, examples (<= 3 ids), min norm, max norm]
        self._found = {}

    def _what(self) -> list[str]:
        norm = (f"are not L2-normalised (|norm - 1| > {NORM_TOLERANCE}; the tower normalises its output)"
                if self.unit_norm else f"have norms above {FLOAT32_SAFE_NORM:.3g} (inner products overflow float32)")
        return ["contain NaN/inf", "are all zeros", norm]

    def add(self, vectors: np.ndarray, ids) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be a (n, d) block, got shape {vectors.shape}")
        if len(vectors) == 0:
            return
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            self._first = vectors[0].copy()
        finite = np.isfinite(vectors).all(axis=1)
        norms = np.empty(len(vectors), dtype=np.float64)
        for start in range(0, len(vectors), 65_536):  # float64 copies of 64k rows at a time, not of the block
            part = vectors[start:start + 65_536]
            norms[start:start + len(part)] = np.linalg.norm(
                np.where(finite[start:start + len(part), None], part, 0).astype(np.float64), axis=1)
        if self.unit_norm:
            bad_norm = finite & (norms > 0) & (np.abs(norms - 1) > NORM_TOLERANCE)
        else:
            bad_norm = finite & (norms > FLOAT32_SAFE_NORM)
        for what, mask in zip(self._what(), (~finite, finite & (norms == 0), bad_norm)):
            if mask.any():
                entry = self._found.setdefault(what, [0, [], np.inf, -np.inf])
                entry[0] += int(mask.sum())
                if len(entry[1]) < 3:
                    entry[1].extend(list(np.asarray(ids)[mask][:3 - len(entry[1])]))
                entry[2] = min(entry[2], float(norms[mask].min()))
                entry[3] = max(entry[3], float(norms[mask].max()))
        self._all_finite = self._all_finite and bool(finite.all())
        if self._all_same and vectors.shape[1] == len(self._first):
            self._all_same = bool((vectors == self._first).all())
        self.count += len(vectors)

    def problems(self) -> list[str]:
        """The failed checks, worded as ``check_publishable`` words them."""
        out = []
        if self.count == 0:
            return [f"vectors must be a non-empty (n, d) matrix, got 0 vectors"]
        for what in self._what():
            if what in self._found:
                count, examples, low, high = self._found[what]
                worst = f"; norms range {low:.4g}..{high:.4g}" if "norm" in what else ""
                out.append(f"{count} of {self.count} vectors {what} (e.g. items {[str(e) for e in examples]}{worst})")
        if self.count > 1 and self._all_finite and self._all_same:
            out.append(f"all {self.count} vectors are identical (a collapsed tower: every item gets the same "
                       "score); retrain or re-export the model")
        return out


def metadata_problems(index_count: int, index_dim: int, index_model_version: str, vectors_manifest: dict,
                      checks: VectorChecks, expected_model_version: str | None,
                      catalogue_rows: int | None = None) -> list[str]:
    """The count / dimension / model-version checks of ``check_publishable`` for an index whose vectors were
    checked block by block (``VectorChecks``); same messages."""
    problems = []
    n = checks.count
    if index_count != n or vectors_manifest["count"] != n or (catalogue_rows is not None and catalogue_rows != n):
        problems.append(f"item count: index holds {index_count}, vectors artifact {vectors_manifest['count']}, "
                        f"item ids {n}" + (f", catalogue {catalogue_rows}" if catalogue_rows is not None else ""))
    if index_dim != vectors_manifest["dim"] or (checks.dim is not None and checks.dim != index_dim):
        problems.append(f"dimension: index {index_dim}, vectors artifact {vectors_manifest['dim']}, "
                        f"vectors {checks.dim}")
    problems.extend(model_problems(vectors_manifest, index_model_version, expected_model_version))
    return problems


def model_problems(vectors_manifest: dict, index_model_version: str, expected_model_version: str | None) -> list[str]:
    """The model-version checks of the gate: the index was built from the vectors artifact's model, and that
    is the run's model (when known). One message per mismatch (``core.guard.require_same_model``'s)."""
    problems = []
    pairs = [(vectors_manifest["model_version"], "the vectors artifact", index_model_version, "the index")]
    if expected_model_version is not None:
        pairs.append((expected_model_version, "the run's model", vectors_manifest["model_version"],
                      "the vectors artifact"))
    for expected, expected_from, found, found_from in pairs:
        try:
            require_same_model(expected, found, expected_from=expected_from, found_from=found_from,
                               fix="re-embed the items with the run's current model and rebuild")
        except ModelVersionMismatch as exc:
            problems.append(f"model version mismatch: {exc}")
    return problems


def recall_problem(recall: dict, recall_floor: float, factory: str) -> str | None:
    """The recall-floor check of ``check_publishable`` (same message), or None when recall is high enough."""
    if recall["recall"] >= recall_floor:
        return None
    return (f"recall@{recall['k']} = {recall['recall']:.4f} over {recall['num_queries']} sampled queries is "
            f"below recall_floor={recall_floor} (factory {factory}, search params {recall['search_params']}); "
            "raise index.nprobe / ef_search, choose a larger factory, or lower recall_floor")


def raise_problems(problems: list[str]) -> None:
    """Raise ``IndexValidationError`` listing ``problems`` (nothing when empty)."""
    if problems:
        raise IndexValidationError(_message(problems))
