"""eval.report: CI formatting, Markdown tables with reference rows, PNG plots."""
import math

import numpy as np
import pytest

from eval import EvalConfig, compare, evaluate_vectors
from eval.baselines import baseline_results
from eval.report import (comparison_markdown, format_ci, markdown_table, plot_comparison, plot_recall_by_decile,
                         write_report)
from eval.synthetic import planted_problem

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results():
    p = planted_problem(num_users=150, num_items=300, dim=8, clusters=6, seed=5)
    cfg = EvalConfig(ks=(10, 50), bootstrap_samples=50)
    model = evaluate_vectors(p.query_vectors, p.item_vectors, p.test_cases, p.user_items, p.train_counts, cfg,
                             name="model")
    return [model] + baseline_results(p.test_cases, p.user_items, p.train_counts, cfg, include=("popularity", "random"))


def test_format_ci():
    assert format_ci(0.12345, 0.1, 0.15) == "0.123 [0.100, 0.150]"
    assert format_ci(0.5) == "0.500"
    assert format_ci(math.nan, 0.1, 0.2) == "–"
    assert format_ci(1234.5, 1000.0, 1500.0) == "1234.5 [1000.0, 1500.0]"


def test_markdown_table_has_a_row_per_run_and_slice(results):
    text = markdown_table(results)
    lines = text.strip().splitlines()
    assert lines[0] == "| run | slice | queries | cases | R@10 | R@50 | NDCG@10 | MRR@50 |"
    n_slices = len(results[0].summary.query("source == 'exact' and family in ['overall', 'popularity', 'cold', 'activity']"))
    assert len(lines) == 2 + n_slices * 3
    assert any(line.startswith("| popularity | popularity/head |") for line in lines)
    overall = next(line for line in lines if line.startswith("| model | overall/all |"))
    r10 = results[0].summary.query("source == 'exact' and family == 'overall'").iloc[0]
    assert format_ci(r10["recall@10"], r10["recall@10_lo"], r10["recall@10_hi"]) in overall


def test_plots_and_report_are_written(results, tmp_path):
    path = plot_recall_by_decile(results, tmp_path / "deciles.png", k=10)
    assert path.read_bytes()[:8] == PNG
    table = compare(results[0], results[1])
    md = comparison_markdown(table, metrics=["recall@10"])
    assert "| slice | metric | queries | model | popularity | A − B [CI] | CI excludes 0 |" in md
    assert plot_comparison(table, tmp_path / "ab.png", "recall@10").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="no rows for metric 'recall@7'"):
        plot_comparison(table, tmp_path / "x.png", "recall@7")
    report = write_report(results, tmp_path)
    text = report.read_text()
    assert "## Exact retrieval" in text and "recall_by_decile.png" in text and "| random |" in text
    assert (tmp_path / "recall_by_decile.png").read_bytes()[:8] == PNG


def test_decile_plot_needs_deciles(tmp_path):
    p = planted_problem(num_users=50, num_items=100, dim=4, clusters=3, seed=0)
    r = evaluate_vectors(p.query_vectors, p.item_vectors, p.test_cases, p.user_items, p.train_counts,
                         EvalConfig(ks=(5,), bootstrap_samples=0, deciles=False))
    with pytest.raises(ValueError, match="has no decile slices; evaluate with deciles=True"):
        plot_recall_by_decile([r], tmp_path / "d.png")
    assert np.isnan(r.summary["recall@5_lo"]).all()  # no bootstrap -> no CIs
    assert "[" not in markdown_table([r]).splitlines()[2]
