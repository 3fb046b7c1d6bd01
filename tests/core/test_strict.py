from dataclasses import dataclass, field
from typing import Literal

import pytest

from core.strict import from_dict, replace_path, to_dict


@dataclass(frozen=True)
class Inner:
    dim: int = 8
    lr: float = 0.1
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    ks: tuple[int, ...] = (10, 100)
    limit: int | None = None


def test_round_trip_and_defaults():
    cfg = from_dict(Outer, {"name": "run", "inner": {"dim": 4}, "ks": [1, 5]})
    assert cfg == Outer(name="run", inner=Inner(dim=4), ks=(1, 5))
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert from_dict(Outer, None) == Outer()


def test_unknown_key_names_path_and_allowed_keys():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['inner.dimm'\].*allowed keys: \['dim', 'lr', 'mode'\]"):
        from_dict(Outer, {"inner": {"dimm": 3}})


def test_type_errors_are_specific():
    with pytest.raises(TypeError, match=r"inner.dim: expected int, got str '8'"):
        from_dict(Outer, {"inner": {"dim": "8"}})
    with pytest.raises(TypeError, match=r"inner.dim: expected int, got bool"):
        from_dict(Outer, {"inner": {"dim": True}})
    with pytest.raises(ValueError, match=r"inner.mode: 'c' is not one of \['a', 'b'\]"):
        from_dict(Outer, {"inner": {"mode": "c"}})


def test_int_promotes_to_float_and_optional():
    cfg = from_dict(Outer, {"inner": {"lr": 1}, "limit": None})
    assert isinstance(cfg.inner.lr, float) and cfg.limit is None
    assert from_dict(Outer, {"limit": 3}).limit == 3


def test_replace_path_checks_types_and_keys():
    cfg = replace_path(Outer(), "inner.dim", 16)
    assert cfg.inner.dim == 16 and Outer().inner.dim == 8
    with pytest.raises(ValueError, match=r"unknown config key 'nope' in 'inner.nope' for Inner"):
        replace_path(Outer(), "inner.nope", 1)
    with pytest.raises(TypeError, match="expected int"):
        replace_path(Outer(), "inner.dim", "x")
