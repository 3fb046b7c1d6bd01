"""The three tables a retrieval engineer has, as one typed ``Dataset``.

Column conventions (every loader produces exactly these; ``Dataset.validate`` checks them):

interactions  one row per event, in source order (row order breaks timestamp ties)
  user_id     str     source id as a string, never assumed dense
  item_id     str
  timestamp   int64   seconds since the epoch (or any monotone integer clock)
  weight      float32 optional (absent column = all 1.0); finite, >= 0, not 0 in every row

items         one row per item, ``item_id`` unique, plus one column per ``FeatureSpec``
users         one row per user, ``user_id`` unique, plus one column per ``FeatureSpec``

Feature kinds and their column dtype:
  categorical        str            (missing → "")
  multi_categorical  list[str]      e.g. genres (missing → [])
  numeric            float          (missing → NaN; towers impute and normalise)
  text               str            short text such as a title, tokenised by the towers
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

FeatureKind = Literal["categorical", "multi_categorical", "numeric", "text"]
FEATURE_KINDS: tuple[str, ...] = ("categorical", "multi_categorical", "numeric", "text")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column of the item or user table."""

    name: str
    kind: FeatureKind

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(
                f"feature {self.name!r}: kind {self.kind!r} is not one of {list(FEATURE_KINDS)}"
            )
        if self.name in ("user_id", "item_id"):
            raise ValueError(f"feature name {self.name!r} is reserved for the id column")


@dataclass
class Dataset:
    """Interactions plus item and user feature tables (see module docstring for columns)."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    item_features: tuple[FeatureSpec, ...] = ()
    user_features: tuple[FeatureSpec, ...] = ()
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def validate(self) -> "Dataset":
        """Raise ``ValueError`` naming the table, column and fix for any contract violation."""
        where = self.source or self.name
        _require_columns(self.interactions, INTERACTION_COLUMNS, f"{where}: interactions")
        if len(self.interactions) == 0:
            raise ValueError(f"{where}: interactions table is empty; point the loader at a file with events")
        _check_ids(self.items, "item_id", f"{where}: items")
        _check_ids(self.users, "user_id", f"{where}: users")
        ts = self.interactions["timestamp"]
        if ts.isna().any():
            bad = int(ts.isna().sum())
            raise ValueError(
                f"{where}: interactions.timestamp has {bad} missing value(s); fill or drop those rows"
            )
        if not np.issubdtype(ts.dtype, np.integer):
            raise ValueError(
                f"{where}: interactions.timestamp must be integer seconds, got dtype {ts.dtype}; "
                "convert with pd.to_datetime(...).astype('int64') // 10**9"
            )
        for col in ("user_id", "item_id"):
            if self.interactions[col].isna().any():
                raise ValueError(f"{where}: interactions.{col} has missing values; drop those rows")
        if "weight" in self.interactions.columns:
            check_weights(self.interactions["weight"], f"{where}: interactions.weight")
        unknown_items = ~_isin(self.interactions["item_id"], self.items["item_id"])
        if unknown_items.any():
            ex = self.interactions.loc[unknown_items, "item_id"].iloc[:5].tolist()
            raise ValueError(
                f"{where}: {int(unknown_items.sum())} interaction(s) name items absent from the item "
                f"table (e.g. {ex}); add them to the item table or drop those interactions"
            )
        unknown_users = ~_isin(self.interactions["user_id"], self.users["user_id"])
        if unknown_users.any():
            ex = self.interactions.loc[unknown_users, "user_id"].iloc[:5].tolist()
            raise ValueError(
                f"{where}: {int(unknown_users.sum())} interaction(s) name users absent from the user "
                f"table (e.g. {ex}); add them to the user table or drop those interactions"
            )
        for table, specs, label in ((self.items, self.item_features, "items"),
                                    (self.users, self.user_features, "users")):
            _require_columns(table, [s.name for s in specs], f"{where}: {label}")
        return self


def check_weights(weights, where: str) -> None:
    """Refuse interaction weights a model cannot learn from: missing/infinite, negative, or 0 in every row.

    ``where`` names the column (e.g. ``"events.csv: column 'rating' (weight)"``); rows are 0-based."""
    w = pd.Series(weights).reset_index(drop=True)
    if not (pd.api.types.is_numeric_dtype(w) or pd.api.types.is_bool_dtype(w)):
        raise ValueError(f"{where} must be numeric, got dtype {w.dtype}; convert it to float in the loader")
    w = w.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(w)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"{where} has {int(bad.sum())} missing or infinite value(s) (rows {rows}); fill them "
                         "(e.g. 1.0) or drop those rows")
    negative = w < 0
    if negative.any():
        rows = np.flatnonzero(negative)[:5].tolist()
        raise ValueError(
            f"{where} has {int(negative.sum())} negative value(s) (e.g. {w[negative][:3].tolist()} at rows {rows}); "
            "weights must be >= 0 (a weight scales its row's share of the loss, and a negative one rewards the "
            "model for ranking that item low). Fix those rows, or drop the weight column (absent = every row 1.0)"
        )
    if len(w) and not w.any():
        raise ValueError(
            f"{where} is 0 in every row (rows 0-{len(w) - 1}); a model trained on it learns nothing. Point the "
            "weight at the right column, or drop it (absent = every row 1.0)"
        )


def _isin(values: pd.Series, reference: pd.Series) -> pd.Series:
    """``values.isin(reference)`` via Arrow's hash kernel for string ids.

    pandas 3's ``isin`` on Arrow-backed strings builds the value set in a Python loop (~30 s for
    10M interactions against 1M items); ``pyarrow.compute.is_in`` does it in C++.
    """
    if pd.api.types.is_string_dtype(values) and pd.api.types.is_string_dtype(reference):
        import pyarrow as pa
        import pyarrow.compute as pc
        try:
            v = pa.array(values).cast(pa.large_string())
            r = pa.array(reference).cast(pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return values.isin(reference)
        mask = pc.is_in(v, value_set=r).to_numpy(zero_copy_only=False)
        return pd.Series(mask, index=values.index)
    return values.isin(reference)


def _require_columns(df: pd.DataFrame, columns, where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where} is missing column(s) {missing}; it has {list(df.columns)}. "
            "Rename the source columns or fix the schema that names them"
        )


def _check_ids(df: pd.DataFrame, col: str, where: str) -> None:
    _require_columns(df, [col], where)
    if len(df) == 0:
        raise ValueError(f"{where} table is empty")
    dup = df[col].duplicated(keep=False)
    if dup.any():
        ex = sorted(set(df.loc[dup, col].iloc[:10].tolist()))[:5]
        raise ValueError(
            f"{where}.{col} has {int(dup.sum())} rows with duplicate ids (e.g. {ex}); ids must be unique, "
            "deduplicate the table"
        )


def ids_to_str(values) -> pd.Series:
    """Normalise source ids (int or str) to strings, the one id type used downstream."""
    s = pd.Series(values)
    if pd.api.types.is_float_dtype(s) and (s.dropna() % 1 == 0).all():
        s = s.astype("Int64")
    return s.astype(str)
