"""Parse and validate a ``POST /topk`` body into a ``TopKRequest``; bad input raises ``RequestError``.

Two shapes are accepted (JSON object, UTF-8):

  known user      {"user_id": "196", "k": 10, "exclude_seen": true, "timestamp": 893286638}
                  features and history come from the run's data; an id the data does not hold is an
                  unknown user (OOV id, no features, empty history) and still gets results.
  raw features    {"user_id": "new-1" (optional), "features": {"age": 31, "gender": "F"},
                   "history": ["50", "172", 181] (oldest → newest), "history_timestamps": [...] (optional),
                   "timestamp": 893286638 (optional), "k": 10, "exclude_seen": true}
                  used whenever "features" or "history" is present; omitted features are missing values.

Common fields: k (required, int 1..max_k); exclude_seen (bool, default ``ServingConfig.default_exclude_seen``:
the user's items from the data, or the given history); timestamp (int seconds, default: now).
Every number's range is checked here, before the request joins a micro-batch (one bad value must never
reach the shared batch): timestamps and history timestamps are ints in [0, MAX_TIMESTAMP] (up to
9999-12-31, far inside int64), numeric features finite and within float32, k in 1..max_k.
Feature values by kind: categorical str (ints are turned into str), text str, numeric number,
multi_categorical list of str; null = missing. Item and user ids may be str or int (ids are str).
Every problem is reported as ``RequestError(status, message)`` with a message naming the field, what
was wrong, what was got and what is allowed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

from recdata.schema import FeatureSpec

FIELDS = ("user_id", "k", "exclude_seen", "features", "history", "history_timestamps", "timestamp")
MAX_TIMESTAMP = 253_402_300_799          # 9999-12-31T23:59:59Z in seconds; the tower takes int64
FLOAT32_MAX = 3.4028234663852886e38      # numeric features go to the tower as float32


class RequestError(ValueError):
    """A request the service refuses: ``status`` (4xx / 5xx) and a message for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message


@dataclass(frozen=True)
class TopKRequest:
    """A validated top-k request.

    k                   1..max_k
    exclude_seen        drop the user's seen items (known user) / the given history (raw features)
    user_id             str or None (None only with raw features; sent to the tower as "")
    features            None for a known-user request; else {user feature name: value or None}
    history             item ids oldest → newest (raw features only; empty for known users)
    history_timestamps  int seconds aligned with history, or None (unknown: 0)
    timestamp           query time in int seconds, or None (= when the batch runs)
    """

    k: int
    exclude_seen: bool
    user_id: str | None = None
    features: dict | None = None
    history: tuple[str, ...] = ()
    history_timestamps: tuple[int, ...] | None = None
    timestamp: int | None = None

    @property
    def is_raw(self) -> bool:
        return self.features is not None


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "list", str: "string", bool: "bool"}.get(
        type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _id(value: Any, where: str) -> str:
    if isinstance(value, str) and value:
        return value
    if _is_int(value):
        return str(value)
    got = "an empty string" if value == "" else f"{_type_name(value)} {value!r}"
    raise RequestError(400, f"{where} must be a non-empty string or an int id, got {got}")


def decode_json(body: bytes) -> dict:
    """The JSON object in ``body``; RequestError(400) for anything else."""
    if not body:
        raise RequestError(400, "empty body: send a JSON object, e.g. {\"user_id\": \"196\", \"k\": 10}")
    try:
        data = json.loads(body)
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"body is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an int literal above Python's 4300-digit conversion limit
        raise RequestError(400, f"body is not acceptable JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "body is nested too deeply: a /topk request is a flat JSON object whose values "
                                "are at most a list or an object of scalars") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"body must be a JSON object, got a JSON {_type_name(data)}")
    return data


