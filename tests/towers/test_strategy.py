import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from towers.strategy import make_strategy

ROOT = Path(__file__).resolve().parents[2]

# Logical CPU devices must be configured before TensorFlow initialises its devices, which pytest's
# process has long done: the training runs in a fresh interpreter.
SCRIPT = textwrap.dedent("""
    import json, sys
    from tests.towers.conftest import planted, PLANTED_TRAIN
    from towers.config import TrainConfig
    from towers.train import train
    from core.strict import from_dict

    ds, split = planted()
    cfg = from_dict(TrainConfig, {**PLANTED_TRAIN, "epochs": 2, "strategy": "mirrored", "logical_cpus": 2,
                                  "keep_checkpoints": 0, "monitor_recall_k": 0,
                                  "tower": {**PLANTED_TRAIN["tower"], "user_encoder": "sequence",
                                            "sequence": {"num_layers": 1, "num_heads": 2, "width": 16,
                                                         "ff_dim": 16}}})
    result = train(ds, split, cfg, sys.argv[1])
    from towers.tf_env import tf
    print(json.dumps({"loss": result.history["loss"], "val_loss": result.history["val_loss"], "replicas": result.model.distribute_strategy.num_replicas_in_sync,
                      "devices": [d.name for d in tf.config.list_logical_devices("CPU")]}))
""")


def test_mirrored_training_on_two_logical_cpus_gives_a_finite_decreasing_loss(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and len(out["devices"]) == 2
    loss = out["loss"]
    assert all(x == x and x < float("inf") for x in loss), loss
    assert loss[-1] < loss[0], loss
    assert len(out["val_loss"]) == 2 and all(x == x and x < float("inf") for x in out["val_loss"]), out


def test_default_strategy_and_bad_names():
    from towers.tf_env import tf
    assert make_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match=r"strategy must be one of \['default', 'mirrored', 'multi_worker'\], got 'tpu'"):
        make_strategy("tpu")


def test_multi_worker_needs_a_valid_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="reads the cluster from the TF_CONFIG environment variable"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}}))
    with pytest.raises(ValueError, match=r"TF_CONFIG needs 'cluster' and 'task' keys, got \['cluster'\]"):
        make_strategy("multi_worker")


def test_logical_cpus_after_tensorflow_started_says_how_to_fix():
    from towers.tf_env import tf
    tf.constant(1.0) + 1.0  # devices are initialised now
    if len(tf.config.list_logical_devices("CPU")) == 3:
        pytest.skip("this process already has 3 logical CPUs")
    with pytest.raises(RuntimeError, match="run the training in a fresh process"):
        make_strategy("mirrored", logical_cpus=3)
