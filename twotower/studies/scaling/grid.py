"""The scaling grid: a YAML file → typed frozen config (``ScalingGrid``) → the list of sweep points.

    name: scaling-default
    data:   {...}    recdata.loading.DataConfig: what every point trains and is evaluated on
    recipe: {...}    towers.config.TrainConfig: the ONE recipe every point shares. Each point trains
                     the CLUE loss alone for ``clue_epochs`` epochs (``clue: pretrain`` is required),
                     then, for the recall probe, the retrieval loss for ``epochs`` epochs. The
                     sequence shape, ``tower.max_history`` and ``batch_size`` are set per point.
    sweep:
      base: {model: {num_layers: 1, width: 32}, interactions: null, max_history: 20, batch_size: 128}
      subset_seed: 0           # which users make up the smaller training sets (nested subsets)
      blocks:                  # each block = the product of the axes it lists; the others take base
        - {models: [{num_layers: 1, width: 16}, {num_layers: 2, width: 64}], batch_size: [128, 512]}
        - {interactions: [2000, 4000]}
        - {max_history: [5, 40]}
    probe:      {mode: finetune, recall_k: 50}             ProbeConfig
    validation: {batch_size: 256, max_examples: 2048}     ValidationConfig
    eval:       {...}    eval.config.EvalConfig (cut-offs, head share, bootstrap of the recall)
    fit:        {loss: valid, bootstrap: 1000}             FitConfig

Every section is a frozen dataclass built with ``core.strict.from_dict`` (unknown keys are
rejected, naming the allowed ones). ``expand_points`` lists the points (blocks in order, duplicates
dropped); ``point_key`` names a point by its settings plus a hash of everything that changes its
result, so a resumed sweep never reuses a point trained with another recipe. No TensorFlow here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from eval.config import EvalConfig
from recdata.loading import DataConfig
from towers.config import SequenceConfig, TowerConfig, TrainConfig
from core.strict import ConfigError, from_dict, read_yaml_mapping, to_dict


@dataclass(frozen=True)
class ModelShape:
    """The capacity axis: the sequence encoder's depth × width.

    num_layers   Transformer blocks
    width        d_model (item vectors are projected to it)
    num_heads    attention heads (``width`` must be divisible by it)
    ff_dim       feed-forward hidden width; None → 4 · width
    """

    num_layers: int = 1
    width: int = 32
    num_heads: int = 2
    ff_dim: int | None = None

    def __post_init__(self):
        if self.ff_dim is not None and self.ff_dim <= 0:
            raise ValueError(f"ModelShape.ff_dim must be > 0 (or null for 4 · width), got {self.ff_dim!r}")
        self.sequence_config(SequenceConfig())  # SequenceConfig's own range checks, early

    @property
    def feed_forward(self) -> int:
        return self.ff_dim if self.ff_dim is not None else 4 * self.width

    @property
    def label(self) -> str:
        return f"{self.num_layers}x{self.width}"

    def sequence_config(self, base: SequenceConfig) -> SequenceConfig:
        """``base`` (dropout, pooling, time buckets, item features) with this shape."""
        return dataclasses.replace(base, num_layers=self.num_layers, width=self.width, num_heads=self.num_heads,
                                   ff_dim=self.feed_forward)


@dataclass(frozen=True)
class SweepPoint:
    """One training run of the sweep.

    model         the encoder's shape
    interactions  training interactions to train on (whole users, nested subsets); None = all
    max_history   sequence length L: most recent history items the encoder reads
    batch_size    examples per step (the other users of the batch are the contrastive negatives)
    """

    model: ModelShape = field(default_factory=ModelShape)
    interactions: int | None = None
    max_history: int = 20
    batch_size: int = 128

    def __post_init__(self):
        for key in ("max_history", "batch_size"):
            if getattr(self, key) <= 0:
                raise ValueError(f"SweepPoint.{key} must be > 0, got {getattr(self, key)!r}")
        if self.interactions is not None and self.interactions <= 0:
            raise ValueError(f"SweepPoint.interactions must be > 0 (or null for all), got {self.interactions!r}")

    @property
    def name(self) -> str:
        data = "all" if self.interactions is None else str(self.interactions)
        return (f"L{self.model.num_layers}-d{self.model.width}-h{self.model.num_heads}-ff{self.model.feed_forward}"
                f"-D{data}-T{self.max_history}-B{self.batch_size}")

    def train_config(self, recipe: TrainConfig) -> TrainConfig:
        """The recipe with this point's encoder shape, sequence length (``tower.max_history`` and
        ``tower.sequence.max_length``) and batch size."""
        sequence = dataclasses.replace(self.model.sequence_config(recipe.tower.sequence), max_length=self.max_history)
        tower = dataclasses.replace(recipe.tower, max_history=self.max_history, sequence=sequence)
        return dataclasses.replace(recipe, tower=tower, batch_size=self.batch_size)


@dataclass(frozen=True)
class SweepBlock:
    """Axes varied together (their product); an axis left unset takes the base value."""

    models: tuple[ModelShape, ...] | None = None
    interactions: tuple[int | None, ...] | None = None
    max_history: tuple[int, ...] | None = None
    batch_size: tuple[int, ...] | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and len(value) == 0:
                raise ValueError(f"SweepBlock.{f.name} is an empty list; leave it out to use the base value")


@dataclass(frozen=True)
class SweepConfig:
    base: SweepPoint = field(default_factory=SweepPoint)
    blocks: tuple[SweepBlock, ...] = ()
    subset_seed: int = 0


@dataclass(frozen=True)
class ProbeConfig:
    """How the recall of a point is measured after its contrastive training.

    mode       "finetune": train the whole two-tower model on the retrieval loss for
               ``recipe.epochs`` epochs, starting from the CLUE-trained encoder;
               "frozen": the same with the encoder (and the item tables it shares) frozen, so
               recall measures the contrastive representation itself;
               "off": no probe, no recall
    recall_k   the K of the recall@K reported (must be one of ``eval.ks``)
    """

    mode: Literal["finetune", "frozen", "off"] = "finetune"
    recall_k: int = 50

    def __post_init__(self):
        if self.mode not in ("finetune", "frozen", "off"):
            raise ValueError(f"ProbeConfig.mode must be 'finetune', 'frozen' or 'off', got {self.mode!r}")


@dataclass(frozen=True)
class ValidationConfig:
    """The contrastive losses measured after every epoch, identical across points.

    Both losses are InfoNCE at the SAME batch size for every point (the training loss is not
    comparable across batch sizes: more negatives make it larger) on FIXED views (drawn once
    from ``seed``). "valid": the validation targets' histories (the user's training events before
    them); "train": a fixed sample of the point's training examples. Examples with an empty
    history have no views and are left out; only full batches are used.

    batch_size     examples per loss batch (the negatives); at most the examples available
    max_examples   sample at most this many examples of each set (seeded)
    seed           seeds the sample and the views
    """

    batch_size: int = 256
    max_examples: int = 2048
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 2:
            raise ValueError(f"ValidationConfig.batch_size must be >= 2 (InfoNCE needs negatives), got {self.batch_size}")
        if self.max_examples < self.batch_size:
            raise ValueError(f"ValidationConfig.max_examples ({self.max_examples}) must be >= batch_size "
                             f"({self.batch_size}): the loss uses full batches only")


@dataclass(frozen=True)
class FitConfig:
    """How the power laws are fitted (``twotower.studies.scaling.fit``).

    loss        which per-epoch loss the laws describe: "valid" or "train" (see ValidationConfig)
    bootstrap   residual-bootstrap resamples for the confidence intervals (0 = none)
    confidence  interval level
    seed        seeds the bootstrap
    """

    loss: Literal["valid", "train"] = "valid"
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.loss not in ("valid", "train"):
            raise ValueError(f"FitConfig.loss must be 'valid' or 'train', got {self.loss!r}")
        if self.bootstrap < 0:
            raise ValueError(f"FitConfig.bootstrap must be >= 0, got {self.bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"FitConfig.confidence must be in (0, 1), got {self.confidence!r}")


@dataclass(frozen=True)
class ScalingGrid:
    name: str = "scaling"
    data: DataConfig = field(default_factory=DataConfig)
    recipe: TrainConfig = field(default_factory=lambda: TrainConfig(
        clue="pretrain", tower=TowerConfig(user_encoder="sequence")))
    sweep: SweepConfig = field(default_factory=SweepConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self):
        r = self.recipe
        if r.tower.user_encoder != "sequence":
            raise ValueError(f"recipe.tower.user_encoder must be 'sequence' (the Transformer user encoder the study "
                             f"scales), got {r.tower.user_encoder!r}")
        if r.clue != "pretrain":
            raise ValueError(f"recipe.clue must be 'pretrain': each point trains the CLUE loss alone for "
                             f"recipe.clue_epochs epochs (then the retrieval probe); got {r.clue!r}")
        if r.clue_epochs < 1:
            raise ValueError(f"recipe.clue_epochs must be >= 1 (the contrastive epochs of each point), got {r.clue_epochs}")
        if r.strategy != "default" or r.logical_cpus:
            raise ValueError(f"recipe.strategy must be 'default' with logical_cpus 0: the sweep trains its points "
                             f"one after another in one process; got strategy={r.strategy!r}, "
                             f"logical_cpus={r.logical_cpus}")
        if self.probe.mode != "off" and self.probe.recall_k not in self.eval.ks:
            raise ValueError(f"probe.recall_k={self.probe.recall_k} is not one of eval.ks={list(self.eval.ks)}; "
                             "add it to eval.ks or pick one of them")
        expand_points(self)  # every point's shape is valid


def expand_points(grid: ScalingGrid) -> list[SweepPoint]:
    """The sweep's points: each block's product over its axes (unset axes = base), in block
    order, duplicates dropped. No blocks → the base point alone."""
    base = grid.sweep.base
    points: list[SweepPoint] = []
    for block in grid.sweep.blocks or (SweepBlock(),):
        axes = (block.models or (base.model,), block.interactions or (base.interactions,),
                block.max_history or (base.max_history,), block.batch_size or (base.batch_size,))
        for model, interactions, max_history, batch_size in itertools.product(*axes):
            point = SweepPoint(model=model, interactions=interactions, max_history=max_history, batch_size=batch_size)
            if point not in points:
                points.append(point)
    return points


def explicit_settings(obj):
    """Plain data of a dataclass tree without the fields equal to their class defaults."""
    if not dataclasses.is_dataclass(obj):
        return to_dict(obj)
    try:
        default = type(obj)()
    except (TypeError, ValueError):
        default = None
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if default is not None and value == getattr(default, f.name):
            continue
        out[f.name] = explicit_settings(value)
    return out


def point_key(grid: ScalingGrid, point: SweepPoint) -> str:
    """``<point.name>-<hash>``: the hash covers the settings that change the point's result (data,
    its training config, subset seed, probe, validation, eval), not the name or the fit settings.
    Values equal to their defaults are left out, so a setting added to the code base later (with
    a default) keeps existing keys; changes to the code itself are not tracked."""
    payload = {
        "data": explicit_settings(grid.data), "train": explicit_settings(point.train_config(grid.recipe)),
        "interactions": point.interactions, "subset_seed": grid.sweep.subset_seed,
        "probe": explicit_settings(grid.probe), "validation": explicit_settings(grid.validation),
        "eval": explicit_settings(grid.eval),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return f"{point.name}-{digest}"


def load_grid(path: str | Path) -> ScalingGrid:
    """Read and check a grid YAML file; errors name the file and the offending key."""
    from twotower import resolve_config_path

    path = resolve_config_path(path)  # a shipped grid may be named: scaling_default, scaling_movielens
    data = read_yaml_mapping(path, "grid file", "twotower/configs/scaling_default.yaml")
    try:
        return from_dict(ScalingGrid, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def grid_to_yaml(grid: ScalingGrid) -> str:
    return yaml.safe_dump(to_dict(grid), sort_keys=False, default_flow_style=None)
