import io
import json

import numpy as np
import pandas as pd
import pytest

from tests.twotower.studies.scaling.conftest import fake_result
from twotower.studies.scaling.grid import ScalingGrid
from twotower.studies.scaling.laws import fit_laws
from twotower.studies.scaling.report import PLOTS, axis_table, points_table, reading_notes, render_markdown, write_report
from core.strict import from_dict

GRID = from_dict(ScalingGrid, {"name": "unit", "recipe": {"clue": "pretrain", "tower": {"user_encoder": "sequence"}},
                               "probe": {"recall_k": 50}, "fit": {"bootstrap": 20}})


def _law(c):
    return 0.8 + 3.0 * (c / 1e9) ** -0.3


def _results():
    out = []
    for w, b in ((8, 128), (16, 128), (32, 128), (64, 128), (8, 32), (64, 32)):
        out.append(fake_result(1, w, batch_size=b, key=f"w{w}-b{b}", loss=_law,
                               flops_per_epoch=1e8 * w * w / b * 10, recall=0.01 * w ** 0.5))
    out.append(fake_result(1, 16, max_history=20, key="w16-t20", loss=_law, flops_per_epoch=3e9))
    return out


def test_write_report_writes_every_artifact(tmp_path, saved_figures):
    import twotower.studies.scaling.report as report_module
    from tests.conftest import check_png_plot

    figures = saved_figures(report_module)
    results = _results()
    fits = fit_laws(results, "valid", bootstrap=20)
    path = write_report(tmp_path, GRID, results, fits)
    assert path == tmp_path / "report.md"
    for plot in PLOTS:  # a real picture of about the figure's size, not blank
        check_png_plot(tmp_path / plot, min_size=(400, 300), max_size=(1500, 700))
    _check_plotted_series(figures, results, fits)
    # save → load: the files hold what was computed
    assert json.loads((tmp_path / "fits.json").read_text()) == json.loads(json.dumps(fits))
    table = pd.read_csv(tmp_path / "points.csv")
    expected = points_table(results)
    assert list(table["key"]) == list(expected["key"])
    assert np.allclose(table["flops"], expected["flops"]) and np.allclose(table["loss_valid"], expected["loss_valid"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def _check_plotted_series(figures, results, fits):
    """The figures draw the data: read the series back from the matplotlib objects."""
    from matplotlib.container import ErrorbarContainer

    # loss against compute: one line per point (by N), through its curve's (flops, valid loss)
    (ax,) = figures["loss_vs_compute.png"].axes
    ordered = sorted(results, key=lambda r: r["params"]["non_embedding"])
    lines = ax.get_lines()
    for line, r in zip(lines, ordered):
        np.testing.assert_allclose(line.get_xdata(), [e["flops"] for e in r["curve"]])
        np.testing.assert_allclose(line.get_ydata(), [e["loss_valid"] for e in r["curve"]])
    fit_line = next(line for line in lines if str(line.get_label()).startswith("fit: b="))
    f = fits["compute"]["fit"]
    xs = np.asarray(fit_line.get_xdata())
    np.testing.assert_allclose(fit_line.get_ydata(), f["a"] * (xs / f["x0"]) ** (-f["b"]) + f["c"])
    assert len(lines) == len(results) + 3  # + the fit, the pure power law and the frontier
    # recall against compute: one error bar per point in each of overall / head / tail
    axes = figures["recall_vs_compute.png"].axes
    assert [a.get_title() for a in axes] == ["overall", "head", "tail"]
    for a, part in zip(axes, ("overall", "head", "tail")):
        bars = [c for c in a.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == len(results)
        for bar, r in zip(bars, results):
            x, y = bar.lines[0].get_data()
            assert (x[0], y[0]) == pytest.approx((r["compute"]["flops"], r["recall"][part]["value"]))
    # params / data: the best losses the fits were made from
    for a, law in zip(figures["loss_vs_params_data.png"].axes, ("params", "data")):
        best = [line for line in a.get_lines() if line.get_label() == "best loss reached"]
        if fits[law].get("x"):
            np.testing.assert_allclose(best[0].get_xdata(), fits[law]["x"])
            np.testing.assert_allclose(best[0].get_ydata(), fits[law]["y"])
        else:
            assert not best
    # batch size: one line per row of the batch-size axis table
    table = axis_table(results, "batch_size", "valid")
    (ax,) = figures["loss_vs_batch.png"].axes
    assert [line.get_label() for line in ax.get_lines()] == list(table.index) and len(table) >= 2
    for line, (_, row) in zip(ax.get_lines(), table.iterrows()):
        row = row.dropna()
        np.testing.assert_allclose(line.get_xdata(), row.index.astype(float))
        np.testing.assert_allclose(line.get_ydata(), row.to_numpy(float))


def test_markdown_holds_the_laws_the_points_and_the_tables():
    results = _results()
    fits = fit_laws(results, "valid", bootstrap=20)
    md = render_markdown(GRID, results, fits, failures=[{"key": "bad-point", "error": "Traceback\nValueError: x"}],
                         missing=["later-point"])
    b = fits["compute"]["fit"]["b"]
    assert b == pytest.approx(0.3, rel=0.01)                     # the planted law: exact points
    assert f"**{b:.4g}**" in md
    assert "| compute | a·(C/C0)^(−b) + c |" in md
    for r in results:
        assert f"`{r['key']}`" in md
    assert "## Batch size × model size" in md and "| 1x8, D=all, L=10 |" in md
    assert "## Sequence length" in md and "| 1x16, D=all, B=128 |" in md
    assert "recall@50" in md and "## Compute frontier and residuals" in md
    assert "`bad-point` failed: ValueError: x" in md and "`later-point` not run yet" in md


def test_axis_table_keeps_only_points_that_differ_in_that_axis():
    results = _results()
    table = axis_table(results, "batch_size", "valid")
    assert list(table.index) == ["1x8, D=all, L=10", "1x64, D=all, L=10"]
    assert list(table.columns) == [32, 128]
    assert table.loc["1x8, D=all, L=10", 32] == pytest.approx(results[4]["final"]["loss_valid"])
    assert axis_table(results, "max_history", "valid").shape == (1, 2)
    assert axis_table([], "batch_size", "valid").empty


def test_reading_notes_say_when_the_fit_is_poor_or_the_loss_rises():
    rng = np.random.default_rng(0)
    results = [fake_result(1, 8 * (i + 1), key=f"p{i}", flops_per_epoch=1e9 * (i + 1),
                           loss=lambda c, s=rng.uniform(1, 3): s) for i in range(6)]
    results[0]["curve"][-1]["loss_valid"] = 10.0   # rises at the last epoch
    fits = fit_laws(results, "valid", bootstrap=0)
    notes = reading_notes(results, fits, "valid")
    assert any("describes these points poorly" in n or "not fitted" in n for n in notes)
    assert any("rose again before the last epoch" in n and "p0" in n for n in notes)
    results[1]["notes"] = ["formula mismatch"]
    assert any(n == "p1: formula mismatch" for n in reading_notes(results, fits, "valid"))


def test_report_without_recall_or_fits_still_renders(tmp_path):
    results = [fake_result(recall=None, key="only")]
    fits = fit_laws(results, "valid", bootstrap=0)
    write_report(tmp_path, GRID, results, fits)
    md = (tmp_path / "report.md").read_text()
    assert "not fitted" in md and "`only`" in md
