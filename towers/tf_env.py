"""The one place TensorFlow is imported from.

TFRS 0.7.7 refuses Keras 3, so ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first
imported; TensorFlow's C++ start-up logging is silenced here too, and oneDNN's CPU kernels are on
unless the environment says otherwise. Every module that needs
TensorFlow does ``from towers.tf_env import tf`` (and ``tfrs`` when it needs TFRS).
"""
from __future__ import annotations

import logging
import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "tensorflow was imported before towers.tf_env set TF_USE_LEGACY_KERAS=1; TFRS needs legacy "
        "Keras (tf_keras). Import towers (or towers.tf_env) before tensorflow"
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels on (TensorFlow's own default on Linux x86): 1.08x examples/s of the full model here, side by
# side (docs/notes/trainfast.md, session 9); TF_ENABLE_ONEDNN_OPTS=0 in the environment turns them off
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import contextlib  # noqa: E402
import tempfile  # noqa: E402


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hide C++ start-up lines (absl/cudart) written to fd 2; replay them if the import fails."""
    if os.environ.get("TWOTOWER_TF_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


with _quiet_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tensorflow_recommenders as tfrs  # noqa: E402

    # Device discovery prints "failed call to cuInit" on machines without a GPU; do it here, quietly.
    GPUS = tf.config.list_physical_devices("GPU")

tf.get_logger().setLevel(logging.ERROR)
logging.getLogger("absl").setLevel(logging.ERROR)

__all__ = ["tf", "tfrs", "GPUS"]
