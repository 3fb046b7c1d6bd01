"""The sweep's report: plots (PNG, log-log, matplotlib Agg), a Markdown page, a CSV table, the fits as JSON.

``write_report(out_dir, grid, results, fits, failures)`` writes (each file atomically)::

    report.md               setup, fitted laws with intervals and R², the points table, the
                            frontier residuals, batch size × model size and sequence-length
                            tables, automatic reading notes
    points.csv              one row per finished point
    fits.json               ``twotower.studies.scaling.laws.fit_laws`` output
    loss_vs_compute.png     every point's loss after each epoch against its cumulative FLOPs, one
                            colour per model size (solid: the model axis, one line per size; dashed:
                            the other points), the frontier and the fitted law
    recall_vs_compute.png   recall@K overall / head / tail against the point's FLOPs (with CIs)
    loss_vs_params_data.png L(N) and L(D) with their fits
    loss_vs_batch.png       final loss against batch size, one line per model size (points that
                            differ only in batch size)

No TensorFlow here; matplotlib figures are drawn without pyplot (no global state, no display).
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.studies.scaling.grid import ScalingGrid
from twotower.studies.scaling.laws import LAWS, checkpoints, on_axis
from core.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from core.strict import to_dict

PLOTS = ("loss_vs_compute.png", "recall_vs_compute.png", "loss_vs_params_data.png", "loss_vs_batch.png")
R2_POOR = 0.9


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def _sci(x) -> str:
    return "–" if x is None else f"{float(x):.3g}"


def _models(results: list[dict]) -> list[tuple[str, float]]:
    """Model labels ordered by N, with N."""
    sizes = {r["label"]: r["params"]["non_embedding"] for r in results}
    return sorted(sizes.items(), key=lambda kv: kv[1])


def _colours(labels):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(len(labels) - 1, 1)
    return {label: cmap(0.9 * i / n) for i, label in enumerate(labels)}


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _curve_range(x, pad: float = 1.5):
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.geomspace(lo / pad, hi * pad, 200)


def plot_loss_vs_compute(results, fits, loss: str, path: Path, base: dict | None = None) -> None:
    """Solid lines: the model axis (points equal to ``base`` but for the model), one per model
    size; dashed: the other points (data, sequence length, batch size variants)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    models = _models(results)
    colours = _colours([m for m, _ in models])
    shown = set()
    for r in sorted(results, key=lambda r: r["params"]["non_embedding"]):
        pts = [(rec["flops"], rec.get(f"loss_{loss}")) for rec in r["curve"]]
        pts = [(c, v) for c, v in pts if v is not None and v > 0]
        if not pts:
            continue
        c, v = zip(*pts)
        label = None if r["label"] in shown else f"{r['label']} (N={r['params']['non_embedding']:,})"
        shown.add(r["label"])
        main = on_axis(r["point"], base, "model")
        ax.plot(c, v, "-o" if main else "--o", color=colours[r["label"]], ms=3, lw=1.5 if main else 0.8,
                alpha=0.9 if main else 0.5, label=label)
    for law, style in (("compute", "--"), ("compute_pure", ":")):
        fit = fits.get(law, {}).get("fit")
        if fit:
            xs = _curve_range(fit["x"])
            ys = fit["a"] * (xs / fit["x0"]) ** (-fit["b"]) + fit["c"]
            ax.plot(xs, ys, style, color="black" if law == "compute" else "grey", lw=1.5,
                    label=f"{'fit' if law == 'compute' else 'pure power law'}: b={fit['b']:.3g}, R²={_fmt(fit['r2'], 3)}")
    frontier = fits.get("compute", {})
    if frontier.get("x"):
        ax.plot(frontier["x"], frontier["y"], "o", mfc="none", mec="black", ms=8, label="frontier")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(f"{loss} contrastive loss")
    ax.set_title("CLUE loss against compute (colour = model size; dashed = other axes' points)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_recall_vs_compute(results, path: Path) -> None:
    from matplotlib.figure import Figure

    with_recall = [r for r in results if r.get("recall")]
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3, sharey=False)
    models = _models(results)
    colours = _colours([m for m, _ in models])
    k = with_recall[0]["recall"]["k"] if with_recall else None
    for ax, part in zip(axes, ("overall", "head", "tail")):
        shown = set()
        for r in with_recall:
            rec = r["recall"].get(part)
            if not rec:
                continue
            lo = rec["value"] - rec["lo"] if rec.get("lo") is not None else 0.0
            hi = rec["hi"] - rec["value"] if rec.get("hi") is not None else 0.0
            label = None if r["label"] in shown else r["label"]
            shown.add(r["label"])
            ax.errorbar([r["compute"]["flops"]], [rec["value"]], yerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o",
                        color=colours[r["label"]], ms=5, capsize=2, label=label)
        values = [r["recall"][part]["value"] for r in with_recall if r["recall"].get(part)]
        ax.set_xscale("log")
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(f"recall@{k}" if k else "recall")
        ax.set_title(part)
        ax.grid(True, which="both", alpha=0.3)
    if with_recall:
        axes[0].legend(fontsize=7, title="model")
    else:
        axes[1].text(0.5, 0.5, "no recall (probe off)", ha="center", transform=axes[1].transAxes)
    _save(fig, path)


