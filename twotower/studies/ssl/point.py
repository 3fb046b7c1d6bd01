"""One point of the SSL study: train on a fraction of the training events, grade every slice, save the result.

``run_point(grid, point, dataset, split, directory)``:

  1. ``supervision_subset``: the first ``round(fraction · n)`` rows of one fixed-seed permutation of
     ``split.train`` (seeded by the point's seed, so fractions are nested and every variant at the same
     (fraction, seed) sees the same events); valid and test are untouched, and every user and item stays in
     the catalogue (items with no event left are cold: only their features can place them);
  2. ``towers.train.train`` with the variant's config (the recipe + the variant's overrides, seed = the
     point's seed);
  3. ``twotower.studies.grading.grade_towers``: item slices by the SUBSET's training counts (so "cold" and
     "few-shot" mean what the model saw), histories from the subset, every known (train + valid) interaction
     of the full split excluded; the ``EvalResult`` is saved under ``<directory>/eval`` for the paired report.

Returns the point's summary (recall per slice, training time, subset sizes).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from recdata.schema import Dataset
from recdata.splits import train_counts
from twotower.studies.ssl.grid import SSLGrid, SSLPoint, point_config

EVAL_DIR = "eval"


def supervision_subset(split, fraction: float, seed: int):
    """``split`` with only a fixed-seed ``fraction`` of its training rows (source order kept)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    n = len(split.train)
    keep = int(round(fraction * n))
    if keep == 0:
        raise ValueError(f"fraction {fraction:g} of {n} training events keeps none; use a larger fraction")
    order = np.random.default_rng(seed).permutation(n)
    rows = np.sort(order[:keep])
    return dataclasses.replace(split, train=split.train.iloc[rows].reset_index(drop=True), part=None)


def run_point(grid: SSLGrid, point: SSLPoint, dataset: Dataset, split, directory) -> dict:
    from towers.tf_env import tf
    from towers.train import train
    from twotower.studies.grading import grade_towers

    cfg = point_config(grid, point)
    subset = supervision_subset(split, point.fraction, point.seed)
    tf.keras.backend.clear_session()
    started = time.perf_counter()
    cpu0 = time.process_time()
    trained = train(dataset, subset, cfg, directory / "train")
    train_seconds = time.perf_counter() - started
    result = grade_towers(trained.query_tower, trained.item_tower, trained.vocab.item_specs, dataset, subset,
                          cfg.tower.max_history, grid.eval, name=point.name, exclude_split=split)
    result.save(directory / EVAL_DIR)
    summary = result.summary[result.summary["source"] == "exact"]
    recall = {f"{r['family']}/{r['slice']}": {"n_cases": int(r["n_cases"]),
                                              **{m: float(r[m]) for m in result.metric_columns("exact")
                                                 if m.startswith("recall@")}}
              for r in summary.to_dict("records")}
    counts = train_counts(subset, dataset.items["item_id"])
    return {"point": dataclasses.asdict(point), "train_events": len(subset.train),
            "items": int(len(counts)), "cold_items": int((counts == 0).sum()),
            "few_shot_items": int(((counts >= 1) & (counts <= 3)).sum()),
            "full_train_events": len(split.train), "train_seconds": round(train_seconds, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1), "epochs": len(trained.epoch_train_seconds),
            "final_loss": (trained.history.get("loss") or [None])[-1], "recall": recall}
