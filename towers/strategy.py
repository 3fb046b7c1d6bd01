"""The tf.distribute strategy training runs under, chosen by ``TrainConfig.strategy``.

  default       ``tf.distribute.get_strategy()``: one device, no replication
  mirrored      ``MirroredStrategy`` over every GPU; without GPUs (or with ``logical_cpus > 0``)
                over ``logical_cpus`` logical CPU devices — the way to exercise data-parallel
                training on a laptop or CI (each replica runs on the same cores, so it is a
                correctness check, not a speed-up)
  multi_worker  ``MultiWorkerMirroredStrategy``; the cluster and this worker's task come from the
                ``TF_CONFIG`` environment variable (JSON ``{"cluster": {"worker": [...]},
                "task": {"type": "worker", "index": i}}``)

Logical CPU devices can only be configured before TensorFlow initialises its devices (before the
first op runs); ``make_strategy`` does that when it still can and otherwise raises a
``RuntimeError`` saying how to fix it (start a fresh process, or call
``configure_logical_cpus`` first). With replicas, every global batch is split evenly across
them and in-batch negatives are per replica.
"""
from __future__ import annotations

import json
import os

from towers.tf_env import tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def configure_logical_cpus(count: int) -> list:
    """Split the first physical CPU into ``count`` logical devices; returns the logical CPUs.

    Idempotent when the split already exists. Raises ``RuntimeError`` when TensorFlow has already
    initialised its devices with a different layout.
    """
    if count <= 0:
        raise ValueError(f"count must be > 0, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return tf.config.list_logical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as exc:
        have = len(tf.config.list_logical_devices("CPU"))
        raise RuntimeError(
            f"cannot split the CPU into {count} logical devices: TensorFlow already initialised {have} "
            f"({exc}); run the training in a fresh process (nothing may touch TensorFlow first) or call "
            "towers.strategy.configure_logical_cpus before any other TensorFlow work") from None
    return tf.config.list_logical_devices("CPU")


def make_strategy(name: str = "default", logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The strategy for ``TrainConfig.strategy`` / ``logical_cpus`` (see module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {name!r}")
    if logical_cpus < 0:
        raise ValueError(f"logical_cpus must be >= 0, got {logical_cpus}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus and not logical_cpus:
            return tf.distribute.MirroredStrategy()
        devices = configure_logical_cpus(logical_cpus or 1)
        # CPU replicas must reduce without NCCL
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ValueError("strategy 'multi_worker' reads the cluster from the TF_CONFIG environment variable, "
                         'which is not set; set it, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", '
                         '"host2:2222"]}, "task": {"type": "worker", "index": 0}}\'')
    try:
        parsed = json.loads(config)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc}): {config[:200]!r}") from None
    if "cluster" not in parsed or "task" not in parsed:
        raise ValueError(f"TF_CONFIG needs 'cluster' and 'task' keys, got {sorted(parsed)}")
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints / logs (always true without multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)
