"""Typed configuration: dataclasses built from plain dicts that reject unknown keys.

Every config section in the project is a (frozen) dataclass. ``from_dict`` builds one from
YAML/JSON data, recursing into nested dataclass fields, and raises ``ConfigError`` naming the
unknown key, where it was found, and the keys that are allowed. ``to_dict`` is the inverse,
used to save the resolved config next to every run.

Every mistake in config *data* (unknown key, wrong type, a value a section's ``__post_init__``
refuses) is raised as ``ConfigError``, a ``ValueError``: the CLI prints it as one line (exit 2)
without having to catch ``TypeError``, which stays reserved for bugs (e.g. ``from_dict`` given a
class that is not a dataclass).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_SCALARS = (bool, int, float, str)


class ConfigError(ValueError):
    """A config value or key is wrong (unknown key, wrong type, refused value); the message names the key."""


def _check_scalar(value: Any, typ: type, where: str) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got bool {value!r}")
    if not isinstance(value, typ):
        raise ConfigError(
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
            raise ConfigError(f"{where}: expected a mapping for {typ.__name__}, got {value!r}")
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
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {typ}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if typ in _SCALARS:
        return _check_scalar(value, typ, where)
    return value


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; every mistake in ``data`` raises ``ConfigError``.

    Missing keys take the dataclass defaults. ``where`` is the dotted path used in messages. A
    ``ValueError`` from the class's own checks (``__post_init__``) becomes a ``ConfigError`` with the
    same message; any other exception (a bug) propagates unchanged.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]} for {cls.__name__}; "
            f"allowed keys: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    return _construct(cls, kwargs)


def _construct(cls: type[T], kwargs: dict) -> T:
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # the section's own __post_init__ check refused a value
        raise ConfigError(str(exc)) from exc


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-safe) form of a dataclass tree; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _dataclass_of(typ: Any) -> type | None:
    """The dataclass a field holds: ``Section`` or ``Section | None`` → ``Section``; anything else → None."""
    if dataclasses.is_dataclass(typ):
        return typ
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        classes = [a for a in typing.get_args(typ) if dataclasses.is_dataclass(a)]
        return classes[0] if len(classes) == 1 else None
    return None


def _init_fields(obj: Any) -> dict:
    """``obj``'s constructor arguments (its ``init`` fields), one level deep, values as they are."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


def _set_path(cls: type, data: dict, dotted: str, value: Any) -> dict:
    """A copy of the plain/partly-built ``data`` of dataclass ``cls`` with ``dotted`` set to ``value``.

    Only the key is checked here (unknown keys raise ``ConfigError`` naming the allowed ones); the value
    is checked when the whole tree is built, so overrides that only make sense together can be given."""
    out = dict(data)
    node, typ, where = out, cls, []
    parts = dotted.split(".")
    for i, head in enumerate(parts):
        names = {f.name for f in dataclasses.fields(typ) if f.init}
        if head not in names:
            raise ConfigError(
                f"unknown config key {head!r} in {dotted!r} for {typ.__name__}; allowed keys: {sorted(names)}"
            )
        where.append(head)
        if i == len(parts) - 1:
            node[head] = value
            break
        sub = _dataclass_of(typing.get_type_hints(typ)[head])
        if sub is None:
            raise ConfigError(f"config key {dotted!r}: {'.'.join(where)} is not a section and has no sub-keys")
        child = node.get(head)
        if dataclasses.is_dataclass(child) and not isinstance(child, type):
            child = _init_fields(child)
        node[head] = dict(child) if isinstance(child, dict) else {}
        node, typ = node[head], sub
    return out


def with_overrides(cls: type[T], data: dict | None, overrides: list[tuple[str, Any]] | None) -> T:
    """``from_dict(cls, data)`` after setting every ``(dotted.key, value)`` override: all overrides are
    applied first and the result is validated once (``--set data.source=tabular --set data.path=X`` works
    although neither override is valid alone). Raises ``ConfigError``."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    for key, value in overrides or []:
        data = _set_path(cls, data, key, value)
    return from_dict(cls, data)


def replace_paths(obj: T, overrides: list[tuple[str, Any]]) -> T:
    """A copy of dataclass ``obj`` with every ``(dotted.key, value)`` set, validated once at the end."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"replace_paths needs a dataclass instance, got {type(obj).__name__}")
    return with_overrides(type(obj), _init_fields(obj), overrides)


def replace_path(obj: T, dotted: str, value: Any) -> T:
    """A copy of ``obj`` with the field at ``dotted`` (e.g. ``train.epochs``) set; the value is
    type-checked like YAML input (``ConfigError``). Several at once: ``replace_paths``."""
    return replace_paths(obj, [(dotted, value)])


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
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r} (e.g. --set train.epochs=3)")
        raw = raw.strip()
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({exc})") from None
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
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data
