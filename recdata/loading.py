"""One entry point for the data stage: config → Dataset → Split, and the split saved in a run directory.

``DataConfig`` (YAML section ``data:``) picks the source:

  movielens-100k  RecBole's ML-100K, fetched once into the cache (or read from ``path`` if given)
  synthetic       ``recdata.synthetic.generate(cfg.synthetic)``
  grouplens       a GroupLens MovieLens folder at ``path`` (layout auto-detected)
  tabular         your Parquet/CSV tables described by the YAML schema at ``path``

The cache directory is ``cache_dir`` if set, else ``$TWOTOWER_CACHE``, else ``~/.cache/twotower``.

``save_split(directory, dataset, split)`` writes (each file atomically, ``manifest.json`` last)::

    train.parquet valid.parquet test.parquet   interactions, source column order and row order
    items.parquet users.parquet                feature tables (multi_categorical as list<string>)
    dataset.json                               name, source, feature specs, split kind, JSON-able extra
    split.npz                                  ``part``: int8 per source row (0 train, 1 valid, 2 test)
    extra.npz                                  array-valued entries of Dataset.extra (if any)
    manifest.json                              sha256 and size of each file (core.artifacts)

``load_split(directory)`` verifies the manifest and returns ``(Dataset, Split)`` equal to what was saved
(``Dataset.interactions`` back in source order; for a hand-made ``Split`` without ``part`` it is
train, valid, test concatenated).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recdata import splits as S
from recdata.schema import Dataset, FeatureSpec
from recdata.synthetic import SyntheticConfig, generate
from core import artifacts

DEFAULT_CACHE_DIR = "~/.cache/twotower"
CACHE_ENV = "TWOTOWER_CACHE"
Source = Literal["movielens-100k", "synthetic", "grouplens", "tabular"]
SplitKind = Literal["leave-last-out", "temporal"]


@dataclass(frozen=True)
class TemporalConfig:
    """Cut times in timestamp seconds; a cut left as None is placed by the fractions (quantiles)."""

    train_end: int | None = None
    valid_end: int | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class DataConfig:
    source: Source = "movielens-100k"
    path: str | None = None                 # grouplens folder / tabular schema / local ml-100k folder
    cache_dir: str | None = None            # None → $TWOTOWER_CACHE or ~/.cache/twotower
    synthetic: SyntheticConfig = SyntheticConfig()
    split: SplitKind = "leave-last-out"
    temporal: TemporalConfig = TemporalConfig()

    def __post_init__(self):
        if self.source in ("grouplens", "tabular") and not self.path:
            what = "the MovieLens folder" if self.source == "grouplens" else "the schema YAML file"
            raise ValueError(f"data.source={self.source!r} needs data.path: set it to {what}")


def resolve_cache_dir(cfg: DataConfig) -> Path:
    """``cfg.cache_dir``, else ``$TWOTOWER_CACHE``, else ``~/.cache/twotower`` (user-expanded)."""
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


class DuplicateRowsWarning(UserWarning):
    """Some interaction rows repeat an earlier row exactly; they are kept (see ``load_dataset``)."""


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load (or generate) the dataset ``cfg`` names and check it against the data contract.

    Interactions read from files are checked for exact duplicate rows: they are kept (a repeated event
    can be real) but reported, as ``dataset.extra["duplicate_rows"]`` (the count, shown by the CLI)
    and a ``DuplicateRowsWarning`` naming example rows."""
    if cfg.source == "movielens-100k":
        from recdata.movielens import fetch_movielens_100k, load_movielens_100k
        path = Path(cfg.path).expanduser() if cfg.path else fetch_movielens_100k(resolve_cache_dir(cfg))
        dataset = load_movielens_100k(path)
    elif cfg.source == "synthetic":
        dataset = generate(cfg.synthetic)
    elif cfg.source == "grouplens":
        from recdata.grouplens import load_grouplens
        dataset = load_grouplens(cfg.path)
    else:
        from recdata.tabular import load_tabular
        dataset = load_tabular(cfg.path)
    dataset.validate()
    if cfg.source != "synthetic":  # the generator drops its own repeats (extra["dropped_repeats"])
        _report_duplicates(dataset)
    return dataset


def _report_duplicates(dataset: Dataset) -> None:
    from recdata.columns import duplicate_rows

    count, rows = duplicate_rows(dataset.interactions)
    dataset.extra["duplicate_rows"] = count
    if count:
        warnings.warn(
            f"{dataset.source or dataset.name}: {count} of {len(dataset.interactions)} interaction rows repeat an "
            f"earlier row exactly (e.g. rows {rows}, 0-based); they are kept, each as one more interaction. "
            "Deduplicate the source if they are not real repeats", DuplicateRowsWarning, stacklevel=3)


def make_split(dataset: Dataset, cfg: DataConfig) -> S.Split:
    """Split ``dataset.interactions`` as ``cfg.split`` says."""
    if cfg.split == "leave-last-out":
        return S.leave_last_out(dataset.interactions)
    t = cfg.temporal
    train_end, valid_end = t.train_end, t.valid_end
    if train_end is None or valid_end is None:
        q_train, q_valid = S.temporal_cuts(dataset.interactions, t.valid_fraction, t.test_fraction)
        train_end = q_train if train_end is None else train_end
        valid_end = q_valid if valid_end is None else valid_end
    return S.temporal(dataset.interactions, train_end, valid_end)


