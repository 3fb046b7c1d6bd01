"""The two entry points: grade vectors (exact and optionally an index) or grade ready-made rankings.

    result = evaluate_vectors(query_vectors, item_vectors, test_cases, exclusions, train_counts,
                              EvalConfig(), index=item_index, query_ids=user_ids, name="run-42")
    eval.report.save_with_report(result, "runs/run-42/eval")   # or result.save(dir) without the report

Inputs (contract, see eval.cases): query rows index ``query_vectors`` / ``rankings`` / ``exclusions``;
item rows index ``item_vectors`` / ``train_counts`` (catalogue order of the vectors artifact).
``history_lengths`` (int (m,), training events per query row) drives the activity slices; it
defaults to the number of excluded items per query. ``query_ids`` (str (m,), e.g. user ids) are
what ``compare`` pairs two runs on; they default to the query row as a string.

Only queries with at least one test case are ranked and resampled.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from eval.bootstrap import summarize
from eval.cases import EvalCases, Exclusions, as_cases, as_exclusions, take_exclusions
from eval.config import EvalConfig
from eval.exact import as_vectors, exact_top_k, index_credit_by_slice, index_top_k
from eval.metrics import (coverage, grouped_metrics, list_metric_names, mean_popularity, metric_names,
                          target_ranks)
from eval.result import EvalResult
from eval.slices import SliceFamily, slice_families, validate_counts


def _prepare(test_cases, exclusions, train_counts, num_queries: int, num_items: int, config: EvalConfig,
             history_lengths, query_ids):
    counts = validate_counts(train_counts, num_items)
    cases, duplicates = as_cases(test_cases, num_queries, num_items)
    excl = as_exclusions(exclusions, num_queries, num_items)
    hit = excl.contains(cases.queries, cases.targets)
    n_hit = int(hit.sum())
    if n_hit and config.excluded_targets == "error":
        i = int(np.flatnonzero(hit)[0])
        raise ValueError(
            f"{n_hit} test case(s) have a target among the query's excluded (training) items, e.g. query row "
            f"{int(cases.queries[i])} target row {int(cases.targets[i])}; such targets can never be retrieved. "
            "Remove repeat interactions from the test split, or set eval.excluded_targets to 'drop' or 'keep'"
        )
    if n_hit and config.excluded_targets == "drop":
        cases = cases.subset(~hit)
        if len(cases) == 0:
            raise ValueError("every test case targets an excluded (training) item; nothing is left to score")
    if history_lengths is None:
        history = excl.counts
    else:
        history = np.asarray(history_lengths)
        if history.shape != (num_queries,) or not np.issubdtype(history.dtype, np.integer):
            raise ValueError(
                f"history_lengths must be int, one per query row, shape ({num_queries},); got "
                f"{history.dtype} {history.shape}"
            )
    if query_ids is None:
        ids = np.arange(num_queries).astype(str).astype(object)
    else:
        ids = np.asarray(query_ids).astype(str).astype(object)
        if ids.shape != (num_queries,):
            raise ValueError(f"query_ids must give one id per query row, shape ({num_queries},), got {ids.shape}")
        dup = pd.Series(ids).duplicated()
        if dup.any():
            raise ValueError(
                f"query_ids must be unique (they pair queries across runs); {int(dup.sum())} repeated, e.g. "
                f"{ids[int(np.flatnonzero(dup)[0])]!r}"
            )
    info_counts = {
        "num_items": int(num_items),
        "num_queries": int(num_queries),
        "num_test_queries": int(len(np.unique(cases.queries))),
        "num_cases": int(len(cases)),
        "duplicate_cases_removed": int(duplicates),
        "excluded_target_cases": n_hit,
        "excluded_targets_policy": config.excluded_targets,
    }
    return counts, cases, excl, np.asarray(history, np.int64), ids, info_counts


def _slice_info(families: tuple[SliceFamily, ...], qrows: np.ndarray) -> dict:
    out = {}
    for fam in families:
        if fam.on == "item":
            sizes = np.bincount(fam.codes, minlength=len(fam.labels))
            out[fam.name] = {"on": "item", "labels": list(fam.labels),
                             "n_items": {lab: int(s) for lab, s in zip(fam.labels, sizes)}}
        else:
            sizes = np.bincount(fam.codes[qrows], minlength=len(fam.labels))
            out[fam.name] = {"on": "query", "labels": list(fam.labels),
                             "n_test_queries": {lab: int(s) for lab, s in zip(fam.labels, sizes)}}
    return out


def _target_table(source: str, families, cases: EvalCases, pos: np.ndarray, ranks: np.ndarray,
                  qrows: np.ndarray, ids: np.ndarray, per_list: dict[str, np.ndarray], ks) -> pd.DataFrame:
    """Per-query metrics of one ranking source, for every (family, slice, query) with cases."""
    nq = len(qrows)
    frames = []
    for fam in families:
        codes = fam.case_codes(cases.queries, cases.targets).astype(np.int64)
        uniq, group = np.unique(codes * nq + pos, return_inverse=True)
        mets = grouped_metrics(group.ravel(), ranks, ks, len(uniq))
        gq, gs = uniq % nq, uniq // nq
        frame = {"source": source, "family": fam.name, "slice": np.asarray(fam.labels, dtype=object)[gs],
                 "query": qrows[gq], "query_id": ids[qrows[gq]], "n_targets": mets.pop("n_targets")}
        frame.update(mets)
        frame.update({k: v[gq] for k, v in per_list.items()})
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def _index_table(families, qrows, ids, query_vecs, item_vecs, exact, index, ks) -> pd.DataFrame:
    """Per-query recall of the index's top-K against the exact top-K (source "index_vs_exact").

    recall@K = credited index items / exact items, counted within a slice (``index_credit_by_slice``): item
    families slice the exact neighbours (and the index's items) by their own popularity slice, query
    families slice the queries; the places tied at the K-th exact score go to the exact tied items' slices,
    in the share the index filled them, so a different choice among tied items is no loss in any slice.
    n_targets = exact top-max(ks) neighbours in the slice.
    """
    exact_scores, exact_rows = exact
    frames = []
    for fam in families:
        item_codes, ncodes = (fam.codes, len(fam.labels)) if fam.on == "item" else (None, 1)
        cols = {}
        for k in ks:
            # tie choices at the K-th score are not losses, also when the tied items sit in different slices
            n_exact, credit = index_credit_by_slice(query_vecs, item_vecs, exact_scores, exact_rows, index[1], k,
                                                    item_codes, ncodes)
            with np.errstate(invalid="ignore", divide="ignore"):
                cols[f"index_recall@{k}"] = np.where(n_exact > 0, credit / n_exact, np.nan)
        n_exact_max = n_exact  # at k = max(ks), a superset of the smaller cut-offs
        if fam.on == "item":
            slice_idx, query_idx = np.nonzero(n_exact_max.T > 0)  # slice-major order
            labels = np.asarray(fam.labels, dtype=object)[slice_idx]
        else:
            query_idx = np.flatnonzero(n_exact_max[:, 0] > 0)
            query_idx = query_idx[np.argsort(fam.codes[qrows[query_idx]], kind="stable")]
            slice_idx = np.zeros(len(query_idx), np.int64)
            labels = np.asarray(fam.labels, dtype=object)[fam.codes[qrows[query_idx]]]
        frame = {"source": "index_vs_exact", "family": fam.name, "slice": labels, "query": qrows[query_idx],
                 "query_id": ids[qrows[query_idx]], "n_targets": n_exact_max[query_idx, slice_idx]}
        frame.update({k: v[query_idx, slice_idx] for k, v in cols.items()})
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def _assemble(name, config, families, cases, counts, ids, qrows, rankings: dict[str, np.ndarray],
              extra_tables: list[pd.DataFrame], info: dict) -> EvalResult:
    ks = config.ks
    pos = np.searchsorted(qrows, cases.queries)
    tables, summaries, coverages = [], [], {}
    case_cols = {"query": cases.queries, "query_id": ids[cases.queries], "target": cases.targets,
                 "target_count": counts[cases.targets]}
    target_metrics = metric_names(ks) + list_metric_names(ks)
    info["metrics"] = {}
    for source, rows in rankings.items():
        ranks = target_ranks(rows, pos, cases.targets)
        case_cols[f"rank_{source}"] = ranks
        per_list = mean_popularity(rows, counts, ks)
        tables.append(_target_table(source, families, cases, pos, ranks, qrows, ids, per_list, ks))
        coverages[source] = coverage(rows, len(counts), ks)
        info["metrics"][source] = target_metrics
    for table in extra_tables:
        tables.append(table)
        info["metrics"][str(table["source"].iloc[0])] = [f"index_recall@{k}" for k in ks]
    for fam in families:
        case_cols[f"slice_{fam.name}"] = np.asarray(fam.labels, dtype=object)[fam.case_codes(cases.queries, cases.targets)]
    per_query = pd.concat(tables, ignore_index=True)
    groups = [(fam.name, lab) for fam in families for lab in fam.labels]
    units = pd.Index(ids[qrows])
    t0 = time.perf_counter()
    for source, metrics in info["metrics"].items():
        sub = per_query[per_query["source"] == source]
        summary = summarize(sub, groups, metrics, config.bootstrap_samples, config.seed, config.confidence, units)
        summary.insert(0, "source", source)
        summaries.append(summary)
    info.setdefault("timings", {})["bootstrap_seconds"] = time.perf_counter() - t0
    info["coverage"] = coverages
    summary = pd.concat(summaries, ignore_index=True)
    return EvalResult(name=name, config=config, summary=summary, per_query=per_query,
                      cases=pd.DataFrame(case_cols), info=info)


def evaluate_rankings(rankings, test_cases, train_counts, config: EvalConfig | None = None, *,
                      exclusions=None, history_lengths=None, query_ids=None, name: str = "run",
                      source: str = "exact", metadata: dict | None = None) -> EvalResult:
    """Grade ready-made rankings (e.g. a baseline's, or any external system's).

    rankings      int (m, >= max(ks)) item rows per query row, best first, -1 padding; rows of
                  queries without test cases are ignored
    test_cases    see ``eval.cases.as_cases``
    train_counts  int (n,) training interactions per item row (n = catalogue size)
    exclusions    the queries' training items; if given, rankings must not contain them (checked)
    """
    config = config or EvalConfig()
    rankings = np.asarray(rankings)
    if rankings.ndim != 2 or not np.issubdtype(rankings.dtype, np.integer):
        raise ValueError(f"rankings must be an int (queries, K) array of item rows, got {rankings.dtype} {rankings.shape}")
    if rankings.shape[1] < config.max_k:
        raise ValueError(
            f"rankings have depth {rankings.shape[1]} but max(ks) = {config.max_k}; rank at least {config.max_k} "
            "items per query or lower eval.ks"
        )
    num_items = len(np.asarray(train_counts))
    counts, cases, excl, history, ids, info_counts = _prepare(
        test_cases, exclusions, train_counts, rankings.shape[0], num_items, config, history_lengths, query_ids)
    qrows = cases.unique_queries()
    rows = rankings[qrows, : config.max_k].astype(np.int64)
    if rows.size and (rows.min() < -1 or rows.max() >= num_items):
        raise ValueError(f"rankings hold rows outside [-1, {num_items}): min {rows.min()}, max {rows.max()}")
    leaked = excl.contains(qrows[:, None], rows)
    if leaked.any():
        q = int(qrows[np.nonzero(leaked)[0][0]])
        raise ValueError(f"rankings contain {int(leaked.sum())} excluded item(s) (e.g. for query row {q}); "
                         "filter the user's training items out before grading")
    families = slice_families(counts, history, config)
    info = {"counts": info_counts, "slices": _slice_info(families, qrows), "metadata": dict(metadata or {}),
            "timings": {}}
    return _assemble(name, config, families, cases, counts, ids, qrows, {source: rows}, [], info)


def evaluate_vectors(query_vectors, item_vectors, test_cases, exclusions, train_counts,
                     config: EvalConfig | None = None, *, index=None, history_lengths=None, query_ids=None,
                     name: str = "model", metadata: dict | None = None) -> EvalResult:
    """Grade a model by its vectors: exact top-max(ks) by inner product, and optionally an index.

    query_vectors  float (m, d), one per query row;  item_vectors float (n, d), catalogue order
    exclusions     per query row, the item rows never to retrieve (CSR / list of arrays / None)
    index          optional object with ``.search(queries, k, exclude=...)`` over the same item rows
                   (``indexing.item_index.ItemIndex``); adds sources "index" and "index_vs_exact"
    Returns an ``EvalResult`` with source "exact" (and "index", "index_vs_exact").
    """
    config = config or EvalConfig()
    item_vecs = as_vectors(item_vectors, "item vectors")
    query_vecs = as_vectors(query_vectors, "query vectors", item_vecs.shape[1])
    counts, cases, excl, history, ids, info_counts = _prepare(
        test_cases, exclusions, train_counts, len(query_vecs), len(item_vecs), config, history_lengths, query_ids)
    qrows = cases.unique_queries()
    sub_excl: Exclusions = take_exclusions(excl, qrows)
    sub_queries = query_vecs[qrows]
    timings = {}
    t0 = time.perf_counter()
    exact = exact_top_k(sub_queries, item_vecs, config.max_k, sub_excl,
                        query_block=config.query_block, item_block=config.item_block)
    timings["exact_search_seconds"] = time.perf_counter() - t0
    rankings = {"exact": exact[1]}
    families = slice_families(counts, history, config)
    extra = []
    if index is not None:
        t0 = time.perf_counter()
        approx = index_top_k(index, sub_queries, config.max_k, sub_excl, query_block=config.query_block)
        timings["index_search_seconds"] = time.perf_counter() - t0
        rankings["index"] = approx[1]
        extra.append(_index_table(families, qrows, ids, sub_queries, item_vecs, exact, approx, config.ks))
    info = {"counts": info_counts, "slices": _slice_info(families, qrows), "metadata": dict(metadata or {}),
            "timings": timings}
    return _assemble(name, config, families, cases, counts, ids, qrows, rankings, extra, info)
