"""Export both towers as SavedModels that take RAW features, and load them back.

Layout written by ``export_towers(query_tower, item_tower, vocab, model_dir)``::

  model_dir/
    item_tower/      SavedModel; signature "serving_default": item_id str [B] + item features
                     → {"embedding": float32 [B, D]}; signature "model_version" → {"model_version"}
    query_tower/     SavedModel; user_id str [B] + user features + history str [B, L] +
                     history_timestamps int64 [B, L] + timestamp int64 [B] → {"embedding"}
    vocab/           vocabularies the towers were built from (``towers.vocab``)
    model_version    the version id both SavedModels carry (text, one line)
    manifest.json    written last: sha256 + size of every file, version, dims, feature specs

Each SavedModel also holds ``assets.extra/tower.json`` (its input names in order, output dim,
version). Input dtypes per feature kind: categorical / text str [B], multi_categorical str
[B, N] padded with "", numeric float32 [B] (NaN = missing). Unknown ids and categories map to
OOV rows, so any string is a valid input.

The directory is built in a hidden staging directory next to ``model_dir`` and moved into
place; an existing ``model_dir`` is only replaced with ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from recdata.schema import FeatureSpec
from towers.features import check_input_name
from towers.tf_env import tf
from towers.vocab import Vocabularies, save_vocabularies
from core.guard import require_same_model
from core.artifacts import (MANIFEST, atomic_write_json, atomic_write_text, fsync_dir, verify_manifest,
                                write_manifest)

SIGNATURE = "serving_default"
TOWER_INFO = Path("assets.extra") / "tower.json"
_DTYPES = {"categorical": tf.string, "text": tf.string, "multi_categorical": tf.string, "numeric": tf.float32}


def feature_signature(specs) -> dict:
    """{name: tf.TensorSpec} of the side features (see module docstring for shapes)."""
    out = {}
    for spec in specs:
        check_input_name(spec.name, "exported")
        shape = [None, None] if spec.kind == "multi_categorical" else [None]
        out[spec.name] = tf.TensorSpec(shape, _DTYPES[spec.kind], name=spec.name)
    return out


def item_signature(item_specs) -> dict:
    return {"item_id": tf.TensorSpec([None], tf.string, name="item_id"), **feature_signature(item_specs)}


def query_signature(user_specs) -> dict:
    return {"user_id": tf.TensorSpec([None], tf.string, name="user_id"), **feature_signature(user_specs),
            "history": tf.TensorSpec([None, None], tf.string, name="history"),
            "history_timestamps": tf.TensorSpec([None, None], tf.int64, name="history_timestamps"),
            "timestamp": tf.TensorSpec([None], tf.int64, name="timestamp")}


class _ServingTower(tf.Module):
    """A tower plus its version, with the raw-feature serving signature."""

    def __init__(self, tower, signature: dict, model_version: str):
        super().__init__()
        self.tower = tower
        self.model_version = tf.Variable(model_version, trainable=False, dtype=tf.string, name="model_version")
        self.serve = tf.function(self._serve, input_signature=[signature])
        self.version = tf.function(self._version, input_signature=[])

    def _serve(self, features):
        return {"embedding": self.tower(features, training=False)}

    def _version(self):
        return {"model_version": tf.identity(self.model_version)}


def weights_digest(*towers) -> str:
    """sha256 over the towers' weights (names, shapes and values), for a content-derived version id."""
    h = hashlib.sha256()
    seen = set()
    for tower in towers:
        for w in tower.weights:
            if id(w) in seen:
                continue
            seen.add(id(w))
            h.update(w.name.encode())
            h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()


def export_towers(query_tower, item_tower, vocab: Vocabularies, model_dir: str | Path, *,
                  model_version: str | None = None, extra_manifest: dict | None = None,
                  overwrite: bool = False) -> str:
    """Write ``model_dir`` (layout in the module docstring); returns the model version id.

    model_version   default "<UTC time>-<first 10 hex of the weights' sha256>"
    extra_manifest  more JSON fields for manifest.json (e.g. the resolved training config)
    """
    model_dir = Path(model_dir)
    if model_dir.exists() and not overwrite:
        raise FileExistsError(f"{model_dir} already exists; pass overwrite=True to replace it, or export "
                              "to a new directory")
    if model_version is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        model_version = f"{stamp}-{weights_digest(query_tower, item_tower)[:10]}"
    if not model_version or "\n" in model_version:
        raise ValueError(f"model_version must be a non-empty single line, got {model_version!r}")
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.staging-", dir=model_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; readers (Beam workers) need the usual mode
    try:
        towers = {
            "item_tower": (item_tower, item_signature(vocab.item_specs), vocab.item_specs),
            "query_tower": (query_tower, query_signature(vocab.user_specs), vocab.user_specs),
        }
        output_dim = None
        for name, (tower, signature, specs) in towers.items():
            module = _ServingTower(tower, signature, model_version)
            with _without_keras_layer_traces():
                tf.saved_model.save(module, str(staging / name),
                                    signatures={SIGNATURE: module.serve, "model_version": module.version})
            output_dim = int(tower.cfg.output_dim)
            atomic_write_json(staging / name / TOWER_INFO, {
                "tower": name, "model_version": model_version, "input_names": list(signature),
                "output_dim": output_dim, "features": [{"name": s.name, "kind": s.kind} for s in specs]})
        save_vocabularies(vocab, staging / "vocab")
        atomic_write_text(staging / "model_version", model_version + "\n")
        write_manifest(staging, {
            "kind": "towers", "model_version": model_version, "output_dim": output_dim,
            "max_history": int(query_tower.cfg.max_history),
            "item_features": [{"name": s.name, "kind": s.kind} for s in vocab.item_specs],
            "user_features": [{"name": s.name, "kind": s.kind} for s in vocab.user_specs],
            **(extra_manifest or {})})
        _swap_into_place(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model_version


def _without_keras_layer_traces():
    """Skip tracing every Keras layer's call for ``tf.keras.models.load_model`` (unused here: the
    towers are served through their signatures). Cuts export time ~3x and the files ~2x.
    tf_keras exposes the switch only internally; without it the export is just slower."""
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # pragma: no cover - tf_keras layout changed
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False, in_tf_saved_model_scope=False)


