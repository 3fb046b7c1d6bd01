"""Your own Parquet/CSV tables, described by a YAML schema file.

Example ``schema.yaml`` (paths are relative to the schema file)::

    name: shop-events
    interactions:
      path: events.parquet
      columns: {user_id: customer, item_id: sku, timestamp: ts, weight: quantity}
      timestamp_format: milliseconds      # seconds | milliseconds | microseconds | nanoseconds | iso | strftime
    items:
      path: products.csv
      id_column: sku
      features:
        - {name: brand, kind: categorical}
        - {name: tags, kind: multi_categorical, separator: ";"}
        - {name: price, kind: numeric}
        - {name: title, kind: text, column: product_name}
    users:                                  # optional: without it users carry only user_id
      path: customers.csv
      id_column: customer
      features: [{name: country, kind: categorical}]
    multi_value_separator: "|"              # default separator of multi_categorical string cells

Unknown keys are rejected (``core.strict.from_dict``). Items missing from ``items`` but named by
interactions are an error (``Dataset.validate`` names examples); leave ``items`` out to build the item
table from the interactions (no features). Interactions keep the file's row order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from recdata import columns as C
from recdata.schema import Dataset, FeatureKind, FeatureSpec, check_weights
from core.strict import ConfigError, from_dict

TableFormat = Literal["auto", "parquet", "csv"]


@dataclass(frozen=True)
class InteractionColumns:
    """Source column names of the interaction fields (``weight`` None = every event weighs 1)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    weight: str | None = None


@dataclass(frozen=True)
class InteractionsTable:
    path: str
    columns: InteractionColumns = InteractionColumns()
    timestamp_format: str = "seconds"
    format: TableFormat = "auto"
    delimiter: str = ","
    encoding: str = "utf-8"


@dataclass(frozen=True)
class FeatureColumn:
    """One feature: ``name`` in the Dataset, ``column`` in the file (default: ``name``)."""

    name: str
    kind: FeatureKind
    column: str | None = None
    separator: str | None = None

    def __post_init__(self):
        FeatureSpec(self.name, self.kind)  # same name/kind checks as the data contract

    @property
    def source_column(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class EntityTable:
    """An item or user table: ``id_column`` defaults to "item_id" / "user_id"."""

    path: str
    id_column: str | None = None
    features: tuple[FeatureColumn, ...] = ()
    format: TableFormat = "auto"
    delimiter: str = ","
    encoding: str = "utf-8"


@dataclass(frozen=True)
class TabularSchema:
    interactions: InteractionsTable
    items: EntityTable | None = None
    users: EntityTable | None = None
    name: str = "tabular"
    multi_value_separator: str = "|"


def read_schema(path: str | os.PathLike) -> TabularSchema:
    """Parse and check a schema YAML file (unknown keys and bad kinds raise ``ValueError``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"schema file {path} does not exist; write one (see recdata/tabular.py for "
                                "an example) and point the tabular source at it")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"schema file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "interactions" not in data:
        raise ValueError(f"schema file {path} must be a mapping with at least an 'interactions' section; "
                         f"got {type(data).__name__} {str(data)[:80]!r}")
    try:
        schema = from_dict(TabularSchema, data)
    except ConfigError as exc:
        raise ConfigError(f"schema file {path}: {exc}") from None
    for label, table in (("items", schema.items), ("users", schema.users)):
        names = [f.name for f in table.features] if table else []
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"schema file {path}: {label}.features names {dup} more than once; names must "
                             "be unique")
    return schema


def load_tabular(schema_path: str | os.PathLike) -> Dataset:
    """Load the tables described by the schema at ``schema_path`` as a validated ``Dataset``."""
    schema_path = Path(schema_path).expanduser()
    schema = read_schema(schema_path)
    base = schema_path.parent
    interactions = _load_interactions(base, schema.interactions)
    if schema.items is not None:
        items, item_specs = _load_entity(base, schema.items, "item_id", schema.multi_value_separator, "items")
    else:
        items, item_specs = _ids_only(interactions, "item_id"), ()
    if schema.users is not None:
        users, user_specs = _load_entity(base, schema.users, "user_id", schema.multi_value_separator, "users")
    else:
        users, user_specs = _ids_only(interactions, "user_id"), ()
    return Dataset(name=schema.name, interactions=interactions, items=items, users=users,
                   item_features=item_specs, user_features=user_specs, source=str(schema_path),
                   extra={"schema": str(schema_path)}).validate()


def _load_interactions(base: Path, t: InteractionsTable) -> pd.DataFrame:
    path = base / t.path
    df = C.read_table(path, t.format, t.delimiter, t.encoding, what="interactions")
    cols = t.columns
    wanted = {"user_id": cols.user_id, "item_id": cols.item_id, "timestamp": cols.timestamp}
    if cols.weight is not None:
        wanted["weight"] = cols.weight
    _require_schema_columns(df, wanted, path, "interactions.columns")
    out = pd.DataFrame({
        "user_id": C.ids(df[cols.user_id], f"{path}: column {cols.user_id!r} (user_id)"),
        "item_id": C.ids(df[cols.item_id], f"{path}: column {cols.item_id!r} (item_id)"),
        "timestamp": C.to_epoch_seconds(df[cols.timestamp], t.timestamp_format,
                                        f"{path}: column {cols.timestamp!r} (timestamp)"),
    })
    if cols.weight is not None:
        where = f"{path}: column {cols.weight!r} (weight)"
        w = C.to_float(df[cols.weight], where)
        check_weights(w, where)
        out["weight"] = w.astype(np.float32)
    return out


def _load_entity(base: Path, t: EntityTable, id_name: str, default_sep: str, label: str):
    path = base / t.path
    df = C.read_table(path, t.format, t.delimiter, t.encoding, what=label)
    id_col = t.id_column or id_name
    wanted = {id_name: id_col, **{f"feature {f.name!r}": f.source_column for f in t.features}}
    _require_schema_columns(df, wanted, path, f"{label}.id_column / {label}.features[].column")
    where = f"{path}: column {id_col!r} ({id_name})"
    ids = C.ids(df[id_col], where)
    C.check_unique(ids, where)
    out = {id_name: ids}
    specs = []
    for f in t.features:
        spec = FeatureSpec(f.name, f.kind)
        out[f.name] = C.to_feature(df[f.source_column], spec, f"{path}: column {f.source_column!r}",
                                   separator=f.separator or default_sep)
        specs.append(spec)
    return pd.DataFrame(out), tuple(specs)


def _require_schema_columns(df: pd.DataFrame, wanted: dict[str, str], path: Path, key: str) -> None:
    missing = {field: col for field, col in wanted.items() if col not in df.columns}
    if missing:
        desc = ", ".join(f"{field} → {col!r}" for field, col in missing.items())
        raise ValueError(
            f"{path}: the schema names column(s) absent from the file ({desc}); the file has "
            f"{list(df.columns)}. Fix {key} in the schema to use the file's column names"
        )


def _ids_only(interactions: pd.DataFrame, id_name: str) -> pd.DataFrame:
    return pd.DataFrame({id_name: C.unique_in_order(interactions[id_name])})


__all__ = ["TabularSchema", "InteractionsTable", "InteractionColumns", "EntityTable", "FeatureColumn",
           "read_schema", "load_tabular"]
