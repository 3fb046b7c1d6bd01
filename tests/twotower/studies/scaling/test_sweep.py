import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from twotower.studies.scaling.grid import expand_points, load_grid, point_key
from twotower.studies.scaling.point import SCHEMA
from twotower.studies.scaling.report import PLOTS
from twotower.studies.points import ERROR, RESULT, point_dir
from twotower.studies.scaling.sweep import read_result, run_sweep, write_sweep_report

TINY = {
    "name": "tiny",
    "data": {"source": "synthetic",
             "synthetic": {"num_users": 150, "num_items": 120, "num_interactions": 1800, "seed": 0}},
    "recipe": {"clue": "pretrain", "clue_epochs": 1, "epochs": 1, "verbose": 0, "clue_projection_dim": 8,
               "tower": {"user_encoder": "sequence", "id_embedding_dim": 8, "feature_embedding_dim": 4,
                         "output_dim": 8, "hidden_units": [], "sequence": {"dropout": 0.0, "item_features": False}}},
    "sweep": {"base": {"model": {"num_layers": 1, "width": 8}, "max_history": 6, "batch_size": 64},
              "blocks": [{"models": [{"num_layers": 1, "width": 8}, {"num_layers": 1, "width": 16}]}]},
    "probe": {"mode": "finetune", "recall_k": 10},
    "validation": {"batch_size": 32, "max_examples": 64},
    "eval": {"ks": [10], "bootstrap_samples": 0, "deciles": False},
    "fit": {"bootstrap": 0},
}


def _grid_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def test_two_point_sweep_runs_end_to_end_then_resume_skips_both(tmp_path, saved_figures):
    import twotower.studies.scaling.report as report_module
    from tests.conftest import check_png_plot

    figures = saved_figures(report_module)
    grid_path = _grid_file(tmp_path)
    out = tmp_path / "out"
    lines = []
    outcome = run_sweep(grid_path, out, log=lines.append)
    grid = load_grid(grid_path)
    keys = [point_key(grid, p) for p in expand_points(grid)]
    assert outcome.ran == keys and not outcome.failures and not outcome.missing
    for key, result in zip(keys, outcome.results):
        assert read_result(out, key) == result and result["schema"] == SCHEMA
        assert result["params"]["formula_matches"]
        (epoch,) = result["curve"]
        assert epoch["flops"] == pytest.approx(result["compute"]["flops_per_epoch"]["total"])
        assert epoch["flops"] > 0
        assert all(np.isfinite(epoch[k]) and epoch[k] > 0 for k in ("loss_train_running", "loss_valid", "loss_train"))
        assert result["data"]["valid_loss_examples"] == 64 and result["data"]["loss_batch_size"] == 32
        for part in ("overall", "head", "tail"):
            assert 0.0 <= result["recall"][part]["value"] <= 1.0
        assert result["recall"]["overall"]["cases"] == 150
    small, big = outcome.results
    assert big["params"]["non_embedding"] > small["params"]["non_embedding"]
    assert big["compute"]["flops"] > small["compute"]["flops"]
    # the validation loss sees the same examples and views at every point
    assert small["data"]["valid_loss_examples"] == big["data"]["valid_loss_examples"]
    report = (out / "report.md").read_text()
    assert all(key in report for key in keys) and "## Fitted laws" in report and "not fitted" in report
    for plot in PLOTS:  # a real picture of about the figure's size, not blank
        check_png_plot(out / plot, min_size=(400, 300), max_size=(1500, 700))
    # the loss plot draws the two points' curves: (flops, valid loss) per epoch, smaller model first
    lines = figures["loss_vs_compute.png"].axes[0].get_lines()
    for line, result in zip(lines, (small, big)):
        np.testing.assert_allclose(line.get_xdata(), [e["flops"] for e in result["curve"]])
        np.testing.assert_allclose(line.get_ydata(), [e["loss_valid"] for e in result["curve"]])
    recall_axes = figures["recall_vs_compute.png"].axes
    for ax, part in zip(recall_axes, ("overall", "head", "tail")):  # one error bar per point
        got = sorted(float(bar.lines[0].get_data()[1][0]) for bar in ax.containers)
        assert got == pytest.approx(sorted(r["recall"][part]["value"] for r in (small, big)))
    assert json.loads((out / "fits.json").read_text()).keys() == outcome.fits.keys()
    assert len((out / "points.csv").read_text().strip().splitlines()) == 3

    again = run_sweep(grid_path, out, log=lines.append, run_point=_must_not_run)
    assert again.ran == [] and again.skipped == keys
    assert again.results == outcome.results


def _must_not_run(*args, **kwargs):
    raise AssertionError("a finished point was run again")


