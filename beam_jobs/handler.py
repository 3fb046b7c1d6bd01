"""Beam ``ModelHandler``s that run the exported item tower.

Beam's stock TensorFlow handler feeds one stacked tensor; the item tower takes a dict of named
inputs of different dtypes and ranks (see the "Exported towers" contract), so we own the handlers:

``ItemBatchHandler`` (what the embed job uses): one example = one ``ItemBatch``, a block of items
already stacked column-wise into the tower's input arrays by ``item_blocks.BlockValidator``; each
``ItemBatch`` is exactly one model call and gives one ``PredictionResult(example=batch,
inference=float32 (m, D), model_id=model_version)``. The batch boundaries are therefore fixed by
the data (not by Beam's timing), which keeps re-embeds bit-identical.

``ItemTowerHandler`` (for pipelines that have one dict per item; Beam batches them):
one example = one item = a plain dict ``{"item_id": str, <feature name>: value, ...}`` where
value is ``str`` (categorical / text), a list of ``str`` (multi_categorical; any length, may be
empty) or a number (numeric; ``None`` or NaN = missing). ``run_inference`` stacks a batch of B
dicts into the tower's inputs — ``str [B]``, ``str [B, N]`` right-padded with "" to the longest
list in the batch, ``float32 [B]`` — and returns one ``PredictionResult(example,
inference=float32 (D,), model_id=model_version)`` per example, in input order.

The model is loaded with ``towers.export.load_tower`` (once per worker, by RunInference), so the
feature kinds and the model version come from the export itself and can never disagree with it.
"""
from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from beam_jobs.beam_env import beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from recdata.schema import FeatureSpec
from core import artifacts
from core.guard import require_same_model


@dataclass(frozen=True, eq=False)
class ItemBatch:
    """A block of items ready for one item-tower call.

    positions  int64 (m,): catalogue positions of the items (source order)
    item_ids   object ndarray of str (m,)
    features   the tower's inputs: {"item_id": str (m,), categorical/text: str (m,),
               multi_categorical: str (m, W) padded with "", numeric: float32 (m,) (NaN = missing)}
    """

    positions: np.ndarray
    item_ids: np.ndarray
    features: dict

    def __len__(self) -> int:
        return len(self.positions)


class ItemBatchCoder(beam.coders.Coder):
    """Beam coder for ``ItemBatch`` (pickle), with an ``estimate_size`` that does not encode: Beam measures
    the size of sampled elements, and nearly every one of a job's few large batches gets sampled."""

    def encode(self, batch: ItemBatch) -> bytes:
        return pickle.dumps((batch.positions, batch.item_ids, batch.features), pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> ItemBatch:
        return ItemBatch(*pickle.loads(encoded))

    def estimate_size(self, batch: ItemBatch) -> int:
        return sum(a.nbytes if a.dtype != object else 32 * a.size for a in batch.features.values()) + \
            batch.positions.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return ItemBatch


beam.coders.registry.register_coder(ItemBatch, ItemBatchCoder)


def batch_features(rows: Sequence[Mapping[str, Any]], features: Sequence[FeatureSpec]) -> dict[str, np.ndarray]:
    """Stack B item dicts into the item tower's inputs (object arrays of str, or float32).

    Lists are right-padded with "" to the longest list in the batch (at least 1 wide); ``None``
    numerics become NaN (missing). Same arrays as ``towers.inputs.item_features_batch`` gives for
    a DataFrame of these rows, without building one.
    """
    out = {"item_id": _object_array([row["item_id"] for row in rows])}
    for spec in features:
        values = [row[spec.name] for row in rows]
        if spec.kind == "numeric":
            out[spec.name] = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
        elif spec.kind == "multi_categorical":
            width = max(max(map(len, values), default=0), 1)
            padding = ("",) * width
            flat: list = []
            for v in values:
                flat.extend(v)
                flat.extend(padding[len(v):])
            out[spec.name] = _object_array(flat).reshape(len(values), width)
        else:  # categorical, text
            out[spec.name] = _object_array(values)
    return out


def _object_array(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# Where towers.export.export_towers records a tower's inputs and version (towers.export.TOWER_INFO;
# repeated here so the driver can read it without importing TensorFlow; a test keeps them equal).
TOWER_INFO = Path("assets.extra") / "tower.json"


@dataclass(frozen=True)
class ItemTowerInfo:
    """What the driver needs to know about an exported item tower, read without loading it."""

    path: str
    model_version: str
    features: tuple[FeatureSpec, ...]
    output_dim: int


def read_item_tower_info(path: str | Path, verify: bool = True) -> ItemTowerInfo:
    """Model version, item features and output dim of the export at ``path`` (no TensorFlow).

    With ``verify`` the export's manifest (``<model dir>/manifest.json``: sha256 of every file) is
    checked first, as ``towers.export.load_tower`` does.
    """
    path = local_tower(path)
    info_path = path / TOWER_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} is missing: {path} is not an item tower exported by "
                                "towers.export.export_towers; export one (`twotower train --run ...`)")
    if verify and (path.parent / artifacts.MANIFEST).is_file():
        artifacts.verify_manifest(path.parent)
    info = json.loads(info_path.read_text())
    return ItemTowerInfo(str(path), info["model_version"],
                         tuple(FeatureSpec(f["name"], f["kind"]) for f in info["features"]), int(info["output_dim"]))


