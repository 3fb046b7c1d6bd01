"""The query set an index is tuned and validated on: query-tower vectors of the run's validation users.

Two-tower queries are query-tower vectors, not item vectors, and the recall an index reaches at a given nprobe
differs between the two (issue 15). So the rebuild (``beam_jobs.rebuild_index``) and ``twotower index`` tune
and check recall on these vectors. They are built exactly as eval builds its queries (``towers.inputs.
eval_queries``: one query per user at the time of the user's first held-out event, history from the events
before), with the validation split in the role of the held-out events and the training split as history,
for a seeded sample of at most ``spec.tune_queries + spec.recall_queries`` validation users.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from core import artifacts
from core.rundir import RunDir
from core.version_cache import cached_directory
from indexing.spec import IndexSpec

QUERY_SOURCE = "query_tower_valid_users"


def validation_query_vectors(run: RunDir, spec: IndexSpec) -> np.ndarray | None:
    """float32 (m, d) query-tower vectors of up to tune_queries + recall_queries validation users, or None when
    the run has no data split, no query tower or no validation events (the index then falls back to item
    vectors as queries and its manifest says so)."""
    from recdata.loading import load_split
    from towers.export import load_tower
    from towers.inputs import eval_queries

    if not (run.data / artifacts.MANIFEST).is_file() or not run.query_tower.is_dir():
        return None
    # a run on object storage: data/ and model/ read from sha256-verified local copies (core.version_cache)
    dataset, split = load_split(cached_directory(str(run.data)))
    valid = getattr(split, "valid", None)
    if valid is None or len(valid) == 0:
        return None
    users = np.unique(valid["user_id"].to_numpy())
    wanted = spec.tune_queries + spec.recall_queries
    if len(users) > wanted:
        users = np.random.default_rng([spec.seed, 6]).choice(users, size=wanted, replace=False)
        valid = valid[valid["user_id"].isin(set(users.tolist()))]
    model = cached_directory(str(run.model))
    max_history = int(artifacts.read_manifest(model).get("max_history", 0) or 0) or None
    if max_history is None:
        raise ValueError(f"{run.model} has no max_history in its manifest; re-export the towers")
    queries = eval_queries(dataset, SimpleNamespace(train=split.train, valid=None, test=valid), max_history,
                           per="user")
    vectors = np.asarray(load_tower(model / run.query_tower.name)(queries.features), dtype=np.float32)
    return vectors if len(vectors) else None
