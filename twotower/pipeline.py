"""The stages of a run, each reading and writing the run directory (``core.rundir``).

    stage_data   load + split the data           → <run>/data/
    stage_train  train both towers and export    → <run>/model/   (SavedModels, vocab, model_version)
    stage_rebuild  Beam: embed items, build, validate and publish the index → <run>/vectors/, <run>/index/
    stage_index  build + publish an index from the current vectors (no Beam) → <run>/index/
    stage_eval   exact and index retrieval graded by popularity slice, next to baselines → <run>/eval/

Stages hand each other artifacts on disk, never live objects, so any stage can be rerun alone.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core import artifacts
from core.guard import require_same_model
from core.lifecycle import CURRENT, VersionedRoot, current_dir
from twotower.config import RunConfig, save_config
from core.exclusions import Exclusions
from core.rundir import RunDir
from core.strict import to_dict
from core.version_cache import CachedRoot, cached_directory, default_cache_dir


def init_run(cfg: RunConfig, run: RunDir) -> None:
    """Create the run directory and save the resolved config (exactly what runs)."""
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config)


def stage_data(cfg: RunConfig, run: RunDir):
    """Load the configured dataset, split it, save both under ``<run>/data``; returns (dataset, split)."""
    from recdata.loading import load_dataset, make_split, save_split
    from recdata.splits import summarize

    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.data)
    save_split(run.data, dataset, split)
    summary = summarize(split, dataset.items["item_id"], head_mask(split, dataset, cfg))
    artifacts.atomic_write_json(run.data / "summary.json", summary)
    return dataset, split


def head_mask(split, dataset, cfg: RunConfig) -> np.ndarray:
    """bool (n_items,): the head items by training count, by the eval suite's one tier rule."""
    from eval.slices import popularity_tiers
    from recdata.splits import train_counts

    _, codes = popularity_tiers(train_counts(split, dataset.items["item_id"]), cfg.eval.head_share)
    return codes == 0


def load_data(run: RunDir):
    from recdata.loading import load_split

    run.require(run.data / artifacts.MANIFEST, f"run `twotower train --run {run.root}` first")
    return load_split(cached_directory(str(run.data)))  # a run on object storage: a sha256-verified local copy


def stage_train(cfg: RunConfig, run: RunDir, dataset, split, extra_callbacks=()) -> dict:
    """Train the towers on ``split`` and export both SavedModels into ``<run>/model`` (a local run directory;
    ``twotower.train_run`` stages a run on object storage locally and uploads it). ``extra_callbacks``: Keras
    callbacks run after each epoch's checkpoint is saved."""
    from towers.export import export_towers
    from towers.train import train

    t0 = time.perf_counter()
    result = train(dataset, split, cfg.train, run.root / "train", extra_callbacks=extra_callbacks)
    seconds = time.perf_counter() - t0
    summary = {
        "epochs": len(result.epoch_train_seconds),
        "resumed_from_epoch": result.initial_epoch,
        "train_examples": result.num_train_examples,
        "examples_per_second": round(result.examples_per_second, 1),
        "train_seconds": round(seconds, 1),
        "final_loss": result.history.get("loss", [float("nan")])[-1],
        "history": result.history,
    }
    version = export_towers(result.query_tower, result.item_tower, result.vocab, run.model, overwrite=True,
                            extra_manifest={"train_config": to_dict(cfg.train), "train_summary": summary})
    summary["model_version"] = version
    artifacts.atomic_write_json(run.root / "train" / "summary.json", summary)
    return summary


def stage_rebuild(cfg: RunConfig, run: RunDir, pipeline_args=None, shards="auto"):
    """The nightly Beam job on this run: embed every item, build/validate/publish the index (``shards``: see
    ``beam_jobs.rebuild_index.RebuildConfig``)."""
    from beam_jobs.rebuild_index import RebuildConfig, run_rebuild

    rebuild = RebuildConfig(run=str(run.root), index=cfg.index, shards=shards)
    return run_rebuild(rebuild, list(pipeline_args or ["--runner", "DirectRunner"]))


