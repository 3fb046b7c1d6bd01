"""Human-facing outputs: Markdown tables and PNG plots (matplotlib, no display needed).

  markdown_table(results)         one row per (run, slice): queries, cases, metrics "v [lo, hi]"
  coverage_table(results)         catalogue coverage@K per run (a set metric: no CI)
  index_table(result)             the index's own recall@K vs exact, per slice
  comparison_markdown(df)         the ``eval.compare.compare`` table, differences with CIs
  plot_recall_by_decile(...)      recall@K by item-popularity decile, one line per run, CI band
  plot_comparison(...)            A - B with its CI per slice, for one metric
  write_report(results, dir)      report.md (+ recall_by_decile.png) for one or more runs

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot global state) and
written atomically.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from eval.result import EvalResult
from core.artifacts import atomic_write_bytes, atomic_write_text

DEFAULT_FAMILIES = ("overall", "popularity", "cold", "support", "activity")
SHORT = {"recall": "R", "hitrate": "HR", "ndcg": "NDCG", "mrr": "MRR", "mean_pop": "pop", "index_recall": "idxR"}


def _short(metric: str) -> str:
    base, _, k = metric.partition("@")
    return f"{SHORT.get(base, base)}@{k}" if k else SHORT.get(base, base)


def format_ci(value: float, lo: float = math.nan, hi: float = math.nan, digits: int = 3) -> str:
    """``0.123 [0.110, 0.135]``; the value alone without a CI; an en dash when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 100:
        fmt = "{:.1f}"
    else:
        fmt = f"{{:.{digits}f}}"
    text = fmt.format(value)
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


def default_metrics(result: EvalResult, source: str = "exact") -> list[str]:
    """Recall@K for every K, NDCG@min(ks), MRR; for index_vs_exact, every index_recall@K."""
    ks = result.config.ks
    if source == "index_vs_exact":
        return [f"index_recall@{k}" for k in ks]
    return [f"recall@{k}" for k in ks] + [f"ndcg@{ks[0]}", f"mrr@{ks[-1]}"]


def _md(header: list[str], rows: list[list[str]], align_right_from: int) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(("---" if i < align_right_from else "---:") for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown_table(results: Sequence[EvalResult], source: str = "exact",
                   families: Sequence[str] = DEFAULT_FAMILIES, metrics: Sequence[str] | None = None) -> str:
    """Markdown table: one row per run and slice of ``families``; cells "value [lo, hi]"."""
    results = list(results)
    metrics = list(metrics or default_metrics(results[0], source))
    header = ["run", "slice", "queries", "cases"] + [_short(m) for m in metrics]
    rows = []
    for r in results:
        if source not in r.sources:
            continue
        sub = r.summary[(r.summary["source"] == source) & r.summary["family"].isin(list(families))]
        sub = sub.assign(_f=sub["family"].map({f: i for i, f in enumerate(families)})).sort_values("_f", kind="stable")
        for rec in sub.to_dict("records"):
            cells = [r.name, f"{rec['family']}/{rec['slice']}", str(rec["n_queries"]), str(rec["n_cases"])]
            for m in metrics:
                cells.append(format_ci(rec.get(m, math.nan), rec.get(f"{m}_lo", math.nan), rec.get(f"{m}_hi", math.nan))
                             if m in rec else "–")
            rows.append(cells)
    return _md(header, rows, 2)


def coverage_table(results: Sequence[EvalResult], source: str = "exact") -> str:
    """Markdown: catalogue coverage@K per run."""
    results = [r for r in results if source in r.info.get("coverage", {})]
    if not results:
        return ""
    keys = list(results[0].info["coverage"][source])
    rows = [[r.name] + [f"{r.info['coverage'][source].get(k, math.nan):.4f}" for k in keys] for r in results]
    return _md(["run"] + keys, rows, 1)


def comparison_markdown(table: pd.DataFrame, metrics: Sequence[str] | None = None,
                        families: Sequence[str] = DEFAULT_FAMILIES) -> str:
    """Markdown of a ``compare`` table: A, B, A - B [lo, hi], and a mark where the CI excludes 0."""
    sub = table[table["family"].isin(list(families))]
    if metrics:
        sub = sub[sub["metric"].isin(list(metrics))]
    header = ["slice", "metric", "queries", str(table.attrs.get("a", "A")), str(table.attrs.get("b", "B")),
              "A − B [CI]", "CI excludes 0"]
    rows = [[f"{r['family']}/{r['slice']}", r["metric"], str(r["n_queries"]), format_ci(r["a"]), format_ci(r["b"]),
             format_ci(r["diff"], r["lo"], r["hi"], digits=4), "yes" if r["excludes_zero"] else "no"]
            for r in sub.to_dict("records")]
    return _md(header, rows, 2)


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_recall_by_decile(results: Sequence[EvalResult], path: str | Path, k: int | None = None,
                          source: str = "exact") -> Path:
    """PNG: recall@k by target popularity decile (d01 = most popular), one line per run, CI band."""
    results = [r for r in results if source in r.sources]
    if not results:
        raise ValueError(f"no result has source {source!r}")
    k = k or results[0].config.ks[-1]
    metric = f"recall@{k}"
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for r in results:
        sub = r.summary[(r.summary["source"] == source) & (r.summary["family"] == "decile")]
        if sub.empty:
            raise ValueError(f"run {r.name!r} has no decile slices; evaluate with deciles=True")
        if metric not in sub.columns:
            raise ValueError(f"run {r.name!r} has no {metric}; its ks are {list(r.config.ks)}")
        x = np.arange(1, len(sub) + 1)
        y = sub[metric].to_numpy(dtype=float)
        line, = ax.plot(x, y, marker="o", label=r.name)
        lo, hi = sub[f"{metric}_lo"].to_numpy(dtype=float), sub[f"{metric}_hi"].to_numpy(dtype=float)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
    first = results[0].summary
    n_cases = first[(first["source"] == source) & (first["family"] == "decile")]["n_cases"].tolist()
    ax.set_xticks(np.arange(1, 11))
    ax.set_xticklabels([f"d{i:02d}\nn={c}" for i, c in zip(range(1, 11), n_cases)], fontsize="small")
    ax.set_xlabel(f"target item popularity decile (d01 = most popular 10% of items; n = test cases, {results[0].name})")
    ax.set_ylabel(metric)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"{metric} by item popularity ({source})")
    return _save(fig, path)


