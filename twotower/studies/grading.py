"""Grade in-memory towers with the eval suite, exactly as ``twotower.pipeline.stage_eval`` grades a run.

One query per test user at the time of the user's first test event (``towers.inputs.eval_queries``,
history = the user's train + valid events of ``split``), every test event of that user a target, the
user's train + valid items excluded (of ``exclude_split`` when given: a study that trains on a subset of
the training events still excludes every known interaction), item slices by training counts of ``split``,
exact top-K over the whole catalogue (``dataset.items``, cold items included).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from eval.config import EvalConfig
from eval.evaluate import evaluate_vectors
from eval.result import EvalResult
from recdata.schema import Dataset
from recdata.splits import train_counts
from towers.inputs import eval_queries, item_features_batch
from towers.tf_env import tf


def embed(tower, features: dict[str, np.ndarray], chunk: int = 4096) -> np.ndarray:
    """Run a tower on a raw-feature dict in chunks of ``chunk`` rows → float32 (n, D)."""
    n = len(next(iter(features.values())))
    parts = [tower({k: tf.constant(v[i:i + chunk]) for k, v in features.items()}, training=False).numpy()
             for i in range(0, n, chunk)]
    return np.concatenate(parts).astype(np.float32)


def grade_towers(query_tower, item_tower, item_specs, dataset: Dataset, split, max_history: int,
                 eval_cfg: EvalConfig, name: str = "model", exclude_split=None) -> EvalResult:
    """The ``EvalResult`` (exact source) of the towers on ``split``'s test users; see the module docstring.

    ``item_specs`` = the item tower's FeatureSpecs (``vocab.item_specs``)."""
    queries = eval_queries(dataset, split, max_history, per="user")
    query_vectors = embed(query_tower, queries.features)
    item_vectors = embed(item_tower, item_features_batch(dataset.items, item_specs))

    item_row = pd.Index(dataset.items["item_id"])
    user_row = pd.Index(queries.user_ids)
    q = user_row.get_indexer(split.test["user_id"])
    t = item_row.get_indexer(split.test["item_id"])
    keep = (q >= 0) & (t >= 0)
    test_cases = np.stack([q[keep], t[keep]], axis=1).astype(np.int64)
    known = exclude_split if exclude_split is not None else split
    seen = pd.concat([known.train, known.valid], ignore_index=True)
    sq, si = user_row.get_indexer(seen["user_id"]), item_row.get_indexer(seen["item_id"])
    ok = (sq >= 0) & (si >= 0)
    exclusions = sp.csr_matrix((np.ones(int(ok.sum()), np.int8), (sq[ok], si[ok])),
                               shape=(len(user_row), len(item_row)))
    train_q = user_row.get_indexer(split.train["user_id"])
    history_lengths = np.bincount(train_q[train_q >= 0], minlength=len(user_row)).astype(np.int64)
    return evaluate_vectors(query_vectors, item_vectors, test_cases, exclusions,
                            train_counts(split, dataset.items["item_id"]), eval_cfg,
                            history_lengths=history_lengths, query_ids=queries.user_ids, name=name,
                            metadata={"test_cases": int(keep.sum()), "dropped_test_cases": int((~keep).sum())})
