"""The SSL study grid: does feature-masking SSL help where supervision is scarce (Yao et al., 2007.12865)?

    name: ssl-movielens
    datasets:                        each one: a name and a recdata.loading.DataConfig
      - {name: movielens, data: {source: movielens-100k, split: leave-last-out}}
    recipe: {...}                    towers.config.TrainConfig every point starts from
    eval:   {support_thresholds: [1, 4], ...}   eval.config.EvalConfig (slices: cold / few-shot / warm)
    sweep:
      fractions: [0.05, 0.1, 0.25, 0.5, 1.0]   share of the training interactions kept (fixed seed per
                                               fraction and seed; users and items stay in the catalogue)
      seeds: [0, 1, 2]
      baseline: none                           the variant every other is compared with
      variants:                                name -> TrainConfig overrides (dotted keys, like --set)
        none: {}
        rfm: {ssl.mode: rfm}
        cfm: {ssl.mode: cfm}
        dropout: {tower.dropout: 0.3}          an alternative regulariser without the contrastive loss
      scarce_variants:                         run only at the smallest fraction (SSL weight/temperature)
        cfm-w1: {ssl.mode: cfm, ssl.weight: 1.0}

A point is (dataset, fraction, variant, seed). Every variant at the same (dataset, fraction, seed) trains on
the SAME subset and is graded on the same test cases, so differences are paired. No TensorFlow here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.strict import ConfigError, from_dict, read_yaml_mapping, replace_path, replace_paths, to_dict
from eval.config import EvalConfig
from recdata.loading import DataConfig
from towers.config import TrainConfig

SCHEMA = "twotower-ssl-point/1"
EXAMPLE = "twotower/configs/ssl_movielens.yaml"


@dataclass(frozen=True)
class DataEntry:
    """One dataset of the study: ``name`` (used in point keys and tables) and its ``DataConfig``."""

    name: str
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"DataEntry.name must be a non-empty word (letters, digits, - or _), got {self.name!r}")


@dataclass(frozen=True)
class SSLSweep:
    """The axes. See the module docstring."""

    fractions: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    baseline: str = "none"
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "none": {}, "rfm": {"ssl.mode": "rfm"}, "cfm": {"ssl.mode": "cfm"}})
    scarce_variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        fr = tuple(self.fractions)
        if not fr or any(not 0.0 < f <= 1.0 for f in fr) or list(fr) != sorted(set(fr)):
            raise ValueError(f"sweep.fractions must be strictly ascending values in (0, 1], got {list(fr)}")
        object.__setattr__(self, "fractions", fr)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"sweep.seeds must be distinct integers, got {list(self.seeds)}")
        if self.baseline not in self.variants:
            raise ValueError(f"sweep.baseline {self.baseline!r} is not one of sweep.variants "
                             f"{sorted(self.variants)}; add it (e.g. `none: {{}}`)")
        clash = sorted(set(self.variants) & set(self.scarce_variants))
        if clash:
            raise ValueError(f"sweep.scarce_variants reuse the names {clash} of sweep.variants; rename them")
        for name in list(self.variants) + list(self.scarce_variants):
            if not name or "/" in name or " " in name:
                raise ValueError(f"variant name {name!r} must be a non-empty word without '/' or spaces")


@dataclass(frozen=True)
class SSLGrid:
    name: str = "ssl"
    datasets: tuple[DataEntry, ...] = (DataEntry("movielens"),)
    recipe: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(support_thresholds=(1, 4)))
    sweep: SSLSweep = field(default_factory=SSLSweep)

    def __post_init__(self):
        names = [d.name for d in self.datasets]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"datasets must have distinct names, got {names}")
        if not self.eval.support_thresholds:
            raise ValueError("eval.support_thresholds is empty: the study grades the slices that lack supervision "
                             "(cold / few-shot items); set e.g. support_thresholds: [1, 4]")
        for name, overrides in {**self.sweep.variants, **self.sweep.scarce_variants}.items():
            variant_config(self.recipe, overrides, name)  # every override is a valid TrainConfig key and value


@dataclass(frozen=True)
class SSLPoint:
    dataset: str
    fraction: float
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}-f{self.fraction:g}-{self.variant}-s{self.seed}"


def variant_config(recipe: TrainConfig, overrides: dict[str, Any], name: str = "") -> TrainConfig:
    """``recipe`` with a variant's dotted overrides applied together (``{"ssl.mode": "cfm"}``), then checked."""
    try:
        return replace_paths(recipe, list(overrides.items()))
    except ConfigError as exc:
        raise ConfigError(f"variant {name!r}: {exc}") from None


def point_config(grid: SSLGrid, point: SSLPoint) -> TrainConfig:
    overrides = {**grid.sweep.variants, **grid.sweep.scarce_variants}[point.variant]
    cfg = variant_config(grid.recipe, overrides, point.variant)
    return replace_path(cfg, "seed", point.seed)


def expand_points(grid: SSLGrid) -> list[SSLPoint]:
    """Datasets × fractions × variants × seeds, then the scarce variants at the smallest fraction."""
    s = grid.sweep
    points = [SSLPoint(d.name, f, v, seed) for d in grid.datasets for f in s.fractions for v in s.variants
              for seed in s.seeds]
    points += [SSLPoint(d.name, s.fractions[0], v, seed) for d in grid.datasets for v in s.scarce_variants
               for seed in s.seeds]
    return points


def point_key(grid: SSLGrid, point: SSLPoint) -> str:
    """``<point.name>-<hash>``; the hash covers everything that changes the point's result."""
    data = next(d.data for d in grid.datasets if d.name == point.dataset)
    payload = {"data": to_dict(data), "train": to_dict(point_config(grid, point)), "fraction": point.fraction,
               "eval": to_dict(grid.eval), "schema": SCHEMA}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{point.name}-{digest}"


def load_grid(path: str | Path) -> SSLGrid:
    from twotower import resolve_config_path

    path = resolve_config_path(path)  # a shipped grid may be named: ssl_movielens, ssl_synthetic
    data = read_yaml_mapping(path, "SSL study grid", EXAMPLE)
    try:
        return from_dict(SSLGrid, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def grid_to_yaml(grid: SSLGrid) -> str:
    return yaml.safe_dump(to_dict(grid), sort_keys=False)
