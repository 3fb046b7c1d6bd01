"""What makes an item row good or bad for the embed job, one row at a time: the rules, the value
converters and the dead-letter record. The job applies these rules column-wise
(``item_blocks.BlockValidator``, same verdicts and values); ``RowValidator.clean`` is the
row-at-a-time reference it is tested against.

A row is a dict read from the items table. It is *bad* (dead-lettered with a reason) when:
  * ``item_id`` is absent/null ("missing item id"), not a string ("malformed item id"), or does not
    fully match ``id_pattern`` ("unknown item id format") — default: 1-256 characters, no
    whitespace or control characters;
  * a feature the item tower takes is absent from the row ("missing feature 'genre'"), e.g. a
    Parquet file of the table that lacks that column;
  * a value cannot be the feature's kind ("malformed value"): a list where one string is expected,
    a string where a list is expected, a non-numeric or infinite numeric value;
  * its id repeats an earlier row's id ("duplicate item id"; the first occurrence is kept).

Null values follow the data contract's missing-value conventions, exactly as the towers'
training inputs do (``towers.inputs``): categorical/text null -> "", multi_categorical null -> [],
numeric null -> NaN. Non-string scalars in string features become ``str(value)`` for the same reason.
A good row comes out *canonical*: ``{"item_id": str, feature: str | list[str] | float}``.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from recdata.schema import FeatureSpec

DEFAULT_ID_PATTERN = r"[^\s\x00-\x1f\x7f]{1,256}"
DEAD_LETTER = "dead_letter"
MAX_VALUES_CHARS = 2000


class BadRow(ValueError):
    """A row that cannot be embedded; ``str(exc)`` is the dead-letter reason."""


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _string(value: Any, name: str) -> str:
    if _is_null(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, dict, np.ndarray, bytes)):
        raise BadRow(f"malformed value: feature {name!r} must be one string, got {type(value).__name__} "
                     f"{_short(value)}")
    return str(value)


def _string_list(value: Any, name: str) -> list[str]:
    if _is_null(value):
        return []
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise BadRow(f"malformed value: feature {name!r} must be a list of strings, got "
                     f"{type(value).__name__} {_short(value)}")
    out = []
    for v in value:
        if isinstance(v, (list, tuple, dict, np.ndarray)):
            raise BadRow(f"malformed value: feature {name!r} must be a list of strings, got a nested "
                         f"{type(v).__name__} {_short(v)}")
        out.append("" if _is_null(v) else v if isinstance(v, str) else str(v))
    return out


def _number(value: Any, name: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number, str)):
        raise BadRow(f"malformed value: numeric feature {name!r} got {type(value).__name__} {_short(value)}")
    try:
        number = float(value)
    except ValueError:
        raise BadRow(f"malformed value: numeric feature {name!r} got the string {_short(value)}") from None
    if math.isinf(number):
        raise BadRow(f"malformed value: numeric feature {name!r} is {number}; use a finite value or NaN "
                     "(= missing)")
    return number


_CONVERT = {"categorical": _string, "text": _string, "multi_categorical": _string_list, "numeric": _number}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class RowValidator:
    """Checks and canonicalises item rows for an item tower taking ``item_id`` plus ``features``."""

    features: tuple[FeatureSpec, ...]
    id_pattern: str = DEFAULT_ID_PATTERN

    def __post_init__(self):
        try:
            matcher = re.compile(self.id_pattern).fullmatch
        except re.error as exc:
            raise ValueError(f"item_id_pattern {self.id_pattern!r} is not a valid regular expression: {exc}")
        object.__setattr__(self, "_id_matches", matcher)
        object.__setattr__(self, "_features", tuple((f.name, f.kind) for f in self.features))

    def check_id(self, item_id: Any) -> None:
        """Raise ``BadRow`` (the dead-letter reason) unless ``item_id`` is a str matching ``id_pattern``."""
        if type(item_id) is str and self._id_matches(item_id):
            return
        if type(item_id) is str:
            raise BadRow(f"unknown item id format: {_short(item_id)} does not match item_id_pattern "
                         f"{self.id_pattern!r}")
        if _is_null(item_id):
            raise BadRow("missing item id")
        raise BadRow(f"malformed item id: expected a string, got {type(item_id).__name__} {_short(item_id)}")

    def clean(self, row: Mapping[str, Any]) -> dict:
        """The canonical row, or raise ``BadRow`` with the dead-letter reason (the row-at-a-time
        reference that ``item_blocks.BlockValidator`` matches column-wise)."""
        item_id = row.get("item_id")
        self.check_id(item_id)
        out = {"item_id": item_id}
        for name, kind in self._features:
            try:
                value = row[name]
            except KeyError:
                raise BadRow(f"missing feature {name!r}") from None
            out[name] = _CONVERT[kind](value, name)
        return out


def dead_letter_record(position: int, row: Mapping[str, Any], reason: str, source: str) -> dict:
    """The JSON-serialisable dead-letter entry for one bad row (values truncated for huge rows)."""
    values = json.dumps(row, default=repr, ensure_ascii=False)
    if len(values) > MAX_VALUES_CHARS:
        values = values[: MAX_VALUES_CHARS - 1] + "…"
    item_id = row.get("item_id")
    return {"row": position, "item_id": item_id if isinstance(item_id, str) else None,
            "reason": reason, "source": source, "values": values}
