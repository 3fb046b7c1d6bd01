"""The SSL study end to end with real training on a tiny synthetic catalogue (cold items included)."""
import json

import pytest
import yaml

from twotower.studies.ssl.__main__ import main

GRID = {
    "name": "tiny",
    "datasets": [{"name": "syn", "data": {"source": "synthetic", "split": "leave-last-out",
                                          "synthetic": {"num_users": 150, "num_items": 400, "num_interactions": 2500,
                                                        "seed": 3}}}],
    "recipe": {"epochs": 1, "batch_size": 256, "verbose": 0, "tensorboard": False, "monitor_queries": 0,
               "tower": {"output_dim": 16, "id_embedding_dim": 16, "feature_embedding_dim": 4, "hidden_units": [16]},
               "ssl": {"item_batch_size": 64}},
    "eval": {"ks": [10, 50], "support_thresholds": [1, 4], "bootstrap_samples": 50, "baselines": []},
    "sweep": {"fractions": [0.3, 1.0], "seeds": [0], "variants": {"none": {}, "rfm": {"ssl.mode": "rfm"}}},
}


@pytest.mark.slow
def test_tiny_study_trains_grades_cold_items_and_reports(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "out"
    assert main(["--grid", str(grid), "--out", str(out)]) == 0
    results = [json.loads(p.read_text()) for p in sorted(out.glob("points/*/result.json"))]
    assert len(results) == 4
    scarce = [r for r in results if r["point"]["fraction"] == 0.3]
    full = [r for r in results if r["point"]["fraction"] == 1.0]
    # the subset keeps 30% of the events: more items are cold, and cold items are still graded
    assert all(r["train_events"] < f["train_events"] for r in scarce for f in full)
    assert min(r["cold_items"] for r in scarce) > max(f["cold_items"] for f in full)
    for r in results:
        for key, metrics in r["recall"].items():
            # an empty slice has no value (null); every other one is a recall
            assert all(v is None or 0.0 <= v <= 1.0 for m, v in metrics.items() if m.startswith("recall@")), key
        assert r["recall"]["overall/all"]["recall@50"] is not None
        assert r["recall"]["support/n<1"]["n_cases"] > 0 or r["point"]["fraction"] == 1.0
    text = (out / "report.md").read_text()
    assert "## syn" in text and "`rfm` at 0.3" in text
    gains = json.loads((out / "gains.json").read_text())
    assert {g["variant"] for g in gains} == {"rfm"} and {g["fraction"] for g in gains} == {0.3, 1.0}
    # a second call reuses every point
    assert main(["--grid", str(grid), "--out", str(out)]) == 0


def test_bad_grid_is_one_line_and_exit_2(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({**GRID, "sweep": {**GRID["sweep"], "baseline": "nope"}}))
    assert main(["--grid", str(grid), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "sweep.baseline 'nope' is not one of sweep.variants" in err and "Traceback" not in err
