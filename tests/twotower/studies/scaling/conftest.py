"""Hand-made point results for the scaling tests that need no training (laws, report, resume).

``fake_result`` builds a dict shaped like ``twotower.studies.scaling.point.run_point``'s output whose loss
after epoch e is ``loss(C_e)`` for a chosen function of compute, so fits have a known answer.
"""
from __future__ import annotations

from twotower.studies.scaling.grid import ModelShape, SweepPoint
from twotower.studies.scaling.point import SCHEMA
from core.strict import to_dict


def fake_result(layers: int = 1, width: int = 16, interactions: int | None = None, max_history: int = 10,
                batch_size: int = 128, epochs: int = 3, flops_per_epoch: float | None = None,
                loss=lambda c: 5.0 * c ** -0.1, params: int | None = None, train_interactions: int = 1000,
                recall: float | None = 0.2, key: str | None = None, valid: bool = True) -> dict:
    point = SweepPoint(ModelShape(layers, width), interactions, max_history, batch_size)
    n = params if params is not None else 100 * layers * width * width
    per_epoch = flops_per_epoch if flops_per_epoch is not None else 6.0 * n * train_interactions * 10
    curve = []
    for e in range(1, epochs + 1):
        c = per_epoch * e
        curve.append({"epoch": e, "flops": c, "seconds": 1.0, "examples_seen": train_interactions * e,
                      "loss_train_running": loss(c) * 1.1, "loss_train": loss(c) * 0.9,
                      "loss_valid": loss(c) if valid else None})
    rec = None if recall is None else {
        "k": 20, **{part: {"value": recall * f, "lo": recall * f * 0.8, "hi": recall * f * 1.2, "cases": 100}
                    for part, f in (("overall", 1.0), ("head", 1.5), ("tail", 0.5))}}
    return {
        "schema": SCHEMA, "key": key or point.name, "name": point.name, "label": point.model.label,
        "point": to_dict(point), "train_config": {},
        "params": {"non_embedding": n, "counted_non_embedding": n, "embedding": 1000, "projection_head": 100,
                   "formula_matches": True},
        "data": {"train_interactions": train_interactions, "train_users": 10, "examples_per_epoch": train_interactions,
                 "tokens_per_epoch": 10 * train_interactions, "valid_loss_examples": 256,
                 "train_loss_examples": 256, "loss_batch_size": 128},
        "compute": {"flops_per_epoch": {"total": per_epoch}, "flops": per_epoch * epochs, "epochs": epochs,
                    "examples_seen": train_interactions * epochs},
        "curve": curve,
        "final": {k: curve[-1][k] for k in ("loss_train_running", "loss_valid", "loss_train")},
        "wall_seconds": {"total": 10.0, "contrastive": 5.0, "contrastive_steps": 3.0, "probe": 4.0, "eval": 1.0},
        "cpu_seconds": {"total": 9.0, "contrastive": 4.0}, "load_average_1min": [1.0, 1.0],
        "probe": None if recall is None else {"mode": "finetune", "epochs": 1, "seconds": 4.0, "last_loss": 3.0},
        "recall": rec, "notes": [],
    }
