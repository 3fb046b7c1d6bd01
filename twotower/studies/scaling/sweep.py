"""Run a scaling sweep from a grid YAML file, resumably, then fit the laws and write the report.

    run_sweep("scaling_default", "runs/scaling")        # or: python -m twotower.studies.scaling

Layout of ``out_dir``::

    grid.yaml                      the resolved grid (what ran)
    points/<key>/result.json       one per finished point, written atomically when the point ends
    points/<key>/error.json        the traceback of a point that raised (removed when it succeeds)
    report.md points.csv fits.json *.png    (``twotower.studies.scaling.report``)

Resume: a point whose ``result.json`` exists (and carries its key and schema) is not run again;
every other point — never started, crashed half-way (no result.json), or failed — is run. The
key hashes everything that changes a point's result (``twotower.studies.scaling.grid.point_key``), so
editing the recipe makes new points instead of mixing old results in. A point that raises is
recorded in error.json and the sweep goes on; the report lists it. ``resume=False`` reruns all.
Points run one after another in this process (TensorFlow's session is cleared between them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from twotower.studies.scaling.grid import ScalingGrid, SweepPoint, expand_points, grid_to_yaml, load_grid, point_key
from twotower.studies import points as points_lib
from twotower.studies.scaling.laws import fit_laws
from twotower.studies.scaling.point import SCHEMA
from twotower.studies.scaling.report import write_report
from core.artifacts import atomic_write_text
from core.strict import to_dict


def _say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class SweepOutcome:
    """What a sweep call did and found.

    results   finished points' result dicts (grid order);  failures  {"key", "error"} of failed points
    missing   keys of points neither finished nor failed;  ran / skipped  keys run / reused by this call
    fits      ``twotower.studies.scaling.laws.fit_laws`` output;      report  path of report.md
    """

    out_dir: Path
    results: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    ran: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    fits: dict = field(default_factory=dict)
    report: Path | None = None


def read_result(out_dir: str | Path, key: str) -> dict | None:
    """The finished result of point ``key``, or None if it has none (or an unreadable one)."""
    return points_lib.read_result(out_dir, key, SCHEMA)


def run_sweep(grid_path: str | Path, out_dir: str | Path, resume: bool = True,
              log: Callable[[str], None] = _say, run_point: Callable | None = None) -> SweepOutcome:
    """Run every point of the grid not finished yet (all with ``resume=False``), then fit and report.

    ``run_point(grid, point, dataset, split, log)`` defaults to ``twotower.studies.scaling.point.run_point``
    (an argument so tests can replace the training)."""
    grid = load_grid(grid_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "grid.yaml", grid_to_yaml(grid))
    points = expand_points(grid)
    keys = [point_key(grid, p) for p in points]
    finished = sum(resume and read_result(out, k) is not None for k in keys)
    log(f"scaling sweep {grid.name!r}: {len(points)} point(s), {finished} already finished, "
        f"{len(points) - finished} to run → {out}")
    if run_point is None:
        from twotower.studies.scaling.point import run_point
    data: list = []

    def run_one(point, directory):
        if not data:
            data.extend(_load_data(grid, log))
        return run_point(grid, point, data[0], data[1], log)

    done = points_lib.run_points(out, list(zip(keys, points)), SCHEMA, run_one, resume=resume, log=log,
                                 describe=_describe)
    outcome = SweepOutcome(out_dir=out, ran=done.ran, skipped=done.skipped)
    return _finish(grid, points, keys, outcome, log)


def _describe(result: dict) -> str:
    recall = result.get("recall") or {}
    overall = (recall.get("overall") or {}).get("value")
    return (f"valid loss {_num(result['final']['loss_valid'])}, C {result['compute']['flops']:.3g} FLOPs, "
            f"N {result['params']['non_embedding']:,}"
            + (f", recall@{recall['k']} {overall:.4f}" if overall is not None else ""))


def write_sweep_report(grid_path: str | Path, out_dir: str | Path,
                       log: Callable[[str], None] = _say) -> SweepOutcome:
    """Fit and report from the finished points only (nothing is trained)."""
    grid = load_grid(grid_path)
    points = expand_points(grid)
    keys = [point_key(grid, p) for p in points]
    outcome = SweepOutcome(out_dir=Path(out_dir), skipped=[k for k in keys if read_result(out_dir, k) is not None])
    return _finish(grid, points, keys, outcome, log)


def _finish(grid: ScalingGrid, points: list[SweepPoint], keys: list[str], outcome: SweepOutcome,
            log: Callable[[str], None]) -> SweepOutcome:
    out = outcome.out_dir
    found = points_lib.collect(out, keys, SCHEMA)
    outcome.results, outcome.failures, outcome.missing = found.results, found.failures, found.missing
    f = grid.fit
    outcome.fits = fit_laws(outcome.results, f.loss, f.bootstrap, f.confidence, f.seed, to_dict(grid.sweep.base))
    outcome.report = write_report(out, grid, outcome.results, outcome.fits, outcome.failures, outcome.missing)
    for law in ("compute", "params", "data"):
        entry = outcome.fits[law]
        fit = entry["fit"]
        if fit:
            ci = fit["b_ci"]
            ci_txt = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci[0] is not None else ""
            log(f"L({entry['symbol']}): b = {fit['b']:.3g}{ci_txt}, R² = {_num(fit['r2'])} on {fit['n']} points")
        else:
            log(f"L({entry['symbol']}): not fitted ({entry['error']})")
    log(f"report → {outcome.report}")
    return outcome


def _load_data(grid: ScalingGrid, log):
    from recdata.loading import load_dataset, make_split

    dataset = load_dataset(grid.data)
    split = make_split(dataset, grid.data)
    log(f"data {dataset.name}: {dataset.num_users} users, {dataset.num_items} items, {len(split.train)} train / "
        f"{len(split.valid)} valid / {len(split.test)} test interactions")
    return dataset, split


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"
