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


def test_plots_and_report_are_written(results, tmp_path, saved_figures):
    import eval.report
    from matplotlib.collections import PathCollection

    from tests.conftest import check_png_plot

    figures = saved_figures(eval.report)
    path = plot_recall_by_decile(results, tmp_path / "deciles.png", k=10)
    check_png_plot(path, min_size=(500, 300), max_size=(1000, 700))  # 7 × 4 in at 110 dpi, tight box
    # the plotted series are the data: one line per run, x = decile 1..10, y = that run's recall@10 per decile
    (ax,) = figures["deciles.png"].axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [r.name for r in results] == ["model", "popularity", "random"]
    for line, r in zip(lines, results):
        want = r.summary.query("source == 'exact' and family == 'decile'")["recall@10"].to_numpy(float)
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 11))
        np.testing.assert_allclose(line.get_ydata(), want)
    assert len(set(np.round(lines[0].get_ydata(), 6))) > 3  # the model's line is not flat: the check bites
    table = compare(results[0], results[1])
    md = comparison_markdown(table, metrics=["recall@10"])
    assert "| slice | metric | queries | model | popularity | A − B [CI] | CI excludes 0 |" in md
    check_png_plot(plot_comparison(table, tmp_path / "ab.png", "recall@10"), min_size=(500, 300),
                   max_size=(1000, 2000))
    # one point per slice row of the table, at x = A − B, in table order from the top
    (ax,) = figures["ab.png"].axes
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    rows = table[table["metric"] == "recall@10"]
    offsets = np.asarray(points.get_offsets())
    assert len(offsets) == len(rows) > 10
    np.testing.assert_allclose(offsets[:, 0], rows["diff"].to_numpy(float))
    np.testing.assert_array_equal(offsets[:, 1], np.arange(len(rows))[::-1])
    assert [t.get_text() for t in ax.get_yticklabels()] == (rows["family"] + "/" + rows["slice"]).tolist()
    with pytest.raises(ValueError, match="no rows for metric 'recall@7'"):
        plot_comparison(table, tmp_path / "x.png", "recall@7")
    report = write_report(results, tmp_path)
    text = report.read_text()
    assert "## Exact retrieval" in text and "recall_by_decile.png" in text and "| random |" in text
    check_png_plot(tmp_path / "recall_by_decile.png", min_size=(500, 300), max_size=(1000, 700))


def test_decile_plot_needs_deciles(tmp_path):
    p = planted_problem(num_users=50, num_items=100, dim=4, clusters=3, seed=0)
    r = evaluate_vectors(p.query_vectors, p.item_vectors, p.test_cases, p.user_items, p.train_counts,
                         EvalConfig(ks=(5,), bootstrap_samples=0, deciles=False))
    with pytest.raises(ValueError, match="has no decile slices; evaluate with deciles=True"):
        plot_recall_by_decile([r], tmp_path / "d.png")
    assert np.isnan(r.summary["recall@5_lo"]).all()  # no bootstrap -> no CIs
    assert "[" not in markdown_table([r]).splitlines()[2]
