"""The SSL study report: gain of every variant over the baseline, per slice and supervision fraction.

Gains are paired and pooled over seeds: for each seed, the variant's and the baseline's per-query recall on
the same test queries (they trained on the same subset) are stacked as units ``(seed, query)``, and one
paired bootstrap over those units (``eval.bootstrap.bootstrap_difference``) gives the mean difference and
its interval. The verdict for a slice is read off the intervals, never assumed:

  gain          the interval lies above 0
  loss          the interval lies below 0
  no effect     the interval spans 0 and lies within ±``negligible`` (an effect, if any, is that small)
  inconclusive  the interval spans 0 and is wider than that (this size cannot tell)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from core.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from eval.bootstrap import bootstrap_difference, nan_means, unit_matrix
from eval.result import EvalResult
from twotower.studies.points import json_safe, point_dir
from twotower.studies.ssl.grid import SSLGrid, SSLPoint, point_key
from twotower.studies.ssl.point import EVAL_DIR

FAMILIES = ("overall", "popularity", "support", "activity")
NEGLIGIBLE = 0.01


def verdict(lo: float, hi: float, negligible: float = NEGLIGIBLE) -> str:
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "n/a"
    if lo > 0:
        return "gain"
    if hi < 0:
        return "loss"
    if -negligible <= lo and hi <= negligible:
        return "no effect"
    return "inconclusive"


def _load(out_dir: Path, grid: SSLGrid, point: SSLPoint) -> EvalResult | None:
    directory = point_dir(out_dir, point_key(grid, point)) / EVAL_DIR
    if not (directory / "manifest.json").is_file():
        return None
    return EvalResult.load(directory)


def gains_table(out_dir: str | Path, grid: SSLGrid, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (dataset, fraction, variant, family, slice, metric): baseline mean, variant mean, pooled
    paired gain with its interval, seeds and units used, and the verdict."""
    out_dir = Path(out_dir)
    s = grid.sweep
    metrics = metrics or [f"recall@{k}" for k in grid.eval.ks]
    variants = [(f, v) for f in s.fractions for v in s.variants if v != s.baseline]
    variants += [(s.fractions[0], v) for v in s.scarce_variants]
    rows = []
    for entry in grid.datasets:
        for fraction, variant in variants:
            stacks_a, stacks_b, seeds_used, groups = [], [], [], None
            for seed in s.seeds:
                base = _load(out_dir, grid, SSLPoint(entry.name, fraction, s.baseline, seed))
                other = _load(out_dir, grid, SSLPoint(entry.name, fraction, variant, seed))
                if base is None or other is None:
                    continue
                summary = base.summary[(base.summary["source"] == "exact") & base.summary["family"].isin(FAMILIES)]
                these = list(zip(summary["family"], summary["slice"]))
                groups = these if groups is None else groups + [g for g in these if g not in groups]
                seeds_used.append((seed, base, other))
            if not seeds_used:
                continue
            for seed, base, other in seeds_used:
                units = pd.Index(pd.unique(base.cases["query_id"]))
                pb = base.per_query[base.per_query["source"] == "exact"]
                pv = other.per_query[other.per_query["source"] == "exact"]
                stacks_b.append(unit_matrix(pb, groups, metrics, units))
                stacks_a.append(unit_matrix(pv, groups, metrics, units))
            va, vb = np.vstack(stacks_a), np.vstack(stacks_b)
            diff, lo, hi = bootstrap_difference(va, vb, grid.eval.bootstrap_samples, grid.eval.seed,
                                                grid.eval.confidence)
            mean_a, mean_b = nan_means(va), nan_means(vb)
            n_units = (~np.isnan(va) & ~np.isnan(vb)).sum(axis=0)
            for g, (family, slc) in enumerate(groups):
                for j, metric in enumerate(metrics):
                    c = g * len(metrics) + j
                    rows.append({"dataset": entry.name, "fraction": fraction, "variant": variant, "family": family,
                                 "slice": slc, "metric": metric, "seeds": len(seeds_used), "units": int(n_units[c]),
                                 "baseline": mean_b[c], "value": mean_a[c], "gain": diff[c], "lo": lo[c],
                                 "hi": hi[c], "verdict": verdict(lo[c], hi[c])})
    return pd.DataFrame(rows, columns=["dataset", "fraction", "variant", "family", "slice", "metric", "seeds",
                                       "units", "baseline", "value", "gain", "lo", "hi", "verdict"])


def _cell(row) -> str:
    if row is None or np.isnan(row["gain"]):
        return "–"
    lo, hi = row["lo"], row["hi"]
    ci = "" if np.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]"
    return f"{row['gain']:+.3f}{ci}"


