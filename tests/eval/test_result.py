"""eval.result.EvalResult: JSON view with stable keys, save -> load -> same result, verified on load."""
import json

import numpy as np
import pandas as pd
import pytest

from eval import EvalConfig, EvalResult, evaluate_vectors
from eval.report import save_with_report
from eval.synthetic import planted_problem


@pytest.fixture(scope="module")
def result():
    p = planted_problem(num_users=120, num_items=300, dim=8, clusters=6, seed=1)
    return evaluate_vectors(p.query_vectors, p.item_vectors, p.test_cases, p.user_items, p.train_counts,
                            EvalConfig(ks=(5, 10), bootstrap_samples=40), name="r1",
                            metadata={"model_version": "mv-1"})


def test_json_has_stable_keys(result):
    doc = result.to_json()
    assert list(doc) == ["schema", "name", "config", "counts", "slices", "metric_names", "timings", "metadata",
                         "results"]
    exact = doc["results"]["exact"]
    assert set(exact["coverage"]) == {"coverage@5", "coverage@10"}
    overall = exact["slices"]["overall/all"]
    assert set(overall) == {"n_queries", "n_cases", "metrics"}
    assert list(overall["metrics"]) == ["recall@5", "recall@10", "hitrate@5", "hitrate@10", "ndcg@5", "ndcg@10",
                                        "mrr@10", "mean_pop@5", "mean_pop@10"]
    assert set(overall["metrics"]["recall@10"]) == {"value", "lo", "hi"}
    # every configured slice is present, even when empty (value None)
    assert [k for k in exact["slices"] if k.startswith("decile/")] == [f"decile/d{i:02d}" for i in range(1, 11)]
    assert doc["metadata"] == {"model_version": "mv-1"}
    json.dumps(doc)  # plain JSON (NaN became None)


def test_save_load_round_trip(result, tmp_path):
    out = save_with_report(result, tmp_path / "eval")
    assert {"metrics.json", "manifest.json", "report.md", "recall_by_decile.png", "per_query.parquet",
            "cases.parquet", "summary.parquet"} <= {p.name for p in out.iterdir()}
    loaded = EvalResult.load(out)
    assert loaded.name == "r1" and loaded.config == result.config
    for attr in ("summary", "per_query", "cases"):
        pd.testing.assert_frame_equal(getattr(loaded, attr), getattr(result, attr), check_dtype=False)
    assert loaded.to_json() == json.loads(json.dumps(result.to_json()))
    assert loaded.value("recall@10", "popularity/tail") == result.value("recall@10", "popularity/tail")


def test_load_refuses_corrupt_or_foreign_directories(result, tmp_path):
    out = result.save(tmp_path / "eval")
    with open(out / "cases.parquet", "r+b") as fh:
        fh.seek(10)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="cases.parquet: sha256 .* does not match the manifest"):
        EvalResult.load(out)
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        EvalResult.load(tmp_path)


def test_value_lookup_errors(result):
    with pytest.raises(KeyError, match="no slice 'popularity/torso'"):
        result.value("recall@10", "popularity/torso")
    with pytest.raises(KeyError, match="no metric 'recall@7' for source 'exact'"):
        result.value("recall@7")
    assert np.isfinite(result.value("ndcg@5"))


def test_metric_of_another_source_is_not_silently_nan(result):
    with pytest.raises(KeyError, match="no metric 'index_recall@5' for source 'exact'"):
        result.value("index_recall@5")
