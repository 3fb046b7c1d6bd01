"""SSL (and logQ/MNS) step-time overhead vs the same model without them, MovieLens-100K, one process.

Every variant is built and traced first, then timed in interleaved rounds (so machine load hits every
variant alike); the medians of wall and CPU time per step are reported as ratios to the plain model and
to logQ+MNS without SSL (the SSL overhead the issue asks for: target <= 1.5x).

Usage: .venv/bin/python -m bench.bench_ssl_overhead [features|sequence]
"""
import sys
import time

import numpy as np
from recdata.loading import DataConfig, load_dataset, make_split
from towers.config import TowerConfig, TrainConfig
from towers.inputs import make_tf_dataset, training_examples
from towers.objectives import RetrievalLossConfig, SSLConfig
from towers.tf_env import tf  # noqa: E402 (sets TF_USE_LEGACY_KERAS first)
from towers.train import build_model, make_optimizer
from towers.vocab import build_vocabularies

encoder = sys.argv[1] if len(sys.argv) > 1 else "features"
ds = load_dataset(DataConfig())
split = make_split(ds, DataConfig())
base = TrainConfig(tower=TowerConfig(user_encoder=encoder), verbose=0)
vocab = build_vocabularies(ds, split.train, base.tower)
ex = training_examples(ds, split.train, base.tower.max_history, True)
data = make_tf_dataset(ds, ex, base.batch_size, shuffle=True, seed=0).repeat()
mns = RetrievalLossConfig(logq="streaming", mns_negatives=256)
variants = {
    "plain": {},
    "logq+mns": dict(loss=mns),
    "logq+mns+rfm": dict(loss=mns, ssl=SSLConfig(mode="rfm")),
    "logq+mns+cfm": dict(loss=mns, ssl=SSLConfig(mode="cfm")),
    "logq+mns+cfm+query": dict(loss=mns, ssl=SSLConfig(mode="cfm", query_side=True)),
}
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
    t = time.time(); fn(it); print(f"{name}: first step (trace) {time.time() - t:.1f}s", flush=True)
    for _ in range(3):
        fn(it)
    steps[name] = (fn, it)
times = {n: {"wall": [], "cpu": []} for n in variants}
N = 10
for r in range(4):  # interleaved rounds: machine load hits every variant alike
    for name, (fn, it) in steps.items():
        w, c = time.perf_counter(), time.process_time()
        for _ in range(N):
            out = fn(it)
        float(out["loss"])
        times[name]["wall"].append((time.perf_counter() - w) / N)
        times[name]["cpu"].append((time.process_time() - c) / N)
b = {k: np.median(times["plain"][k]) for k in ("wall", "cpu")}
s = {k: np.median(times["logq+mns"][k]) for k in ("wall", "cpu")}
print(f"encoder={encoder} batch={base.batch_size} examples/epoch={len(ex)}")
print(f"{'variant':22s} {'wall ms/step':>12s} {'cpu ms/step':>12s} {'wall×plain':>10s} {'wall×(logq+mns)':>15s} {'cpu×(logq+mns)':>14s}")
for name, t in times.items():
    w, c = np.median(t["wall"]), np.median(t["cpu"])
    print(f"{name:22s} {1e3*w:12.1f} {1e3*c:12.1f} {w/b['wall']:10.2f} {w/s['wall']:15.2f} {c/s['cpu']:14.2f}")