def plot_params_data(fits, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, law in zip(axes, ("params", "data")):
        entry = fits.get(law, {})
        if entry.get("x"):
            ax.plot(entry["x"], entry["y"], "o", color="C0", label="best loss reached")
        fit = entry.get("fit")
        if fit:
            xs = _curve_range(fit["x"])
            ax.plot(xs, fit["a"] * (xs / fit["x0"]) ** (-fit["b"]) + fit["c"], "--", color="black",
                    label=f"fit: b={fit['b']:.3g}, R²={_fmt(fit['r2'], 3)}")
        elif entry.get("error"):
            ax.text(0.5, 0.5, "not fitted:\n" + _wrap(entry["error"], 45), ha="center", va="center",
                    transform=ax.transAxes, fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(LAWS[law]["x"])
        ax.set_ylabel(f"{entry.get('loss', '')} contrastive loss")
        ax.set_title(f"L({LAWS[law]['symbol']})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def plot_loss_vs_batch(results, loss: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    table = axis_table(results, "batch_size", loss)
    colours = _colours(list(table.index))
    for label, row in table.iterrows():
        row = row.dropna()
        ax.plot(row.index.astype(float), row.values, "-o", color=colours[label], label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"final {loss} contrastive loss")
    ax.set_title("batch size × model size (points equal on the other axes)")
    ax.grid(True, which="both", alpha=0.3)
    if len(table):
        ax.legend(fontsize=7, title="model, D, L")
    else:
        ax.text(0.5, 0.5, "no points that differ only in batch size", ha="center", transform=ax.transAxes)
    _save(fig, path)


_AXIS_NAMES = {"batch_size": "B", "max_history": "L", "interactions": "D"}


def axis_table(results, axis: str, loss: str) -> pd.DataFrame:
    """Final ``loss`` of points that differ only in ``axis`` ("batch_size" | "max_history"):
    one row per combination of the other axes (label "model, D=…, L=…/B=…", ordered by N) that
    was run at two or more values of ``axis``, one column per value."""
    others = [a for a in ("interactions", "max_history", "batch_size") if a != axis]
    rows = []
    for r in sorted(results, key=lambda r: r["params"]["non_embedding"]):
        value = r["final"].get(f"loss_{loss}")
        if value is None:
            continue
        p = r["point"]
        label = ", ".join([r["label"]] + [f"{_AXIS_NAMES[a]}={'all' if p[a] is None else p[a]}" for a in others])
        rows.append({"row": label, "value": p[axis], "loss": value})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["row"]))
    table = frame.pivot_table(index="row", columns="value", values="loss", aggfunc="min").reindex(order)
    return table[table.notna().sum(axis=1) >= 2]


def points_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in sorted(results, key=lambda r: (r["params"]["non_embedding"], r["compute"]["flops"])):
        p = r["point"]
        row = {"key": r["key"], "layers": p["model"]["num_layers"], "width": p["model"]["width"],
               "N": r["params"]["non_embedding"], "embedding_params": r["params"]["embedding"],
               "D": r["data"]["train_interactions"], "L": p["max_history"], "B": p["batch_size"],
               "epochs": r["compute"]["epochs"], "flops": r["compute"]["flops"],
               "wall_s": r["wall_seconds"]["total"], "train_s": r["wall_seconds"]["contrastive_steps"],
               "cpu_s": (r.get("cpu_seconds") or {}).get("total"),
               "loss_train_running": r["final"]["loss_train_running"], "loss_train": r["final"]["loss_train"],
               "loss_valid": r["final"]["loss_valid"]}
        for part in ("overall", "head", "tail"):
            rec = (r.get("recall") or {}).get(part)
            row[f"recall_{part}"] = rec["value"] if rec else None
        rows.append(row)
    return pd.DataFrame(rows)


def reading_notes(results, fits, loss: str) -> list[str]:
    """Plain statements about fit quality and the data behind it (generated, not hand-written)."""
    notes = []
    for law, entry in fits.items():
        fit = entry.get("fit")
        name = f"L({LAWS[law]['symbol']})" + (" without offset" if law == "compute_pure" else "")
        if fit is None:
            notes.append(f"{name} was not fitted: {entry.get('error')}")
            continue
        if fit["r2"] is None or fit["r2"] < R2_POOR:
            notes.append(f"{name}: R² = {_fmt(fit['r2'], 3)} (log space) — the power law describes these points poorly.")
        lo, hi = fit["b_ci"]
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and hi - lo > abs(fit["b"]):
            notes.append(f"{name}: the exponent's interval [{_fmt(lo, 3)}, {_fmt(hi, 3)}] is wider than the exponent "
                         f"itself ({_fmt(fit['b'], 3)}): it is not pinned down by {fit['n']} points.")
        if fit["at_bounds"]:
            notes.append(f"{name}: {', '.join(fit['at_bounds'])} ended at a bound of the fit "
                         f"(b ∈ [0, 5], c ∈ [0, min loss]); treat that parameter as not identified.")
        if fit["n"] <= 6:
            notes.append(f"{name} rests on {fit['n']} points only.")
    rising = [r["key"] for r in results
              if len([v for v in (rec.get(f"loss_{loss}") for rec in r["curve"]) if v is not None]) >= 2
              and r["curve"][-1].get(f"loss_{loss}") is not None
              and r["curve"][-1][f"loss_{loss}"] > min(v for v in (rec.get(f"loss_{loss}") for rec in r["curve"])
                                                       if v is not None) * 1.001]
    if rising:
        notes.append(f"the {loss} loss rose again before the last epoch (overfitting or noise) in: {', '.join(rising)}.")
    for r in results:
        for note in r.get("notes", []):
            notes.append(f"{r['key']}: {note}")
    return notes


def _law_row(law: str, entry: dict) -> str:
    symbol = LAWS[law]["symbol"]
    form = f"a·({symbol}/{symbol}0)^(−b)" + (" + c" if LAWS[law]["offset"] else "")
    fit = entry.get("fit")
    if fit is None:
        return f"| {law} | {form} | {len(entry.get('x', []))} | not fitted: {entry.get('error')} | | | | | |"
    ci = fit["b_ci"]
    ci_txt = "–" if ci[0] is None or not math.isfinite(ci[0]) else f"[{ci[0]:.3g}, {ci[1]:.3g}]"
    c_txt = _fmt(fit["c"], 4) if fit["offset"] else "0 (fixed)"
    return (f"| {law} | {form} | {fit['n']} | **{fit['b']:.4g}** | {ci_txt} | {_fmt(fit['a'], 4)} "
            f"| {c_txt} | {_sci(fit['x0'])} | {_fmt(fit['r2'], 4)} | {fit['rmse_log']:.3g} |")


def render_markdown(grid: ScalingGrid, results: list[dict], fits: dict, failures: list[dict],
                    missing: list[str]) -> str:
    loss = grid.fit.loss
    r0 = grid.recipe
    lines = [f"# Scaling study: {grid.name}", ""]
    lines.append(f"{len(results)} finished point(s), {len(failures)} failed, {len(missing)} not run yet.")
    lines += ["", "## Setup", ""]
    if results:
        d = results[0]["data"]
        lines.append(f"- data: `{grid.data.source}`; validation loss on {d['valid_loss_examples']} held-out "
                     f"examples, training loss on {d['train_loss_examples']} training examples, both at batch "
                     f"size {d['loss_batch_size']} on views fixed once (comparable across points and batch sizes)")
    lines.append(f"- recipe (every point): CLUE loss alone for {r0.clue_epochs} epoch(s), views `{r0.clue_views}` "
                 f"(crop {r0.clue_crop}), τ = {r0.clue_temperature}, projection {r0.clue_projection_dim}, "
                 f"{r0.optimizer} lr {r0.learning_rate}, seed {r0.seed}; encoder dropout {r0.tower.sequence.dropout}, "
                 f"pooling `{r0.tower.sequence.pooling}`, item features {r0.tower.sequence.item_features}")
    if grid.probe.mode == "off":
        lines.append("- recall probe: off")
    else:
        lines.append(f"- recall probe: `{grid.probe.mode}`, {r0.epochs} retrieval epoch(s) after the contrastive "
                     f"ones, then exact recall@{grid.probe.recall_k} on the test split (one query per test user; "
                     f"head = top {grid.eval.head_share:.0%} of items by training count); probe compute is not in C")
    lines.append(f"- laws fitted to the **{loss}** loss; N = non-embedding encoder parameters (embedding tables "
                 "and the projection head excluded); C = 3·[Σ_views (2N·t + 4ℓd·t² + 2P) + Σ_batches 2b²p] "
                 "(t = valid tokens of a view, ℓ layers, d width, P projection-head parameters, p its width, "
                 "b batch size; see `twotower/studies/scaling/flops.py`)")
    lines.append(f"- fit: a·(x/x0)^(−b) + c by least squares in log space (scipy curve_fit, b ∈ [0, 5], "
                 f"c ∈ [0, min loss]); {grid.fit.confidence:.0%} residual-bootstrap intervals from "
                 f"{grid.fit.bootstrap} resamples; R² and RMSE in log space")
    lines += ["", "## Fitted laws", "",
              "| law | form | points | b | b interval | a | c | x0 | R² | RMSE (log) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_law_row(law, fits[law]) for law in LAWS if law in fits]
    lines += ["", "CLUE (Cheng et al., arXiv 2111.11294) reports the training loss falling as a power law of "
              "compute (a straight line on log-log axes: compare `compute_pure`'s R² with `compute`'s) and that "
              "batch size and model size must grow together (see the batch table below)."]
    lines += ["", "## Points", ""]
    table = points_table(results)
    if len(table):
        k = grid.probe.recall_k
        lines += [f"| point | ℓ×d | N | emb. params | D | L | B | epochs | C (FLOPs) | wall s | train loss (running) "
                  f"| train loss | valid loss | recall@{k} | head | tail |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, row in table.iterrows():
            lines.append(
                f"| `{row['key']}` | {row['layers']}×{row['width']} | {row['N']:,} | {row['embedding_params']:,} "
                f"| {row['D']:,} | {row['L']} | {row['B']} | {row['epochs']} | {row['flops']:.3g} | {row['wall_s']:.0f} "
                f"| {_fmt(row['loss_train_running'])} | {_fmt(row['loss_train'])} | {_fmt(row['loss_valid'])} "
                f"| {_fmt(row['recall_overall'], 3)} | {_fmt(row['recall_head'], 3)} | {_fmt(row['recall_tail'], 3)} |")
    frontier = fits.get("compute", {})
    if frontier.get("fit"):
        fit = frontier["fit"]
        lines += ["", "## Compute frontier and residuals", "",
                  f"L(C) = {fit['formula'].replace('x', 'C')}; residual = log(loss) − log(fit).", "",
                  "| checkpoint (point@epoch) | C | loss | residual |", "|---|---|---|---|"]
        for label, x, y, res in zip(frontier["labels"], fit["x"], fit["y"], fit["residuals"]):
            lines.append(f"| `{label}` | {x:.3g} | {y:.4g} | {res:+.3g} |")
    for axis, title in (("batch_size", "Batch size × model size"), ("max_history", "Sequence length")):
        table = axis_table(results, axis, loss)
        if not len(table):
            continue
        sym = _AXIS_NAMES[axis]
        lines += ["", f"## {title} (final {loss} loss of points equal on the other axes)", "",
                  "| model, other axes | " + " | ".join(f"{sym}={v}" for v in table.columns) + f" | best {sym} |",
                  "|---|" + "---|" * (len(table.columns) + 1)]
        for label, row in table.iterrows():
            lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in row.values) + f" | {row.idxmin()} |")
    lines += ["", "## Plots", ""] + [f"![{p[:-4]}]({p})" for p in PLOTS]
    notes = reading_notes(results, fits, loss)
    if notes:
        lines += ["", "## Reading notes (generated)", ""] + [f"- {n}" for n in notes]
    if failures or missing:
        lines += ["", "## Not finished", ""]
        lines += [f"- `{f['key']}` failed: {f.get('error', '').strip().splitlines()[-1] if f.get('error') else '?'}"
                  for f in failures]
        lines += [f"- `{key}` not run yet" for key in missing]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, grid: ScalingGrid, results: list[dict], fits: dict,
                 failures: list[dict] = (), missing: list[str] = ()) -> Path:
    """Write the plots, points.csv, fits.json and report.md into ``out_dir``; returns report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loss = grid.fit.loss
    plot_loss_vs_compute(results, fits, loss, out / PLOTS[0], to_dict(grid.sweep.base))
    plot_recall_vs_compute(results, out / PLOTS[1])
    plot_params_data(fits, out / PLOTS[2])
    plot_loss_vs_batch(results, loss, out / PLOTS[3])
    atomic_write_text(out / "points.csv", points_table(results).to_csv(index=False))
    atomic_write_json(out / "fits.json", json.loads(json.dumps(fits, default=_json_safe)))
    return atomic_write_text(out / "report.md", render_markdown(grid, results, fits, list(failures), list(missing)))


def _json_safe(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


__all__ = ["write_report", "render_markdown", "points_table", "axis_table", "reading_notes", "checkpoints"]
