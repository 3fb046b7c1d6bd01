"""SSL (and logQ/MNS) step-time overhead vs the same model without them, MovieLens-100K, one process.

Every variant is built and traced first, then timed in interleaved rounds (so machine load hits every
variant alike); the medians of wall and CPU time per step are reported as ratios to the plain model and
to logQ+MNS without SSL (the SSL overhead the issue asks for: target <= 1.5x). The query-side SSL runs
once per ``--query-batch-sizes`` entry (users of the batch given two extra query-tower passes), and the
step time is split into what each SSL side adds (in ms and as a share of the logQ+MNS step).

Usage: .venv/bin/python -m bench.bench_ssl_overhead [features|sequence] [--query-batch-sizes 256,128]
       [--rounds 4] [--steps 10]
"""
import argparse
import os
import time

import numpy as np
from recdata.loading import DataConfig, load_dataset, make_split
from towers.config import TowerConfig, TrainConfig
from towers.inputs import make_tf_dataset, training_examples
from towers.objectives import RetrievalLossConfig, SSLConfig
from towers.tf_env import tf  # noqa: E402 (sets TF_USE_LEGACY_KERAS first)
from towers.train import build_model, make_optimizer
from towers.vocab import build_vocabularies


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("encoder", nargs="?", default="features", choices=["ids", "features", "sequence"])
    ap.add_argument("--query-batch-sizes", default="256,128",
                    help="ssl.query_batch_size values for the query-side variants (comma separated)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    ap.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    query_batches = [int(x) for x in args.query_batch_sizes.split(",") if x.strip()]
    ds = load_dataset(DataConfig())
    split = make_split(ds, DataConfig())
    base = TrainConfig(tower=TowerConfig(user_encoder=args.encoder), verbose=0)
    vocab = build_vocabularies(ds, split.train, base.tower)
    ex = training_examples(ds, split.train, base.tower.max_history, True)
    data = make_tf_dataset(ds, ex, base.batch_size, shuffle=True, seed=0).repeat()
    mns = RetrievalLossConfig(logq="streaming", mns_negatives=256)
    variants = {
        "plain": {},
        "logq+mns": dict(loss=mns),
        "logq+mns+rfm": dict(loss=mns, ssl=SSLConfig(mode="rfm")),
        "logq+mns+cfm": dict(loss=mns, ssl=SSLConfig(mode="cfm")),
    }
    for qb in query_batches:
        variants[f"logq+mns+cfm+query{qb}"] = dict(loss=mns, ssl=SSLConfig(mode="cfm", query_side=True,
                                                                           query_batch_size=qb))
    steps = {}
    for name, kw in variants.items():
        cfg = TrainConfig(**{**base.__dict__, **kw})
        tf.keras.utils.set_random_seed(0)
        m = build_model(vocab, cfg, ds, split.train)
        m.compile(optimizer=make_optimizer(cfg))
        it = iter(data)
        m.compute_loss(next(it), training=False)
        m.optimizer.build(m.trainable_variables)
        fn = m.make_train_function()
        t = time.time()
        fn(it)
        print(f"{name}: first step (trace) {time.time() - t:.1f}s", flush=True)
        for _ in range(3):
            fn(it)
        steps[name] = (fn, it)
    load_before = os.getloadavg()
    times = {n: {"wall": [], "cpu": []} for n in variants}
    for _ in range(args.rounds):  # interleaved rounds: machine load hits every variant alike
        for name, (fn, it) in steps.items():
            w, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                out = fn(it)
            float(out["loss"])
            times[name]["wall"].append((time.perf_counter() - w) / args.steps)
            times[name]["cpu"].append((time.process_time() - c) / args.steps)
    load_after = os.getloadavg()
    med = {n: {k: float(np.median(t[k])) for k in ("wall", "cpu")} for n, t in times.items()}
    b, s = med["plain"], med["logq+mns"]
    print(f"encoder={args.encoder} batch={base.batch_size} max_history={base.tower.max_history} "
          f"examples/epoch={len(ex)} rounds={args.rounds}x{args.steps} steps")
    print(f"load average before timing {load_before[0]:.2f}, after {load_after[0]:.2f} (1-min); "
          f"cpus {os.cpu_count()}")
    print(f"{'variant':26s} {'wall ms/step':>12s} {'cpu ms/step':>12s} {'wall×plain':>10s} "
          f"{'wall×(logq+mns)':>15s} {'cpu×(logq+mns)':>14s}")
    for name in variants:
        w, c = med[name]["wall"], med[name]["cpu"]
        print(f"{name:26s} {1e3 * w:12.1f} {1e3 * c:12.1f} {w / b['wall']:10.2f} {w / s['wall']:15.2f} "
              f"{c / s['cpu']:14.2f}")
    print("where the SSL step costs (CPU ms/step added; share of the logQ+MNS step):")
    parts = [("item side (cfm, uniform item batch)", "logq+mns+cfm", "logq+mns")]
    parts += [(f"query side, {qb} users", f"logq+mns+cfm+query{qb}", "logq+mns+cfm") for qb in query_batches]
    for label, hi, lo in parts:
        d = med[hi]["cpu"] - med[lo]["cpu"]
        print(f"  {label:36s} {1e3 * d:8.1f} ms  {d / s['cpu']:+.2f}")


if __name__ == "__main__":
    main()