def local_tower(path: str | Path) -> Path:
    """A local path of the exported tower at ``path``. A tower on object storage (``s3://.../model/item_tower``)
    is copied first, with its whole export (``model/``: the directory its manifest covers), into the local
    cache (``core.version_cache.cached_directory``: every file's sha256 checked while downloading, keyed
    by the manifest's hash, so each worker downloads a given export once)."""
    from core.version_cache import cached_directory, is_url

    if not is_url(path):
        return Path(path)
    url = str(path).rstrip("/")
    parent, name = url.rsplit("/", 1)
    return cached_directory(parent) / name


def open_item_tower(path: str | Path, verify: bool = True):
    """``towers.export.load_tower``: the exported tower (``.model_version``, ``.features``, ``__call__``).

    With ``verify`` the export's manifest (sha256 of every file) is checked first. A tower at a URL is
    loaded from the local cache (``local_tower``), TensorFlow never reads object storage itself.
    """
    from towers.export import load_tower  # imports TensorFlow: only where a model is needed

    return load_tower(local_tower(path), verify=verify)


class ItemTowerHandler(ModelHandler[dict, PredictionResult, Any]):
    """RunInference handler: item feature dicts in, ``PredictionResult`` (vector float32 (D,)) out.

    Args:
      item_tower: directory of the exported item tower (``<run>/model/item_tower``).
      model_version: if given, loading fails unless the export carries exactly this version
        (the driver reads it once and pins it, so every worker embeds with the same model).
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
        self.model_version = model_version

    def load_model(self):
        tower = open_item_tower(self.item_tower, verify=False)  # the driver verified the export once
        if self.model_version is not None:
            require_same_model(self.model_version, tower.model_version, expected_from="the model this job started with",
                               found_from=f"the item tower now in {self.item_tower}",
                               fix="the model was re-exported while the job ran; run the job again")
        return tower

    def run_inference(self, batch: Sequence[dict], model, inference_args: dict | None = None
                      ) -> Iterable[PredictionResult]:
        vectors = model(batch_features(batch, model.features))
        return [PredictionResult(row, vec, model.model_version) for row, vec in zip(batch, vectors)]

    def validate_inference_args(self, inference_args: dict | None) -> None:
        if inference_args:
            raise ValueError(f"ItemTowerHandler takes no inference_args, got {sorted(inference_args)}")

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        """An estimate for Beam's byte-size metric: 128 bytes per item (the default pickles the batch)."""
        return 128 * len(batch)

    def get_metrics_namespace(self) -> str:
        return "twotower_item_tower"


class ItemBatchHandler(ItemTowerHandler):
    """RunInference handler: ``ItemBatch`` in, ``PredictionResult(batch, float32 (m, D))`` out, one model
    call per ItemBatch.

    Each ItemBatch is a batch already, so use it pre-batched: ``RunInference(handler.with_no_batching())``
    with one ItemBatch per element (no ``BatchElements`` step). Without ``with_no_batching`` Beam hands
    over lists of ItemBatches; each is still its own model call, so the vectors are the same.
    """

    def __init__(self, item_tower: str | Path, model_version: str | None = None, **kwargs):
        super().__init__(item_tower, model_version, min_batch_size=1, max_batch_size=1, **kwargs)

    def run_inference(self, batch: ItemBatch | Sequence[ItemBatch], model, inference_args: dict | None = None
                      ) -> Iterable[PredictionResult]:
        batches = (batch,) if isinstance(batch, ItemBatch) else batch
        return [PredictionResult(items, model(items.features, batch_size=max(len(items), 1)), model.model_version)
                for items in batches]

    def get_num_bytes(self, batch: ItemBatch | Sequence[ItemBatch]) -> int:
        """An estimate for Beam's byte-size metric: 128 bytes per item."""
        return 128 * (len(batch) if isinstance(batch, ItemBatch) else sum(len(items) for items in batch))
