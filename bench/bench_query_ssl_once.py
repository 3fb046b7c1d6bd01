"""Query-side SSL cost: the history encoded once per example vs once per view (issue #17).

    nice -n 5 .venv/bin/python -m bench.bench_query_ssl_once [--queries 128] [--rounds 5] [--steps 10]

MovieLens-100K, the query tower of configs/full.yaml (Transformer history encoder with item
features), CFM masks. Times forward + backward of ``towers.ssl.QuerySSL`` (one ``tf.function``
each) with ``encode_history_once`` on and off, interleaved rounds, and prints the medians and
their ratio, plus the two losses (equal).
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)

    from core.strict import from_dict
    from recdata.loading import DataConfig, load_dataset, make_split
    from towers.config import TrainConfig
    from towers.feature_masking import TwoViewAugmenter
    from towers.inputs import item_features_batch, make_tf_dataset, training_examples
    from towers.item_tower import ItemTower, make_item_id_embedding
    from towers.query_tower import QueryTower
    from towers.ssl import QuerySSL
    from towers.tf_env import tf
    from towers.vocab import build_vocabularies
    from twotower.config import load_config

    cfg = load_config("full", []).train
    ds = load_dataset(DataConfig())
    split = make_split(ds, DataConfig())
    vocab = build_vocabularies(ds, split.train, cfg.tower)
    ids = make_item_id_embedding(vocab, cfg.tower)
    items = ItemTower(ids, vocab, cfg.tower)
    tower = QueryTower(ids, vocab, cfg.tower, item_features=items.features,
                       catalogue=item_features_batch(ds.items, vocab.item_specs))
    aug = TwoViewAugmenter(tower.feature_names, tower.feature_specs, "rfm", sequence_dropout=0.2)
    ex = training_examples(ds, split.train, cfg.tower.max_history, True)
    query = next(iter(make_tf_dataset(ds, ex, 1024, shuffle=True, seed=0, history_width=ex.max_history)))["query"]
    variants = {name: QuerySSL(tower, aug, 0.1, 0, batch_size=args.queries, encode_history_once=once)
                for name, once in (("twice", False), ("once", True))}
    steps, losses = {}, {}
    for name, ssl in variants.items():
        @tf.function
        def step(s, ssl=ssl):
            with tf.GradientTape() as tape:
                loss = ssl(query, s, training=False)
            return loss, tape.gradient(loss, tower.trainable_variables)
        steps[name] = step
        losses[name] = float(step(tf.constant(1, tf.int64))[0])
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for i in range(args.steps):
                float(step(tf.constant(i, tf.int64))[0])
            times[name].append((time.perf_counter() - start) / args.steps)
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    print(f"query SSL forward+backward, {args.queries} queries: twice {ms['twice']:.1f} ms  once {ms['once']:.1f} ms  "
          f"ratio once/twice {ms['once'] / ms['twice']:.2f}  (losses {losses['twice']:.6f} / {losses['once']:.6f})")


if __name__ == "__main__":
    main()
