"""Resumable study points: one directory per point, a result written atomically when the point ends.

Shared by every study (``twotower.studies.scaling``, ``twotower.studies.ssl``)::

    <out_dir>/points/<key>/result.json   the finished point (carries its key and the study's schema)
    <out_dir>/points/<key>/error.json    the traceback of a point that raised (removed when it succeeds)
    <out_dir>/points/<key>/...           whatever the point itself saved (e.g. an EvalResult)

Resume: a point whose ``result.json`` exists with the right key and schema is not run again; every other
point — never started, killed half-way (no result.json), or failed — is. A point that raises is recorded
in error.json and the study goes on; the report lists it.
"""
from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.artifacts import atomic_write_json

POINTS = "points"
RESULT = "result.json"
ERROR = "error.json"


def json_safe(value):
    """JSON-safe copy of nested dicts/lists: non-finite floats → None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def point_dir(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / POINTS / key


def read_result(out_dir: str | Path, key: str, schema: str) -> dict | None:
    """The finished result of point ``key``, or None if it has none (or an unreadable or foreign one)."""
    path = point_dir(out_dir, key) / RESULT
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("schema") != schema or result.get("key") != key:
        return None
    return result


@dataclass
class PointsOutcome:
    """results (in the given key order) of finished points; failures: {"key", "error"}; missing: keys
    neither finished nor failed; ran / skipped: keys run / reused by this call."""

    out_dir: Path
    results: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    ran: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def run_points(out_dir: str | Path, points: Sequence[tuple[str, Any]], schema: str,
               run_one: Callable[[Any, Path], dict], *, resume: bool = True,
               log: Callable[[str], None] = lambda msg: None,
               describe: Callable[[dict], str] = lambda result: "") -> PointsOutcome:
    """Run ``run_one(payload, point_directory)`` for every ``(key, payload)`` not finished yet.

    The returned dict is stored as result.json after ``schema`` and ``key`` are added (``json_safe`` first:
    NaN/inf become null). ``describe(result)`` adds a short summary to the log line of a finished point.
    """
    out = Path(out_dir)
    outcome = PointsOutcome(out_dir=out)
    todo = [(k, p) for k, p in points if not (resume and read_result(out, k, schema) is not None)]
    todo_keys = {k for k, _ in todo}
    outcome.skipped = [k for k, _ in points if k not in todo_keys]
    for i, (key, payload) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {key}")
        directory = point_dir(out, key)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            result = run_one(payload, directory)
        except Exception as exc:  # noqa: BLE001 — recorded, reported, rerun on resume
            atomic_write_json(directory / ERROR, {"key": key, "error": traceback.format_exc(),
                                                  "seconds": time.perf_counter() - started})
            log(f"    FAILED after {time.perf_counter() - started:.0f} s: {type(exc).__name__}: {exc}")
            continue
        atomic_write_json(directory / RESULT, json_safe({**result, "schema": schema, "key": key}))
        (directory / ERROR).unlink(missing_ok=True)
        outcome.ran.append(key)
        summary = describe(result)
        log(f"    done in {time.perf_counter() - started:.0f} s" + (f": {summary}" if summary else ""))
    collect(out, [k for k, _ in points], schema, outcome)
    return outcome


def collect(out_dir: str | Path, keys: Sequence[str], schema: str,
            outcome: PointsOutcome | None = None) -> PointsOutcome:
    """Fill ``results`` / ``failures`` / ``missing`` from what is on disk (nothing is run)."""
    outcome = outcome or PointsOutcome(out_dir=Path(out_dir))
    outcome.results, outcome.failures, outcome.missing = [], [], []
    for key in keys:
        result = read_result(out_dir, key, schema)
        if result is not None:
            outcome.results.append(result)
            continue
        error = point_dir(out_dir, key) / ERROR
        if error.is_file():
            try:
                outcome.failures.append(json.loads(error.read_text()))
            except (OSError, ValueError):
                outcome.failures.append({"key": key, "error": f"unreadable {error}"})
        else:
            outcome.missing.append(key)
    return outcome