def parse_topk(data: dict, user_specs: Sequence[FeatureSpec], *, max_k: int, max_history_items: int,
               default_exclude_seen: bool = True) -> TopKRequest:
    """Validate a decoded body (see the module docstring) against the query tower's user features."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown}; a /topk request takes {list(FIELDS)}")
    k = _parse_k(data, max_k)
    exclude_seen = data.get("exclude_seen", default_exclude_seen)
    if not isinstance(exclude_seen, bool):
        raise RequestError(400, f"exclude_seen must be true or false, got {_type_name(exclude_seen)} {exclude_seen!r}")
    timestamp = data.get("timestamp")
    if timestamp is not None:
        _check_timestamp(timestamp, "timestamp")
    user_id = _id(data["user_id"], "user_id") if data.get("user_id") is not None else None
    raw = "features" in data or "history" in data
    if not raw:
        if "history_timestamps" in data:
            raise RequestError(400, "history_timestamps needs a history list next to it")
        if user_id is None:
            raise RequestError(400, "give a user_id (a known user), or features and/or history (raw features); "
                                    "the request has neither")
        return TopKRequest(k=k, exclude_seen=exclude_seen, user_id=user_id, timestamp=timestamp)
    features = _parse_features(data.get("features"), user_specs)
    history = _parse_history(data.get("history"), max_history_items)
    history_ts = _parse_history_timestamps(data.get("history_timestamps"), len(history))
    return TopKRequest(k=k, exclude_seen=exclude_seen, user_id=user_id, features=features, history=history,
                       history_timestamps=history_ts, timestamp=timestamp)


def _parse_k(data: dict, max_k: int) -> int:
    if "k" not in data:
        raise RequestError(400, f"missing k: say how many items to return, e.g. \"k\": 10 (1..{max_k})")
    k = data["k"]
    if not _is_int(k) or k < 1:
        raise RequestError(400, f"k must be a positive int, got {_type_name(k)} {_short(k)}")
    if k > max_k:
        raise RequestError(400, f"k={_short(k)} is above the largest allowed k ({max_k}, ServingConfig.max_k)")
    return k


def _parse_features(features: Any, user_specs: Sequence[FeatureSpec]) -> dict:
    kinds = {s.name: s.kind for s in user_specs}
    if features is None:
        return {name: None for name in kinds}
    if not isinstance(features, dict):
        raise RequestError(400, f"features must be a JSON object {{name: value}}, got {_type_name(features)}")
    unknown = sorted(set(features) - set(kinds))
    if unknown:
        raise RequestError(400, f"unknown feature name(s) {unknown}; the query tower takes user features "
                                f"{sorted(kinds)}")
    return {name: _feature_value(features.get(name), name, kind) for name, kind in kinds.items()}


def _feature_value(value: Any, name: str, kind: str):
    where = f"features.{name} ({kind})"
    if value is None:
        return None
    if kind in ("categorical", "text"):
        if isinstance(value, str):
            return value
        if kind == "categorical" and _is_int(value):
            return str(value)
        allowed = "a string (or an int)" if kind == "categorical" else "a string"
        raise RequestError(400, f"{where} must be {allowed} or null, got {_type_name(value)} {value!r}")
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(400, f"{where} must be a number or null, got {_type_name(value)} {value!r}")
        if isinstance(value, float) and math.isinf(value):
            raise RequestError(400, f"{where} must be finite, got {value!r} (use null for a missing value)")
        if not (isinstance(value, float) and math.isnan(value)) and abs(value) > FLOAT32_MAX:
            raise RequestError(400, f"{where} must lie within +-{FLOAT32_MAX:.4g} (the tower takes float32), got "
                                    f"{_short(value)}")
        return float(value)
    if kind == "multi_categorical":
        if not isinstance(value, list):
            raise RequestError(400, f"{where} must be a list of strings or null, got {_type_name(value)} {value!r}")
        out = []
        for i, v in enumerate(value):
            if isinstance(v, str):
                out.append(v)
            elif _is_int(v):
                out.append(str(v))
            else:
                raise RequestError(400, f"{where}[{i}] must be a string, got {_type_name(v)} {v!r}")
        return out
    raise RequestError(500, f"feature {name!r} has kind {kind!r}, which this server cannot encode")


def _parse_history(history: Any, max_items: int) -> tuple[str, ...]:
    if history is None:
        return ()
    if not isinstance(history, list):
        raise RequestError(400, f"history must be a list of item ids (strings or ints, oldest → newest), got "
                                f"{_type_name(history)}")
    if len(history) > max_items:
        raise RequestError(400, f"history has {len(history)} items, more than the {max_items} allowed "
                                "(ServingConfig.max_history_items); send the most recent ones")
    return tuple(_id(v, f"history[{i}]") for i, v in enumerate(history))


def _parse_history_timestamps(values: Any, length: int) -> tuple[int, ...] | None:
    if values is None:
        return None
    if not isinstance(values, list):
        raise RequestError(400, f"history_timestamps must be a list of ints, got {_type_name(values)}")
    if len(values) != length:
        raise RequestError(400, f"history_timestamps has {len(values)} entries but history has {length}; "
                                "give one timestamp per history item, or leave history_timestamps out")
    for i, v in enumerate(values):
        _check_timestamp(v, f"history_timestamps[{i}]")
    return tuple(values)


def _check_timestamp(value: Any, where: str) -> None:
    if not _is_int(value) or not 0 <= value <= MAX_TIMESTAMP:
        got = f"{_type_name(value)} {_short(value)}"
        raise RequestError(400, f"{where} must be an int in [0, {MAX_TIMESTAMP}] (seconds since the epoch, up to "
                                f"9999-12-31), got {got}")


def _short(value: Any) -> str:
    """repr of ``value``, cut to 60 characters (a 10,000-digit int must not fill the error message)."""
    if _is_int(value) and abs(value) >= 10 ** 60:  # (str() of a > 4300-digit int raises)
        return f"an int of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
