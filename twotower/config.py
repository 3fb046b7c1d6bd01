"""``RunConfig``: one typed config for a whole run, composed of each stage's own section.

    name: demo
    data:  {...}   recdata.loading.DataConfig   what to load and how to split it
    train: {...}   towers.config.TrainConfig    tower shapes and training recipe
    index: {...}   indexing.spec.IndexSpec      which FAISS index to build and how to search it
    eval:  {...}   eval.config.EvalConfig       cut-offs, slices, bootstrap

Loaded from YAML (``load_config``), overridden with ``--set section.key=value`` (values parsed as
YAML scalars), and saved verbatim as ``runs/<name>/config.yaml`` (``save_config``): the resolved
config is exactly what ran. Unknown keys anywhere are rejected with the allowed keys listed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from eval.config import EvalConfig
from indexing.spec import IndexSpec
from recdata.loading import DataConfig
from towers.config import TrainConfig
from core.artifacts import atomic_write_text
from core.strict import ConfigError, parse_overrides, read_yaml_mapping, to_dict, with_overrides
from twotower import missing_config_message, resolve_config_path


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; every section is its stage's own typed config."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexSpec = field(default_factory=IndexSpec)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"RunConfig.name must be a plain directory name, got {self.name!r}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults), apply every ``--set`` override, then validate once.

    ``path`` may name a shipped config (``demo``, ``full``, or the old ``configs/demo.yaml``), see
    ``twotower.resolve_config_path``.

    Overrides are applied together before any check, so ones that are only valid together work
    (``--set data.source=tabular --set data.path=schema.yaml``). Mistakes raise ``ConfigError``
    naming the file and the key."""
    data: dict = {}
    if path is not None:
        given, path = path, resolve_config_path(path)
        if not path.is_file():
            raise FileNotFoundError(missing_config_message(given))
        data = read_yaml_mapping(path, "config file", "twotower/configs/demo.yaml (or name a shipped config: "
                                 "--config demo, --config full)")
    pairs = parse_overrides(overrides)
    try:
        return with_overrides(RunConfig, data, pairs)
    except ConfigError as exc:
        source = str(path) if path is not None else "config"
        if pairs:
            source += " with --set " + ", ".join(key for key, _ in pairs)
        raise ConfigError(f"{source}: {exc}") from None


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    return atomic_write_text(path, config_to_yaml(cfg))
