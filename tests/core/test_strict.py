from dataclasses import dataclass, field
from typing import Literal

import pytest

from core.strict import ConfigError, from_dict, replace_path, replace_paths, to_dict, with_overrides


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
    with pytest.raises(ConfigError, match=r"inner.dim: expected int, got str '8'"):
        from_dict(Outer, {"inner": {"dim": "8"}})
    with pytest.raises(ConfigError, match=r"inner.dim: expected int, got bool"):
        from_dict(Outer, {"inner": {"dim": True}})
    with pytest.raises(ConfigError, match=r"inner.mode: 'c' is not one of \['a', 'b'\]"):
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
    with pytest.raises(ConfigError, match="expected int"):
        replace_path(Outer(), "inner.dim", "x")


def test_config_errors_are_value_errors_not_type_errors():
    # The CLI prints ValueErrors as one line; TypeError is left to mean "a bug" (a traceback).
    assert issubclass(ConfigError, ValueError) and not issubclass(ConfigError, TypeError)
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['inner.dimm'\]"):
        from_dict(Outer, {"inner": {"dimm": 3}})
    with pytest.raises(ConfigError, match="inner: expected a mapping for Inner"):
        from_dict(Outer, {"inner": 3})
    with pytest.raises(TypeError, match="is not a dataclass"):  # a programming mistake stays a TypeError
        from_dict(int, {})


@dataclass(frozen=True)
class Source:
    kind: Literal["none", "file"] = "none"
    path: str | None = None

    def __post_init__(self):
        if self.kind == "file" and not self.path:
            raise ValueError("source.kind='file' needs source.path")


@dataclass(frozen=True)
class Run:
    source: Source = field(default_factory=Source)
    extra: Source | None = None


def test_post_init_value_errors_become_config_errors():
    with pytest.raises(ConfigError, match="source.kind='file' needs source.path"):
        from_dict(Run, {"source": {"kind": "file"}})


def test_a_bug_in_post_init_is_not_turned_into_a_config_error():
    @dataclass(frozen=True)
    class Buggy:
        x: int = 1

        def __post_init__(self):
            self.x.nope  # AttributeError: a bug, must propagate as is

    with pytest.raises(AttributeError):
        from_dict(Buggy, {"x": 2})


def test_overrides_are_applied_together_then_validated_once():
    # Each override alone is invalid (kind=file without a path); together they are valid.
    run = with_overrides(Run, {}, [("source.kind", "file"), ("source.path", "x.csv")])
    assert run.source == Source("file", "x.csv")
    assert replace_paths(Run(), [("source.kind", "file"), ("source.path", "y")]).source == Source("file", "y")
    with pytest.raises(ConfigError, match="needs source.path"):  # still validated at the end
        with_overrides(Run, {}, [("source.kind", "file")])
    # an Optional section that is None can be filled key by key
    assert with_overrides(Run, {"extra": None}, [("extra.path", "p")]).extra == Source("none", "p")
    with pytest.raises(ConfigError, match=r"unknown config key 'pth' in 'source.pth' for Source; allowed keys: \['kind', 'path'\]"):
        with_overrides(Run, {}, [("source.pth", "x")])
    with pytest.raises(ConfigError, match=r"config key 'source.path.x': source.path is not a section"):
        with_overrides(Run, {}, [("source.path.x", 1)])
    # the later override of the same key wins; the input is not modified
    data = {"source": {"kind": "none"}}
    assert with_overrides(Run, data, [("source.path", "a"), ("source.path", "b")]).source.path == "b"
    assert data == {"source": {"kind": "none"}}
