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

from eval.config import EvalConfig
from recdata.schema import Dataset
from towers.config import TrainConfig
from towers.inputs import Examples, make_tf_dataset
from towers.tf_env import tf
from towers.train import make_optimizer
from twotower.studies.grading import grade_towers

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


def evaluate_recall(model, dataset: Dataset, split, item_specs, max_history: int, eval_cfg: EvalConfig,
                    recall_k: int, name: str = "point") -> dict:
    """recall@``recall_k`` (value and bootstrap CI) overall, on head and on tail targets; see the
    module docstring. ``item_specs`` = the item tower's FeatureSpecs (``vocab.item_specs``)."""
    if recall_k not in eval_cfg.ks:
        raise ValueError(f"recall_k={recall_k} is not one of eval.ks={list(eval_cfg.ks)}")
    start = time.perf_counter()
    result = grade_towers(model.query_tower, model.item_tower, item_specs, dataset, split, max_history, eval_cfg,
                          name=name)
    metric = f"recall@{recall_k}"
    summary = result.summary[result.summary["source"] == "exact"]
    out = {"k": recall_k, "seconds": time.perf_counter() - start, "test_cases": result.info["metadata"]["test_cases"]}
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
