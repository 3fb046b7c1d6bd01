"""The study's pooled paired gains against a slow obvious reference, on results with known rankings."""
import numpy as np
import pandas as pd
import pytest

from core.strict import from_dict
from eval.config import EvalConfig
from eval.evaluate import evaluate_rankings
from twotower.studies.points import point_dir
from twotower.studies.ssl.grid import SSLGrid, point_key
from twotower.studies.ssl.report import gains_table, verdict
from twotower.studies.ssl.sweep import run_study

GRID = {
    "name": "fake",
    "datasets": [{"name": "d"}],
    "eval": {"ks": [5], "support_thresholds": [1, 4], "activity_thresholds": [3], "bootstrap_samples": 200,
             "baselines": []},
    "sweep": {"fractions": [0.5, 1.0], "seeds": [0, 1], "variants": {"none": {}, "ssl": {"ssl.mode": "cfm"}}},
}
N_ITEMS, N_QUERIES = 40, 60


def fake_result(point, cfg: EvalConfig):
    """Random rankings; the 'ssl' variant puts the target first for every third query. Counts depend on the
    seed and fraction, so the support slices differ between seeds (as subsets do)."""
    rng = np.random.default_rng([point.seed, int(point.fraction * 10)])
    targets = rng.integers(0, N_ITEMS, N_QUERIES)
    counts = rng.integers(0, 7, N_ITEMS)
    ranking_rng = np.random.default_rng(100 + point.seed)           # same base rankings for both variants
    rankings = np.stack([ranking_rng.permutation(N_ITEMS)[:5] for _ in range(N_QUERIES)])
    if point.variant == "ssl":
        boost = np.arange(N_QUERIES) % 3 == 0
        rankings[boost, 0] = targets[boost]
        for q in np.flatnonzero(boost):                               # keep rows unique
            dup = np.flatnonzero(rankings[q, 1:] == targets[q])
            rankings[q, 1 + dup] = [i for i in range(N_ITEMS) if i not in rankings[q]][: len(dup)]
    cases = np.stack([np.arange(N_QUERIES), targets], axis=1)
    history = rng.integers(0, 6, N_QUERIES)
    return evaluate_rankings(rankings, cases, counts, cfg, history_lengths=history,
                             query_ids=np.array([f"u{i}" for i in range(N_QUERIES)], dtype=object), name=point.name)


def fake_run_point(grid, point, dataset, split, directory):
    fake_result(point, grid.eval).save(directory / "eval")
    return {"train_events": 1, "recall": {}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import yaml

    out = tmp_path_factory.mktemp("ssl")
    (out / "grid.yaml.in").write_text(yaml.safe_dump(GRID))
    import twotower.studies.ssl.sweep as sweep

    real = sweep._load_data  # restored below: a module-scoped fixture cannot use monkeypatch, and the
    sweep._load_data = lambda grid, name, log: (None, None)  # fake must not leak into test_sweep's real run
    try:
        outcome = run_study(out / "grid.yaml.in", out, run_point=fake_run_point, log=lambda m: None)
    finally:
        sweep._load_data = real
    return out, from_dict(SSLGrid, GRID), outcome


def reference_gain(out, grid, fraction, family, slc, metric="recall@5"):
    """Slow and obvious: for each seed, per query, variant minus baseline; mean over all (seed, query)."""
    from eval.result import EvalResult
    from twotower.studies.ssl.grid import SSLPoint

    diffs = []
    for seed in grid.sweep.seeds:
        per = {}
        for variant in ("none", "ssl"):
            r = EvalResult.load(point_dir(out, point_key(grid, SSLPoint("d", fraction, variant, seed))) / "eval")
            pq = r.per_query[(r.per_query["source"] == "exact") & (r.per_query["family"] == family)
                             & (r.per_query["slice"] == slc)]
            per[variant] = dict(zip(pq["query_id"], pq[metric]))
        for q in per["none"]:
            if q in per["ssl"]:
                diffs.append(per["ssl"][q] - per["none"][q])
    return float(np.mean(diffs)), len(diffs)


def test_every_point_ran_and_the_report_was_written(study):
    out, grid, outcome = study
    assert len(outcome.results) == 8 and not outcome.failures and not outcome.missing
    text = (out / "report.md").read_text()
    assert "| 0.5 | ssl | 2 |" in text and "support/n<1" in text
    from tests.conftest import check_png_plot

    # up to four 4.2 × 3.6 in panels at 110 dpi; a real picture, not blank
    check_png_plot(out / "gain_vs_fraction.png", min_size=(400, 300), max_size=(2000, 450))


@pytest.mark.parametrize("family, slc", [("overall", "all"), ("support", "n<1"), ("support", "n1-3"),
                                         ("support", "n>=4"), ("activity", "hist<3"), ("popularity", "tail")])
def test_pooled_gain_equals_the_mean_paired_difference_over_seeds_and_queries(study, family, slc):
    out, grid, _ = study
    table = gains_table(out, grid)
    for fraction in (0.5, 1.0):
        row = table[(table["fraction"] == fraction) & (table["family"] == family) & (table["slice"] == slc)
                    & (table["metric"] == "recall@5")].iloc[0]
        want, units = reference_gain(out, grid, fraction, family, slc)
        assert row["gain"] == pytest.approx(want, abs=1e-12)
        assert row["units"] == units and row["seeds"] == 2
        assert row["lo"] <= row["gain"] <= row["hi"]


def test_overall_gain_is_positive_by_construction(study):
    out, grid, _ = study
    table = gains_table(out, grid)
    overall = table[(table["family"] == "overall") & (table["metric"] == "recall@5")]
    assert (overall["gain"] > 0.2).all() and (overall["verdict"] == "gain").all()


def test_report_only_reuses_finished_points_and_resume_runs_nothing(study):
    out, grid, _ = study
    calls = []
    outcome = run_study(out / "grid.yaml.in", out, run_point=lambda *a: calls.append(a), log=lambda m: None)
    assert calls == [] and len(outcome.skipped) == 8
    outcome = run_study(out / "grid.yaml.in", out, report_only=True, log=lambda m: None)
    assert len(outcome.results) == 8


@pytest.mark.parametrize("lo, hi, want", [(0.01, 0.05, "gain"), (-0.05, -0.001, "loss"), (-0.008, 0.009, "no effect"),
                                          (-0.03, 0.04, "inconclusive"), (float("nan"), 0.1, "n/a")])
def test_verdicts_read_off_the_interval(lo, hi, want):
    assert verdict(lo, hi) == want
