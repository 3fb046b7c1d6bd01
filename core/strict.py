"""Typed configuration: dataclasses built from plain dicts that reject unknown keys.

Every config section in the project is a (frozen) dataclass. ``from_dict`` builds one from
YAML/JSON data, recursing into nested dataclass fields, and raises ``ValueError`` naming the
unknown key, where it was found, and the keys that are allowed. ``to_dict`` is the inverse,
used to save the resolved config next to every run.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_SCALARS = (bool, int, float, str)


def _check_scalar(value: Any, typ: type, where: str) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool):
        raise TypeError(f"{where}: expected int, got bool {value!r}")
    if not isinstance(value, typ):
        raise TypeError(
            f"{where}: expected {typ.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if typ is Any:
        return value
    if dataclasses.is_dataclass(typ):
        if isinstance(value, typ):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping for {typ.__name__}, got {value!r}")
        return from_dict(typ, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{where}: {value!r} matches none of {typ}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if typ in _SCALARS:
        return _check_scalar(value, typ, where)
    return value


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ``ValueError``.

    Missing keys take the dataclass defaults. ``where`` is the dotted path used in messages.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise TypeError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key(s) {[prefix + k for k in unknown]} for {cls.__name__}; "
            f"allowed keys: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-safe) form of a dataclass tree; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def replace_path(obj: T, dotted: str, value: Any, _full: str | None = None) -> T:
    """Return a copy of ``obj`` with the field at ``dotted`` (e.g. ``train.epochs``) set.

    Used by ``--set key=value`` overrides; the value is type-checked like YAML input.
    """
    full = _full or dotted
    head, _, rest = dotted.partition(".")
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"config key {full!r}: {type(obj).__name__} has no sub-keys")
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        raise ValueError(
            f"unknown config key {head!r} in {full!r} for {type(obj).__name__}; allowed keys: {sorted(names)}"
        )
    if rest:
        return dataclasses.replace(obj, **{head: replace_path(getattr(obj, head), rest, value, full)})
    hints = typing.get_type_hints(type(obj))
    return dataclasses.replace(obj, **{head: _coerce(value, hints[head], full)})


def parse_overrides(pairs: list[str] | None) -> list[tuple[str, Any]]:
    """``["train.epochs=3", "index.factory=HNSW32,Flat"]`` → ``[(key, value), ...]``: every ``--set`` flag.

    Values are parsed as YAML scalars/lists (``3`` → int, ``[10, 50]`` → list, ``null`` → None); YAML 1.1
    booleans are applied only to ``true``/``false``, so words like ``on``/``off``/``yes``/``no`` stay strings.
    """
    import yaml

    out = []
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r} (e.g. --set train.epochs=3)")
        raw = raw.strip()
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {pair!r}: the value is not valid YAML ({exc})") from None
        if isinstance(value, bool) and raw.lower() not in ("true", "false"):
            value = raw
        out.append((key.strip(), value))
    return out


def read_yaml_mapping(path, what: str, example: str) -> dict:
    """Read a YAML file whose top level must be a mapping; errors name the file and ``example``."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; see {example} for an example")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data
