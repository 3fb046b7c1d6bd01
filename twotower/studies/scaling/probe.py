"""The recall probe: how well a CLUE-trained encoder retrieves, measured like a real run.

``retrieval_probe`` trains the two-tower model that holds the encoder on the retrieval loss
(``TwoTowerModel.train_step``, traced once) for ``cfg.epochs`` epochs over the same seeded epoch
stream ``towers.train`` uses; mode "frozen" first freezes the history encoder, which also freezes
the item-id / item-feature tables it shares with the item tower.

``evaluate_recall`` grades the towers exactly as ``twotower.pipeline.stage_eval`` does, with the
eval suite (``eval.evaluate.evaluate_vectors``): one query per test user at the time of the user's
first test event (``towers.inputs.eval_queries``, history = train + valid events), every test
event of that user a target, the user's train + valid items excluded, popularity slices by
training counts of the FULL split (so every point of a sweep is graded on the same test set and
the same head / tail), exact top-K over the whole catalogue.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from eval.config import EvalConfig
from eval.evaluate import evaluate_vectors
from recdata.schema import Dataset
from recdata.splits import train_counts
from towers.config import TrainConfig
from towers.inputs import Examples, eval_queries, item_features_batch, make_tf_dataset
from towers.tf_env import tf
from towers.train import make_optimizer

SLICES = {"overall": "overall/all", "head": "popularity/head", "tail": "popularity/tail"}


def retrieval_probe(model, dataset: Dataset, examples: Examples, cfg: TrainConfig, mode: str) -> dict:
    """Train ``model`` (``towers.model.TwoTowerModel``) on the retrieval loss for ``cfg.epochs``
    epochs; returns {"mode", "epochs", "seconds", "last_loss"} (last_loss = the model's reported
    "loss" after the last step)."""
    if mode not in ("finetune", "frozen"):
        raise ValueError(f"probe mode must be 'finetune' or 'frozen', got {mode!r}")
    if mode == "frozen":
        model.query_tower.history_encoder.trainable = False
    model.compile(optimizer=make_optimizer(cfg))
    model.optimizer.build(model.trainable_variables)
    stream = make_tf_dataset(dataset, examples, cfg.batch_size, shuffle=True, seed=cfg.seed,
                             shuffle_buffer=cfg.shuffle_buffer, epochs=cfg.epochs)
    step = tf.function(model.train_step, input_signature=[stream.element_spec])
    start = time.perf_counter()
    logs = {}
    for batch in stream:
        logs = step(batch)
    return {"mode": mode, "epochs": cfg.epochs, "seconds": time.perf_counter() - start,
            "last_loss": float(logs["loss"]) if "loss" in logs else None}


def embed(tower, features: dict[str, np.ndarray], chunk: int = 4096) -> np.ndarray:
    """Run a tower on a raw-feature dict in chunks of ``chunk`` rows → float32 (n, D)."""
    n = len(next(iter(features.values())))
    parts = [tower({k: tf.constant(v[i:i + chunk]) for k, v in features.items()}, training=False).numpy()
             for i in range(0, n, chunk)]
    return np.concatenate(parts).astype(np.float32)


def evaluate_recall(model, dataset: Dataset, split, item_specs, max_history: int, eval_cfg: EvalConfig,
                    recall_k: int, name: str = "point") -> dict:
    """recall@``recall_k`` (value and bootstrap CI) overall, on head and on tail targets; see the
    module docstring. ``item_specs`` = the item tower's FeatureSpecs (``vocab.item_specs``)."""
    if recall_k not in eval_cfg.ks:
        raise ValueError(f"recall_k={recall_k} is not one of eval.ks={list(eval_cfg.ks)}")
    start = time.perf_counter()
    queries = eval_queries(dataset, split, max_history, per="user")
    query_vectors = embed(model.query_tower, queries.features)
    items = item_features_batch(dataset.items, item_specs)
    item_vectors = embed(model.item_tower, items)

    item_row = pd.Index(dataset.items["item_id"])
    user_row = pd.Index(queries.user_ids)
    q = user_row.get_indexer(split.test["user_id"])
    t = item_row.get_indexer(split.test["item_id"])
    keep = (q >= 0) & (t >= 0)
    test_cases = np.stack([q[keep], t[keep]], axis=1).astype(np.int64)
    seen = pd.concat([split.train, split.valid], ignore_index=True)
    sq, si = user_row.get_indexer(seen["user_id"]), item_row.get_indexer(seen["item_id"])
    ok = (sq >= 0) & (si >= 0)
    exclusions = sp.csr_matrix((np.ones(int(ok.sum()), np.int8), (sq[ok], si[ok])),
                               shape=(len(user_row), len(item_row)))
    train_q = user_row.get_indexer(split.train["user_id"])
    history_lengths = np.bincount(train_q[train_q >= 0], minlength=len(user_row)).astype(np.int64)
    result = evaluate_vectors(query_vectors, item_vectors, test_cases, exclusions,
                              train_counts(split, dataset.items["item_id"]), eval_cfg,
                              history_lengths=history_lengths, query_ids=queries.user_ids, name=name)
    metric = f"recall@{recall_k}"
    summary = result.summary[result.summary["source"] == "exact"]
    out = {"k": recall_k, "seconds": time.perf_counter() - start, "test_cases": int(keep.sum())}
    for label, key in SLICES.items():
        family, _, slc = key.partition("/")
        row = summary[(summary["family"] == family) & (summary["slice"] == slc)]
        if row.empty:
            out[label] = None
            continue
        out[label] = {"value": float(row[metric].iloc[0]), "lo": _finite(row[f"{metric}_lo"].iloc[0]),
                      "hi": _finite(row[f"{metric}_hi"].iloc[0]), "cases": int(row["n_cases"].iloc[0])}
    return out


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
