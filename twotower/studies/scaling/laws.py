"""Which measurements each scaling law is fitted on, and the fits (``twotower.studies.scaling.fit``).

Every point records, after each contrastive epoch, its cumulative training FLOPs C and the loss
L the grid's ``fit.loss`` names ("valid" or "train", both at the same batch size and on the same
fixed views for every point). The laws:

  compute        L(C) = a·(C/C0)^(−b) + c on the compute-efficient frontier: of all (C, L)
                 checkpoints of all points, those with a lower loss than every checkpoint that
                 spent less compute (Kaplan et al. 2020; CLUE's "loss vs compute" frontier)
  compute_pure   the same frontier with c = 0: a straight line on log-log axes, CLUE's claim
  params         L(N): the model axis — points that differ from the grid's base point only in
                 the encoder's shape; for each size N (non-embedding parameters) the lowest loss
                 its checkpoints reached (early stopping)
  data           L(D): the data axis — points that differ from the base only in the number of
                 training interactions D; the lowest loss reached for each D

A law that cannot be fitted (too few distinct sizes, no loss recorded) gets an "error" saying why
instead of a fit. No TensorFlow here.
"""
from __future__ import annotations

import numpy as np

from twotower.studies.scaling.fit import fit_power_law, pareto_frontier

LAWS = {
    "compute": {"symbol": "C", "x": "training FLOPs (contrastive)", "offset": True},
    "compute_pure": {"symbol": "C", "x": "training FLOPs (contrastive)", "offset": False},
    "params": {"symbol": "N", "x": "non-embedding parameters", "offset": True},
    "data": {"symbol": "D", "x": "training interactions", "offset": True},
}


def checkpoints(results: list[dict], loss: str = "valid") -> list[dict]:
    """Every (point, epoch) with a finite loss: {"key", "label", "epoch", "C", "N", "D", "L"}."""
    out = []
    for r in results:
        for rec in r["curve"]:
            value = rec.get(f"loss_{loss}")
            if value is None or not np.isfinite(value) or value <= 0:
                continue
            out.append({"key": r["key"], "label": r["label"], "epoch": rec["epoch"], "C": float(rec["flops"]),
                        "N": float(r["params"]["non_embedding"]), "D": float(r["data"]["train_interactions"]),
                        "L": float(value)})
    return out


AXES = {"params": "model", "data": "interactions"}


def on_axis(point: dict, base: dict | None, axis: str) -> bool:
    """Whether ``point`` (a SweepPoint as a dict) equals ``base`` on every axis but ``axis``."""
    if base is None:
        return True
    return all(point[k] == base[k] for k in ("model", "interactions", "max_history", "batch_size") if k != axis)


def law_points(results: list[dict], law: str, loss: str = "valid", base: dict | None = None
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x, y, labels) the law is fitted on (see the module docstring); labels say which checkpoint.

    ``base``: the grid's base point as a dict (``to_dict(grid.sweep.base)``); None = every point
    counts for L(N) and L(D) (the lowest loss at each size over the whole grid)."""
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; expected one of {sorted(LAWS)}")
    if law in AXES:
        results = [r for r in results if on_axis(r["point"], base, AXES[law])]
    cps = checkpoints(results, loss)
    if not cps:
        return np.zeros(0), np.zeros(0), []
    if law in ("compute", "compute_pure"):
        x = np.array([c["C"] for c in cps])
        y = np.array([c["L"] for c in cps])
        keep = pareto_frontier(x, y)
        order = np.argsort(x[keep])
        chosen = [cps[i] for i in np.flatnonzero(keep)[order]]
        return x[keep][order], y[keep][order], [f"{c['key']}@{c['epoch']}" for c in chosen]
    var = "N" if law == "params" else "D"
    best: dict[float, dict] = {}
    for c in cps:
        if c[var] not in best or c["L"] < best[c[var]]["L"]:
            best[c[var]] = c
    xs = sorted(best)
    return (np.array(xs), np.array([best[v]["L"] for v in xs]),
            [f"{best[v]['key']}@{best[v]['epoch']}" for v in xs])


def fit_laws(results: list[dict], loss: str = "valid", bootstrap: int = 1000, confidence: float = 0.95,
             seed: int = 0, base: dict | None = None) -> dict[str, dict]:
    """{law: {"symbol", "x_name", "loss", "x", "y", "labels", "fit": PowerLawFit.to_dict() | None,
    "error": str | None}} for every law of ``LAWS`` (``base``: see ``law_points``)."""
    out = {}
    for law, spec in LAWS.items():
        x, y, labels = law_points(results, law, loss, base)
        entry = {"symbol": spec["symbol"], "x_name": spec["x"], "loss": loss, "x": x.tolist(), "y": y.tolist(),
                 "labels": labels, "fit": None, "error": None}
        if len(x) == 0:
            entry["error"] = (f"no '{loss}' loss recorded by any finished point"
                              + ("; the split has no validation part: set fit.loss: train" if loss == "valid" else ""))
        else:
            try:
                entry["fit"] = fit_power_law(x, y, offset=spec["offset"], bootstrap=bootstrap, confidence=confidence,
                                             seed=seed).to_dict()
            except ValueError as exc:
                entry["error"] = str(exc)
        out[law] = entry
    return out
