"""Where one training step of the full model goes, and examples/s of whole training runs, old vs new (issue #17).

    nice -n 5 .venv/bin/python -m bench.bench_train_speed phases                   # per-phase breakdown
    nice -n 5 .venv/bin/python -m bench.bench_train_speed compare --ref f71f27b    # examples/s, this tree vs git ref

``phases`` builds the model of ``--config`` (default ``full``: Transformer user encoder, CLUE,
streaming logQ, 256 MNS negatives, LazyAdam) on MovieLens-100K exactly as ``towers.train.train``
does and times each part of a training step separately, each in its own ``tf.function`` (the way
Keras runs the step), on ``--steps`` consecutive real batches after ``--warmup`` untimed ones:

  input pipeline        next batch from the training tf.data stream (gather + history windows)
  query forward         query tower on the batch (training=True)
  item forward          item tower on the batch's positives
  MNS gather + forward  the 256 uniform corpus rows gathered and run through the item tower
  loss                  logQ (frequency update + lookup, mixed-pool probability), id fingerprints,
                        scores, accidental hits, softmax cross-entropy, given the tower outputs
  forward (all terms)   ``TwoTowerModel._loss_terms`` (everything above but the input pipeline)
  forward + backward    the same under a GradientTape plus ``tape.gradient``
  train step            ``TwoTowerModel.train_step`` (forward + backward + optimizer + metrics)
  CLUE step             ``CluePretrainer.train_step`` (pretraining epochs)
and per epoch: the validation pass (``test_step`` over the validation batches), the held-out
recall monitor and a checkpoint save. Medians in ms; backward = (forward+backward) − forward;
optimizer = train step − (forward+backward).

``compare`` trains the configured model for real (``towers.train.train``, ``--epochs``) in child
processes, alternating this working tree and a git ``--ref`` (extracted with ``git archive``)
``--rounds`` times, so both see the same machine load (``--new-set`` overrides apply to this tree
only: ``--ref HEAD --new-set K=V`` compares one setting); it reports each run's examples/s (median
over epochs after the first), CLUE pretraining examples/s, wall time, the ratio new/old and the
load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


CPU = {}  # phase -> median process CPU ms (user + system, all threads): robust to other jobs' load


def _median_ms(fn, batches, warmup: int, name: str | None = None) -> float:
    """Median wall ms of ``fn(batch)`` over ``batches[warmup:]`` (CPU ms into ``CPU[name]``)."""
    import numpy as np

    for b in batches[:warmup]:
        _block(fn(b))
    times, cpu = [], []
    for b in batches[warmup:]:
        t, c = time.perf_counter(), time.process_time()
        _block(fn(b))
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if name:
        CPU[name] = 1e3 * float(np.median(cpu))
    return 1e3 * float(np.median(times))


def _block(out):
    from towers.tf_env import tf

    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):
            t.numpy()


def phases(args) -> dict:
    import numpy as np

    from recdata.loading import load_dataset, make_split
    from towers import train as train_mod
    from towers.clue import CluePretrainer
    from towers.inputs import heldout_examples, make_tf_dataset, training_examples
    from towers.loss import item_fingerprints, mixed_sampling_probability
    from towers.monitor import HeldoutRecall
    from towers.negatives import STREAM_MNS, step_seed
    from towers.tf_env import tf
    from towers.vocab import build_vocabularies
    from twotower.config import load_config

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    cfg = load_config(args.config, args.set).train
    dataset = load_dataset(load_config(args.config, args.set).data)
    split = make_split(dataset, load_config(args.config, args.set).data)
    tf.keras.utils.set_random_seed(cfg.seed)
    vocab = build_vocabularies(dataset, split.train, cfg.tower)
    train_ex = training_examples(dataset, split.train, cfg.tower.max_history, cfg.use_weights)
    model = train_mod.build_model(vocab, cfg, dataset, split.train)
    model.compile(optimizer=train_mod.make_optimizer(cfg), steps_per_execution=cfg.steps_per_execution)
    full_ex = train_ex
    window = getattr(model, "training_history_window", None)  # the batches towers.train feeds (older trees: all)
    if window:
        train_ex = train_ex.most_recent(window)
    n = args.warmup + args.steps
    kwargs = dict(shuffle=True, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer, epochs=cfg.epochs,
                  history_width=train_ex.max_history)
    ds = make_tf_dataset(dataset, train_ex, cfg.batch_size, **kwargs)
    it = iter(ds)
    batches = [next(it) for _ in range(n)]
    model.compute_loss(batches[0], training=False)
    model.optimizer.build(model.trainable_variables)
    out = {"config": args.config, "batch_size": cfg.batch_size, "steps": args.steps}

    def input_pipeline():  # the stream of towers.train: history cut to the model's window when it has one
        stream = iter(make_tf_dataset(dataset, train_ex, cfg.batch_size, **kwargs))
        for _ in range(3):
            next(stream)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            _block(next(stream))
        CPU["input pipeline"] = 1e3 * (time.process_time() - c) / args.steps
        return 1e3 * (time.perf_counter() - t) / args.steps

    out["input pipeline"] = input_pipeline()
    lc = model.loss_config

    @tf.function
    def query_fwd(b):
        return model.query_tower(b["query"], training=True)

    @tf.function
    def item_fwd(b):
        return model.item_tower(b["candidate"], training=True)

    @tf.function
    def mns_fwd(b):
        rows = model.corpus.uniform_rows(lc.mns_negatives, step_seed(model.seed, model.sample_step, STREAM_MNS))
        return model.item_tower(model.corpus.gather(rows), training=True)

    q, c = query_fwd(batches[0]), item_fwd(batches[0])
    if lc.mns_negatives:
        c = tf.concat([c, mns_fwd(batches[0])], axis=0)
        extra_ids = model.corpus.gather(model.corpus.uniform_rows(lc.mns_negatives, tf.constant([0, 1], tf.int64)))[
            "item_id"]

    @tf.function
    def loss_only(b):
        ids = b["candidate"]["item_id"]
        all_ids = tf.concat([ids, extra_ids], 0) if lc.mns_negatives else ids
        batch = tf.shape(ids)[0]
        p = None
        if model.frequency is not None:
            model.frequency.update(ids)
            p = model.frequency.probability(all_ids, batch)
            if lc.mns_negatives:
                p = mixed_sampling_probability(p, batch, lc.mns_negatives, model.corpus.size)
        fp = item_fingerprints(all_ids) if lc.remove_accidental_hits else None
        return model.retrieval(q, c, sample_weight=b.get("weight"), sampling_probability=p, candidate_ids=fp)

    @tf.function
    def forward(b):
        return model._total(model._loss_terms(b, training=True))

    @tf.function
    def forward_backward(b):
        with tf.GradientTape() as tape:
            total = model._total(model._loss_terms(b, training=True))
        return tape.gradient(total, model.trainable_variables)

    step = tf.function(model.train_step)
    out["query forward"] = _median_ms(query_fwd, batches, args.warmup, "query forward")
    out["item forward (positives)"] = _median_ms(item_fwd, batches, args.warmup, "item forward (positives)")
    if lc.mns_negatives:
        out["MNS gather + item forward"] = _median_ms(mns_fwd, batches, args.warmup, "MNS gather + item forward")
    out["loss (logQ, hits, softmax)"] = _median_ms(loss_only, batches, args.warmup, "loss (logQ, hits, softmax)")
    out["forward (all terms)"] = _median_ms(forward, batches, args.warmup, "forward (all terms)")
    out["forward + backward"] = _median_ms(forward_backward, batches, args.warmup, "forward + backward")
    out["train step"] = _median_ms(step, batches, args.warmup, "train step")
    out["backward"] = out["forward + backward"] - out["forward (all terms)"]
    out["optimizer + metrics"] = out["train step"] - out["forward + backward"]
    CPU["backward"] = CPU["forward + backward"] - CPU["forward (all terms)"]
    CPU["optimizer + metrics"] = CPU["train step"] - CPU["forward + backward"]
    if cfg.clue == "pretrain":
        pre = CluePretrainer(train_mod.clue_objective(model.query_tower, cfg, 1.0))
        pre.compile(optimizer=train_mod.make_optimizer(cfg))
        pre.optimizer.build(pre.objective.trainable_variables)
        clue_batches = batches
        if window:  # CLUE pretraining reads whole histories
            stream = iter(make_tf_dataset(dataset, full_ex, cfg.batch_size, **{**kwargs, "history_width":
                                                                                 full_ex.max_history}))
            clue_batches = [next(stream) for _ in range(n)]
        out["CLUE pretrain step"] = _median_ms(tf.function(pre.train_step), clue_batches, args.warmup,
                                               "CLUE pretrain step")

    # per-epoch extras
    valid_ex = heldout_examples(dataset, split.train, split.valid, cfg.tower.max_history, cfg.use_weights)
    valid_step_ex = valid_ex.most_recent(window) if window else valid_ex
    valid_ds = make_tf_dataset(dataset, valid_step_ex, cfg.batch_size, shuffle=False, seed=cfg.seed, cache=True,
                               history_width=valid_step_ex.max_history)
    test = tf.function(model.test_step)
    for b in valid_ds:
        _block(test(b))
    t = time.perf_counter()
    for b in valid_ds:
        _block(test(b))
    out["validation pass (per epoch)"] = 1e3 * (time.perf_counter() - t)
    monitor = HeldoutRecall(dataset, valid_ex, split.train, k=cfg.monitor_recall_k, max_queries=cfg.monitor_queries,
                            seed=cfg.seed)
    monitor.set_model(model)
    monitor.on_epoch_end(0, {})
    t = time.perf_counter()
    monitor.on_epoch_end(0, {})
    out["recall monitor (per epoch)"] = 1e3 * (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=model.optimizer), tmp, 1)
        ckpt.save(1)
        t = time.perf_counter()
        ckpt.save(2)
        out["checkpoint save (per epoch)"] = 1e3 * (time.perf_counter() - t)
    out["cpu_ms"] = dict(CPU)
    out["train examples"] = len(train_ex)
    out["steps per epoch"] = -(-len(train_ex) // cfg.batch_size)
    return out


def train_child(args) -> dict:
    import numpy as np

    import towers.train as train_mod
    from recdata.loading import load_dataset, make_split
    from towers.train import train
    from twotower.config import load_config

    cpu = []

    class CpuTimer(train_mod._EpochTimer):  # also the process CPU seconds of each epoch's training part
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self._cpu = time.process_time()

        def _stop(self):
            if self._start is not None:
                cpu.append(time.process_time() - self._cpu)
            super()._stop()

    train_mod._EpochTimer = CpuTimer

    cfg = load_config(args.config, args.set + [f"train.epochs={args.epochs}", "train.verbose=0"])
    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        r = train(dataset, split, cfg.train, tmp)
        wall = time.perf_counter() - t
    clue = r.extra.get("clue_pretrain", {}).get("epoch_train_seconds", [])
    retrieval_cpu = cpu[len(clue):]
    per_cpu = r.num_train_examples / np.median(retrieval_cpu[1:] or retrieval_cpu)
    return {"examples_per_s": round(r.examples_per_second, 1), "examples_per_cpu_s": round(float(per_cpu), 1),
            "epoch_s": [round(s, 2) for s in r.epoch_train_seconds], "epoch_cpu_s": [round(s, 2) for s in retrieval_cpu],
            "clue_epoch_s": [round(s, 2) for s in clue],
            "clue_examples_per_s": round(r.num_train_examples / min(clue), 1) if clue else None,
            "wall_s": round(wall, 1), "val_recall@10": r.history.get("val_recall@10", [])}


def _extract(ref: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _run_child(tree: Path, mode: str, args, extra=(), sets=()) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--config", args.config,
           "--epochs", str(args.epochs), "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--threads", str(args.threads), *extra]
    for s in [*args.set, *sets]:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tree))
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"child {mode} in {tree} failed:\n{run.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["phases", "compare"], default="phases")
    parser.add_argument("--config", default="full")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (both sides)")
    parser.add_argument("--new-set", action="append", default=[],
                        help="override for the new side only (compare one setting: --ref HEAD --new-set K=V)")
    parser.add_argument("--ref", default=None, help="git ref of the old code (compare, and phases of both)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0,
                        help="phases: TF intra/inter-op threads (1 = CPU time without thread-pool spinning)")
    parser.add_argument("--child", choices=["phases", "train"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = phases(args) if args.child == "phases" else train_child(args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    sides = {"new": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        if args.ref:
            sides = {"old": _extract(args.ref, Path(tmp) / "old"), "new": ROOT}
        print(f"load before: {os.getloadavg()}", flush=True)
        results = {name: [] for name in sides}
        mode = "phases" if args.what == "phases" else "train"
        for r in range(args.rounds if args.what == "compare" else 1):
            for name, tree in sides.items():
                res = _run_child(tree, mode, args, sets=args.new_set if name == "new" else ())
                res["load"] = [round(x, 2) for x in os.getloadavg()]
                results[name].append(res)
                print(f"round {r} {name}: {json.dumps(res)}", flush=True)
        print(f"load after: {os.getloadavg()}", flush=True)
    if args.what == "phases":
        keys = [k for name in sides for k in results[name][0] if k not in ("config", "cpu_ms", "load")]
        keys = list(dict.fromkeys(keys))
        print("| phase (ms) | " + " | ".join(f"{n} wall | {n} CPU" for n in sides) + " |")
        print("|---|" + "---:|" * (2 * len(sides)))
        for k in keys:
            cells = []
            for name in sides:
                v, c = results[name][0].get(k), results[name][0].get("cpu_ms", {}).get(k)
                cells.append("–" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v)))
                cells.append("" if c is None else f"{c:.1f}")
            print(f"| {k} | " + " | ".join(cells) + " |")
    else:
        import numpy as np

        for name in sides:
            eps = [r["examples_per_s"] for r in results[name]]
            clue = [r["clue_examples_per_s"] for r in results[name] if r["clue_examples_per_s"]]
            per_cpu = [r["examples_per_cpu_s"] for r in results[name]]
            print(f"{name}: examples/s {eps} median {np.median(eps):.0f}; examples per CPU-second {per_cpu}; "
                  f"CLUE examples/s {clue}; "
                  f"wall {[r['wall_s'] for r in results[name]]}")
        if "old" in results:
            ratio = np.median([r["examples_per_s"] for r in results["new"]]) / np.median(
                [r["examples_per_s"] for r in results["old"]])
            cpu_ratio = np.median([r["examples_per_cpu_s"] for r in results["new"]]) / np.median(
                [r["examples_per_cpu_s"] for r in results["old"]])
            print(f"ratio new/old examples/s: {ratio:.2f}; examples per CPU-second: {cpu_ratio:.2f}")


if __name__ == "__main__":
    main()