def _fake_result(grid, point, key):
    n = point.model.width * 100
    curve = [{"epoch": e, "flops": 1e9 * e * point.model.width, "seconds": 1.0, "loss_train_running": 3.0 / e,
              "loss_valid": 2.0 / e + 1.0 / point.model.width, "loss_train": 1.5 / e, "examples_seen": 10 * e}
             for e in (1, 2)]
    return {"schema": SCHEMA, "key": key, "name": point.name, "label": point.model.label,
            "point": {"model": {"num_layers": point.model.num_layers, "width": point.model.width,
                                "num_heads": point.model.num_heads, "ff_dim": point.model.ff_dim},
                      "interactions": point.interactions, "max_history": point.max_history,
                      "batch_size": point.batch_size},
            "params": {"non_embedding": n, "embedding": 10, "counted_non_embedding": n, "formula_matches": True},
            "data": {"train_interactions": 100, "valid_loss_examples": 64, "train_loss_examples": 64,
                     "loss_batch_size": 32},
            "compute": {"flops": curve[-1]["flops"], "epochs": 2}, "curve": curve,
            "final": {k: curve[-1][k] for k in ("loss_train_running", "loss_valid", "loss_train")},
            "wall_seconds": {"total": 2.0, "contrastive_steps": 2.0}, "cpu_seconds": {"total": 2.0},
            "recall": None, "notes": []}


class _FakeRunner:
    """Stands in for the training; fails on the points named in ``fail``."""

    def __init__(self, fail=()):
        self.fail = set(fail)
        self.calls = []

    def __call__(self, grid, point, dataset, split, log):
        key = point_key(grid, point)
        self.calls.append(key)
        if key in self.fail:
            raise RuntimeError(f"boom in {key}")
        return _fake_result(grid, point, key)


@pytest.fixture
def no_plots(monkeypatch):
    """The resume tests check the bookkeeping; the report is written without its (slow) plots."""
    from twotower.studies.scaling import report, sweep

    def markdown_only(out_dir, grid, results, fits, failures=(), missing=()):
        return report.atomic_write_text(Path(out_dir) / "report.md",
                                        report.render_markdown(grid, results, fits, list(failures), list(missing)))

    monkeypatch.setattr(sweep, "write_report", markdown_only)


def _three_point_grid(tmp_path):
    blocks = [{"models": [{"num_layers": 1, "width": w} for w in (8, 16, 32)]}]
    return _grid_file(tmp_path, sweep={**TINY["sweep"], "blocks": blocks},
                      data={"source": "synthetic", "synthetic": {"num_users": 10, "num_items": 10,
                                                                 "num_interactions": 40}})


def test_resume_reruns_failed_and_crashed_points_only(tmp_path, no_plots):
    grid_path = _three_point_grid(tmp_path)
    grid = load_grid(grid_path)
    keys = [point_key(grid, p) for p in expand_points(grid)]
    out = tmp_path / "out"

    first = _FakeRunner(fail={keys[1]})
    outcome = run_sweep(grid_path, out, log=lambda m: None, run_point=first)
    assert first.calls == keys
    assert [f["key"] for f in outcome.failures] == [keys[1]] and "boom" in outcome.failures[0]["error"]
    assert (point_dir(out, keys[1]) / ERROR).is_file() and not (point_dir(out, keys[1]) / RESULT).exists()
    assert "failed" in (out / "report.md").read_text()

    # a point that crashed mid-run: its directory exists, without result.json
    (point_dir(out, keys[2]) / RESULT).unlink()
    second = _FakeRunner()
    outcome = run_sweep(grid_path, out, log=lambda m: None, run_point=second)
    assert second.calls == [keys[1], keys[2]]
    assert outcome.skipped == [keys[0]] and outcome.ran == [keys[1], keys[2]] and not outcome.failures
    assert not (point_dir(out, keys[1]) / ERROR).exists()
    assert outcome.fits["compute"]["fit"] is None or outcome.fits["compute"]["x"]

    third = _FakeRunner()
    run_sweep(grid_path, out, resume=False, log=lambda m: None, run_point=third)
    assert third.calls == keys


def test_a_result_of_another_key_or_schema_is_not_reused(tmp_path, no_plots):
    grid_path = _three_point_grid(tmp_path)
    grid = load_grid(grid_path)
    key = point_key(grid, expand_points(grid)[0])
    out = tmp_path / "out"
    path = point_dir(out, key) / RESULT
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": SCHEMA, "key": "someone-else"}))
    assert read_result(out, key) is None
    path.write_text("{ truncated")
    assert read_result(out, key) is None
    runner = _FakeRunner()
    run_sweep(grid_path, out, log=lambda m: None, run_point=runner)
    assert key in runner.calls


def test_report_only_trains_nothing(tmp_path, no_plots):
    grid_path = _three_point_grid(tmp_path)
    out = tmp_path / "out"
    run_sweep(grid_path, out, log=lambda m: None, run_point=_FakeRunner())
    (out / "report.md").unlink()
    outcome = write_sweep_report(grid_path, out, log=lambda m: None)
    assert len(outcome.results) == 3 and (out / "report.md").is_file()


def test_entry_point_reports_a_bad_grid(tmp_path, capsys):
    from twotower.studies.scaling.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"recipe": {"clue": "pretrain"}}))
    assert main(["--grid", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "user_encoder must be 'sequence'" in capsys.readouterr().err
