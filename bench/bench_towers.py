"""Tower training throughput and quality on ~100k interactions, next to two baselines.

Measured in one run:
  input pipeline   examples/s of the tf.data pipeline alone (the ceiling for training speed)
  training         examples/s and seconds per epoch of ``towers.train.train`` (epochs after the
                   first; the first includes tracing); ratio = training / input pipeline; total
                   CPU seconds too, and the 1-minute load average (the machine may be shared)
  quality          test recall@10 (leave-last-out, the user's train+valid items excluded) of
                   the trained towers vs a popularity ranking; ratio = towers / popularity

Data: MovieLens-100K from ``--movielens`` (default .cache/ml-100k) when it exists, else
``recdata.synthetic`` with 100k interactions. Usage::

    .venv/bin/python -m bench.bench_towers [--epochs 10] [--batch-size 1024] [--synthetic]
        [--user-encoder ids|features|sequence]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def load(args):
    from recdata.splits import leave_last_out

    if not args.synthetic and Path(args.movielens).is_dir():
        from recdata.movielens import load_movielens_100k
        ds = load_movielens_100k(args.movielens)
    else:
        from recdata.synthetic import SyntheticConfig, generate
        ds = generate(SyntheticConfig(num_users=5_000, num_items=3_000, num_interactions=100_000, seed=0))
    return ds, leave_last_out(ds.interactions)


def recall_at_k(scores: np.ndarray, targets: np.ndarray, exclude: list, k: int) -> float:
    scores = scores.copy()
    for q, rows in enumerate(exclude):
        scores[q, rows] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return float(np.mean([targets[q] in top[q] for q in range(len(targets))]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movielens", default=".cache/ml-100k")
    parser.add_argument("--synthetic", action="store_true", help="use recdata.synthetic even if MovieLens exists")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--user-encoder", choices=["ids", "features", "sequence"], default="features")
    args = parser.parse_args(argv)

    from towers.config import TowerConfig, TrainConfig
    from towers.inputs import eval_queries, item_features_batch, make_tf_dataset, training_examples
    from towers.train import train

    ds, split = load(args)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose, tensorboard=False,
                      keep_checkpoints=0, tower=TowerConfig(user_encoder=args.user_encoder))

    # baseline 1: the input pipeline alone, two passes (the second is the steady state)
    ex = training_examples(ds, split.train, cfg.tower.max_history)
    data = make_tf_dataset(ds, ex, cfg.batch_size, shuffle=True, seed=cfg.seed, history_width=ex.max_history)
    for _ in range(2):
        start = time.perf_counter()
        for batch in data:
            pass
        pipeline_seconds = time.perf_counter() - start
    pipeline_eps = len(ex) / pipeline_seconds

    with tempfile.TemporaryDirectory() as out:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = train(ds, split, cfg, out)
        total_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    # quality vs baseline 2: popularity
    q = eval_queries(ds, split, cfg.tower.max_history)
    item_row = {x: i for i, x in enumerate(ds.items["item_id"])}
    targets = np.array([item_row[x] for x in split.test["item_id"].to_numpy()[q.test_rows]])
    seen_df = split.train if len(split.valid) == 0 else __import__("pandas").concat([split.train, split.valid])
    seen = seen_df.assign(row=seen_df["item_id"].map(item_row)).groupby("user_id")["row"].apply(np.asarray)
    exclude = [seen.get(u, np.zeros(0, np.int64)) for u in q.user_ids]
    item_vecs = result.item_tower(item_features_batch(ds.items, ds.item_features)).numpy()
    query_vecs = result.query_tower(q.features).numpy()
    model_recall = recall_at_k(query_vecs @ item_vecs.T, targets, exclude, 10)
    popularity = np.bincount(split.train["item_id"].map(item_row), minlength=len(ds.items)).astype(np.float64)
    pop_recall = recall_at_k(np.tile(popularity, (len(targets), 1)), targets, exclude, 10)

    steady = result.epoch_train_seconds[1:] or result.epoch_train_seconds
    report = {
        "dataset": ds.name, "train_interactions": len(split.train), "items": len(ds.items), "users": len(ds.users),
        "config": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "user_encoder": cfg.tower.user_encoder, **{
            k: v for k, v in dataclasses.asdict(cfg.tower).items() if k in ("output_dim", "hidden_units", "max_history")}},
        "input_pipeline_examples_per_s": round(pipeline_eps),
        "train_examples_per_s": round(result.examples_per_second),
        "train_vs_pipeline": round(result.examples_per_second / pipeline_eps, 3),
        "first_epoch_s": round(result.epoch_train_seconds[0], 2),
        "steady_epoch_s_median": round(float(np.median(steady)), 2),
        "train_total_s": round(total_seconds, 1),
        "train_total_cpu_s": round(cpu_seconds, 1),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "final_loss": round(result.history["loss"][-1], 4),
        "final_val_loss": round(result.history.get("val_loss", [float("nan")])[-1], 4),
        "val_recall@10_per_epoch": [round(x, 4) for x in result.history.get("val_recall@10", [])],
        "test_recall@10_towers": round(model_recall, 4),
        "test_recall@10_popularity": round(pop_recall, 4),
        "towers_vs_popularity": round(model_recall / pop_recall, 2) if pop_recall else None,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