def plot_comparison(table: pd.DataFrame, path: str | Path, metric: str,
                    families: Sequence[str] = ("overall", "popularity", "decile", "cold", "support", "activity")) -> Path:
    """PNG: A − B of ``metric`` per slice with its paired-bootstrap CI (horizontal error bars)."""
    sub = table[(table["metric"] == metric) & table["family"].isin(list(families))]
    if sub.empty:
        raise ValueError(f"comparison table has no rows for metric {metric!r}; it has {sorted(set(table['metric']))}")
    labels = (sub["family"] + "/" + sub["slice"]).tolist()
    y = np.arange(len(sub))[::-1]
    diff = sub["diff"].to_numpy(dtype=float)
    lo, hi = sub["lo"].to_numpy(dtype=float), sub["hi"].to_numpy(dtype=float)
    err = np.vstack([np.where(np.isnan(lo), 0, diff - lo), np.where(np.isnan(hi), 0, hi - diff)])
    colors = ["tab:green" if e and d > 0 else "tab:red" if e else "tab:gray"
              for e, d in zip(sub["excludes_zero"], diff)]
    fig = _figure(7.0, 0.32 * len(sub) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(diff, y, xerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=2)
    ax.scatter(diff, y, c=colors, zorder=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize="small")
    a, b = table.attrs.get("a", "A"), table.attrs.get("b", "B")
    ax.set_xlabel(f"{metric}: {a} − {b}  ({int(100 * table.attrs.get('confidence', 0.95))}% paired bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def write_report(results: Sequence[EvalResult], directory: str | Path, title: str | None = None) -> Path:
    """Write ``report.md`` (and ``recall_by_decile.png`` when deciles were computed) to ``directory``."""
    results = list(results)
    directory = Path(directory)
    first = results[0]
    cfg = first.config
    parts = [f"# {title or 'Evaluation: ' + ', '.join(r.name for r in results)}\n"]
    counts = first.info.get("counts", {})
    if counts:
        parts.append(
            f"{counts.get('num_cases')} test cases over {counts.get('num_test_queries')} queries, "
            f"{counts.get('num_items')} items; {counts.get('excluded_target_cases')} cases targeting an excluded "
            f"item ({counts.get('excluded_targets_policy')}), {counts.get('duplicate_cases_removed')} duplicates "
            f"removed. Metrics are means over queries; [lo, hi] = {int(round(100 * cfg.confidence))}% bootstrap CI "
            f"over queries ({cfg.bootstrap_samples} resamples, seed {cfg.seed}). head = top "
            f"{cfg.head_share:.0%} of items by training count (ties to the less popular tier).\n")
    slices = first.info.get("slices", {}).get("popularity", {}).get("n_items")
    if slices:
        parts.append("Items per popularity tier: " + ", ".join(f"{k} {v}" for k, v in slices.items()) + "\n")
    parts.append("## Exact retrieval\n")
    parts.append(markdown_table(results, "exact"))
    cov = coverage_table(results, "exact")
    if cov:
        parts.append("\nCatalogue coverage (exact top-K):\n\n" + cov)
    if any("index" in r.sources for r in results):
        parts.append("\n## Index retrieval\n")
        parts.append(markdown_table(results, "index"))
        parts.append("\n## Index recall vs exact top-K\n\nHere 'cases' are exact top-max(K) neighbours; item slices hold the neighbours in that slice, query slices the queries.\n\n")
        parts.append(markdown_table(results, "index_vs_exact", families=("overall", "popularity", "cold", "activity")))
    elif first.info.get("metadata", {}).get("index_skipped"):
        parts.append(f"\n## Index retrieval\n\nNot evaluated: {first.info['metadata']['index_skipped']}.\n")
    if cfg.deciles and all("decile" in r.info.get("slices", {}) for r in results):
        plot_recall_by_decile(results, directory / "recall_by_decile.png")
        parts.append(f"\n![recall@{cfg.ks[-1]} by popularity decile](recall_by_decile.png)\n")
    return atomic_write_text(directory / "report.md", "\n".join(parts))


def save_with_report(result: EvalResult, directory: str | Path) -> Path:
    """``result.save(directory)`` with ``report.md`` (and the decile plot) listed in its manifest."""
    return result.save(directory, extra_writer=lambda d: write_report([result], d))
