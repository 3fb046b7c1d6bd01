"""Training step time of the whole two-tower model vs catalogue size, dense Adam vs LazyAdam (issue #17).

    nice -n 5 .venv/bin/python -m bench.bench_sparse_updates                       # 10k 100k 1M 10M
    nice -n 5 .venv/bin/python -m bench.bench_sparse_updates --items 10000 1000000 --steps 10

For each catalogue size N and optimizer (``dense``: tf-keras Adam, ``train.sparse_updates: false``;
``lazy``: ``towers.optimizers.LazyAdam``, ``train.sparse_updates: true``) a fresh child process
builds a synthetic dataset of N items (item_id + a categorical genre) and a fixed interaction log
(``--users`` users × ``--events`` events, items drawn with a power-law skew over all N), and the
model of ``towers.train.build_model`` with the demo recipe's towers (user features + a bag of the
history items sharing the item-id table, item features, 64-d) plus streaming logQ and mixed
negative sampling over the N-item corpus. The item-id table has N rows (``tower.id_hash_bins = N``:
the table a catalogue of N items needs, whether or not the log touches every row). The child times
the compiled training step (``TwoTowerModel.train_step`` in one ``tf.function``, as Keras runs it)
on the same batch of ``--batch`` examples: ``--warmup`` steps, then the median of ``--steps``.
It reports ms/step, examples/s and the process's peak RSS. Dense Adam above ``--dense-max-items``
is skipped (at 10M rows its full-table temporaries need ~15 GB).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _child(n_items: int, mode: str, args) -> dict:
    import resource

    import numpy as np
    import pandas as pd

    from core.strict import from_dict
    from recdata.schema import Dataset, FeatureSpec
    from towers.config import TrainConfig
    from towers.inputs import make_tf_dataset, training_examples
    from towers.tf_env import tf
    from towers.train import build_model, make_optimizer
    from towers.vocab import build_vocabularies

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item_id": np.char.add("i", np.arange(n_items).astype(str)).astype(object),
                          "genre": np.char.add("g", (np.arange(n_items) % 20).astype(str)).astype(object)})
    n_events = args.users * args.events
    picked = np.minimum((n_items * rng.random(n_events) ** 3).astype(np.int64), n_items - 1)  # skewed
    interactions = pd.DataFrame({"user_id": np.char.add("u", np.repeat(np.arange(args.users), args.events)
                                                        .astype(str)).astype(object),
                                 "item_id": items["item_id"].to_numpy()[picked],
                                 "timestamp": np.tile(np.arange(args.events, dtype=np.int64), args.users)})
    users = pd.DataFrame({"user_id": np.char.add("u", np.arange(args.users).astype(str)).astype(object),
                          "age_group": rng.choice(["a", "b", "c"], args.users).astype(object)})
    dataset = Dataset("bench", interactions, items, users, (FeatureSpec("genre", "categorical"),),
                      (FeatureSpec("age_group", "categorical"),))
    cfg = from_dict(TrainConfig, {
        "batch_size": args.batch, "verbose": 0, "tensorboard": False, "keep_checkpoints": 0,
        "monitor_recall_k": 0, "sparse_updates": mode == "lazy",
        "tower": {"id_hash_bins": n_items, "max_history": 20},
        "loss": {"logq": "streaming", "mns_negatives": 256}})
    train = interactions
    vocab = build_vocabularies(dataset, train, cfg.tower)
    model = build_model(vocab, cfg, dataset, train)
    model.compile(optimizer=make_optimizer(cfg))
    examples = training_examples(dataset, train, cfg.tower.max_history, False)
    batch = next(iter(make_tf_dataset(dataset, examples.subset(np.arange(args.batch)), args.batch, shuffle=False,
                                      seed=0, history_width=examples.max_history)))
    model.compute_loss(batch)
    model.optimizer.build(model.trainable_variables)
    table = model.item_tower.item_id_embedding.table.embeddings
    setup = time.perf_counter() - t0

    step = tf.function(model.train_step)
    for _ in range(args.warmup):
        step(batch)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        out = step(batch)
        float(out["loss"])  # wait for the step
        times.append(time.perf_counter() - start)
    ms = 1e3 * float(np.median(times))
    return {"items": n_items, "mode": mode, "ms_per_step": round(ms, 2), "examples_per_s": round(args.batch / ms * 1e3),
            "table_rows": int(table.shape[0]), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                      / 2**20, 2),
            "setup_s": round(setup, 1), "steps": args.steps}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", nargs="*", type=int, default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--modes", nargs="*", default=["dense", "lazy"], choices=["dense", "lazy"])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--events", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--dense-max-items", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child run")
    parser.add_argument("--child", nargs=2, metavar=("ITEMS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(_child(int(args.child[0]), args.child[1], args)), flush=True)
        return

    passthrough = ["--batch", str(args.batch), "--users", str(args.users), "--events", str(args.events),
                   "--warmup", str(args.warmup), "--steps", str(args.steps)]
    rows = []
    for n in args.items:
        for mode in args.modes:
            if mode == "dense" and n > args.dense_max_items:
                print(f"{n:>10,} {mode:5}  skipped (> --dense-max-items)", flush=True)
                continue
            try:
                run = subprocess.run([sys.executable, "-m", "bench.bench_sparse_updates", "--child", str(n), mode,
                                      *passthrough], capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{n:>10,} {mode:5}  timed out after {args.timeout:.0f} s", flush=True)
                continue
            lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
            if run.returncode != 0 or not lines:
                print(f"{n:>10,} {mode:5}  failed: {run.stderr[-1500:]}", flush=True)
                continue
            row = json.loads(lines[-1][len("RESULT "):])
            rows.append(row)
            print(f"{n:>10,} {mode:5}  {row['ms_per_step']:8.1f} ms/step  {row['examples_per_s']:7,} ex/s  "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB  (setup {row['setup_s']} s)", flush=True)
    print(json.dumps(rows))
    for mode in args.modes:
        base = next((r for r in rows if r["mode"] == mode and r["items"] == min(args.items)), None)
        for r in rows:
            if base and r["mode"] == mode and r is not base:
                print(f"{mode}: {r['items']:,} items / {base['items']:,} items step time = "
                      f"{r['ms_per_step'] / base['ms_per_step']:.2f}x")


if __name__ == "__main__":
    main()