def stage_index(cfg: RunConfig, run: RunDir) -> Path:
    """Build an index from ``<run>/vectors/current`` and publish it under ``<run>/index``.

    Holds the index root's job lease, and publishes only what passes the same gate as the nightly rebuild
    (``indexing.gate.check_publishable``: counts, NaN/inf, zero, unnormalised and identical vectors, dimension,
    model version, recall floor). Returns the published version's directory.
    """
    from indexing.gate import DEFAULT_RECALL_FLOOR, check_publishable
    from indexing.item_index import ItemIndex
    from indexing.store import publish_index
    from indexing.vectors import read_vectors

    from beam_jobs.query_set import QUERY_SOURCE, validation_query_vectors

    with VersionedRoot(run.index).lock("twotower index") as lease:
        vec_dir = current_dir(run.vectors)
        item_ids, vectors, manifest = read_vectors(vec_dir)
        check_model_version(run, manifest["model_version"], f"the vectors {vec_dir}")
        # tuned and checked on the queries it will serve: query-tower vectors of validation users
        queries = validation_query_vectors(run, cfg.index)
        index = ItemIndex.build(vectors, item_ids, cfg.index, manifest["model_version"], queries=queries,
                                query_source=QUERY_SOURCE)
        check_publishable(index, vectors, item_ids, manifest, run.model_version(), DEFAULT_RECALL_FLOOR,
                          queries=queries, query_source=QUERY_SOURCE)
        return publish_index(run.index, index, extra_manifest={"vectors_version": manifest["version"],
                                                               "vectors_dir": str(vec_dir),
                                                               "recall_floor": DEFAULT_RECALL_FLOOR}, lease=lease)


def check_model_version(run: RunDir, found: str, what: str) -> None:
    """``core.guard.require_same_model`` against the run's exported model."""
    require_same_model(run.model_version(), found, expected_from=f"the run's model {run.model}", found_from=what,
                       fix=f"rebuild them from this model (`twotower rebuild --run {run.root}`) before serving or "
                           "evaluating")


def index_skipped_reason(run: RunDir) -> str:
    """Why eval grades no index: ``<run>/index/current`` is missing or empty."""
    return (f"{run.index / CURRENT} is empty or missing (no index published), so only exact retrieval "
            f"was evaluated; publish one with `twotower rebuild --run {run.root}` (or `twotower index`) to grade "
            "the index too")


@dataclasses.dataclass(frozen=True)
class EvalInputs:
    """What ``stage_eval`` grades: one query row per test user (``queries.user_ids``, rows of ``user_row``) and
    its query-tower vector, the published item vectors (rows of ``item_row``), the test cases (query row, item
    row), the exclusions (train+valid items), training counts and history lengths per query row."""

    split: object
    queries: object
    query_vectors: np.ndarray
    user_row: pd.Index
    item_row: pd.Index
    item_vectors: np.ndarray
    vectors_version: str
    test_cases: np.ndarray
    exclusions: Exclusions
    history_lengths: np.ndarray
    counts: np.ndarray
    keep: np.ndarray


def eval_inputs(cfg: RunConfig, run: RunDir) -> EvalInputs:
    """Load the run's data, query tower and published item vectors (a run on object storage through the local
    cache, every file's sha256 checked before loading) and build the eval cases."""
    from indexing.vectors import read_vectors
    from recdata.splits import train_counts
    from towers.export import load_tower
    from towers.inputs import eval_queries

    dataset, split = load_data(run)
    # a run on object storage is read through the local cache, every file's sha256 checked before loading
    vectors_root = CachedRoot(str(run.vectors))
    vectors_version = run.published_vectors().name  # the vectors the published index was built from
    item_ids, item_vectors, vmanifest = read_vectors(vectors_root.fetch(vectors_version))
    check_model_version(run, vmanifest["model_version"], f"the item vectors {run.vectors / vectors_version}")
    model_dir = cached_directory(str(run.model))
    query_tower = load_tower(model_dir / run.query_tower.name)
    max_history = int(artifacts.read_manifest(model_dir).get("max_history", cfg.train.tower.max_history))
    queries = eval_queries(dataset, split, max_history, per="user")
    query_vectors = np.asarray(query_tower(queries.features))

    item_row = pd.Index(item_ids)
    user_row = pd.Index(queries.user_ids)
    test = split.test
    q = user_row.get_indexer(test["user_id"])
    t = item_row.get_indexer(test["item_id"])
    keep = (q >= 0) & (t >= 0)
    test_cases = np.stack([q[keep], t[keep]], axis=1).astype(np.int64)

    seen = pd.concat([split.train, split.valid], ignore_index=True)
    sq = user_row.get_indexer(seen["user_id"])
    si = item_row.get_indexer(seen["item_id"])
    ok = (sq >= 0) & (si >= 0)
    exclusions = Exclusions.from_pairs(sq[ok], si[ok], len(user_row), len(item_row), "train+valid items")
    train_q = user_row.get_indexer(split.train["user_id"])
    history_lengths = np.bincount(train_q[train_q >= 0], minlength=len(user_row)).astype(np.int64)
    counts = train_counts(split, item_ids)

    return EvalInputs(split=split, queries=queries, query_vectors=query_vectors, user_row=user_row, item_row=item_row,
                      item_vectors=item_vectors, vectors_version=vectors_version, test_cases=test_cases,
                      exclusions=exclusions, history_lengths=history_lengths, counts=counts, keep=keep)


