"""A Beam ``ModelHandler`` that runs the exported item tower on batches of item feature dicts.

Beam's stock TensorFlow handler feeds one stacked tensor; the item tower takes a dict of named
inputs of different dtypes and ranks (see the "Exported towers" contract), so we own a handler.

One example = one item = a plain dict ``{"item_id": str, <feature name>: value, ...}`` where
value is ``str`` (categorical / text), a list of ``str`` (multi_categorical; any length, may be
empty) or a number (numeric; ``None`` or NaN = missing). ``run_inference`` stacks a batch of B
dicts into the SavedModel's inputs — ``tf.string [B]``, ``tf.string [B, N]`` right-padded with
"" to the longest list in the batch (or to N when the signature fixes it), ``tf.float32 [B]`` —
and returns one ``PredictionResult(example, inference=float32 (D,), model_id=model_version)``
per example, in input order.

What each input is comes from the SavedModel's own serving signature (``TowerSignature``), so the
handler needs no feature configuration and can never disagree with the model about it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_jobs import beam_env  # noqa: F401  (quiet apache_beam import)

SIGNATURE = "serving_default"
OUTPUT = "embedding"
STRING, STRING_LIST, FLOAT = "string", "string_list", "float"


@dataclass(frozen=True)
class TowerInput:
    """One input of the serving signature: its name, kind and fixed list length (if any)."""

    name: str
    kind: str  # STRING (tf.string [B]) | STRING_LIST (tf.string [B, N]) | FLOAT (tf.float32 [B])
    list_length: int | None = None  # N when the signature fixes it, else None (pad to batch max)


@dataclass(frozen=True)
class TowerSignature:
    """The item tower's inputs, ``item_id`` first, then features in the signature's name order."""

    inputs: tuple[TowerInput, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs if i.name != "item_id")

    @classmethod
    def from_concrete_function(cls, fn, where: str = "item tower") -> "TowerSignature":
        """Read the inputs of a serving-signature concrete function (TF ``TensorSpec`` kwargs)."""
        args, kwargs = fn.structured_input_signature
        specs = dict(kwargs)  # loaded serving signatures: keyword inputs
        specs.update({spec.name: spec for spec in args if hasattr(spec, "dtype")})  # positional tf.functions
        inputs = []
        for name in sorted(specs):
            spec = specs[name]
            dtype, rank = spec.dtype.name, spec.shape.rank
            if dtype == "string" and rank == 1:
                inputs.append(TowerInput(name, STRING))
            elif dtype == "string" and rank == 2:
                inputs.append(TowerInput(name, STRING_LIST, spec.shape[1]))
            elif dtype == "float32" and rank == 1:
                inputs.append(TowerInput(name, FLOAT))
            else:
                raise ValueError(
                    f"{where}: signature input {name!r} is {dtype} of shape {spec.shape}; the item tower "
                    "contract allows tf.string [B], tf.string [B, N] and tf.float32 [B]. Re-export the "
                    "item tower with towers/export.py"
                )
        if "item_id" not in specs:
            raise ValueError(f"{where}: signature has no 'item_id' input (inputs: {sorted(specs)}); "
                             "re-export the item tower with towers/export.py")
        inputs.sort(key=lambda i: (i.name != "item_id", i.name))
        return cls(tuple(inputs))


def batch_features(rows: Sequence[Mapping[str, Any]], signature: TowerSignature) -> dict[str, np.ndarray]:
    """Stack B item dicts into the tower's input arrays: object arrays of str, or float32.

    Lists are right-padded with "" to the longest list in the batch (at least 1), or padded /
    cut to the signature's fixed N. ``None`` numerics become NaN (missing).
    """
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        values = [row[spec.name] for row in rows]
        if spec.kind == STRING:
            out[spec.name] = _object_array(values)
        elif spec.kind == FLOAT:
            out[spec.name] = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
        else:
            width = spec.list_length or max(max(map(len, values), default=0), 1)
            padding = ("",) * width
            flat: list = []
            for v in values:
                flat.extend(v[:width])
                flat.extend(padding[len(v):])
            out[spec.name] = _object_array(flat).reshape(len(values), width)
    return out


def _object_array(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class LoadedItemTower:
    """The item tower SavedModel loaded in one worker: ``tower(features) -> float32 (B, D)``."""

    def __init__(self, path: str | Path, model_version: str):
        from towers.tf_env import tf  # TF only inside the worker that runs the model

        self._tf = tf
        self.path = str(path)
        self.model_version = model_version
        self._saved = tf.saved_model.load(self.path)
        if SIGNATURE not in self._saved.signatures:
            raise ValueError(f"{self.path}: SavedModel has no {SIGNATURE!r} signature "
                             f"(has {list(self._saved.signatures)}); re-export the item tower")
        self._fn = self._saved.signatures[SIGNATURE]
        self.signature = TowerSignature.from_concrete_function(self._fn, where=self.path)

    def __call__(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        tf = self._tf
        kwargs = {}
        for spec in self.signature.inputs:
            dtype = tf.string if spec.kind != FLOAT else tf.float32
            kwargs[spec.name] = tf.constant(features[spec.name], dtype=dtype)
        outputs = self._fn(**kwargs)
        if OUTPUT not in outputs:
            raise ValueError(f"{self.path}: signature outputs {sorted(outputs)} have no {OUTPUT!r}")
        emb = outputs[OUTPUT].numpy()
        batch = len(features["item_id"])
        if emb.ndim != 2 or emb.shape[0] != batch or emb.dtype != np.float32:
            raise ValueError(f"{self.path}: {OUTPUT!r} is {emb.dtype} {emb.shape} for a batch of {batch}; "
                             "expected float32 (B, D)")
        return emb

    def embed_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """float32 (B, D) embeddings of B item dicts."""
        return self(batch_features(rows, self.signature))


def model_version_of(item_tower: str | Path) -> str:
    """The model version stored next to the exported towers (``model/model_version``)."""
    path = Path(item_tower).parent / "model_version"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the item tower at {item_tower} was not exported by towers/export.py "
            "(which writes model/model_version); re-export, or pass the model version explicitly"
        )
    return path.read_text().strip()


class ItemTowerHandler(ModelHandler[dict, PredictionResult, LoadedItemTower]):
    """RunInference handler: item feature dicts in, ``PredictionResult`` (vector float32 (D,)) out.

    Args:
      item_tower: directory of the exported item-tower SavedModel.
      model_version: recorded as ``PredictionResult.model_id``; default: ``model/model_version``.
      min_batch_size, max_batch_size: passed to ``beam.BatchElements`` via
        ``batch_elements_kwargs``; Beam adapts the batch size between the two.
    """

    def __init__(self, item_tower: str | Path, model_version: str | None = None, *,
                 min_batch_size: int = 64, max_batch_size: int = 2048, **kwargs):
        if not 1 <= min_batch_size <= max_batch_size:
            raise ValueError(f"batch sizes must satisfy 1 <= min_batch_size <= max_batch_size, got "
                             f"min_batch_size={min_batch_size}, max_batch_size={max_batch_size}")
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, **kwargs)
        self.item_tower = str(item_tower)
        self.model_version = model_version if model_version is not None else model_version_of(item_tower)

    def load_model(self) -> LoadedItemTower:
        return LoadedItemTower(self.item_tower, self.model_version)

    def run_inference(self, batch: Sequence[dict], model: LoadedItemTower,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        vectors = model.embed_rows(batch)
        return [PredictionResult(row, vec, model.model_version) for row, vec in zip(batch, vectors)]

    def validate_inference_args(self, inference_args: dict | None) -> None:
        if inference_args:
            raise ValueError(f"ItemTowerHandler takes no inference_args, got {sorted(inference_args)}")

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        # Beam's default pickles the whole batch just for a metric; estimate from the ids instead
        # (id bytes + 64 per item for its features).
        return sum(len(row["item_id"]) + 64 for row in batch if isinstance(row, Mapping) and "item_id" in row)

    def get_metrics_namespace(self) -> str:
        return "twotower_item_tower"
