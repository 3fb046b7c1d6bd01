"""Test and benchmark support: a small hashing item tower exported in the real layout, and
synthetic item tables.

``export_hashing_item_tower`` writes ``<model_dir>/item_tower/`` (a SavedModel whose
"serving_default" signature takes the contract's raw inputs and returns an L2-normalised
``{"embedding": float32 [B, D]}``, with the ``model_version`` variable and signature and
``assets.extra/tower.json``), ``<model_dir>/model_version`` and ``<model_dir>/manifest.json`` —
the layout ``towers.export.export_towers`` writes and ``towers.export.load_tower`` reads — so
the Beam jobs can be tested without training and with towers that misbehave on purpose.
The embedding: every string (id, category, list entry, text word) is hashed into a seeded table,
lists and words are averaged, numerics scale a seeded vector (NaN = 0), the sum goes through one
tanh hidden layer and a projection, then L2 normalisation. Items whose id is in ``nan_item_ids``
get NaN vectors (to test that validation refuses to publish them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recdata.schema import FeatureSpec

DEFAULT_ITEM_FEATURES = (
    FeatureSpec("genre", "categorical"),
    FeatureSpec("tags", "multi_categorical"),
    FeatureSpec("price", "numeric"),
    FeatureSpec("title", "text"),
)


def export_hashing_item_tower(model_dir: str | Path, features: Sequence[FeatureSpec] = DEFAULT_ITEM_FEATURES,
                              dim: int = 32, buckets: int = 4096, hidden: int = 128, seed: int = 0,
                              model_version: str = "hash-v1", nan_item_ids: Sequence[str] = ()) -> Path:
    """Export the hashing tower to ``model_dir/item_tower``; returns that path."""
    from towers.tf_env import tf

    model_dir = Path(model_dir)
    rng = np.random.default_rng(seed)
    width = 2 * dim
    table = rng.normal(size=(buckets, width)).astype(np.float32)
    numeric_dirs = rng.normal(size=(max(1, len(features)), width)).astype(np.float32)
    w1 = (rng.normal(size=(width, hidden)) / np.sqrt(width)).astype(np.float32)
    w2 = (rng.normal(size=(hidden, dim)) / np.sqrt(hidden)).astype(np.float32)

    specs = {"item_id": tf.TensorSpec([None], tf.string, name="item_id")}
    for f in features:
        if f.kind == "multi_categorical":
            specs[f.name] = tf.TensorSpec([None, None], tf.string, name=f.name)
        elif f.kind == "numeric":
            specs[f.name] = tf.TensorSpec([None], tf.float32, name=f.name)
        else:
            specs[f.name] = tf.TensorSpec([None], tf.string, name=f.name)
    kinds = {f.name: f.kind for f in features}
    nan_ids = list(nan_item_ids)

    class HashingItemTower(tf.Module):
        def __init__(self):
            super().__init__()
            self.model_version = tf.Variable(model_version, trainable=False, dtype=tf.string)
            self.table = tf.Variable(table, trainable=False)
            self.numeric_dirs = tf.Variable(numeric_dirs, trainable=False)
            self.w1 = tf.Variable(w1, trainable=False)
            self.w2 = tf.Variable(w2, trainable=False)

        def _mean_of_tokens(self, tokens):  # tokens: RaggedTensor or [B, N] with "" padding
            if isinstance(tokens, tf.RaggedTensor):
                tokens = tokens.to_tensor("")
            ids = tf.strings.to_hash_bucket_fast(tokens, buckets)
            mask = tf.cast(tf.not_equal(tokens, ""), tf.float32)[..., None]
            summed = tf.reduce_sum(tf.gather(self.table, ids) * mask, axis=1)
            return summed / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            h = tf.gather(self.table, tf.strings.to_hash_bucket_fast(inputs["item_id"], buckets))
            for i, (name, kind) in enumerate(sorted(kinds.items())):
                x = inputs[name]
                if kind == "numeric":
                    x = tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)
                    h += x[:, None] * self.numeric_dirs[i]
                elif kind == "multi_categorical":
                    h += self._mean_of_tokens(x)
                elif kind == "text":
                    h += self._mean_of_tokens(tf.strings.split(tf.strings.lower(x)))
                else:
                    h += tf.gather(self.table, tf.strings.to_hash_bucket_fast(x, buckets))
            emb = tf.math.l2_normalize(tf.tanh(h @ self.w1) @ self.w2, axis=1)
            if nan_ids:
                bad = tf.reduce_any(tf.equal(inputs["item_id"][:, None], tf.constant(nan_ids)[None, :]), axis=1)
                emb = tf.where(bad[:, None], tf.fill(tf.shape(emb), float("nan")), emb)
            return {"embedding": emb}

        @tf.function(input_signature=[])
        def version(self):
            return {"model_version": tf.identity(self.model_version)}

    from towers.export import TOWER_INFO
    from core.artifacts import atomic_write_json, write_manifest

    module = HashingItemTower()
    path = model_dir / "item_tower"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve.get_concrete_function(),
                                                        "model_version": module.version.get_concrete_function()})
    atomic_write_json(path / TOWER_INFO, {
        "tower": "item_tower", "model_version": model_version, "input_names": list(specs), "output_dim": dim,
        "features": [{"name": f.name, "kind": f.kind} for f in features]})
    (model_dir / "model_version").write_text(model_version + "\n")
    write_manifest(model_dir, {"kind": "towers", "model_version": model_version, "output_dim": dim,
                               "item_features": [{"name": f.name, "kind": f.kind} for f in features],
                               "note": "hashing item tower for tests and benchmarks (beam_jobs.testing)"})
    return path


def synthetic_items(n: int, features: Sequence[FeatureSpec] = DEFAULT_ITEM_FEATURES, seed: int = 0,
                    id_prefix: str = "item") -> pd.DataFrame:
    """An items table with ``n`` rows in the recdata schema (ids ``f"{id_prefix}{i}"``)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(500)], dtype=object)
    cols: dict[str, object] = {"item_id": [f"{id_prefix}{i}" for i in range(n)]}
    for f in features:
        if f.kind == "categorical":
            cols[f.name] = [f"{f.name}{v}" for v in rng.integers(0, 50, size=n)]
        elif f.kind == "multi_categorical":
            lengths = rng.integers(0, 6, size=n)
            vocab = rng.integers(0, 200, size=int(lengths.sum()))
            splits = np.split(vocab, np.cumsum(lengths)[:-1])
            cols[f.name] = [[f"{f.name}{v}" for v in s] for s in splits]
        elif f.kind == "numeric":
            vals = rng.lognormal(size=n).astype(np.float64)
            vals[rng.random(n) < 0.05] = np.nan
            cols[f.name] = vals
        else:
            lengths = rng.integers(1, 8, size=n)
            cols[f.name] = [" ".join(words[rng.integers(0, len(words), size=k)]) for k in lengths]
    return pd.DataFrame(cols)


_EXPORTED: dict[tuple, Path] = {}


def cached_hashing_item_tower(**kwargs) -> Path:
    """``export_hashing_item_tower(<temp dir>, **kwargs)`` once per process and arguments; returns the
    model directory (holding ``item_tower/`` and ``model_version``). For tests: exporting costs seconds."""
    import tempfile

    key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in kwargs.items()))
    if key not in _EXPORTED or not (_EXPORTED[key] / "item_tower").is_dir():
        model_dir = Path(tempfile.mkdtemp(prefix="hashing-item-tower-")) / "model"
        export_hashing_item_tower(model_dir, **kwargs)
        _EXPORTED[key] = model_dir
    return _EXPORTED[key]
