"""One point of the sweep: train the CLUE objective with the grid's recipe, measure, probe recall.

``run_point(grid, point, dataset, split)`` → the point's result (a JSON-able dict):

  1. training data: the whole-user subset of ``split.train`` with ``point.interactions`` events
     (``twotower.studies.scaling.subsets``); validation examples = ``split.valid`` targets with their
     histories from the FULL training split (the same for every point);
  2. fixed loss sets (``twotower.studies.scaling.contrastive``) drawn before the model, then
     ``tf.keras.utils.set_random_seed(recipe.seed)``, vocabularies from the subset, the two-tower
     model (``towers.train.build_model``) and the CLUE objective on its query tower, built eagerly
     on one batch;
  3. parameters counted on the built encoder and by the formula of ``twotower.studies.scaling.flops``
     (``formula_matches`` says whether they agree); FLOPs per epoch from the examples' history
     lengths;
  4. ``recipe.clue_epochs`` contrastive epochs, each recording cumulative FLOPs and the losses;
  5. the recall probe (``twotower.studies.scaling.probe``) unless ``probe.mode`` is "off".

Result keys: schema, key, name, label, point, train_config, params, data, compute, curve (per epoch), final,
wall_seconds, cpu_seconds, load_average_1min, probe, recall, notes. Wall times are on a possibly
shared machine (the 1-minute load average at the start and end says how shared); cpu_seconds
(this process, all threads) say what the point cost.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from recdata.schema import Dataset
from twotower.studies.scaling.flops import EncoderShape, clue_epoch_flops, count_encoder_parameters, item_vector_width
from twotower.studies.scaling.grid import ScalingGrid, SweepPoint, point_key
from twotower.studies.scaling.subsets import user_subset
from core.strict import to_dict

SCHEMA = "twotower-scaling-point/1"


def run_point(grid: ScalingGrid, point: SweepPoint, dataset: Dataset, split,
              log: Callable[[str], None] | None = None) -> dict:
    """Train and measure ``point`` (see the module docstring); returns its result dict."""
    from towers.inputs import heldout_examples, make_tf_dataset, training_examples
    from twotower.studies.scaling.contrastive import fixed_loss_set, train_contrastive
    from twotower.studies.scaling.probe import evaluate_recall, retrieval_probe
    from towers.tf_env import tf
    from towers.train import build_model, clue_objective
    from towers.vocab import build_vocabularies

    say = log or (lambda msg: None)
    started, cpu_started, load_started = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    cfg = point.train_config(grid.recipe)
    max_history = cfg.tower.max_history
    train_df = user_subset(split.train, point.interactions, grid.sweep.subset_seed)
    tf.keras.backend.clear_session()

    train_ex = training_examples(dataset, train_df, max_history, cfg.use_weights)
    valid = getattr(split, "valid", None)
    valid_ex = (heldout_examples(dataset, split.train, valid, max_history, cfg.use_weights)
                if valid is not None and len(valid) else None)
    v = grid.validation
    loss_sets = {name: fixed_loss_set(dataset, ex, v.batch_size, v.max_examples, cfg.clue_views, cfg.clue_crop,
                                      v.seed + offset)
                 for name, ex, offset in (("valid", valid_ex, 0), ("train", train_ex, 1))}

    tf.keras.utils.set_random_seed(cfg.seed)
    vocab = build_vocabularies(dataset, train_df, cfg.tower)
    model = build_model(vocab, cfg, dataset, train_df)
    objective = clue_objective(model.query_tower, cfg, 1.0)
    first = next(iter(make_tf_dataset(dataset, train_ex.subset(np.arange(min(len(train_ex), cfg.batch_size))),
                                      cfg.batch_size, shuffle=False, seed=cfg.seed)))
    model.compute_loss(first, training=False)  # every variable exists before anything is traced
    objective(first, training=False)

    seq = cfg.tower.sequence
    item_features = seq.item_features and len(vocab.item_specs) > 0
    shape = EncoderShape(num_layers=seq.num_layers, width=seq.width, ff_dim=seq.ff_dim,
                         input_dim=item_vector_width(cfg.tower.id_embedding_dim, cfg.tower.feature_embedding_dim,
                                                     [s.kind for s in vocab.item_specs], item_features),
                         projection_dim=cfg.clue_projection_dim)
    counted = count_encoder_parameters(model.query_tower.history_encoder)
    notes = []
    if counted["non_embedding"] != shape.non_embedding_params:
        notes.append(f"the parameter formula of twotower/studies/scaling/flops.py gives N={shape.non_embedding_params} but the "
                     f"built encoder has {counted['non_embedding']} non-embedding parameters: the FLOPs estimate no "
                     "longer describes towers/sequence_encoder.py; update flops.py")
    per_epoch = clue_epoch_flops(shape, train_ex.history_length, cfg.batch_size, cfg.clue_views, cfg.clue_crop)

    def on_epoch(record):
        record["flops"] = per_epoch.total * record["epoch"]
        record["examples_seen"] = len(train_ex) * record["epoch"]
        valid_loss = record.get("loss_valid")
        say(f"    epoch {record['epoch']}/{cfg.clue_epochs}: {record['seconds']:.1f} s, "
            f"train {record['loss_train_running']:.4f}, valid "
            f"{'n/a' if valid_loss is None else f'{valid_loss:.4f}'}, {record['flops']:.3g} FLOPs")

    t0, cpu0 = time.perf_counter(), time.process_time()
    curve = train_contrastive(objective, dataset, train_ex, cfg, loss_sets, on_epoch=on_epoch)
    contrastive_seconds, contrastive_cpu = time.perf_counter() - t0, time.process_time() - cpu0

    probe, recall = None, None
    if grid.probe.mode != "off":
        probe = retrieval_probe(model, dataset, train_ex, cfg, grid.probe.mode)
        recall = evaluate_recall(model, dataset, split, vocab.item_specs, max_history, grid.eval,
                                 grid.probe.recall_k, name=point.name)

    return {
        "schema": SCHEMA,
        "key": point_key(grid, point),
        "name": point.name,
        "label": point.model.label,
        "point": to_dict(point),
        "train_config": to_dict(cfg),
        "params": {"non_embedding": shape.non_embedding_params, "counted_non_embedding": counted["non_embedding"],
                   "embedding": counted["embedding"], "projection_head": shape.projection_params,
                   "formula_matches": counted["non_embedding"] == shape.non_embedding_params,
                   "counts": "N = non-embedding trainable parameters of the sequence encoder (item projection, "
                             "Transformer blocks, final norm); embedding tables and the CLUE projection head "
                             "are reported apart and not counted in N"},
        "data": {"train_interactions": int(len(train_df)), "train_users": int(train_df["user_id"].nunique()),
                 "examples_per_epoch": len(train_ex), "tokens_per_epoch": per_epoch.tokens,
                 "valid_loss_examples": None if loss_sets["valid"] is None else loss_sets["valid"].examples,
                 "train_loss_examples": None if loss_sets["train"] is None else loss_sets["train"].examples,
                 "loss_batch_size": None if loss_sets["valid"] is None else loss_sets["valid"].batch_size},
        "compute": {"flops_per_epoch": per_epoch.to_dict(), "flops": per_epoch.total * cfg.clue_epochs,
                    "epochs": cfg.clue_epochs, "examples_seen": len(train_ex) * cfg.clue_epochs},
        "curve": curve,
        "final": {k: curve[-1][k] for k in ("loss_train_running", "loss_valid", "loss_train")},
        "wall_seconds": {"total": time.perf_counter() - started, "contrastive": contrastive_seconds,
                         "contrastive_steps": float(sum(r["seconds"] for r in curve)),
                         "probe": None if probe is None else probe["seconds"],
                         "eval": None if recall is None else recall["seconds"]},
        "cpu_seconds": {"total": time.process_time() - cpu_started, "contrastive": contrastive_cpu},
        "load_average_1min": [load_started, os.getloadavg()[0]],
        "probe": probe,
        "recall": recall,
        "notes": notes,
    }
