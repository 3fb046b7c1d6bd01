"""towers.kernels against the TensorFlow/Keras ops they replace: forward + backward time at the full
model's shapes (issue #17).

    nice -n 5 .venv/bin/python -m bench.bench_kernels [--threads 2] [--steps 50] [--rounds 2]

Each case runs value and gradient (w.r.t. the input and the weights) in one ``tf.function``,
alternating reference and ours ``--rounds`` times in one process, and prints CPU and wall ms per
call (medians over rounds) and the ratio. Shapes: a sequence-encoder activation [1024, 11, 32]
(batch 1,024, ``max_length`` 10 + the padding column, width 32) for layer norm and dropout, and the
feed-forward input [11264, 64] for GELU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _time(fn, steps: int) -> tuple[float, float]:
    for _ in range(5):
        [t.numpy() for t in fn()]
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        [t.numpy() for t in fn()]
    return 1e3 * (time.process_time() - cpu) / steps, 1e3 * (time.perf_counter() - wall) / steps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    from towers.kernels import LayerNorm, gelu, stateless_dropout
    from towers.tf_env import tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(0)
    x = tf.Variable(rng.normal(size=(1024, 11, 32)).astype(np.float32))
    cot = tf.constant(rng.normal(size=(1024, 11, 32)).astype(np.float32))
    h = tf.Variable((2 * rng.normal(size=(11264, 64))).astype(np.float32))
    keras_ln, our_ln = tf.keras.layers.LayerNormalization(epsilon=1e-6), LayerNorm(epsilon=1e-6)
    keras_ln.build(x.shape)
    our_ln.build(x.shape)
    seed = tf.constant([1, 2], tf.int64)

    def case(f, variables, cotangent):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(f() * cotangent)
            return tape.gradient(total, variables)
        return run

    cases = {
        "layer norm [1024, 11, 32]": (case(lambda: keras_ln(x), [x, *keras_ln.weights], cot),
                                      case(lambda: our_ln(x), [x, *our_ln.weights], cot)),
        "GELU [11264, 64]": (case(lambda: tf.nn.gelu(h, approximate=False), [h], h),
                             case(lambda: gelu(h), [h], h)),
        "dropout 0.1 [1024, 11, 32]": (case(lambda: tf.nn.experimental.stateless_dropout(x, 0.1, seed=seed), [x], cot),
                                       case(lambda: stateless_dropout(x, 0.1, seed), [x], cot)),
    }
    out = {}
    print(f"| op, fwd + bwd ({args.threads} threads) | reference CPU ms | ours CPU ms | CPU ratio | reference wall ms "
          "| ours wall ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (ref, ours) in cases.items():
        runs = {"ref": [], "ours": []}
        for _ in range(args.rounds):
            runs["ref"].append(_time(ref, args.steps))
            runs["ours"].append(_time(ours, args.steps))
        r_cpu, r_wall = np.median([c for c, _ in runs["ref"]]), np.median([w for _, w in runs["ref"]])
        o_cpu, o_wall = np.median([c for c, _ in runs["ours"]]), np.median([w for _, w in runs["ours"]])
        out[name] = {"ref_cpu_ms": r_cpu, "ours_cpu_ms": o_cpu, "ref_wall_ms": r_wall, "ours_wall_ms": o_wall}
        print(f"| {name} | {r_cpu:.2f} | {o_cpu:.2f} | {o_cpu / r_cpu:.2f} | {r_wall:.2f} | {o_wall:.2f} |")
    return out


if __name__ == "__main__":
    main()