def markdown(grid: SSLGrid, table: pd.DataFrame, metric: str, failures: list, missing: list, command: str) -> str:
    lines = [f"# SSL study `{grid.name}`", "",
             f"Command: `{command}`", "",
             f"Gain = variant − `{grid.sweep.baseline}` in {metric} (exact search), paired per test query, pooled over "
             f"seeds {list(grid.sweep.seeds)}; {int(grid.eval.confidence * 100)}% paired-bootstrap intervals "
             f"({grid.eval.bootstrap_samples} resamples). Item slices use the training counts of the subset each model "
             f"saw: `support/n<1` = cold items (no training event), `support/n1-3` = few-shot. Verdict per cell: gain / "
             f"loss (interval excludes 0), no effect (interval within ±{NEGLIGIBLE}), inconclusive (wider).", ""]
    sub = table[table["metric"] == metric]
    for dataset, dsub in sub.groupby("dataset", sort=False):
        slices = list(dict.fromkeys(zip(dsub["family"], dsub["slice"])))
        lines += [f"## {dataset}", "", "| fraction | variant | seeds | " + " | ".join(f"{f}/{s}" for f, s in slices) + " |",
                  "|---:|---|---:|" + "---:|" * len(slices)]
        base_rows = {}
        for (fraction, variant), vsub in dsub.groupby(["fraction", "variant"], sort=False):
            by = {(r["family"], r["slice"]): r for r in vsub.to_dict("records")}
            seeds = int(vsub["seeds"].iloc[0])
            lines.append(f"| {fraction:g} | {variant} | {seeds} | " + " | ".join(_cell(by.get(k)) for k in slices) + " |")
            base_rows.setdefault(fraction, by)
        lines += ["", f"Baseline (`{grid.sweep.baseline}`) {metric} and cases per slice:", "",
                  "| fraction | " + " | ".join(f"{f}/{s}" for f, s in slices) + " |", "|---:|" + "---:|" * len(slices)]
        for fraction, by in base_rows.items():
            cells = [f"{by[k]['baseline']:.3f} ({by[k]['units']})" if k in by else "–" for k in slices]
            lines.append(f"| {fraction:g} | " + " | ".join(cells) + " |")
        lines += ["", "Verdicts at the scarcest fraction "
                  f"({min(dsub['fraction']):g}) and with full supervision ({max(dsub['fraction']):g}):", ""]
        for variant in dict.fromkeys(dsub["variant"]):
            for fraction in sorted({min(dsub["fraction"]), max(dsub["fraction"])}):
                vv = dsub[(dsub["variant"] == variant) & (dsub["fraction"] == fraction)]
                if vv.empty:
                    continue
                parts = [f"{r['family']}/{r['slice']} {r['verdict']} ({_cell(r)})" for r in vv.to_dict("records")]
                lines.append(f"- `{variant}` at {fraction:g}: " + "; ".join(parts))
        lines.append("")
    if failures or missing:
        lines += ["## Points not finished", ""]
        lines += [f"- failed: `{f.get('key')}`" for f in failures]
        lines += [f"- missing: `{k}`" for k in missing]
        lines.append("")
    return "\n".join(lines)


def plot(table: pd.DataFrame, metric: str, path: Path, slices=(("overall", "all"), ("popularity", "head"),
                                                               ("support", "n<1"), ("support", "n1-3"))):
    """Gain vs supervision fraction, one panel per slice, one line (with interval bars) per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = table[table["metric"] == metric]
    slices = [s for s in slices if ((sub["family"] == s[0]) & (sub["slice"] == s[1])).any()]
    fig, axes = plt.subplots(1, max(1, len(slices)), figsize=(4.2 * max(1, len(slices)), 3.6), squeeze=False)
    for ax, (family, slc) in zip(axes[0], slices):
        part = sub[(sub["family"] == family) & (sub["slice"] == slc)]
        for (dataset, variant), line in part.groupby(["dataset", "variant"], sort=False):
            line = line.sort_values("fraction")
            if line["fraction"].nunique() < 2:
                continue
            err = np.vstack([line["gain"] - line["lo"], line["hi"] - line["gain"]])
            ax.errorbar(line["fraction"], line["gain"], yerr=np.nan_to_num(err), marker="o", capsize=3,
                        label=f"{dataset}: {variant}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{family}/{slc}")
        ax.set_xlabel("share of training events kept")
        ax.set_ylabel(f"gain in {metric}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return fig


def write_report(out_dir: str | Path, grid: SSLGrid, failures: list, missing: list, command: str) -> Path:
    out_dir = Path(out_dir)
    table = gains_table(out_dir, grid)
    metric = f"recall@{grid.eval.ks[-1]}"
    atomic_write_json(out_dir / "gains.json", json_safe(table.to_dict("records")))
    atomic_write_text(out_dir / "report.md", markdown(grid, table, metric, failures, missing, command))
    if not table.empty:
        plot(table, metric, out_dir / "gain_vs_fraction.png")
    return out_dir / "report.md"
