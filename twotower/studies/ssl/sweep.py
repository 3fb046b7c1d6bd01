"""Run the SSL study's points (resumable) and write its report.

    <out>/grid.yaml                      the resolved grid (what ran)
    <out>/points/<key>/result.json       one per finished point; eval/ holds its EvalResult
    <out>/report.md gains.json gain_vs_fraction.png
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from core.artifacts import atomic_write_text
from twotower.studies import points as points_lib
from twotower.studies.ssl.grid import SCHEMA, SSLGrid, expand_points, grid_to_yaml, load_grid, point_key
from twotower.studies.ssl.report import write_report


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_study(grid_path: str | Path, out_dir: str | Path, resume: bool = True, report_only: bool = False,
              log: Callable[[str], None] = _say, run_point: Callable | None = None) -> points_lib.PointsOutcome:
    """Run every unfinished point of the grid (none with ``report_only``), then write the report.

    ``run_point(grid, point, dataset, split, directory)`` defaults to ``twotower.studies.ssl.point.run_point``."""
    grid = load_grid(grid_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "grid.yaml", grid_to_yaml(grid))
    points = expand_points(grid)
    keyed = [(point_key(grid, p), p) for p in points]
    command = f"python -m twotower.studies.ssl --grid {grid_path} --out {out_dir}"
    if report_only:
        outcome = points_lib.collect(out, [k for k, _ in keyed], SCHEMA)
    else:
        if run_point is None:
            from twotower.studies.ssl.point import run_point
        data: dict = {}

        def run_one(point, directory):
            if point.dataset not in data:
                data[point.dataset] = _load_data(grid, point.dataset, log)
            dataset, split = data[point.dataset]
            return run_point(grid, point, dataset, split, directory)

        log(f"SSL study {grid.name!r}: {len(points)} point(s) → {out}")
        outcome = points_lib.run_points(out, keyed, SCHEMA, run_one, resume=resume, log=log, describe=_describe)
    report = write_report(out, grid, outcome.failures, outcome.missing, command)
    log(f"{len(outcome.results)} point(s) finished, {len(outcome.failures)} failed, {len(outcome.missing)} missing; "
        f"report → {report}")
    return outcome


def _describe(result: dict) -> str:
    overall = result.get("recall", {}).get("overall/all", {})
    parts = [f"{m} {v:.4f}" for m, v in overall.items() if m.startswith("recall@")]
    return f"{result.get('train_events')} events, " + ", ".join(parts)


def _load_data(grid: SSLGrid, name: str, log):
    from recdata.loading import load_dataset, make_split

    entry = next(d for d in grid.datasets if d.name == name)
    dataset = load_dataset(entry.data)
    split = make_split(dataset, entry.data)
    log(f"data {name}: {dataset.num_users} users, {dataset.num_items} items, {len(split.train)} train events")
    return dataset, split
