"""Offline retrieval evaluation: exact and index top-K, metrics sliced by popularity, bootstrap CIs.

Consumes vectors and rankings only (no TensorFlow), so it grades any model. Entry points:

  evaluate_vectors(query_vectors, item_vectors, test_cases, exclusions, train_counts, config, index=...)
  evaluate_rankings(rankings, test_cases, train_counts, config, exclusions=...)
  compare(run_a, run_b)            paired bootstrap A - B per metric and slice
  baseline_results(...)            popularity / random / ALS / BPR / EASE reference rows (eval.baselines)
  EvalResult.save(dir) / EvalResult.load(dir); eval.report.save_with_report(result, dir)
"""
from eval.compare import compare
from eval.config import EvalConfig
from eval.evaluate import evaluate_rankings, evaluate_vectors
from eval.result import EvalResult

__all__ = ["EvalConfig", "EvalResult", "compare", "evaluate_rankings", "evaluate_vectors"]