def stage_eval(cfg: RunConfig, run: RunDir, baselines: bool = True):
    """Grade the run's towers (exact and through the published index) next to the baselines.

    Queries: one per test user, built at the time of the user's first test event from the user's
    train+valid history. Targets: every test event of that user. Excluded from ranking: the items
    in the user's train+valid history. Popularity slices use training counts.
    Returns the list of ``EvalResult`` (model first) and writes ``<run>/eval``.
    """
    from eval.baselines import baseline_results, binary_user_items
    from eval.evaluate import evaluate_vectors
    from eval.report import write_report
    from indexing.sharded_index import load_any

    x = eval_inputs(cfg, run)
    split, user_row, item_row, index_root = x.split, x.user_row, x.item_row, CachedRoot(str(run.index))
    train_q = user_row.get_indexer(split.train["user_id"])

    index, index_skipped = None, None
    index_version = index_root.current_version()
    if index_version:
        index = load_any(index_root.fetch(index_version))
        check_model_version(run, index.model_version, f"the index {run.index / index_version}")
    else:  # issue 13 item 9: say so (output and report) instead of silently grading exact retrieval only
        index_skipped = index_skipped_reason(run)
    metadata = {"model_version": run.model_version(), "dropped_test_cases": int((~x.keep).sum())}
    if index_skipped:
        metadata["index_skipped"] = index_skipped
    result = evaluate_vectors(x.query_vectors, x.item_vectors, x.test_cases, x.exclusions, x.counts, cfg.eval,
                              index=index, history_lengths=x.history_lengths, query_ids=x.queries.user_ids,
                              name=cfg.name, metadata=metadata)
    results = [result]
    if baselines:
        # EASE's lambda is tuned on validation: fit on the training events, graded on the validation events
        vq = user_row.get_indexer(split.valid["user_id"])
        vt = item_row.get_indexer(split.valid["item_id"])
        vkeep = (vq >= 0) & (vt >= 0)
        ti = item_row.get_indexer(split.train["item_id"])
        tok = (train_q >= 0) & (ti >= 0)
        train_only = Exclusions.from_pairs(train_q[tok], ti[tok], len(user_row), len(item_row), "train items")
        valid = dict(valid_cases=np.stack([vq[vkeep], vt[vkeep]], axis=1).astype(np.int64),
                     valid_user_items=binary_user_items(train_only)) if vkeep.any() else {}
        results += baseline_results(x.test_cases, x.exclusions, x.counts, cfg.eval, history_lengths=x.history_lengths,
                                    query_ids=x.queries.user_ids, seed=cfg.eval.seed, **valid)
    out = run.eval if not run.remote else Path(tempfile.mkdtemp(prefix="eval-", dir=_mkdir(default_cache_dir())))
    try:
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            r.save(out / r.name)
        write_report(results, out, title=f"Evaluation of run {run.root.name}")
        if run.remote:  # written locally, then each file uploaded as a whole object under <run>/eval/
            storage = run.storage()
            for p in sorted(out.rglob("*")):
                if p.is_file():
                    storage.write_bytes(f"eval/{p.relative_to(out).as_posix()}", p.read_bytes())
    finally:
        if run.remote:
            shutil.rmtree(out, ignore_errors=True)
    return results


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