# ------------------------------------------------------------------------------------ save / load
_PARTS = ("train", "valid", "test")
_FILES = (*(f"{p}.parquet" for p in _PARTS), "items.parquet", "users.parquet", "dataset.json", "split.npz",
          "extra.npz")


def save_split(directory: str | os.PathLike, dataset: Dataset, split: S.Split) -> Path:
    """Write ``dataset``'s tables and ``split`` to ``directory`` (see the module docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_extra, array_extra = _partition_extra(dataset.extra)
    (directory / artifacts.MANIFEST).unlink(missing_ok=True)      # unfinished until the new manifest lands
    for name in _FILES:                                           # drop our files from an older save
        (directory / name).unlink(missing_ok=True)
    for part in _PARTS:
        _write_parquet(directory / f"{part}.parquet", getattr(split, part), ())
    _write_parquet(directory / "items.parquet", dataset.items, dataset.item_features)
    _write_parquet(directory / "users.parquet", dataset.users, dataset.user_features)
    if split.part is not None:
        if len(split.part) != sum(split.sizes().values()):
            raise ValueError(f"split.part has {len(split.part)} entries for {sum(split.sizes().values())} "
                             "interactions; it must hold one part label per source row")
        _write_npz(directory / "split.npz", {"part": np.asarray(split.part, dtype=np.int8)})
    if array_extra:
        _write_npz(directory / "extra.npz", array_extra)
    meta = {
        "name": dataset.name, "source": dataset.source, "split": split.kind,
        "item_features": [[s.name, s.kind] for s in dataset.item_features],
        "user_features": [[s.name, s.kind] for s in dataset.user_features],
        "extra": json_extra,
    }
    artifacts.atomic_write_json(directory / "dataset.json", meta)
    artifacts.write_manifest(directory, {
        "kind": "data_split", "name": dataset.name, "split": split.kind, "sizes": split.sizes(),
        "num_items": dataset.num_items, "num_users": dataset.num_users,
    })
    return directory


def load_split(directory: str | os.PathLike) -> tuple[Dataset, S.Split]:
    """Read what ``save_split`` wrote, after verifying every file against the manifest."""
    directory = Path(directory)
    manifest = artifacts.verify_manifest(directory)
    if manifest.get("kind") != "data_split":
        raise ValueError(f"{directory} holds a {manifest.get('kind')!r} artifact, not a data split")
    meta = json.loads((directory / "dataset.json").read_text())
    item_specs = tuple(FeatureSpec(n, k) for n, k in meta["item_features"])
    user_specs = tuple(FeatureSpec(n, k) for n, k in meta["user_features"])
    extra = dict(meta["extra"])
    if (directory / "extra.npz").is_file():
        with np.load(directory / "extra.npz", allow_pickle=False) as npz:
            extra.update({k: npz[k] for k in npz.files})
    parts = {p: _read_parquet(directory / f"{p}.parquet", ()) for p in _PARTS}
    interactions = pd.concat([parts[p] for p in _PARTS], ignore_index=True)
    part = None
    if (directory / "split.npz").is_file():
        with np.load(directory / "split.npz", allow_pickle=False) as npz:
            part = npz["part"]
        # concatenation order is the stable sort of the source rows by part: invert it
        position = np.empty(len(part), dtype=np.int64)
        position[np.argsort(part, kind="stable")] = np.arange(len(part))
        interactions = interactions.iloc[position].reset_index(drop=True)
    dataset = Dataset(
        name=meta["name"],
        interactions=interactions,
        items=_read_parquet(directory / "items.parquet", item_specs),
        users=_read_parquet(directory / "users.parquet", user_specs),
        item_features=item_specs, user_features=user_specs, source=meta["source"], extra=extra,
    )
    return dataset, S.Split(train=parts["train"], valid=parts["valid"], test=parts["test"], kind=meta["split"],
                            part=part)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    artifacts.atomic_write_bytes(path, buf.getvalue())


def _partition_extra(extra: dict) -> tuple[dict, dict]:
    json_part, arrays = {}, {}
    for key, value in extra.items():
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError(f"Dataset.extra[{key!r}] is an object array; only numeric/bool arrays can be "
                                "saved (convert it, or drop it before save_split)")
            arrays[key] = value
            continue
        try:
            json_part[key] = json.loads(json.dumps(value, default=_json_scalar))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Dataset.extra[{key!r}] ({type(value).__name__}) is neither JSON data nor a numpy "
                            f"array and cannot be saved: {exc}") from None
    return json_part, arrays


def _json_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_parquet(path: Path, df: pd.DataFrame, specs: tuple[FeatureSpec, ...]) -> None:
    multi = {s.name for s in specs if s.kind == "multi_categorical"}
    arrays, fields = [], []
    for col in df.columns:
        if col in multi:
            arr = pa.array(df[col].tolist(), type=pa.list_(pa.string()))
        else:
            arr = pa.Array.from_pandas(df[col])
        arrays.append(arr)
        fields.append(pa.field(str(col), arr.type))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    artifacts.atomic_write_bytes(path, sink.getvalue().to_pybytes())


def _read_parquet(path: Path, specs: tuple[FeatureSpec, ...]) -> pd.DataFrame:
    table = pq.read_table(path)
    df = table.to_pandas()
    for s in specs:
        if s.kind == "multi_categorical":
            df[s.name] = pd.Series(table.column(s.name).to_pylist(), dtype=object)
    return df