def _swap_into_place(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class LoadedTower:
    """An exported tower: ``tower(features) -> float32 [B, D]`` (L2-normalised rows).

    model_version   the version id stamped into the SavedModel
    feature_names   the input names, in signature order (``item_id`` / ``user_id`` first)
    output_dim      D
    Inputs are dicts of arrays per the contract; missing or unknown names, wrong ranks or
    mismatched batch sizes raise ``ValueError`` naming the input.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        info_path = self.path / TOWER_INFO
        if not (self.path / "saved_model.pb").is_file() or not info_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not an exported tower (needs saved_model.pb and {TOWER_INFO}); "
                "export one with towers.export.export_towers"
            )
        self._loaded = tf.saved_model.load(str(self.path))
        self._serve = self._loaded.signatures[SIGNATURE]
        self._specs = self._serve.structured_input_signature[1]
        info = json.loads(info_path.read_text())
        self.model_version: str = self._loaded.model_version.numpy().decode("utf-8")
        require_same_model(self.model_version, info["model_version"],
                           expected_from=f"the SavedModel in {self.path}", found_from=f"{info_path}",
                           fix="the export is inconsistent; re-export it")
        self.feature_names: tuple[str, ...] = tuple(info["input_names"])
        self.features = tuple(FeatureSpec(f["name"], f["kind"]) for f in info["features"])
        self.output_dim: int = int(info["output_dim"])

    def __repr__(self) -> str:
        return f"LoadedTower({str(self.path)!r}, model_version={self.model_version!r}, dim={self.output_dim})"

    def __call__(self, features: dict, batch_size: int = 8192) -> np.ndarray:
        """Embed a batch of raw features (dict of arrays) → np.float32 [B, D], ``batch_size`` rows per call.

        A batch of at most ``batch_size`` rows goes to the serving signature in one call, without
        slicing or concatenating (online batches of 1..64 rows: the eager slice ops cost more than
        the tower); larger batches are cut into ``batch_size``-row chunks and stitched back in order.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        tensors = self._check(features)
        n = next(iter(tensors.values())).shape[0]
        if n == 0:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        if n <= batch_size:
            return self._serve(**tensors)["embedding"].numpy().astype(np.float32, copy=False)
        out = [self._serve(**{k: v[s:s + batch_size] for k, v in tensors.items()})["embedding"].numpy()
               for s in range(0, n, batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)

    def _check(self, features: dict) -> dict:
        missing = [n for n in self.feature_names if n not in features]
        unknown = sorted(set(features) - set(self.feature_names))
        if missing or unknown:
            raise ValueError(f"{self.path.name}: missing input(s) {missing}, unknown input(s) {unknown}; "
                             f"it takes {list(self.feature_names)}")
        out, batch = {}, None
        for name in self.feature_names:
            spec = self._specs[name]
            value = features[name]
            if spec.dtype == tf.string:
                arr = np.asarray(value, dtype=object)
            else:
                arr = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
            if arr.ndim != spec.shape.rank:
                raise ValueError(f"{self.path.name}: input {name!r} must have rank {spec.shape.rank} "
                                 f"({spec.shape}), got shape {arr.shape}")
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise ValueError(f"{self.path.name}: input {name!r} has {arr.shape[0]} rows, "
                                 f"{self.feature_names[0]!r} has {batch}; every input needs one row per example")
            out[name] = tf.constant(arr, dtype=spec.dtype) if arr.size or spec.dtype != tf.string \
                else tf.zeros(arr.shape, tf.string)
        return out


def load_tower(path: str | Path, verify: bool = True) -> LoadedTower:
    """Load an exported tower. With ``verify`` and a ``manifest.json`` in the parent directory
    (as ``export_towers`` writes), every file's sha256 is checked first."""
    path = Path(path)
    if verify and (path.parent / MANIFEST).is_file():
        verify_manifest(path.parent)
    return LoadedTower(path)
