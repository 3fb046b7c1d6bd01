import pytest

from core.strict import from_dict
from twotower.studies.ssl.grid import SSLGrid, SSLPoint, expand_points, load_grid, point_config, point_key

GRID = {
    "name": "t",
    "datasets": [{"name": "syn", "data": {"source": "synthetic"}}],
    "recipe": {"epochs": 1},
    "eval": {"ks": [10], "support_thresholds": [1, 4]},
    "sweep": {"fractions": [0.1, 1.0], "seeds": [0, 1], "variants": {"none": {}, "cfm": {"ssl.mode": "cfm"}},
              "scarce_variants": {"cfm-w1": {"ssl.mode": "cfm", "ssl.weight": 1.0}}},
}


def test_points_are_the_product_plus_scarce_variants_at_the_smallest_fraction():
    grid = from_dict(SSLGrid, GRID)
    points = expand_points(grid)
    assert len(points) == 2 * 2 * 2 + 2
    assert points[-2:] == [SSLPoint("syn", 0.1, "cfm-w1", 0), SSLPoint("syn", 0.1, "cfm-w1", 1)]
    cfg = point_config(grid, SSLPoint("syn", 0.1, "cfm-w1", 1))
    assert cfg.ssl.mode == "cfm" and cfg.ssl.weight == 1.0 and cfg.seed == 1 and cfg.epochs == 1
    assert point_config(grid, SSLPoint("syn", 1.0, "none", 0)).ssl.mode == "off"


def test_point_keys_change_with_what_changes_the_result_only():
    grid = from_dict(SSLGrid, GRID)
    p = SSLPoint("syn", 0.1, "cfm", 0)
    other = from_dict(SSLGrid, {**GRID, "name": "renamed"})
    assert point_key(grid, p) == point_key(other, p)
    changed = from_dict(SSLGrid, {**GRID, "recipe": {"epochs": 2}})
    assert point_key(grid, p) != point_key(changed, p)
    assert len({point_key(grid, q) for q in expand_points(grid)}) == len(expand_points(grid))


@pytest.mark.parametrize("patch, message", [
    ({"sweep": {**GRID["sweep"], "fractions": [0.5, 0.1]}}, r"fractions must be strictly ascending values in \(0, 1\], got \[0.5, 0.1\]"),
    ({"sweep": {**GRID["sweep"], "fractions": [0.0, 1.0]}}, r"fractions must be strictly ascending"),
    ({"sweep": {**GRID["sweep"], "baseline": "off"}}, r"sweep.baseline 'off' is not one of sweep.variants \['cfm', 'none'\]"),
    ({"sweep": {**GRID["sweep"], "variants": {"none": {}, "x": {"ssl.mode": "bogus"}}}}, r"variant 'x': ssl.mode: 'bogus' is not one of"),
    ({"sweep": {**GRID["sweep"], "variants": {"none": {}, "x": {"ssl.nope": 1}}}}, r"variant 'x': unknown config key 'nope'"),
    ({"eval": {"ks": [10]}}, r"eval.support_thresholds is empty"),
    ({"datasets": [{"name": "a"}, {"name": "a"}]}, r"datasets must have distinct names, got \['a', 'a'\]"),
])
def test_bad_grids_are_refused_with_what_to_fix(patch, message):
    with pytest.raises((ValueError, TypeError), match=message):
        from_dict(SSLGrid, {**GRID, **patch})


def test_shipped_grids_load():
    from twotower import CONFIG_DIR

    for name in ("ssl_movielens.yaml", "ssl_synthetic.yaml"):
        grid = load_grid(CONFIG_DIR / name)
        assert expand_points(grid)
    assert load_grid("ssl_movielens") == load_grid(CONFIG_DIR / "ssl_movielens.yaml")  # a shipped grid by name
