"""``make bench``: every benchmark in its reported configuration, one after another.

Each benchmark is its own script (``python -m bench.<name> --help``) that prints its numbers and
measures against a baseline in the same run. This runner only sequences them and stops at the
first failure; pass names to run a subset, e.g. ``python -m bench.run_all index eval``.
"""
from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = {
    "synthetic": ["bench.bench_synthetic"],
    "movielens": ["bench.bench_movielens"],
    "towers": ["bench.bench_towers"],
    "index": ["bench.bench_index", "--n", "1000000", "--dim", "64"],
    "eval": ["bench.bench_eval"],
    "beam": ["bench.bench_beam"],
}
OPTIONAL = {"ssl_overhead": ["bench.bench_ssl_overhead", "sequence"], "serving": ["bench.bench_serving"],
            "ablation": ["bench.bench_ablation"], "scaling": ["twotower.studies.scaling", "--grid", "scaling_default",
                                                             "--out", "runs/scaling"]}


def main(argv: list[str]) -> int:
    table = {**BENCHMARKS, **OPTIONAL}
    names = argv or [n for n in table if n in BENCHMARKS or _exists(table[n][0])]
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {sorted(table)}", file=sys.stderr)
        return 2
    for name in names:
        cmd = [sys.executable, "-m", *table[name]]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            return rc
    return 0


def _exists(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
