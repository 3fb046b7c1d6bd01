"""Training step time of the whole two-tower model vs catalogue size, dense Adam vs LazyAdam (issue #17).

    nice -n 5 .venv/bin/python -m bench.bench_sparse_updates                       # 10k 100k 1M 10M
    nice -n 5 .venv/bin/python -m bench.bench_sparse_updates --items 10000 1000000 --rounds 5 --steps 80

For each catalogue size N and optimizer (``dense``: tf-keras Adam, ``train.sparse_updates: false``;
``lazy``: ``towers.optimizers.LazyAdam``, ``train.sparse_updates: true``) a fresh child process
builds a synthetic dataset of N items (item_id + a categorical genre) and a fixed interaction log
(``--users`` users × ``--events`` events, items drawn with a power-law skew over all N), and the
model of ``towers.train.build_model`` with the demo recipe's towers (user features + a bag of the
history items sharing the item-id table, item features, 64-d) plus streaming logQ and mixed
negative sampling over the N-item corpus. The item-id table has N rows (``tower.id_hash_bins = N``:
the table a catalogue of N items needs, whether or not the log touches every row). The child times
the compiled training step (``TwoTowerModel.train_step`` in one ``tf.function``, as Keras runs it)
on the same batch of ``--batch`` examples drawn at random from the log (``--batches K`` cycles K
different batches instead, as training does: then the rows a step touches are not in cache from
the step before; ``--first-batch`` takes the log's first examples, as sessions 4-5 did: ~40 users
whose batch touches only ~1k distinct item rows against ~4k (10k items) to ~11k (1M items) for a
random batch; the child reports those distinct item-id rows per batch, ``rows_touched``;
``--active-items M`` draws the log from the first M items only, so an N-row table is timed with
the rows touched of an M-item catalogue; ``--malloc-hugepages`` gives the children 2 MB pages). It runs
``--warmup`` steps, then ``--steps`` timed steps (``--dense-warmup`` and ``--dense-steps`` for
dense Adam, whose 1M step takes seconds).

Runs are repeated ``--rounds`` times, interleaved (round 1: 10k, 100k, 1M, ...; round 2 in the
reverse order; ...), each run in its own process, so slow drift of the shared machine's load hits
every size alike (sizes >= ``--big-items``, 10M by default, only in the first ``--big-rounds``
rounds: their setup alone takes minutes). Per run the child reports the median, 10th and 90th
percentile wall ms/step, the median process CPU ms/step (all threads: the work done, less
sensitive to other processes than wall time), minor page faults and involuntary context switches
per timed step (a context switch forced by another process is the noise this machine adds), the
process's peak RSS and the load average.
The summary gives, per size and optimizer, the median over rounds of the per-run medians with its
range, examples/s, and the step-time ratio to the smallest size: the ratio of the medians and the
range of the per-round (paired) ratios. ``--in-process`` builds every size in one process instead and
interleaves blocks of ``--steps`` timed steps (rounds as above; RSS is then the whole process's), so
every size is timed under the same load within seconds. Dense Adam above ``--dense-max-items`` is
skipped (at 10M rows its full-table temporaries need ~15 GB); ``--out`` saves every run as JSON lines.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _build(n_items: int, mode: str, args):
    """A compiled training step of the whole model on an N-item synthetic catalogue: (step, batches,
    table rows, distinct item-id rows a batch touches, setup seconds)."""
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
    active = min(args.active_items or n_items, n_items)  # the log draws from the first `active` items
    picked = np.minimum((active * rng.random(n_events) ** 3).astype(np.int64), active - 1)  # skewed
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
    order = np.random.default_rng(1).permutation(len(examples))
    if args.batches * args.batch > len(order):
        raise ValueError(f"--batches {args.batches} x --batch {args.batch} needs that many training examples, "
                         f"the log has {len(order)}: raise --users or --events")
    if args.first_batch:  # sessions 4-5: the log's first examples (~40 users, ~1k distinct item rows)
        order = np.arange(len(examples))
    batches = [next(iter(make_tf_dataset(dataset, examples.subset(np.sort(order[k * args.batch:(k + 1) * args.batch])),
                                         args.batch, shuffle=False, seed=0, history_width=examples.max_history)))
               for k in range(args.batches)]
    model.compute_loss(batches[0])
    model.optimizer.build(model.trainable_variables)
    id_embedding = model.item_tower.item_id_embedding
    rows = int(id_embedding.embeddings.shape[0])
    # distinct item-id rows a batch's positives and histories touch (MNS adds --mns uniform rows per step)
    touched = float(np.mean([len(np.setdiff1d(np.unique(np.concatenate([
        id_embedding.lookup(b["candidate"]["item_id"]).numpy().ravel(),
        id_embedding.lookup(b["query"]["history"]).numpy().ravel()])), [0])) for b in batches]))
    return tf.function(model.train_step), batches, rows, touched, time.perf_counter() - t0


def _time_steps(step, batches, steps: int, first: int = 0) -> dict:
    """Wall and CPU time, minor page faults and involuntary context switches of ``steps`` steps."""
    import resource

    import numpy as np

    wall, cpu, faults, switches = [], [], [], []
    for i in range(first, first + steps):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        c0, start = time.process_time(), time.perf_counter()
        out = step(batches[i % len(batches)])
        float(out["loss"])  # wait for the step
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - c0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - usage.ru_minflt)
        switches.append(after.ru_nivcsw - usage.ru_nivcsw)
    return {"ms_per_step": round(1e3 * float(np.median(wall)), 2),
            "p10_ms": round(1e3 * float(np.percentile(wall, 10)), 2),
            "p90_ms": round(1e3 * float(np.percentile(wall, 90)), 2),
            "cpu_ms_per_step": round(1e3 * float(np.median(cpu)), 2),
            "minor_faults_per_step": round(float(np.mean(faults)), 1),
            "invol_switches_per_step": round(float(np.mean(switches)), 1), "steps": steps}


def _peak_rss_gb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _warmup(mode: str, args) -> int:
    return args.dense_warmup if mode == "dense" else args.warmup


def _child(n_items: int, mode: str, args) -> dict:
    step, batches, rows, touched, setup = _build(n_items, mode, args)
    warmup = _warmup(mode, args)
    for i in range(warmup):
        float(step(batches[i % len(batches)])["loss"])
    row = {"items": n_items, "mode": mode,
           **_time_steps(step, batches, args.dense_steps if mode == "dense" else args.steps, warmup)}
    row.update({"examples_per_s": round(args.batch / row["ms_per_step"] * 1e3), "table_rows": rows,
                "rows_touched": round(touched), "peak_rss_gb": _peak_rss_gb(), "setup_s": round(setup, 1),
                "warmup": warmup,
                "batches": args.batches})
    return row


def _in_process(args) -> list[dict]:
    """Every (size, optimizer) built in this one process, then ``--rounds`` rounds of one block of
    timed steps each, interleaved (the order reversed every other round): every size sees the same
    load. Peak RSS is the whole process's (all models together)."""
    built = []
    for n in args.items:
        for mode in args.modes:
            if mode == "dense" and n > args.dense_max_items:
                continue
            step, batches, rows, touched, setup = _build(n, mode, args)
            for i in range(_warmup(mode, args)):
                float(step(batches[i % len(batches)])["loss"])
            built.append((n, mode, step, batches, rows, touched, setup))
    results, done = [], {}
    for round_ in range(args.rounds):
        for n, mode, step, batches, rows, touched, setup in (built if round_ % 2 == 0 else built[::-1]):
            steps = args.dense_steps if mode == "dense" else args.steps
            load = os.getloadavg()[0]
            first = _warmup(mode, args) + done.get((n, mode), 0)
            row = {"items": n, "mode": mode, **_time_steps(step, batches, steps, first)}
            done[(n, mode)] = done.get((n, mode), 0) + steps
            row.update({"examples_per_s": round(args.batch / row["ms_per_step"] * 1e3), "table_rows": rows,
                        "rows_touched": round(touched), "peak_rss_gb": _peak_rss_gb(), "setup_s": round(setup, 1),
                        "warmup": _warmup(mode, args),
                        "batches": args.batches, "round": round_, "load_before": round(load, 2),
                        "load_after": round(os.getloadavg()[0], 2), "utc": time.strftime("%H:%M:%S", time.gmtime()),
                        "in_process": True})
            results.append(row)
    return results


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def summarize(rows: list[dict], items: list[int], modes: list[str], batch: int) -> list[str]:
    """The summary lines of a bench run: per (size, optimizer) the median over rounds of the per-run
    medians and its range, then each size's step time over the smallest size's (ratio of medians;
    range of the ratios paired by round)."""
    lines = [f"{'items':>10} {'mode':5} {'runs':>4} {'ms/step med':>11} {'[min..max]':>17} {'cpu ms':>7} "
             f"{'ex/s':>7} {'rows':>7} {'faults/st':>9} {'invcsw/st':>9} {'peak RSS':>8}"]
    for mode in modes:
        for n in items:
            runs = [r for r in rows if r["mode"] == mode and r["items"] == n]
            if not runs:
                continue
            ms = [r["ms_per_step"] for r in runs]
            med = _median(ms)
            lines.append(f"{n:>10,} {mode:5} {len(runs):>4} {med:>11.1f} {f'[{min(ms):.1f}..{max(ms):.1f}]':>17} "
                         f"{_median([r['cpu_ms_per_step'] for r in runs]):>7.1f} {round(batch / med * 1e3):>7,} "
                         f"{runs[0].get('rows_touched', 0):>7,} "
                         f"{_median([r['minor_faults_per_step'] for r in runs]):>9.1f} "
                         f"{_median([r['invol_switches_per_step'] for r in runs]):>9.1f} "
                         f"{max(r['peak_rss_gb'] for r in runs):>6.2f} GB")
    for mode in modes:
        base_runs = {r["round"]: r for r in rows if r["mode"] == mode and r["items"] == min(items)}
        if not base_runs:
            continue
        base = _median([r["ms_per_step"] for r in base_runs.values()])
        for n in items:
            runs = [r for r in rows if r["mode"] == mode and r["items"] == n]
            if n == min(items) or not runs:
                continue
            paired = [r["ms_per_step"] / base_runs[r["round"]]["ms_per_step"] for r in runs if r["round"] in base_runs]
            ranged = (f"; per-round median {_median(paired):.2f}x, range {min(paired):.2f}x..{max(paired):.2f}x"
                      if paired else "")
            cpu = (_median([r["cpu_ms_per_step"] for r in runs])
                   / _median([r["cpu_ms_per_step"] for r in base_runs.values()]))
            lines.append(f"{mode}: {n:,} items / {min(items):,} items step time = "
                         f"{_median([r['ms_per_step'] for r in runs]) / base:.2f}x (median of {len(runs)} runs"
                         f"{ranged}); CPU time {cpu:.2f}x")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", nargs="*", type=int, default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--modes", nargs="*", default=["dense", "lazy"], choices=["dense", "lazy"])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=1, help="distinct batches cycled (1: the same batch)")
    parser.add_argument("--first-batch", action="store_true",
                        help="time the log's first --batch examples (sessions 4-5) instead of a random sample")
    parser.add_argument("--active-items", type=int, default=0,
                        help="the log draws from only the first this many items (0: all N): a big table with the "
                             "rows touched of a small catalogue")
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--events", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before the timed ones (LazyAdam)")
    parser.add_argument("--dense-warmup", type=int, default=3, help="untimed steps (dense Adam)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run (LazyAdam)")
    parser.add_argument("--dense-steps", type=int, default=10, help="timed steps per run (dense Adam)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions, each run a fresh process")
    parser.add_argument("--big-items", type=int, default=5_000_000,
                        help="sizes >= this run only in the first --big-rounds rounds (a 10M setup takes minutes)")
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--dense-max-items", type=int, default=1_000_000)
    parser.add_argument("--malloc-hugepages", action="store_true",
                        help="run the children with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc >= 2.35: malloc "
                             "asks for transparent 2 MB pages for large blocks, the tables among them)")
    parser.add_argument("--in-process", action="store_true",
                        help="build every size in this one process and interleave blocks of --steps timed steps")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child run")
    parser.add_argument("--out", help="append every run's result to this JSON-lines file")
    parser.add_argument("--child", nargs=2, metavar=("ITEMS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.active_items < 0:
        parser.error(f"--active-items must be >= 0 (0: all items), got {args.active_items}")
    for name in ("batch", "batches", "steps", "dense_steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.warmup, args.dense_warmup) < 0:
        parser.error(f"--warmup and --dense-warmup must be >= 0, got {args.warmup} and {args.dense_warmup}")
    if args.malloc_hugepages and args.in_process:
        parser.error("--malloc-hugepages applies to the child processes; it cannot be combined with --in-process "
                     "(set GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the environment instead)")
    if args.child:
        print("RESULT " + json.dumps(_child(int(args.child[0]), args.child[1], args)), flush=True)
        return

    print(f"load average {os.getloadavg()}  {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
    rows = []

    def report(row):
        rows.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(f"r{row['round']} {row['items']:>10,} {row['mode']:5} {row['ms_per_step']:8.1f} ms/step [p10 "
              f"{row['p10_ms']:.1f} p90 {row['p90_ms']:.1f}] cpu {row['cpu_ms_per_step']:.1f} ms  "
              f"{row['examples_per_s']:7,} ex/s  rows {row['rows_touched']:,}  faults/step "
              f"{row['minor_faults_per_step']}  invcsw/step "
              f"{row['invol_switches_per_step']}  peak RSS {row['peak_rss_gb']:.2f} GB  setup {row['setup_s']} s  "
              f"load {row['load_before']}->{row['load_after']}", flush=True)

    if args.in_process:
        for row in _in_process(args):
            report(row)
    else:
        passthrough = ["--batch", str(args.batch), "--batches", str(args.batches), "--users", str(args.users),
                       "--events", str(args.events), "--warmup", str(args.warmup), "--steps", str(args.steps),
                       "--dense-warmup", str(args.dense_warmup), "--dense-steps", str(args.dense_steps)]
        env = dict(os.environ)
        if args.malloc_hugepages:
            env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1"]))
        passthrough += (["--first-batch"] if args.first_batch else []) + ["--active-items", str(args.active_items)]
        for round_ in range(args.rounds):
            for n in (args.items if round_ % 2 == 0 else args.items[::-1]):
                if n >= args.big_items and round_ >= args.big_rounds:
                    continue
                for mode in args.modes:
                    if mode == "dense" and n > args.dense_max_items:
                        if round_ == 0:
                            print(f"{n:>10,} {mode:5}  skipped (> --dense-max-items)", flush=True)
                        continue
                    load = os.getloadavg()[0]
                    try:
                        run = subprocess.run([sys.executable, "-m", "bench.bench_sparse_updates", "--child", str(n),
                                              mode, *passthrough], capture_output=True, text=True,
                                             timeout=args.timeout, env=env)
                    except subprocess.TimeoutExpired:
                        print(f"{n:>10,} {mode:5}  timed out after {args.timeout:.0f} s", flush=True)
                        continue
                    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
                    if run.returncode != 0 or not lines:
                        print(f"{n:>10,} {mode:5}  failed: {run.stderr[-1500:]}", flush=True)
                        continue
                    row = json.loads(lines[-1][len("RESULT "):])
                    row.update({"round": round_, "load_before": round(load, 2),
                                "load_after": round(os.getloadavg()[0], 2),
                                "utc": time.strftime("%H:%M:%S", time.gmtime())})
                    report(row)
    print(f"load average {os.getloadavg()}  {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
    for line in summarize(rows, args.items, args.modes, args.batch):
        print(line)


if __name__ == "__main__":
    main()
