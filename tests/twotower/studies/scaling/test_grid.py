import dataclasses

import pytest
import yaml

from twotower.studies.scaling.grid import (ModelShape, ScalingGrid, SweepBlock, SweepConfig, SweepPoint, ValidationConfig,
                                 expand_points, grid_to_yaml, load_grid, point_key)
from core.strict import from_dict
from twotower import CONFIG_DIR

RECIPE = {"clue": "pretrain", "tower": {"user_encoder": "sequence"}}


def _grid(**sections) -> ScalingGrid:
    return from_dict(ScalingGrid, {"recipe": RECIPE, **sections})


@pytest.mark.parametrize("name", ["scaling_default.yaml", "scaling_movielens.yaml"])
def test_shipped_grids_load_and_expand(name):
    grid = load_grid(CONFIG_DIR / name)
    points = expand_points(grid)
    assert len(points) == len(set(points)) >= 8
    shapes = {p.model for p in points}
    assert len({(m.num_layers, m.width) for m in shapes}) >= 4       # ≥ 4 sizes: L(N) can be fitted
    assert len({p.interactions for p in points}) >= 4                # ≥ 4 data sizes: L(D) can be fitted
    assert len({p.max_history for p in points}) >= 2 and len({p.batch_size for p in points}) >= 2
    keys = [point_key(grid, p) for p in points]
    assert len(set(keys)) == len(keys)


def test_blocks_are_products_with_base_values_and_duplicates_dropped():
    grid = _grid(sweep={
        "base": {"model": {"num_layers": 1, "width": 16}, "max_history": 10, "batch_size": 64},
        "blocks": [{"models": [{"num_layers": 1, "width": 16}, {"num_layers": 2, "width": 32}],
                    "batch_size": [64, 256]},
                   {"interactions": [500, None]},          # None = all = the base point again
                   {"max_history": [5]}]})
    points = expand_points(grid)
    small, big = ModelShape(1, 16), ModelShape(2, 32)
    assert points == [
        SweepPoint(small, None, 10, 64), SweepPoint(small, None, 10, 256),
        SweepPoint(big, None, 10, 64), SweepPoint(big, None, 10, 256),
        SweepPoint(small, 500, 10, 64),
        SweepPoint(small, None, 5, 64),
    ]


def test_no_blocks_is_the_base_point():
    assert expand_points(_grid()) == [SweepPoint()]


def test_point_train_config_sets_shape_length_and_batch():
    grid = _grid(recipe={**RECIPE, "tower": {"user_encoder": "sequence", "sequence": {"dropout": 0.2}}})
    point = SweepPoint(ModelShape(num_layers=3, width=48, num_heads=4), interactions=100, max_history=7,
                       batch_size=32)
    cfg = point.train_config(grid.recipe)
    seq = cfg.tower.sequence
    assert (seq.num_layers, seq.width, seq.num_heads, seq.ff_dim, seq.dropout) == (3, 48, 4, 192, 0.2)
    assert cfg.tower.max_history == 7 and cfg.batch_size == 32
    assert point.name == "L3-d48-h4-ff192-D100-T7-B32"


def test_point_key_follows_what_changes_the_result():
    grid = _grid()
    point = SweepPoint()
    key = point_key(grid, point)
    assert key.startswith(point.name + "-") and key == point_key(grid, point)
    assert point_key(dataclasses.replace(grid, name="other", fit=dataclasses.replace(grid.fit, bootstrap=7)),
                     point) == key
    changed = dataclasses.replace(grid, recipe=dataclasses.replace(grid.recipe, learning_rate=0.01))
    assert point_key(changed, point) != key
    changed = dataclasses.replace(grid, sweep=dataclasses.replace(grid.sweep, subset_seed=3))
    assert point_key(changed, point) != key


def test_grid_yaml_round_trips(tmp_path):
    grid = load_grid(CONFIG_DIR / "scaling_default.yaml")
    path = tmp_path / "grid.yaml"
    path.write_text(grid_to_yaml(grid))
    assert load_grid(path) == grid


@pytest.mark.parametrize("data, match", [
    ({"recipe": RECIPE, "sweep": {"blocks": [{"model": [{"width": 8}]}]}}, r"unknown config key.*model.*allowed keys"),
    ({"recipe": RECIPE, "sweep": {"base": {"model": {"depth": 2}}}}, r"unknown config key.*depth"),
    ({"recipe": RECIPE, "plots": True}, r"unknown config key.*plots"),
    ({"recipe": {"clue": "pretrain"}}, r"user_encoder must be 'sequence'"),
    ({"recipe": {"tower": {"user_encoder": "sequence"}}}, r"recipe.clue must be 'pretrain'"),
    ({"recipe": {**RECIPE, "clue_epochs": 0}}, r"clue_epochs must be >= 1"),
    ({"recipe": {**RECIPE, "strategy": "mirrored"}}, r"strategy must be 'default'"),
    ({"recipe": RECIPE, "probe": {"recall_k": 7}}, r"recall_k=7 is not one of eval.ks"),
    ({"recipe": RECIPE, "sweep": {"blocks": [{"batch_size": []}]}}, r"batch_size is an empty list"),
    ({"recipe": RECIPE, "sweep": {"base": {"model": {"width": 30, "num_heads": 4}}}}, r"divisible by num_heads"),
    ({"recipe": RECIPE, "sweep": {"base": {"interactions": 0}}}, r"interactions must be > 0"),
    ({"recipe": RECIPE, "validation": {"batch_size": 512, "max_examples": 100}}, r"max_examples \(100\) must be >="),
    ({"recipe": RECIPE, "fit": {"loss": "test"}}, r"'test' is not one of"),
])
def test_bad_grids_are_rejected_with_the_reason(data, match):
    with pytest.raises((ValueError, TypeError), match=match):
        from_dict(ScalingGrid, data)


def test_load_grid_names_the_file(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"recipe": RECIPE, "sweeps": {}}))
    with pytest.raises(ValueError, match=r"g.yaml: unknown config key.*sweeps"):
        load_grid(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")
    path.write_text("- a list")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_grid(path)


def test_direct_construction_checks_values():
    with pytest.raises(ValueError, match="ff_dim must be > 0"):
        ModelShape(ff_dim=0)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        ValidationConfig(batch_size=1)
    assert SweepConfig(blocks=(SweepBlock(max_history=(5,)),)).blocks[0].max_history == (5,)
